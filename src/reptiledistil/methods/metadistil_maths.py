"""MetaDistil's teacher update (Zhou et al., ACL 2022, "BERT Learns to Teach"), second order.

Per batch x (labels y) and quiz batch q (held out from training), with KD loss L and task loss CE:
  pilot student      s'(t) = s - lambda * grad_s L(s(x), t(x), y)             (one SGD step, graph kept)
  teacher objective  F(t)  = CE(s'(t)(q), y_q) + w * CE(t(x), y)
  teacher gradient   grad_t F = -lambda * (d^2 L / dt ds) . grad_s' CE(s'(q), y_q) + w * grad_t CE(t(x), y)
The first term is the meta-gradient: how moving the teacher changes what the student learns from it, judged
on data neither has trained on. Autograd computes it by differentiating through the pilot step
(create_graph), with the pilot student as a dict of tensors run by torch.func.functional_call: no model copy.
With lambda = 0 only the teacher's own task loss moves it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from .losses import task_loss


def second_order_attention():
    """Attention kernels that can be differentiated twice, for every forward the meta-gradient goes through: the
    fused flash kernels of scaled_dot_product_attention (CPU and GPU) and the memory-efficient one (GPU) have no
    double backward; the math kernel has."""
    return sdpa_kernel([SDPBackend.MATH])


def pilot_update(loss: torch.Tensor, named_params: Sequence[tuple[str, torch.Tensor]],
                 step_size: float) -> dict[str, torch.Tensor]:
    """theta' = theta - step_size * grad(loss, theta) for every parameter, differentiable in whatever `loss`
    depends on (here the teacher), so a later loss on theta' can be differentiated back through this step."""
    names = [n for n, _ in named_params]
    params = [p for _, p in named_params]
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    return {n: p if g is None else p - step_size * g for n, p, g in zip(names, params, grads)}


def quiz_loss(student: nn.Module, pilot: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
              labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The pilot student's task loss on a quiz batch, dropout off (as the reference code's quiz forward)."""
    was_training = student.training
    student.eval()
    try:
        logits = functional_call(student, pilot, args=(), kwargs=inputs).logits
    finally:
        student.train(was_training)
    return task_loss(logits, labels, regression)


def teacher_meta_grads(objective: torch.Tensor, teacher_params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """grad_t F for every teacher parameter; zeros where F does not depend on it (e.g. an unused pooler)."""
    grads = torch.autograd.grad(objective, list(teacher_params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(teacher_params, grads)]
