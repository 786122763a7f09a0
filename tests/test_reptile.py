"""The Reptile step of DistilModule against a straightforward reimplementation (deepcopy + fresh AdamW)."""

from __future__ import annotations

import copy
import functools

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import BertForSequenceClassification, get_linear_schedule_with_warmup

from conftest import tiny_bert_config
from reptiledistil.models.layer_map import layer_mapping, parameter_pairs
from reptiledistil.methods.losses import kd_loss
from reptiledistil.methods import Reptile
from reptiledistil.training.modules import DistilModule, DistilSettings, param_groups
from reptiledistil.methods.reptile_maths import fresh_adamw_step
from reptiledistil.data.tasks import get_task

LR_S, LR_T, WD, ALPHA, T, CLIP = 1e-3, 2e-3, 0.01, 0.5, 2.0, 1.0
TASK = get_task("rte")


def _bert(layers, seed, hidden=32, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = tiny_bert_config(layers, hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(cfg).to(dtype)


def student_kd_step(teacher, student, x, y, opt_s):
    """Step (c) of every teacher-updating method, written out: the student's clipped KD step against the
    (updated) teacher."""
    with torch.no_grad():
        t_logits = teacher(**x).logits
    opt_s.zero_grad()
    kd_loss(student(**x).logits, t_logits, y, ALPHA, T, False).backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
    opt_s.step()


def _batches(n=3, bs=4, seq=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, 2000, (bs, seq), generator=g),
             "attention_mask": torch.ones(bs, seq, dtype=torch.long),
             "token_type_ids": torch.zeros(bs, seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (bs,), generator=g)} for _ in range(n)]


def _adamw(model, lr):
    return torch.optim.AdamW(param_groups(model, WD), lr=lr, eps=1e-8, betas=(0.9, 0.999))


def reference(teacher, student, batches, mapping):
    """The algorithm written out plainly: copy the student, fresh AdamW, explicit loop over named params."""
    opt_t, opt_s = _adamw(teacher, LR_T), _adamw(student, LR_S)
    sch_t = get_linear_schedule_with_warmup(opt_t, 0, len(batches))
    sch_s = get_linear_schedule_with_warmup(opt_s, 0, len(batches))
    t_layer = dict(enumerate(teacher.bert.encoder.layer))
    for b in batches:
        x, y = {k: v for k, v in b.items() if k != "labels"}, b["labels"]
        teacher.eval()
        # (a) fast student: a deep copy, one step of a brand-new AdamW at the initial lr
        fast = copy.deepcopy(student)
        fast_opt = _adamw(fast, LR_S)
        with torch.no_grad():
            t_logits = teacher(**x).logits
        kd_loss(fast(**x).logits, t_logits, y, ALPHA, T, False).backward()
        torch.nn.utils.clip_grad_norm_(fast.parameters(), CLIP)
        fast_opt.step()
        # (b) teacher pseudo-gradient on mapped parameters
        fast_params = dict(fast.named_parameters())
        for name, p in teacher.named_parameters():
            p.grad = None
            if ".encoder.layer." not in name:
                p.grad = (p - fast_params[name]).detach()
        for i, js in enumerate(mapping):
            for j in js:
                for rel, p in t_layer[j].named_parameters():
                    p.grad = (p - fast_params[f"bert.encoder.layer.{i}.{rel}"]).detach()
        torch.nn.utils.clip_grad_norm_([p for p in teacher.parameters() if p.grad is not None], CLIP)
        opt_t.step()
        sch_t.step()
        # (c) real student step against the updated teacher
        student_kd_step(teacher, student, x, y, opt_s)
        sch_s.step()


def settings(**kw) -> DistilSettings:
    method = dict(name="reptile", teacher_lr=LR_T, update="pseudo_grad", epsilon=1.0, update_head=True,
                  share_forward=False)
    return DistilSettings(method=Reptile(**{**method, **kw}), alpha=ALPHA, temperature=T, warmup_ratio=0.0,
                          max_grad_norm=CLIP)


def ours(teacher, student, batches, mapping, fused=False, precision="32-true", plugins=None, **kw):
    adamw = functools.partial(torch.optim.AdamW, weight_decay=WD, eps=1e-8, betas=(0.9, 0.999), fused=fused)
    partial, partial_t = functools.partial(adamw, lr=LR_S), functools.partial(adamw, lr=LR_T)
    module = DistilModule(teacher, student, TASK, ["dev"], settings=settings(**kw), student_optimizer=partial,
                          teacher_optimizer=partial_t, pairs=parameter_pairs(teacher, student, mapping))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         **({"plugins": plugins} if plugins else {"precision": precision}))
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert module.outer_step == len(batches)
    # Lightning counts the student's optimizer steps (the teacher is stepped outside it)
    if not module.skipped_steps:
        assert trainer.global_step == len(batches)
    return module


