"""Keeps the best-on-dev model (HF format) and the per-epoch dev history."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from .outputs import atomic_dir


class BestOnDev(pl.Callback):
    """After every dev evaluation: record the metrics; if the selection score improved, save the model.

    The model is written to a temporary directory and renamed over `save_dir`, so `save_dir` always holds
    a complete checkpoint (the last good one if training later fails).
    """

    def __init__(self, save_dir: str | Path, tokenizer=None):
        self.save_dir = Path(save_dir)
        self.tokenizer = tokenizer
        self.history: list[dict] = []
        self.best: dict | None = None
        self.wall_s: float | None = None  # set by the caller: how long trainer.fit took

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.last_eval:
            return
        record = {"epoch": trainer.current_epoch + 1, "step": getattr(pl_module, "outer_step", trainer.global_step),
                  **pl_module.last_eval}
        self.history.append(record)
        if self.best is not None and record["selection"] <= self.best["selection"]:
            return
        self.best = record
        if trainer.is_global_zero:
            with atomic_dir(self.save_dir) as tmp:
                pl_module.eval_model.save_pretrained(tmp)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(tmp)
