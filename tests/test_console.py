"""The console a user sees from an entry script: results and their own warnings, not the libraries' banners."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import write_glue

ROOT = Path(__file__).resolve().parents[1]


def test_finetune_console_has_no_library_banners(tiny_bert, tmp_path):
    glue = write_glue(tmp_path / "glue_data")
    cmd = [sys.executable, str(ROOT / "finetune_teacher.py"), "task=rte", f"model.teacher_init={tiny_bert}",
           f"data.glue_dir={glue}", f"output_dir={tmp_path / 'teacher'}", "epochs=1", "batch_size=8",
           "max_seq_length=32", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'logs'}"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Teacher saved to" in out and "best dev" in out  # the results stay
    for noise in ("💡 Tip", "litlogger", "GPU available", "TPU available", "Seed set to", "[INFO]",
                  "Warning", "deprecated", "newly initialized"):
        assert noise not in out, f"{noise!r} reached the console:\n{out[-3000:]}"


def test_distil_console_counts_epochs_from_one_and_has_no_timestamped_lines(rte_teacher, tiny_bert, tmp_path):
    """The progress bar says `Epoch 2/2` in the second of two epochs, as metrics.json and the README count them,
    and the run's own lines (the layer mapping) are plain, without Hydra's `[date][logger][INFO] - ` prefix."""
    folder, glue = rte_teacher
    cmd = [sys.executable, str(ROOT / "train.py"), "task=rte", f"data.glue_dir={glue}", "epochs=2", "batch_size=8",
           "max_seq_length=32", "trainer.accelerator=cpu", f"teacher_dir={folder / 'teacher'}",
           "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2", f"output_dir={tmp_path / 'student'}",
           f"hydra.run.dir={tmp_path / 'logs'}"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    bars = set(re.findall(r"Epoch \d+(?:/\d+)?", out))
    assert bars == {"Epoch 1/2", "Epoch 2/2"}, f"progress bar epochs {bars}:\n{out[-3000:]}"
    assert re.search(r"^layer mapping \(skip\): ", out, re.MULTILINE), out[-3000:]
    assert "[INFO]" not in out and not re.search(r"^\[\d{4}-", out, re.MULTILINE), out[-3000:]
