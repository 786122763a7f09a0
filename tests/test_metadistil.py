"""MetaDistil's second-order teacher update: the maths against finite differences, the module's step against the
algorithm written out plainly, the pilot step size at 0, bf16, and DDP (two CPU processes stay in sync)."""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from reptiledistil.methods.losses import kd_loss, task_loss
from reptiledistil.methods.metadistil_maths import pilot_update, quiz_loss, second_order_attention, teacher_meta_grads
from reptiledistil.methods import MetaDistil
from reptiledistil.training.modules import DistilModule, DistilSettings, param_groups
from test_reptile import ALPHA, CLIP, LR_S, LR_T, TASK, T, WD, _batches, _max_diff, student_kd_step
from test_reptile import _bert as _tiny_bert

ROOT = Path(__file__).resolve().parents[1]


def _bert(layers, seed, dtype=torch.float32):
    return _tiny_bert(layers, seed, hidden=16, dtype=dtype)  # narrow: the fp64 finite differences stay quick


def _split(batch):
    return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


def objective(teacher, student, batch, quiz, pilot_lr, weight):
    """F(t) = CE(s'(t)(quiz)) + weight * CE(t(x), y), s'(t) = s - pilot_lr * grad_s KD(s(x), t(x), y)."""
    x, y = _split(batch)
    with second_order_attention():  # the forwards that will be differentiated twice
        t_logits = teacher(**x).logits
        pilot = pilot_update(kd_loss(student(**x).logits, t_logits, y, ALPHA, T, False),
                             list(student.named_parameters()), pilot_lr)
        qx, qy = _split(quiz)
        return quiz_loss(student, pilot, qx, qy, False) + weight * task_loss(t_logits, y, False)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_meta_gradient_matches_finite_differences(weight):
    """grad_t F by autograd through the pilot step, against central differences of F along random directions
    (fp64). With weight 0 the whole gradient is the second-order term."""
    teacher, student = _bert(2, 0, torch.float64), _bert(1, 1, torch.float64)
    teacher.eval()
    batch, quiz = _batches(n=2)
    pilot_lr = 0.5  # large, so the meta-gradient is far from zero and a wrong one cannot pass
    params = list(teacher.parameters())
    grads = teacher_meta_grads(objective(teacher, student, batch, quiz, pilot_lr, weight), params)
    assert sum(float(g.norm()) for g in grads) > 1e-3
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        want = sum(float((gr * d).sum()) for gr, d in zip(grads, direction))
        eps, values = 1e-5, []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(sign * eps * d)
            with torch.enable_grad():  # F needs the student's gradient, even where the teacher's is not wanted
                values.append(float(objective(teacher, student, batch, quiz, pilot_lr, weight)))
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(sign * eps * d)
        got = (values[0] - values[1]) / (2 * eps)
        assert abs(got - want) <= 1e-6 + 1e-5 * abs(want), (got, want)


def test_pilot_step_zero_leaves_only_the_teachers_task_gradient():
    teacher, student = _bert(2, 0), _bert(1, 1)
    teacher.eval()
    batch, quiz = _batches(n=2)
    params = list(teacher.parameters())
    got = teacher_meta_grads(objective(teacher, student, batch, quiz, 0.0, 0.7), params)
    x, y = _split(batch)
    want = torch.autograd.grad(0.7 * task_loss(teacher(**x).logits, y, False), params, allow_unused=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=0, atol=1e-7)


def settings(**kw) -> DistilSettings:
    method = dict(name="metadistil", teacher_lr=LR_T, pilot_lr=0.1, quiz_size=4, teacher_task_weight=0.5)
    return DistilSettings(method=MetaDistil(**{**method, **kw}), alpha=ALPHA, temperature=T, warmup_ratio=0.0,
                          max_grad_norm=CLIP)


def run_module(teacher, student, batches, quizzes, precision="32-true", **kw):
    adamw = functools.partial(torch.optim.AdamW, weight_decay=WD, eps=1e-8, betas=(0.9, 0.999))
    module = DistilModule(teacher, student, TASK, ["dev"], settings=settings(**kw),
                          student_optimizer=functools.partial(adamw, lr=LR_S),
                          teacher_optimizer=functools.partial(adamw, lr=LR_T), quiz_batch=lambda step, rank: quizzes[step])
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, precision=precision)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert module.outer_step == len(batches) and trainer.global_step == len(batches)
    return module


