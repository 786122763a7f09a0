"""A tests-only method (tests/test_toy_method.py): adding a method is one module and its YAML, no other file.

Each batch, before the student's step, the teacher moves `rate` of the way towards the student on the mapped
parameters, without an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from reptiledistil.errors import ConfigError
from reptiledistil.methods.base import Method, TeacherStep


@dataclass(frozen=True)
class Toy(Method):
    rate: float  # the fraction of the way to the student the teacher moves per batch

    key: ClassVar[str] = "toy"
    title: ClassVar[str] = "toy"
    description: ClassVar[str] = "a toy method whose teacher drifts towards the student"
    teacher_learns: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.rate <= 1:
            raise ConfigError(f"method.rate={self.rate} must be in (0, 1]; pass e.g. method.rate=0.1.")

    @torch.no_grad()
    def teacher_step(self, module, inputs: dict, labels, optimizer) -> TeacherStep:
        pairs = module.pairs
        for tp, si in zip(pairs.teacher_params, pairs.student_index):
            tp.lerp_(pairs.student_params[si], self.rate)
        return TeacherStep(record={"toy/rate": self.rate})
