"""Up-front checks of a run's numbers and output location: each wrong value is a ConfigError that names the key
and the fix, raised before any data or model is loaded (a zero batch size or a negative learning rate would
otherwise fail deep inside the DataLoader or the optimizer, or train on nonsense)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

_ABSENT = object()


def _value(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT)


def _number(key: str, value, integer: bool) -> float:
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{key}={value} is not {kind}. Pass e.g. {key}=<{kind}>.")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not {kind}. Pass e.g. {key}=<{kind}>.") from None
    if integer and not x.is_integer():
        raise ConfigError(f"{key}={value} is not {kind}. Pass a whole number, e.g. {key}={max(1, int(x))}.")
    return x


def _at_least(cfg: DictConfig, key: str, low: int, why: str) -> None:
    value = _value(cfg, key)
    if value is not _ABSENT and _number(key, value, integer=True) < low:
        raise ConfigError(f"{key}={value} must be at least {low} ({why}).")


def check_positive(cfg: DictConfig, key: str, example: str) -> None:
    """`key` (where set) must be a number > 0: a learning rate."""
    value = _value(cfg, key)
    if value is not _ABSENT and not _number(key, value, integer=False) > 0:
        raise ConfigError(f"{key}={value} must be > 0 (a learning rate); pass e.g. {key}={example}.")


def check_training_values(cfg: DictConfig) -> None:
    """finetune_teacher.py and train.py: batch sizes, epochs, learning rates, schedule, clipping, workers."""
    _at_least(cfg, "batch_size", 1, "training examples per step; the default is 32")
    _at_least(cfg, "eval_batch_size", 1, "dev examples per batch; the default is 64")
    _at_least(cfg, "epochs", 1, "each epoch ends with the dev evaluation that selects the model")
    check_positive(cfg, "lr", "1e-4")  # finetune_teacher.py
    check_positive(cfg, "student_lr", "5e-5")  # train.py; teacher_lr: the method checks it (methods/base.py)
    grad = _value(cfg, "max_grad_norm")
    if grad is not _ABSENT and _number("max_grad_norm", grad, integer=False) < 0:
        raise ConfigError(f"max_grad_norm={grad} must be >= 0 (the gradient-clipping norm; 0 turns clipping off, "
                          "the default is 1.0).")
    warmup = _value(cfg, "warmup_ratio")
    if warmup is not _ABSENT and not 0 <= _number("warmup_ratio", warmup, integer=False) < 1:
        raise ConfigError(f"warmup_ratio={warmup} must be in [0, 1): the share of training steps spent warming the "
                          "learning rate up (the default is 0.1).")
    decay = _value(cfg, "weight_decay")
    if decay is not _ABSENT and _number("weight_decay", decay, integer=False) < 0:
        raise ConfigError(f"weight_decay={decay} must be >= 0 (AdamW's decoupled weight decay; the default is 0.01).")
    _at_least(cfg, "data.num_workers", 0, "DataLoader worker processes; 0 loads batches in the main process")
    every = _value(cfg, "checkpoint_every_n_steps")
    if every is not _ABSENT and every is not None:
        _at_least(cfg, "checkpoint_every_n_steps", 1, "or null for a checkpoint at the end of every epoch only")


def check_predict_values(cfg: DictConfig) -> None:
    """predict.py."""
    _at_least(cfg, "eval_batch_size", 1, "examples per inference batch; the default is 64")
    drop = _value(cfg, "max_metric_drop")
    if drop is not _ABSENT and _number("max_metric_drop", drop, integer=False) < 0:
        raise ConfigError(f"max_metric_drop={drop} must be >= 0 (points of dev metric an export may lose before the "
                          "check warns; the default is 1.0).")
    if _value(cfg, "export_check") not in (_ABSENT, True, False):
        raise ConfigError(f"export_check={_value(cfg, 'export_check')!r} must be true or false.")


def is_writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_writable(path, key: str, beside: bool = False) -> None:
    """Refuse an output location that cannot be written, before anything slow: the nearest existing folder of
    `path` (itself or a parent) must be writable. beside=True: results are staged in a sibling folder and
    renamed into place, so it is the parent of `path` that must be writable."""
    target = Path(path).expanduser().absolute()
    folder = target.parent if beside else target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{key}={path} cannot be created: {folder} is a file, not a folder. "
                          f"Choose another {key}=<dir>.")
    if not is_writable(folder):
        raise ConfigError(f"{key}={path} cannot be written: {folder} is not writable (read-only folder or file "
                          f"system). Choose a writable {key}=<dir>, or make {folder} writable.")
