"""Run by test_metadistil.py: MetaDistil under DDP on two CPU processes; rank 0 writes what both ranks hold.

Lightning's ddp strategy starts the second process by running this script again, so it must be a file.
"""

from __future__ import annotations

import functools
import json
import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from test_metadistil import LR_S, LR_T, TASK, WD, _batches, _bert, settings
from reptiledistil.training.modules import DistilModule


class Report(pl.Callback):
    def __init__(self, out: str):
        self.out, self.first_batch = out, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.first_batch is None:
            self.first_batch = batch["input_ids"].float().sum()

    def on_train_end(self, trainer, module):
        flat = lambda net: torch.cat([p.detach().flatten() for p in net.parameters()])
        teachers = trainer.strategy.all_gather(flat(module.teacher))
        students = trainer.strategy.all_gather(flat(module.student))
        firsts = trainer.strategy.all_gather(self.first_batch)
        if trainer.global_rank == 0:
            doc = {"world_size": trainer.world_size,
                   "ranks_saw_different_batches": bool(firsts[0] != firsts[1]),
                   "teacher_max_diff_between_ranks": float((teachers[0] - teachers[1]).abs().max()),
                   "student_max_diff_between_ranks": float((students[0] - students[1]).abs().max()),
                   "teacher_moved": float((teachers[0] - flat(_bert(2, 0))).abs().max())}
            with open(self.out, "w") as f:
                json.dump(doc, f)


def main(out: str) -> None:
    teacher, student = _bert(2, 0), _bert(1, 1)
    quizzes = _batches(n=4, seed=5)
    adamw = functools.partial(torch.optim.AdamW, weight_decay=WD, eps=1e-8)
    module = DistilModule(teacher, student, TASK, ["dev"], settings=settings(),
                          student_optimizer=functools.partial(adamw, lr=LR_S),
                          teacher_optimizer=functools.partial(adamw, lr=LR_T),
                          quiz_batch=lambda step, rank: quizzes[(2 * step + rank) % 4])
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[Report(out)])
    trainer.fit(module, train_dataloaders=DataLoader(_batches(n=4), batch_size=None))


if __name__ == "__main__":
    main(sys.argv[1])
