"""Knowledge-distillation losses as pure functions of logits, and the gradient clipping the loop and the methods share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fp32_or_wider(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) are computed on in fp32; fp64 stays fp64 (gradient checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def task_loss(student_logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Cross-entropy on class ids, or MSE on the score for regression (STS-B). Batch mean."""
    if regression:
        return F.mse_loss(_fp32_or_wider(student_logits.squeeze(-1)), labels.to(_fp32_or_wider(student_logits).dtype))
    return F.cross_entropy(_fp32_or_wider(student_logits), labels)


def soft_kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, regression: bool) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean; for regression MSE(s, t).

    The T^2 keeps gradient sizes independent of T (Hinton et al.). For a single regression output,
    the KL of a one-way softmax is identically zero, so the score itself is matched:
    T^2 * MSE(s/T, t/T) = MSE(s, t), which is why T drops out there.
    """
    s, t = _fp32_or_wider(student_logits), _fp32_or_wider(teacher_logits)
    if regression:
        return F.mse_loss(s, t)
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    p_t = F.softmax(t / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p_s, p_t, reduction="batchmean")


def kd_loss_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  alpha: float, temperature: float, regression: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, task term, KD term) with L = (1 - alpha) * task_loss(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
    (MSE(s, t) for regression). The unweighted terms are returned for logging."""
    task = task_loss(student_logits, labels, regression)
    soft = soft_kd_term(student_logits, teacher_logits, temperature, regression)
    return (1 - alpha) * task + alpha * soft, task, soft


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            alpha: float, temperature: float, regression: bool) -> torch.Tensor:
    """L = (1 - alpha) * task_loss(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))  (MSE(s, t) for regression)."""
    return kd_loss_terms(student_logits, teacher_logits, labels, alpha=alpha, temperature=temperature,
                         regression=regression)[0]


@torch.no_grad()
def clip_grads_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place to global L2 norm <= max_norm, exactly as torch.nn.utils.clip_grad_norm_. Returns the norm."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm and max_norm > 0:
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef)
    return total
