"""Vanilla knowledge distillation: the fine-tuned teacher stays frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Method


@dataclass(frozen=True)
class KD(Method):
    key: ClassVar[str] = "kd"
    title: ClassVar[str] = "vanilla KD"
    description: ClassVar[str] = "vanilla knowledge distillation from a frozen teacher"
