"""Resume after a crash: a run killed mid-epoch and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import compose_cfg, quick
from reptiledistil.core.errors import ConfigError
from reptiledistil.training.resume import checkpoint_path
from reptiledistil.pipelines.distil import distil

TESTS = Path(__file__).resolve().parent

# Runs one pipeline step in a fresh process, as the scripts do; with KILL_AT=<signal>:<step> the training
# step sends that signal to its own process before that step (SIGKILL: nothing gets to clean up).
DRIVER = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import compose_cfg
import reptiledistil.training.modules as m
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.teacher import finetune
kill = os.environ.get("KILL_AT")
if kill:
    sig, at = (int(x) for x in kill.split(":"))
    for cls in (m.DistilModule, m.TeacherModule):
        def step(self, batch, batch_idx, _orig=cls.training_step):
            if self.trainer.global_step == at or getattr(self, "outer_step", -1) == at:
                os.kill(os.getpid(), sig)
            return _orig(self, batch, batch_idx)
        cls.training_step = step
script, overrides = sys.argv[1], json.loads(sys.argv[2])
(distil if script == "train" else finetune)(compose_cfg(script, overrides))
"""


@pytest.fixture
def env(rte_teacher):
    return rte_teacher


def _overrides(env, tiny_bert, script, out, *extra):
    tmp, glue = env
    common = quick(tmp, glue) + ["task=rte", "batch_size=4", "epochs=2", "checkpoint_every_n_steps=2",
                                 f"output_dir={out}", *extra]
    if script == "train":
        return common + [f"teacher_dir={tmp / 'teacher'}", "model.student.start=pretrained", f"model.student.source={tiny_bert}",
                         "model.student.num_layers=2"]
    return common + [f"model.teacher_init={tiny_bert}"]


def _run(script, overrides, kill=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"KILL_AT": kill} if kill else {})}
    return subprocess.run([sys.executable, "-c", DRIVER.format(tests=str(TESTS)), script, json.dumps(overrides)],
                          capture_output=True, text=True, timeout=600, env=env)


