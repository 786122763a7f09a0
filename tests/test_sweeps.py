"""Sweeps as users run them: an Optuna search and a sweep through the submitit launcher (local executor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(rte_teacher):
    return rte_teacher


def _sweep(env, tiny_bert, tmp_path, *args):
    tmp, glue = env
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *args, "epochs=1", "batch_size=8", "max_seq_length=32",
           f"data.glue_dir={glue}", f"teacher_dir={tmp / 'teacher'}", "model.student.start=pretrained", f"model.student.source={tiny_bert}",
           "model.student.num_layers=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
           f"hydra.sweep.dir={tmp_path}/multirun"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    return sorted((tmp_path / "model" / "rte").iterdir())


def test_optuna_search_runs_trials_and_maximises_the_dev_score(env, tiny_bert, tmp_path):
    runs = _sweep(env, tiny_bert, tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    assert len(runs) == 2, [r.name for r in runs]
    configs = [json.loads((r / "metrics.json").read_text())["config"] for r in runs]
    assert len({(c["alpha"], c["temperature"], c["student_lr"], c["teacher_lr"]) for c in configs}) == 2
    for c in configs:
        assert 0.1 <= c["alpha"] <= 0.9 and c["temperature"] in (1, 2, 5, 10, 20)
    best = yaml_load(tmp_path / "multirun" / "optimization_results.yaml")
    assert best["name"] == "optuna" and set(best["best_params"]) == {"alpha", "temperature", "student_lr", "teacher_lr"}
    scores = [json.loads((r / "metrics.json").read_text())["best"]["selection"] for r in runs]
    assert best["best_value"] == pytest.approx(max(scores))


def test_submitit_local_launcher_runs_a_two_job_sweep(env, tiny_bert, tmp_path):
    runs = _sweep(env, tiny_bert, tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                  "seed=1,2")
    assert [r.name.rsplit("-", 1)[-1] for r in runs] == ["seed1", "seed2"]
    for r in runs:
        assert json.loads((r / "metrics.json").read_text())["final"]["epoch"] == 1


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
