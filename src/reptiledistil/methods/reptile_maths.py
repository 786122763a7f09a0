"""The Reptile teacher update, as pure tensor functions (no models, no optimizers).

Per batch, the paper takes one KD step of a *fresh* AdamW on a copy of the student ("fast" student) and
moves the teacher towards it. A fresh AdamW's first step has a closed form, so the fast student is just a
list of tensors:  theta' = theta * (1 - lr * wd) - lr * g / (|g| + eps)   (m_hat = g, v_hat = g^2).
The teacher's pseudo-gradient is  theta_teacher - theta'[mapped]  (first-order only).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.layer_map import ParamPairs


@torch.no_grad()
def fresh_adamw_step(params: Sequence[torch.Tensor], grads: list[torch.Tensor | None], lr: float,
                     weight_decays: Sequence[float], betas: tuple[float, float] = (0.9, 0.999),
                     eps: float = 1e-8) -> list[torch.Tensor]:
    """The parameters after one step of a newly built torch.optim.AdamW, without touching `params`.

    Written with the same operations in the same order as torch's AdamW so the result matches it to
    rounding. A parameter whose grad is None is skipped by AdamW (no decay either) and comes back as is.
    Consumes `grads` (its entries become None as they are used), so the gradients and the result are
    never all in memory at once.
    """
    beta1, beta2 = betas
    step_size = lr / (1 - beta1)
    bc2_sqrt = (1 - beta2) ** 0.5
    out = []
    for i, (p, wd) in enumerate(zip(params, weight_decays)):
        g, grads[i] = grads[i], None
        if g is None:
            out.append(p.detach().clone())  # a copy: callers may reuse the result's memory
            continue
        new = p.detach().mul(1 - lr * wd) if wd else p.detach().clone()
        denom = torch.zeros_like(g).addcmul_(g, g, value=1 - beta2).sqrt_().div_(bc2_sqrt).add_(eps)
        out.append(new.addcdiv_(g.mul_(1 - beta1), denom, value=-step_size))
        del g, denom
    return out


@torch.no_grad()
def set_teacher_pseudo_grads(pairs: ParamPairs, fast_student: list[torch.Tensor]) -> None:
    """teacher.grad = theta_teacher - theta_fast_student[mapped] for every mapped teacher parameter.

    Unmapped teacher parameters keep grad None, so their AdamW leaves them (and their decay) alone.
    Consumes `fast_student`: a fast tensor becomes the gradient of the last teacher parameter it is paired
    with ((-f) + t is exactly t - f), so no second copy of the student is made.
    """
    last_use = {si: j for j, si in enumerate(pairs.student_index)}
    for j, (p, si) in enumerate(zip(pairs.teacher_params, pairs.student_index)):
        f = fast_student[si]
        if last_use[si] == j:
            p.grad = f.neg_().add_(p.detach())
            fast_student[si] = None
        else:
            p.grad = p.detach() - f


@torch.no_grad()
def interpolate_teacher_(pairs: ParamPairs, fast_student: Sequence[torch.Tensor], epsilon: float) -> None:
    """Classic Reptile: theta_teacher += epsilon * (theta_fast_student - theta_teacher) on mapped parameters."""
    fast = [fast_student[i] for i in pairs.student_index]
    teacher = [p.data for p in pairs.teacher_params]
    torch._foreach_lerp_(teacher, fast, epsilon)
