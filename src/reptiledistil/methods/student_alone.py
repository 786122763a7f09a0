"""Baseline: the student fine-tuned on the labels alone, no teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Method


@dataclass(frozen=True)
class StudentAlone(Method):
    key: ClassVar[str] = "finetune"
    title: ClassVar[str] = "student alone"
    description: ClassVar[str] = "fine-tuning on the labels alone (no teacher)"
    needs_teacher: ClassVar[bool] = False
