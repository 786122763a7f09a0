"""A tests-only method (tests/test_toy_method.py): adding a method is one module and its YAML, no other file.

Each batch, before the student's step, the teacher moves `rate` of the way towards the student on the mapped
parameters, without an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from reptiledistil.methods.base import Method, TeacherStep, setting


@dataclass(frozen=True)
class Toy(Method):
    rate: float = setting("the fraction of the way to the student the teacher moves per batch; pass e.g. "
                          "method.rate=0.1", low=0, low_open=True, high=1)

    key: ClassVar[str] = "toy"
    title: ClassVar[str] = "toy"
    description: ClassVar[str] = "a toy method whose teacher drifts towards the student"
    teacher_learns: ClassVar[bool] = True

    @torch.no_grad()
    def teacher_step(self, loop, inputs: dict, labels, optimizer) -> TeacherStep:
        pairs = loop.pairs
        for tp, si in zip(pairs.teacher_params, pairs.student_index):
            tp.lerp_(pairs.student_params[si], self.rate)
        return TeacherStep(record={"toy/rate": self.rate})
