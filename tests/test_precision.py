"""Mixed precision: bf16 and fp16 (loss scaling) steps against fp32, overflow skips, fp32 loading, device checks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from transformers import BertModel

import reptiledistil.core.hardware as hardware
from conftest import compose_cfg, quick, tiny_bert_config
from reptiledistil.core.errors import ConfigError
from reptiledistil.core.hardware import resolve_hardware
from reptiledistil.models.layer_map import layer_mapping
from reptiledistil.models.loading import build_student, load_finetuned, load_for_finetuning
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.teacher import finetune
from reptiledistil.data.tasks import get_task
from test_reptile import LR_S, LR_T, _batches, _bert, ours

MAPPING = layer_mapping("skip", 4, 2)


def _delta(after, before):
    return torch.cat([(p - q).flatten() for p, q in zip(after.parameters(), before.parameters())])


def _compare(after, ref_after, before):
    """cosine and norm ratio of the updates, and the largest elementwise difference of the weights."""
    d, r = _delta(after, before), _delta(ref_after, before)
    cos = torch.nn.functional.cosine_similarity(d, r, dim=0).item()
    return cos, (d.norm() / r.norm()).item(), (d - r).abs().max().item()


def _fp16(init_scale: float = 2.0**8):
    return [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))]


@pytest.mark.parametrize("precision, fused", [("bf16-mixed", True), ("bf16-mixed", False),
                                              ("16-mixed", True), ("16-mixed", False)])
def test_mixed_precision_step_agrees_with_fp32(precision, fused):
    """One Reptile step (fast student, teacher update, student step) under autocast against fp32.

    Tolerance: a fresh AdamW's first step is lr * g / (|g| + eps), nearly lr * sign(g) per weight, so a
    half-precision rounding that flips the sign of a near-zero gradient entry moves that weight by up to
    2 * lr; nothing else may differ by more. The updates as a whole must point the same way (cosine) and
    have the same size (norm ratio): a gradient left loss-scaled, or a step half applied, fails those.
    """
    teacher, student, batches = _bert(4, 0), _bert(2, 1), _batches(n=1)
    t0, s0 = copy.deepcopy(teacher), copy.deepcopy(student)
    t32, s32 = copy.deepcopy(teacher), copy.deepcopy(student)
    ours(t32, s32, batches, MAPPING, fused=fused)
    kw = {"plugins": _fp16()} if precision == "16-mixed" else {"precision": precision}
    module = ours(teacher, student, batches, MAPPING, fused=fused, **kw)
    assert module.skipped_steps == 0
    for net, ref, before, lr in ((student, s32, s0, LR_S), (teacher, t32, t0, LR_T)):
        cos, ratio, worst = _compare(net, ref, before)
        assert all(p.dtype == torch.float32 for p in net.parameters()), "master weights stay fp32"
        assert cos > 0.95 and 0.9 < ratio < 1.1, (precision, cos, ratio)
        assert worst <= 2 * lr * 1.01, (precision, worst, lr)


def test_fp16_overflow_in_fast_step_skips_both_networks():
    teacher, student, batches = _bert(4, 0), _bert(2, 1), _batches(n=1)
    t0, s0 = copy.deepcopy(teacher), copy.deepcopy(student)
    plugins = _fp16(init_scale=2.0**60)  # far beyond fp16's range: the scaled backward overflows
    module = ours(teacher, student, batches, MAPPING, fused=True, plugins=plugins)
    assert module.skipped_steps == 1
    assert _delta(teacher, t0).abs().max() == 0 and _delta(student, s0).abs().max() == 0
    assert plugins[0].scaler.get_scale() == 2.0**59, "the loss scale backs off"


class OverflowInRealStep:
    """Makes the real student step's gradient infinite after a clean fast step (as fp16 can)."""

    def manual_backward(self, loss, *args, **kwargs):
        super().manual_backward(loss, *args, **kwargs)
        next(self.student.parameters()).grad[0, 0] = float("inf")


@pytest.mark.parametrize("fused", [True, False])
def test_fp16_overflow_in_real_step_undoes_the_teacher_update(monkeypatch, fused):
    import reptiledistil.training.modules as module_mod

    patched = type("Patched", (OverflowInRealStep, module_mod.DistilModule), {})
    monkeypatch.setattr("test_reptile.DistilModule", patched)
    teacher, student, batches = _bert(4, 0), _bert(2, 1), _batches(n=1)
    t0, s0 = copy.deepcopy(teacher), copy.deepcopy(student)
    module = ours(teacher, student, batches, MAPPING, fused=fused, plugins=_fp16())
    assert module.skipped_steps == 1
    assert _delta(teacher, t0).abs().max() == 0, "the teacher's step is undone, not applied half-way"
    assert _delta(student, s0).abs().max() == 0
    opt_t = module.optimizers()[1].optimizer
    assert not opt_t.state, "the teacher's AdamW state is back to before the step"


