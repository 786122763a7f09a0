"""MetaDistil (Zhou et al., ACL 2022, "BERT Learns to Teach"): the teacher learns, second order, from how a pilot
student update would do on held-out quiz data.

One training step (batch x, y; quiz batch q from the data module's quiz set):
  (a) pilot s' = s - pilot_lr * grad_s L(s(x), t(x), y), differentiable in the teacher
  (b) teacher.grad = grad_t [CE(s'(q)) + w * CE(t(x), y)]; clipped; teacher AdamW step
  (c) the loop: the real student step against the updated teacher (a fresh student forward)
The tensor maths is in reptiledistil/metadistil.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Loop, Method, TeacherStep, setting
from ..core.errors import ConfigError


@dataclass(frozen=True)
class MetaDistil(Method):
    pilot_lr: float = setting("the pilot student's SGD step size; 0 leaves only the teacher's own task loss", low=0)
    quiz_size: int = setting("the training examples held out for the teacher's quiz (seeded)", low=1)
    teacher_task_weight: float = setting("the weight of the teacher's own task loss in its objective; 0 is the "
                                         "reference code", low=0)

    key: ClassVar[str] = "metadistil"
    title: ClassVar[str] = "MetaDistil"
    description: ClassVar[str] = ("MetaDistil (Zhou et al., ACL 2022): KD while the teacher learns to teach by "
                                  "meta-gradients through a pilot student update")
    teacher_learns: ClassVar[bool] = True

    @property
    def teacher_optimized(self) -> bool:
        return True

    def check(self, cfg) -> None:
        super().check(cfg)
        if str(cfg.trainer.get("precision", "auto")) in ("16", "16-mixed"):
            raise ConfigError("method=metadistil does not run under fp16 (trainer.precision=16-mixed): loss scaling "
                              "through its second-order step is not supported. Use trainer.precision=bf16-mixed or "
                              "32-true.")

    def quiz_examples(self) -> int:
        return int(self.quiz_size)

    def watched(self, teacher, pairs) -> list:
        return list(teacher.named_parameters())  # every teacher parameter learns, mapped or not

    def teacher_step(self, loop: Loop, inputs: dict, labels, optimizer) -> TeacherStep:
        """(a) and (b): the teacher steps on grad_t [CE(s'(quiz)) + w * CE(t(x), y)], where s' is the pilot student,
        one SGD step of the KD loss from s against the current teacher."""
        from ..data.datamodule import model_inputs
        from .losses import clip_grads_, task_loss
        from .metadistil_maths import pilot_update, quiz_loss, second_order_attention, teacher_meta_grads

        regression, teacher, student = loop.regression, loop.teacher, loop.student
        quiz = loop.held_out_batch()
        teacher_params = list(teacher.parameters())
        teacher.eval()  # no dropout in the teacher's logits, as for the KD loss
        teacher.requires_grad_(True)  # only for this step: the student's backward never reaches the teacher
        try:
            with second_order_attention():
                t_logits = teacher(**inputs).logits
                pilot_kd = loop.loss(student(**inputs).logits, t_logits, labels)
                trained = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
                pilot = pilot_update(pilot_kd, trained, self.pilot_lr)
                quiz_term = quiz_loss(student, pilot, model_inputs(quiz), quiz["labels"], regression)
                objective = quiz_term + self.teacher_task_weight * task_loss(t_logits, labels, regression)
                grads = teacher_meta_grads(objective, teacher_params)
        finally:
            teacher.requires_grad_(False)
        del pilot, pilot_kd, t_logits, objective
        loop.average_over_processes_(grads)  # each process's meta-gradient on its own batches: the mean
        norm = clip_grads_(grads, loop.max_grad_norm)
        for p, g in zip(teacher_params, grads):
            p.grad = g
        optimizer.step()  # stepped directly, as Reptile's: fp16 (the only loss-scaled precision) is refused here
        optimizer.zero_grad(set_to_none=True)
        return TeacherStep(record={"grad_norm/teacher_meta": norm, "train/quiz_loss": quiz_term.detach()})
