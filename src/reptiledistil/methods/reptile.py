"""ReptileDistil (Ma et al., COLING 2022): the teacher moves towards a one-step "fast" student between KD steps.

One training step (batch x, y):
  (a) g1 = grad_s L(s(x), t(x), y); clipped; s' = one fresh-AdamW step from s (closed form, no copy of the model)
  (b) pseudo_grad: teacher.grad = t[mapped] - s'; clipped; teacher AdamW step
      interpolate: t[mapped] += epsilon * (s' - t[mapped]) (classic Reptile, no optimizer)
  (c) the loop: the student's KD step against the updated teacher
Under fp16 a batch whose g1 overflows is skipped; the teacher's step is undone if the student's g2 overflows.
The tensor maths is in reptiledistil/reptile.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from .base import Loop, Method, TeacherStep, setting, snapshot


@dataclass(frozen=True)
class Reptile(Method):
    update: str = setting("pseudo_grad: the teacher's AdamW on theta_t - theta_fast (the paper); interpolate: "
                          "theta_t += epsilon * (theta_fast - theta_t)", choices=("pseudo_grad", "interpolate"))
    epsilon: float = setting("update=interpolate: the fraction of the way the teacher moves towards the fast "
                             "student, 1 lands on it; pass e.g. method.epsilon=0.5", low=0, low_open=True, high=1)
    update_head: bool = setting("whether the teacher's task head is paired with the student's and moves too")
    share_forward: str = setting("one student forward for the fast and the real step; auto: shared on CPU, "
                                 "separate on GPU", choices=("auto", "true", "false"))

    key: ClassVar[str] = "reptile"
    title: ClassVar[str] = "ReptileDistil"
    description: ClassVar[str] = ("ReptileDistil (Ma et al., COLING 2022): KD while the teacher learns to teach by "
                                  "Reptile updates")
    teacher_learns: ClassVar[bool] = True

    @property
    def teacher_optimized(self) -> bool:
        return self.update == "pseudo_grad"  # interpolate moves the teacher without an optimizer

    def for_hardware(self, hw) -> Reptile:
        """`share_forward=auto`: shared on CPU, where it saves a student forward (measured faster,
        docs/performance.md); separate on a GPU, where the one measurement we have (an H100) was faster."""
        if self.share_forward != "auto":
            return self
        return dataclasses.replace(self, share_forward="true" if hw.accelerator == "cpu" else "false")

    @property
    def shared(self) -> bool:
        if self.share_forward == "auto":
            raise RuntimeError("method.share_forward=auto is decided by the hardware: use Reptile.for_hardware(hw).")
        return self.share_forward == "true"

    def map_pairs(self, pairs, teacher):
        return pairs if self.update_head else pairs.without_head(teacher.base_model_prefix)  # keeps its classifier

    def fast_student(self, loop: Loop, inputs: dict, labels, s_logits) -> tuple[list | None, object]:
        """(a) (the student's parameters after one step of a fresh AdamW on the KD loss against the current
        teacher, the clipped gradient's norm). Closed form: no copy of the model, no optimizer built.
        The parameters are None when the (fp16) gradient overflowed."""
        import torch

        from .losses import clip_grads_
        from .reptile_maths import fresh_adamw_step

        loss = loop.loss(s_logits, loop.teacher_logits(inputs), labels)
        scaler = loop.grad_scaler
        if scaler is not None:  # fp16: scale so small gradients survive the half-precision backward
            loss = scaler.scale(loss)
        params, hp = trained_parameters(loop)
        grads = list(torch.autograd.grad(loss, params, retain_graph=self.shared, allow_unused=True))
        present = [g for g in grads if g is not None]
        loop.average_over_processes_(present)  # autograd.grad bypasses DDP
        if scaler is not None:
            torch._foreach_div_(present, scaler.get_scale())
        norm = clip_grads_(present, loop.max_grad_norm)
        if scaler is not None and not torch.isfinite(norm):
            return None, norm
        lr, _, betas, eps = hp[0]
        return fresh_adamw_step(params, grads, lr, [h[1] for h in hp], betas=betas, eps=eps), norm

    def teacher_step(self, loop: Loop, inputs: dict, labels, optimizer) -> TeacherStep:
        from .losses import clip_grads_
        from .reptile_maths import interpolate_teacher_, set_teacher_pseudo_grads

        s_logits = loop.student(**inputs).logits
        fast, fast_norm = self.fast_student(loop, inputs, labels, s_logits)
        record = {"grad_norm/fast_step": fast_norm}
        if fast is None:  # fp16 overflow in g1: neither network moves; smaller loss scale next time
            return TeacherStep(skipped=True, record=record)
        pairs = loop.pairs
        # fp16: g2 may still overflow, and then this batch must not count at all
        undo = snapshot(pairs.teacher_params, optimizer) if loop.grad_scaler is not None else None
        if optimizer is None:
            interpolate_teacher_(pairs, fast, self.epsilon)
        else:
            # Stepped directly, not through Lightning: the pseudo-gradients are exact fp32 values that were
            # never loss-scaled, so the fp16 scaler must not unscale them.
            set_teacher_pseudo_grads(pairs, fast)
            record["grad_norm/teacher_pseudo"] = clip_grads_([p.grad for p in pairs.teacher_params],
                                                             loop.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # free the pseudo-gradients until the next step
        del fast
        # Not shared: the loop runs a fresh forward (a new dropout mask), as the reference code does
        return TeacherStep(student_logits=s_logits if self.shared else None, undo=undo, record=record)


def trained_parameters(loop: Loop) -> tuple[list, list[tuple]]:
    """The student's parameters its optimizer trains, in the model's order, each with its (initial learning rate,
    weight decay, betas, eps): the fresh AdamW of the fast step takes the real optimizer's settings."""
    groups = loop.student_param_groups()
    hp = {p: (g.get("initial_lr", g["lr"]), g["weight_decay"], g["betas"], g["eps"]) for g in groups for p in g["params"]}
    params = [p for _, p in loop.student.named_parameters() if p in hp]
    return params, [hp[p] for p in params]