def test_models_load_in_fp32_whatever_the_checkpoint_dtype(tmp_path, tokenizer):
    torch.manual_seed(0)
    BertModel(tiny_bert_config(4)).half().save_pretrained(tmp_path / "fp16")
    tokenizer.save_pretrained(tmp_path / "fp16")
    task = get_task("rte")
    teacher = load_for_finetuning(str(tmp_path / "fp16"), task)
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}
    teacher.half().save_pretrained(tmp_path / "tuned")
    assert {p.dtype for p in load_finetuned(str(tmp_path / "tuned"), task).parameters()} == {torch.float32}
    student = build_student("teacher_layers", str(tmp_path / "fp16"), task, 2, "skip")
    assert {p.dtype for p in student.parameters()} == {torch.float32}


# --- the device and precision checks, before anything is loaded -------------------------------------------

@pytest.mark.parametrize("accelerator, precision, match", [
    ("gpu", "32-true", "no GPU found; use trainer=cpu or trainer=default"),
    ("cuda", "bf16-mixed", "no GPU found"),
    ("tpu", "32-true", "trainer.accelerator='tpu' is not supported"),
    ("cpu", "fp8", "trainer.precision='fp8' is not supported; use one of auto, 32-true, bf16-mixed, 16-mixed"),
    ("cpu", "bf16-true", "fp32 master weights"),
    ("cpu", "16-mixed", "16-mixed .* is for GPUs; on a CPU use trainer.precision=bf16-mixed"),
])
def test_bad_device_or_precision_refused(monkeypatch, accelerator, precision, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=match):
        resolve_hardware(accelerator, precision)


@pytest.mark.parametrize("has_bf16, want", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_cpu_follows_bf16_support(monkeypatch, has_bf16, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: has_bf16)
    hw = resolve_hardware("auto", "auto")
    assert (hw.accelerator, hw.precision) == ("cpu", want)
    assert ("32-true to opt out" in hw.note) == has_bf16
    assert resolve_hardware("cpu", "32").precision == "32-true"  # aliases


def test_train_on_gpu_without_gpu_refused_before_loading(monkeypatch, tmp_path, glue_dir):
    import reptiledistil.pipelines.distil as pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline, "load_finetuned", lambda *a, **k: pytest.fail("model loaded"))
    overrides = [o for o in quick(tmp_path, glue_dir) if not o.startswith("trainer.accelerator")]
    cfg = compose_cfg("train", overrides + ["trainer=gpu", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match="no GPU found"):
        distil(cfg)
    assert not (tmp_path / "out").exists()


# --- the pipeline under bf16-mixed, as `python train.py trainer.precision=bf16-mixed` runs it ----------------

@pytest.fixture(scope="module")
def bf16_teacher(tmp_path_factory, tiny_bert):
    from conftest import write_glue

    tmp = tmp_path_factory.mktemp("bf16")
    glue = write_glue(tmp / "glue_data")
    cfg = compose_cfg("finetune_teacher", quick(tmp, glue) + [
        "task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={tmp / 'teacher'}", "trainer.precision=bf16-mixed"])
    summary = finetune(cfg)
    assert summary["best"]["dev_accuracy"] >= 0.0
    assert summary["hardware"] == {"accelerator": "cpu", "precision": "bf16-mixed"}  # what ran, recorded
    return tmp, glue


@pytest.mark.parametrize("method", ["reptile", "kd", "finetune", "metadistil"])
def test_every_method_trains_under_bf16(bf16_teacher, tiny_bert, method):
    tmp, glue = bf16_teacher
    out = tmp / method
    quiz = ["method.quiz_size=4"] if method == "metadistil" else []  # 24 synthetic training examples
    cfg = compose_cfg("train", quick(tmp, glue) + [
        "task=rte", f"teacher_dir={tmp / 'teacher'}", "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2",
        f"output_dir={out}", f"method={method}", "trainer.precision=bf16-mixed", *quiz])
    assert cfg.student_optimizer.fused and cfg.teacher_optimizer.fused  # the configs' default, kept under bf16
    distil(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and len(metrics["history"]) == 1
    assert metrics["hardware"]["precision"] == "bf16-mixed"
