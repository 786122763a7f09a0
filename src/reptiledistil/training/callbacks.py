"""Keeps the best-on-dev model (HF format) and the per-epoch dev history; checkpoints; the progress bar."""

from __future__ import annotations

import math
import os
import random
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf

from ..core.files import atomic_dir, atomic_file


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar with epochs counted from 1, as everywhere else (`Epoch 2/2`, not `Epoch 1`)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:  # Lightning's, with our description
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}{of}", refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))  # shows the new description
        self.train_progress_bar.initial = 0


def progress_bar(trainer_cfg) -> list[pl.Callback]:
    """The trainer's progress bar callback: none where the config turns the bar off."""
    return [EpochProgressBar()] if trainer_cfg.get("enable_progress_bar", True) else []


def _cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class BestOnDev(pl.Callback):
    """After every dev evaluation: record the metrics; if the selection score improved, save the model.

    The model is written to a temporary directory and renamed over `save_dir`, so `save_dir` always holds
    a complete checkpoint (the last good one if training later fails). `patience`: stop once this many
    evaluations in a row have not beaten the best (the learning-rate schedule still spans all epochs).
    """

    def __init__(self, save_dir: str | Path, tokenizer=None, patience: int | None = None):
        self.save_dir = Path(save_dir)
        self.tokenizer = tokenizer
        self.patience = patience
        self.history: list[dict] = []
        self.best: dict | None = None
        self.wall_s: float | None = None  # set by the caller: how long trainer.fit took
        # What the run cost before this process, up to the checkpoint it resumes from (None: a checkpoint older than
        # this record), so that a resumed run's record can count its whole cost, not only its last part.
        self.spent_before: dict | None = {"cpu_s": 0.0, "wall_s": 0.0}
        # from here on (a sweep's jobs share one process; under DDP this is rank 0's, which writes the checkpoint)
        self._started = (_cpu_seconds(), time.monotonic())

    def spent(self) -> dict | None:
        """CPU (user + system, this process and its reaped children) and wall seconds of the run so far."""
        if self.spent_before is None:
            return None
        return {"cpu_s": self.spent_before["cpu_s"] + _cpu_seconds() - self._started[0],
                "wall_s": self.spent_before["wall_s"] + time.monotonic() - self._started[1]}

    def state_dict(self) -> dict:  # in the resumable checkpoint
        return {"history": self.history, "best": self.best, "spent": self.spent()}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best = state["history"], state["best"]
        self.spent_before = state.get("spent")

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._stop_if_stalled(trainer)  # a run resumed from the checkpoint of the epoch that decided to stop

    def _stop_if_stalled(self, trainer: pl.Trainer) -> None:
        if self.patience is None or self.best is None or not self.history or trainer.should_stop:
            return
        since = self.history[-1]["epoch"] - self.best["epoch"]
        if since >= self.patience:
            trainer.should_stop = True
            print(f"stopping early: the dev score has not improved for {since} epoch(s) "
                  f"(best at epoch {self.best['epoch']}; patience={self.patience})", flush=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.last_eval:
            return
        record = {"epoch": trainer.current_epoch + 1, "step": getattr(pl_module, "outer_step", trainer.global_step),
                  **pl_module.last_eval}
        self.history.append(record)
        # An undefined score (NaN: constant predictions) never displaces a real one.
        score = lambda r: -math.inf if math.isnan(r["selection"]) else r["selection"]
        if self.best is not None and score(record) <= score(self.best):
            self._stop_if_stalled(trainer)
            return
        self.best = record
        if trainer.is_global_zero:
            with atomic_dir(self.save_dir) as tmp:
                pl_module.eval_model.save_pretrained(tmp)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(tmp)


class ResumableCheckpoint(pl.Callback):
    """Lightning checkpoints a killed run can continue from, bit for bit: `<staging>/checkpoints/last.ckpt`.

    Saved (atomically: temp file + rename) at the end of every epoch after its dev evaluation, every
    `every_n_steps` batches, and when the run is asked to stop: SIGTERM (what SLURM and Kubernetes send
    before preemption) or Ctrl-C finish the current batch, save, and exit with 128 + the signal number.
    Besides what Lightning saves (both networks, optimizers, schedulers, loop counters, loss scaler,
    BestOnDev's record), it holds the RNG states and how many batches of the current epoch are done, so
    the resumed run sees the same batches and dropout masks as an uninterrupted one.
    """

    def __init__(self, path: Path, every_n_steps: int | None = None, identity: dict | None = None,
                 settings: dict | None = None):
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.identity = identity or {}  # task, method, shapes: checked before a resume (resume.py)
        self.settings = settings or {}  # the run's resolved settings (resume.run_settings): idem
        self.batches_done = 0  # in the current epoch
        self._rng: dict | None = None
        self._stop_signal: int | None = None
        self._old_handlers: dict = {}

    # -- what goes into the checkpoint ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"batches_done": self.batches_done, "rng": _rng_states(), "identity": self.identity,
                "settings": self.settings}

    def load_state_dict(self, state: dict) -> None:
        # A mid-epoch restart does not call on_train_epoch_start: the position is set here (the data
        # module restores its own copy, which makes the sampler skip the batches already done).
        self.batches_done = state["batches_done"]
        self._rng = state["rng"]
        if self.batches_done == 0:  # an epoch-end checkpoint: set back now, before the next epoch's data loader
            _set_rng_states(self._rng)  # draws its seed from it (its iterator is made first on a resumed run, and
            self._rng = None            # after the epoch starts on a run never stopped)

    # -- when to save -----------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = _DirectCheckpointIO()

    def on_train_start(self, trainer, pl_module) -> None:
        # Replaces Lightning's SIGTERM handler too: it would stop before the epoch-end checkpoint.
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._request_stop)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_handlers()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore_handlers()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._rng is not None:  # first batch after a mid-epoch resume: the RNG exactly as it was when saved
            _set_rng_states(self._rng)
            self._rng = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches_done += 1
        if hasattr(trainer.datamodule, "train_batches_done"):
            trainer.datamodule.train_batches_done = self.batches_done
        if self.batches_done >= trainer.num_training_batches:
            return  # the epoch-end checkpoint (after the dev evaluation) follows
        stop = self._stop_requested(trainer)
        if stop or (self.every_n_steps and self.batches_done % self.every_n_steps == 0):
            self.save(trainer)
        if stop:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.batches_done = 0
        if hasattr(trainer.datamodule, "train_batches_done"):
            trainer.datamodule.train_batches_done = 0
        self.save(trainer)
        if self._stop_requested(trainer):
            self._stop(trainer)

    def save(self, trainer) -> None:
        """Write the checkpoint beside the last one and rename it over it (core/files.atomic_file): a kill or a full
        disk mid-write leaves the last complete checkpoint as it was (a failed write: WriteFailed)."""
        if not trainer.is_global_zero:
            trainer.save_checkpoint(self.path)  # every rank calls it; only rank 0 writes
            return
        with atomic_file(self.path) as tmp:
            trainer.save_checkpoint(tmp)

    # -- stopping on a signal -----------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._stop_signal = signum

    def _stop_requested(self, trainer) -> bool:
        flag = self._stop_signal is not None
        if trainer.world_size > 1:  # every process must stop at the same batch (the save is collective)
            import torch.distributed as dist

            t = torch.tensor([float(flag)], device=trainer.strategy.root_device)
            dist.all_reduce(t)
            flag = bool(t.item())
        return flag

    def _stop(self, trainer) -> None:
        signum = self._stop_signal or signal.SIGTERM
        if trainer.is_global_zero:
            print(f"\nStopped by {signal.Signals(signum).name} after epoch {trainer.current_epoch + 1}, batch "
                  f"{self.batches_done or 'end'}: checkpoint saved to {self.path}.\nContinue with the same "
                  "command plus resume=true.", flush=True)
        raise SystemExit(128 + signum)

    def _restore_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}


class _DirectCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint straight to the path it is given (ResumableCheckpoint's temporary file beside the last
    checkpoint). Lightning's own writer first writes the whole file to the system's temp folder, which may be full
    or small when the output disk is not, and which a kill leaves a half-written file in."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with open(path, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint (a power cut)


def _rng_states() -> dict:
    # Plain lists and tensors only, so the checkpoint loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