def _weights(d: Path) -> dict:
    return load_file(str(d / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _history(d: Path, name: str) -> list:
    return json.loads((d / name).read_text())["history"]


# MetaDistil also draws a quiz batch per step: the resumed run must draw the ones the killed run would have.
@pytest.mark.parametrize("script, extra", [("train", []), ("train", ["method=metadistil", "method.quiz_size=4"]),
                                           ("finetune_teacher", [])], ids=["reptile", "metadistil", "teacher"])
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(env, tiny_bert, tmp_path, script, extra):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    res = _run(script, _overrides(env, tiny_bert, script, ref, *extra))
    assert res.returncode == 0, res.stderr[-3000:]
    # Killed before step 9 (epoch 2, batch 3); the last checkpoint is from step 8 (epoch 2, batch 2).
    res = _run(script, _overrides(env, tiny_bert, script, cut, *extra), kill=f"{int(signal.SIGKILL)}:9")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert checkpoint_path(cut).is_file() and not cut.exists()
    res = _run(script, _overrides(env, tiny_bert, script, cut, *extra, "resume=true"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stdout
    if script == "train":
        _same_weights(ref / "student", cut / "student")
        _same_weights(ref / "teacher", cut / "teacher")  # the updated teacher (Reptile's, MetaDistil's)
        assert _history(ref, "metrics.json") == _history(cut, "metrics.json")
    else:
        _same_weights(ref, cut)
        assert _history(ref, "dev_metrics.json") == _history(cut, "dev_metrics.json")
    assert not checkpoint_path(cut).parent.exists(), "a finished run leaves no checkpoint behind"


def test_sigterm_saves_a_checkpoint_and_the_rerun_says_how_to_resume(env, tiny_bert, tmp_path):
    out = tmp_path / "term"
    overrides = _overrides(env, tiny_bert, "train", out, "checkpoint_every_n_steps=null")
    res = _run("train", overrides, kill=f"{int(signal.SIGTERM)}:3")
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-3000:]
    assert "Stopped by SIGTERM" in res.stdout and "resume=true" in res.stdout
    assert checkpoint_path(out).is_file()
    with pytest.raises(ConfigError, match=r"has an unfinished run; its checkpoint is .*last.ckpt.*resume=true"):
        distil(compose_cfg("train", overrides))
    res = _run("train", overrides + ["resume=true"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert [h["epoch"] for h in _history(out, "metrics.json")] == [1, 2]


def test_checkpoint_of_another_run_or_truncated_is_refused(env, tiny_bert, tmp_path):
    out = tmp_path / "src"
    res = _run("train", _overrides(env, tiny_bert, "train", out), kill=f"{int(signal.SIGKILL)}:5")
    assert res.returncode == -signal.SIGKILL
    ckpt = checkpoint_path(out)
    other = _overrides(env, tiny_bert, "train", tmp_path / "kd", "method=kd", f"resume={ckpt}")
    with pytest.raises(ConfigError, match=r"was written with other settings: .*method\.name: reptile in the "
                                          r"checkpoint, kd now;.* method\.update: pseudo_grad in the checkpoint, not "
                                          r"set now"):
        distil(compose_cfg("train", other))
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    with pytest.raises(ConfigError, match=r"is truncated or corrupt \(.*\), so it cannot be resumed from: pass "
                                          r"resume=<another checkpoint>"):
        distil(compose_cfg("train", _overrides(env, tiny_bert, "train", out, "resume=true")))


def test_resume_without_checkpoint_is_refused(env, tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="resume=true, but there is no checkpoint to continue from"):
        distil(compose_cfg("train", _overrides(env, tiny_bert, "train", tmp_path / "none", "resume=true")))
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        distil(compose_cfg("train", _overrides(env, tiny_bert, "train", tmp_path / "none", "resume=/no/such.ckpt")))


# --- a checkpoint knows its run: other settings are refused before any model is loaded ------------------------


@pytest.fixture(scope="module")
def killed_run(rte_teacher, tiny_bert, tmp_path_factory):
    """A distillation killed at step 5 (alpha 0.5, batch_size 4, seed 42): its output folder holds a checkpoint."""
    out = tmp_path_factory.mktemp("killed") / "run"
    res = _run("train", _overrides(rte_teacher, tiny_bert, "train", out), kill=f"{int(signal.SIGKILL)}:5")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    return out


@pytest.mark.parametrize("changed, named", [
    (["alpha=0.9"], [r"alpha: 0\.5 in the checkpoint, 0\.9 now"]),
    (["batch_size=8"], [r"batch_size: 4 in the checkpoint, 8 now"]),
    (["seed=7"], [r"seed: 42 in the checkpoint, 7 now"]),
    (["seed=7", "alpha=0.9", "epochs=3"], [r"alpha: 0\.5 in the checkpoint, 0\.9 now", r"epochs: 2 in the checkpoint, 3 now",
                                         r"seed: 42 in the checkpoint, 7 now"]),
], ids=["alpha", "batch_size", "seed", "three"])
def test_resume_with_other_settings_is_refused_before_loading(rte_teacher, tiny_bert, killed_run, monkeypatch,
                                                              changed, named):
    import reptiledistil.pipelines.distil as pipeline
    from reptiledistil.data.glue import TaskData

    def fail(*a, **k):
        pytest.fail("a model was loaded before the resume was refused")

    for name in ("load_finetuned", "build_student", "load_tokenizer"):
        monkeypatch.setattr(pipeline, name, fail)
    monkeypatch.setattr(TaskData, "training_splits", fail)  # not even the data is read
    ckpt = checkpoint_path(killed_run)
    before = ckpt.read_bytes()
    cfg = compose_cfg("train", _overrides(rte_teacher, tiny_bert, "train", killed_run, *changed, "resume=true",
                                          "checkpoint_every_n_steps=3", "data.num_workers=1", "eval_batch_size=2"))
    with pytest.raises(ConfigError) as e:
        distil(cfg)
    message = str(e.value)
    assert "was written with other settings" in message
    for n in named:
        assert re.search(n, message), message
    assert message.count(" in the checkpoint, ") == len(named), message  # locations and knobs are not compared
    assert "Resume with the settings it was written with, or pass overwrite=true" in message
    assert ckpt.read_bytes() == before and not killed_run.exists()


def test_the_plan_checks_a_resume_before_any_model_reading_the_checkpoint_and_building_the_method_once(
        rte_teacher, tiny_bert, killed_run, monkeypatch):
    """pipelines.distil.plan: every check of a resume (the folder, the checkpoint's settings) before a model
    loads; the checkpoint's own state is read once (run checks its identity from the plan), the method built once."""
    import reptiledistil.methods as methods
    import reptiledistil.pipelines.distil as pipeline
    import reptiledistil.training.run_dir as run_dir
    from reptiledistil.config.schema import check_config

    reads, builds = [], []
    monkeypatch.setattr(run_dir, "saved_state", lambda path, _orig=run_dir.saved_state: reads.append(path) or _orig(path))
    monkeypatch.setattr(methods, "build_method", lambda cfg, _orig=methods.build_method: builds.append(1) or _orig(cfg))
    for name in ("load_finetuned", "build_student", "load_tokenizer"):
        monkeypatch.setattr(pipeline, name, lambda *a, **k: pytest.fail("the plan loaded a model"))
    overrides = _overrides(rte_teacher, tiny_bert, "train", killed_run, "resume=true")
    plan = pipeline.plan(check_config(compose_cfg("train", overrides)))
    plan.run_dir.held.close()  # the plan owns the output folder until run(plan) ends: not run here
    assert reads == [checkpoint_path(killed_run)] and builds == [1]
    assert plan.run_dir.resume_from == checkpoint_path(killed_run) and plan.run_dir.saved["identity"]["method"] == "reptile"
    assert plan.method.name == "reptile" and plan.method.shared  # share_forward=auto decided by the hardware (CPU)


def test_an_occupied_output_folder_is_refused_before_the_teacher_loads(rte_teacher, tiny_bert, tmp_path, monkeypatch):
    import reptiledistil.pipelines.distil as pipeline

    monkeypatch.setattr(pipeline, "load_finetuned", lambda *a, **k: pytest.fail("the teacher loaded first"))
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds results. Pass overwrite=true"):
        distil(compose_cfg("train", _overrides(rte_teacher, tiny_bert, "train", out)))
    assert (out / "metrics.json").read_text() == "{}"
