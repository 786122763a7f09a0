"""The distillation methods, one module each on methods/base.py; conf/method/<name>.yaml builds one."""

from __future__ import annotations

from .base import Method, TeacherStep
from .finetune import Finetune
from .kd import KD
from .metadistil import MetaDistil
from .reptile import Reptile

# The methods this package ships, in the order reports show them (a tests-only or user method need not be here:
# train.py builds whatever class conf/method/<name>.yaml names).
METHODS: tuple[type[Method], ...] = (Finetune, KD, Reptile, MetaDistil)


def method_class(key: str) -> type[Method] | None:
    """The shipped class whose runs' records carry `key` as their method; None for any other."""
    return next((cls for cls in METHODS if cls.key == key), None)


__all__ = ["METHODS", "Method", "TeacherStep", "Finetune", "KD", "Reptile", "MetaDistil", "method_class"]
