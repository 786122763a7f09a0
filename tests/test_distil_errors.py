"""Bad distillation input: a clear ConfigError, raised before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose_cfg, quick, save_tiny_bert, write_glue
from reptiledistil.core.errors import ConfigError
from reptiledistil.training.modules import DistilModule
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.teacher import finetune

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("distil_err")
    glue = write_glue(tmp / "glue_data")
    teacher = tmp / "teacher_rte"
    finetune(compose_cfg("finetune_teacher", quick(tmp, glue) + [
        "task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={teacher}"]))
    return tmp, glue, teacher


def _cfg(env, tiny_bert, *extra, out="out"):
    tmp, glue, teacher = env
    return compose_cfg("train", quick(tmp, glue) + [
        "task=rte", f"teacher_dir={teacher}", "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2",
        f"output_dir={tmp / out}", *extra])


@pytest.mark.parametrize("extra, match", [
    (["alpha=1.5"], r"alpha=1.5 must be in \[0, 1\]"),
    (["temperature=0"], r"temperature=0.* must be > 0"),
    (["model.student.num_layers=3"], "multiple of the student depth"),
    (["model.student.num_layers=3", "strategy=both"], "multiple of the student depth"),
    (["method.update_head=maybe"], "method.update_head='maybe' must be true or false"),
])
def test_bad_hyperparameters(env, tiny_bert, extra, match):
    with pytest.raises(ConfigError, match=match):
        distil(_cfg(env, tiny_bert, *extra, out="bad"))
    assert not (env[0] / "bad").exists() and not (env[0] / ".bad.partial").exists()


def test_missing_teacher_says_how_to_make_one(env, tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist.*python finetune_teacher.py task=rte"):
        distil(_cfg(env, tiny_bert, f"teacher_dir={tmp_path / 'nope' / 'teacher'}"))


def test_teacher_of_another_task_refused(env, tiny_bert):
    with pytest.raises(ConfigError, match="fine-tuned on task 'rte', not 'mrpc'"):
        distil(_cfg(env, tiny_bert, "task=mrpc"))


def test_deeper_student_refused(env, tiny_bert, tmp_path):
    deep = save_tiny_bert(tmp_path / "deep", layers=6)
    with pytest.raises(ConfigError, match=r"more layers \(6\) than the teacher \(4\)"):
        distil(_cfg(env, tiny_bert, "model.student.init=pretrained", "model.student.start=pretrained", f"model.student.source={deep}"))


def test_width_mismatch_refused(env, tiny_bert, tmp_path):
    wide = save_tiny_bert(tmp_path / "wide", layers=4, hidden=64)
    with pytest.raises(ConfigError, match="differ in width"):
        distil(_cfg(env, tiny_bert, "model.student.start=pretrained", f"model.student.source={wide}"))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(env, tiny_bert, monkeypatch):
    real_loss = DistilModule.loss
    steps_per_epoch = 3  # 24 training examples, batch size 8

    def loss(self, *a):
        value = real_loss(self, *a)
        return value * float("nan") if self.outer_step >= steps_per_epoch + 1 else value

    monkeypatch.setattr(DistilModule, "loss", loss)
    with pytest.raises(ConfigError, match=r"became nan at step 4.*best checkpoint so far \(epoch 1\)"):
        distil(_cfg(env, tiny_bert, "epochs=2", out="nan"))
    partial = env[0] / ".nan.partial"
    assert (partial / "student" / "model.safetensors").is_file()  # epoch 1's model survives
    assert not (env[0] / "nan").exists()
    with pytest.raises(ConfigError, match="has an unfinished run; its checkpoint is .*resume=true"):
        distil(_cfg(env, tiny_bert, out="nan"))


def test_multirun_sweep(env, tiny_bert, tmp_path):
    """A seed sweep with the default output_dir: one folder per job, numbers spelled one way, no teacher saved."""
    tmp, glue, teacher = env
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "alpha=0.3", "temperature=5", "seed=1,2", "epochs=1",
           "batch_size=8", "max_seq_length=32", f"data.glue_dir={glue}", f"teacher_dir={teacher}",
           "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2", "trainer.accelerator=cpu",
           "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path}/multirun"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted((tmp_path / "model" / "rte").iterdir())
    suffix = "-batch_size8-epochs1-max_seq_length32-model.student.num_layers2-model.student.startpretrained"
    assert [r.name for r in runs] == [f"reptile-skip-a0.3-T5{suffix}-seed{s}" for s in (1, 2)]
    for seed, (run, job) in enumerate(zip(runs, ("0", "1")), start=1):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["config"]["seed"] == seed and metrics["config"]["alpha"] == 0.3
        assert metrics["log_dir"] == str(tmp_path / "multirun" / job), "the model points to its logs"
        assert json.loads((tmp_path / "multirun" / job / "metrics.json").read_text())["output_dir"] == str(run)
        assert not (run / "teacher").exists(), "save_teacher=auto: a sweep's jobs do not save the teacher"
        assert (tmp_path / "multirun" / job / ".hydra" / "overrides.yaml").is_file()
        assert list((tmp_path / "multirun" / job / "csv").rglob("metrics.csv")), "CSV logs in the sweep folder"


def test_cli_reports_config_errors_without_traceback(env, tiny_bert):
    res = subprocess.run([sys.executable, "train.py", "alpha=2", f"teacher_dir={env[2]}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2
    assert "error: alpha=2 must be in [0, 1]" in res.stderr and "Traceback" not in res.stderr


def test_ddp_two_cpu_processes(env, tiny_bert, tmp_path):
    """Two DDP processes (gloo): only rank 0 checks and writes outputs; the run completes and saves both models."""
    tmp, glue, teacher = env
    out = tmp_path / "ddp"
    cmd = [sys.executable, "train.py", "trainer=cpu", "+trainer.strategy=ddp", "trainer.devices=2", "epochs=1",
           "batch_size=4", "max_seq_length=32", f"data.glue_dir={glue}", f"teacher_dir={teacher}",
           "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2", f"output_dir={out}",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/run"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"][0]["epoch"] == 1
    assert (out / "student" / "model.safetensors").is_file() and (out / "teacher" / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".ddp*")), "no staging directory left behind"