def reference(teacher, student, batches, quizzes, pilot_lr=0.1, weight=0.5):
    """The algorithm written out: pilot step, teacher AdamW on the clipped meta-gradient, then the student's
    KD step against the updated teacher (constant learning rates: no warmup, and the linear decay is checked
    by using each optimizer's first step only where it matters)."""
    opt_t = torch.optim.AdamW(param_groups(teacher, WD), lr=LR_T, eps=1e-8)
    opt_s = torch.optim.AdamW(param_groups(student, WD), lr=LR_S, eps=1e-8)
    sch_t = torch.optim.lr_scheduler.LambdaLR(opt_t, lambda k: 1 - k / len(batches))
    sch_s = torch.optim.lr_scheduler.LambdaLR(opt_s, lambda k: 1 - k / len(batches))
    for batch, quiz in zip(batches, quizzes):
        teacher.eval()
        grads = teacher_meta_grads(objective(teacher, student, batch, quiz, pilot_lr, weight), list(teacher.parameters()))
        for p, g in zip(teacher.parameters(), grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(teacher.parameters(), CLIP)
        opt_t.step()
        opt_t.zero_grad()
        student_kd_step(teacher, student, *_split(batch), opt_s)
        sch_t.step()
        sch_s.step()


def test_module_step_matches_the_algorithm_written_out():
    teacher, student = _bert(2, 0), _bert(1, 1)
    batches, quizzes = _batches(n=3), _batches(n=3, seed=5)
    t0 = copy.deepcopy(teacher)
    t_ref, s_ref = copy.deepcopy(teacher), copy.deepcopy(student)
    reference(t_ref, s_ref, batches, quizzes)
    module = run_module(teacher, student, batches, quizzes)
    assert _max_diff(teacher, t_ref) < 1e-6 and _max_diff(student, s_ref) < 1e-6
    assert _max_diff(teacher, t0) > 1e-4  # every teacher parameter may move: the teacher really learnt
    assert {"train/quiz_loss", "grad_norm/teacher_meta"} <= set(module.teacher_record)
    assert not any(p.requires_grad for p in teacher.parameters())  # frozen again between steps


def test_pilot_lr_zero_in_the_module_gives_the_teacher_only_its_task_gradient():
    """With the pilot step at 0 the teacher's update must not depend on the quiz batch at all."""
    batches = _batches(n=1)
    after = []
    for quiz_seed in (5, 6):
        teacher, student = _bert(2, 0), _bert(1, 1)
        run_module(teacher, student, batches, _batches(n=1, seed=quiz_seed), pilot_lr=0.0)
        after.append(teacher)
    assert _max_diff(*after) == 0.0
    # and it is the AdamW step of the teacher's own (weighted) task loss
    teacher = _bert(2, 0).eval()
    x, y = _split(batches[0])
    opt = torch.optim.AdamW(param_groups(teacher, WD), lr=LR_T, eps=1e-8)
    (0.5 * task_loss(teacher(**x).logits, y, False)).backward()
    torch.nn.utils.clip_grad_norm_(teacher.parameters(), CLIP)
    opt.step()
    assert _max_diff(after[0], teacher) < 1e-6


def test_bf16_step_agrees_with_fp32():
    """One MetaDistil step under bf16 autocast against fp32: the updates point the same way and have the same
    size; a fresh AdamW step is about lr * sign(g), so a single weight may differ by up to 2 * lr."""
    batches, quizzes = _batches(n=1), _batches(n=1, seed=5)
    nets = {}
    for precision in ("32-true", "bf16-mixed"):
        teacher, student = _bert(2, 0), _bert(1, 1)
        run_module(teacher, student, batches, quizzes, precision=precision)
        assert all(p.dtype == torch.float32 for p in teacher.parameters())
        nets[precision] = (teacher, student)
    for i, lr in ((0, LR_T), (1, LR_S)):
        before = torch.cat([p.detach().flatten() for p in (_bert(2, 0), _bert(1, 1))[i].parameters()])
        d32, d16 = (torch.cat([p.detach().flatten() for p in nets[k][i].parameters()]) - before for k in nets)
        cos = torch.nn.functional.cosine_similarity(d32, d16, dim=0).item()
        assert cos > 0.9 and 0.85 < (d16.norm() / d32.norm()).item() < 1.15, (i, cos)
        assert (d32 - d16).abs().max().item() <= 2 * lr * 1.01


def test_ddp_two_processes_keep_one_teacher(tmp_path):
    """Two DDP processes (gloo) on different batches: each computes its own meta-gradient, the teacher takes their
    mean, so both processes hold the same teacher (and student) after training, and the teacher moved."""
    out = tmp_path / "ddp.json"
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_metadistil_check.py"), str(out)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])})
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world_size"] == 2 and got["ranks_saw_different_batches"]
    assert got["teacher_max_diff_between_ranks"] == 0.0 and got["student_max_diff_between_ranks"] == 0.0
    assert got["teacher_moved"] > 1e-4