def _max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("strategy, share_forward, fused", [
    ("skip", False, False), ("skip", True, False), ("skip", True, True),  # fused AdamW: the configs' default
    ("both", False, False), ("both", True, True), ("last", True, False)])
def test_reptile_step_matches_reference(strategy, share_forward, fused):
    # Fused AdamW rounds differently; over several steps Adam amplifies that on parameters whose true
    # gradient is zero (attention key biases: softmax ignores them), so the fused case checks one step.
    teacher, student, batches = _bert(4, 0), _bert(2, 1), _batches(n=1 if fused else 3)
    mapping = layer_mapping(strategy, 4, 2)
    t0 = copy.deepcopy(teacher)
    t_ref, s_ref = copy.deepcopy(teacher), copy.deepcopy(student)
    reference(t_ref, s_ref, batches, mapping)
    ours(teacher, student, batches, mapping, fused=fused, share_forward=share_forward)
    assert _max_diff(teacher, t_ref) < 1e-6
    assert _max_diff(student, s_ref) < 1e-6
    # the teacher really moved, and only its mapped layers did
    mapped = {j for js in mapping for j in js}
    for j in range(4):
        moved = _max_diff(teacher.bert.encoder.layer[j], t0.bert.encoder.layer[j])
        assert (moved > 1e-5) == (j in mapped), (j, moved)
    assert _max_diff(teacher.classifier, t0.classifier) > 1e-5


def test_interpolate_update_moves_mapped_teacher_toward_fast_student():
    teacher, student, batches = _bert(4, 0), _bert(2, 1), _batches(n=1)
    mapping = layer_mapping("skip", 4, 2)
    t0, s0 = copy.deepcopy(teacher), copy.deepcopy(student)
    ours(teacher, student, batches, mapping, update="interpolate", epsilon=0.25)
    # expected: t + 0.25 * (s_fast - t), s_fast from the closed form on the clipped first gradient
    x, y = {k: v for k, v in batches[0].items() if k != "labels"}, batches[0]["labels"]
    with torch.no_grad():
        t_logits = t0.eval()(**x).logits
    params = list(s0.parameters())
    grads = torch.autograd.grad(kd_loss(s0(**x).logits, t_logits, y, ALPHA, T, False), params)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    grads = [g * min(1.0, CLIP / (norm.item() + 1e-6)) for g in grads]  # clip_grad_norm_'s rule
    wds = [0.0 if (n.endswith("bias") or "LayerNorm" in n) else WD for n, _ in s0.named_parameters()]
    fast = dict(zip([n for n, _ in s0.named_parameters()], fresh_adamw_step(params, grads, LR_S, wds)))
    want = t0.bert.encoder.layer[3].output.dense.weight + 0.25 * (
        fast["bert.encoder.layer.1.output.dense.weight"] - t0.bert.encoder.layer[3].output.dense.weight)
    assert torch.allclose(teacher.bert.encoder.layer[3].output.dense.weight, want, atol=1e-6)
    assert torch.equal(teacher.bert.encoder.layer[0].output.dense.weight, t0.bert.encoder.layer[0].output.dense.weight)


def test_fresh_adamw_step_equals_torch_adamw():
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(7)]
    grads = [torch.randn(5, 3), torch.zeros(7)]
    grads[1][0] = 1e-12  # tiny gradients: g / (|g| + eps) is where a sloppy formula drifts
    consumed = [g.clone() for g in grads]
    got = fresh_adamw_step(params, consumed, 1e-3, [0.01, 0.0])
    assert consumed == [None, None]  # the gradients' memory was released as they were used
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    torch.optim.AdamW([{"params": [ps[0]], "weight_decay": 0.01}, {"params": [ps[1]], "weight_decay": 0.0}], lr=1e-3).step()
    for a, b in zip(got, ps):
        assert torch.equal(a, b.detach())
    assert torch.equal(params[1], params[1].clone()) and not torch.equal(got[0], params[0])


def test_a_method_built_in_code_is_checked_like_the_config_and_its_words_normalised():
    """bench/step_cost.py and these tests build Reptile in code: share_forward=True must mean the shared forward."""
    from reptiledistil.core.errors import ConfigError

    kw = dict(name="reptile", teacher_lr=LR_T, update="pseudo_grad", epsilon=1.0, update_head=True)
    assert Reptile(**kw, share_forward=True).shared and not Reptile(**kw, share_forward=False).shared
    with pytest.raises(ConfigError, match=r"method\.update=sgd is not one of pseudo_grad, interpolate"):
        Reptile(**{**kw, "update": "sgd"}, share_forward="auto")
