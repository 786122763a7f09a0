"""What the distillation loop needs to know about a method, and the helpers its subclasses share.

A method is a frozen dataclass: its fields are its hyper-parameters, whose values live once, in
conf/method/<name>.yaml (`_target_` names the class; methods.build_method builds it). Each field is a
`setting(...)` (core/rules.py), like every other key of the config, and is checked by the same checker
(rules.check_fields) when the method is built. Its class
attributes say what it is (title, whether it needs or changes a teacher); its methods do the teacher's part of
a training step, through `Loop`: what a method may use of the training loop (training/modules.py's DistilModule).
The loop does everything else: the student's step, precision, clipping of the student, counters, logging, the
teacher's dev evaluation and drift.

Light on purpose: torch is imported inside the functions that step, so reports can ask the classes for names and
titles without loading it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Protocol

from ..core.errors import ConfigError
from ..core.rules import check_fields, setting  # a method's fields are settings, as every key of the config

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from ..core.hardware import Hardware
    from ..models.layer_map import ParamPairs


class Loop(Protocol):
    """What a method's teacher step may use of the training loop: the two networks, the run's loss, and a few facts
    of the step. A method reaches for nothing else (not Lightning, not the data module)."""

    teacher: Any  # the teacher network; None for a method without one
    student: Any
    pairs: Optional[ParamPairs]  # the teacher/student parameter pairs, as the method's map_pairs chose them
    max_grad_norm: float  # the clipping norm of every step (0: none)

    @property
    def regression(self) -> bool:
        """Whether the task is a regression (one score) rather than classes."""

    @property
    def grad_scaler(self) -> Any:
        """The fp16 loss scaler (trainer.precision=16-mixed), else None."""

    def loss(self, s_logits, t_logits, labels) -> Any:
        """The run's KD loss (alpha, temperature); the task loss alone without teacher logits."""

    def teacher_logits(self, inputs: dict) -> Any:
        """The teacher's logits on a batch: eval mode, no gradient."""

    def student_param_groups(self) -> list[dict]:
        """The param groups of the student's optimizer: each parameter's learning rate, weight decay, betas, eps."""

    def held_out_batch(self) -> dict:
        """This step's batch of the examples held out for the method (Method.quiz_examples), on the device."""

    def average_over_processes_(self, tensors: list) -> None:
        """The mean over processes in place under DDP (for gradients taken with autograd.grad); else nothing."""


@dataclass(frozen=True)
class TeacherStep:
    """What a method's teacher step hands back to the loop."""

    skipped: bool = False  # the batch must not count (fp16 overflow): neither network moves, the loss scale backs off
    student_logits: Any = None  # the student's logits on the batch, reusable for its own step; None: a fresh forward
    undo: Optional[Callable[[], None]] = None  # puts the teacher back if the student's step then overflows (fp16)
    record: dict = field(default_factory=dict)  # what to log for this step (e.g. the teacher's gradient norm)


@dataclass(frozen=True)
class Method:
    """A distillation method. Subclasses set the class attributes below and override what differs."""

    name: str = setting("the method's name in output_dir and records (conf/method/<name>.yaml)")
    # its range is checked on the key the optimizer reads, teacher_lr (config/schema.py), which defaults to this
    teacher_lr: Optional[float] = setting("the teacher's AdamW learning rate; null where the teacher has no "
                                          "optimizer")

    key: ClassVar[str] = ""  # the name its runs' records carry (metrics.json "method")
    title: ClassVar[str] = ""  # short, for report columns: "vanilla KD"
    description: ClassVar[str] = ""  # one clause for the model card: "Trained with ReptileDistil by <description>."
    needs_teacher: ClassVar[bool] = True  # whether a fine-tuned teacher is loaded
    teacher_learns: ClassVar[bool] = False  # whether the teacher changes while it teaches (saved, evaluated, drift)

    def __post_init__(self) -> None:
        """Every field checked by the config's checker (core/rules.check_fields), however the method is built (from
        conf/method/ or in code), and a word normalised: method.share_forward=true arrives as a bool."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in check_fields(values, type(self), "method.", typed=False).items():
            object.__setattr__(self, name, value)

    @property
    def teacher_optimized(self) -> bool:
        """Whether the teacher has an optimizer (and a learning-rate schedule) in the loop."""
        return False

    def check(self, cfg: DictConfig) -> None:
        """The method's own checks of the whole config, run before anything slow (no hardware resolved yet)."""
        if not self.name:
            raise ConfigError("method.name='' must be a non-empty name (it names the run's folder).")
        # teacher_lr's type and range are the schema's (config.py); here only that a learning teacher has one
        if self.teacher_optimized and cfg.get("teacher_lr") is None:
            raise ConfigError(f"method={self.name}: its teacher learns, so it needs a learning rate; pass e.g. "
                              "teacher_lr=5e-5 (or set method.teacher_lr).")

    def for_hardware(self, hw: Hardware) -> Method:
        """This method with choices that depend on the hardware (e.g. `auto`) made; by default itself."""
        return self

    def quiz_examples(self) -> int:
        """Training examples the data module must hold out for the method (MetaDistil's quiz); 0 for most."""
        return 0

    def map_pairs(self, pairs: ParamPairs, teacher) -> ParamPairs:
        """The teacher-student parameter pairs the method uses (all mapped ones by default)."""
        return pairs

    def watched(self, teacher, pairs: Optional[ParamPairs]) -> list:
        """(name, parameter) of the teacher whose drift from the fine-tuned weights is measured every epoch:
        none unless the teacher learns; by default the mapped parameters."""
        if not self.teacher_learns:
            return []
        return list(zip(pairs.teacher_names, pairs.teacher_params))

    def teacher_step(self, loop: Loop, inputs: dict, labels, optimizer) -> TeacherStep:
        """The teacher's part of one training step, before the student's own step; `optimizer` is the teacher's
        (None without one). By default the teacher does not move."""
        return TeacherStep()


def snapshot(params: list, optimizer) -> Callable[[], None]:
    """Copies of `params` (and their optimizer state); calling the result puts them back (fp16 step undo)."""
    import torch

    state = lambda p: {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
    saved = [(p, p.detach().clone(), state(p) if optimizer is not None else None) for p in params]

    @torch.no_grad()
    def restore() -> None:
        for p, value, st in saved:
            p.copy_(value)
            if optimizer is None:
                continue
            if st:
                optimizer.state[p] = st
            else:
                optimizer.state.pop(p, None)

    return restore
