"""One training run of a Lightning module, as finetune_teacher.py and train.py both do it: the hardware, the trainer
and its logger, checkpoints a killed run resumes from, the staged output folder, and publishing the result."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ..config.naming import basename
from ..core.errors import ConfigError
from ..core.files import check_output_dir, check_writable, publish, staging_dir, write_json_atomic
from ..core.hardware import Hardware, resolve_hardware
from ..data.datamodule import DataSettings, GlueDataModule
from ..data.metrics import format_metrics
from ..data.tasks import Task
from .callbacks import BestOnDev, ResumableCheckpoint, progress_bar
from .modules import NonFiniteLossError
from .resume import check_identity, check_settings, checkpoint_path, describe, resume_request, run_settings, saved_state

# Lightning warnings that are by design here, not the user's to act on; silenced only around fit().
KNOWN_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # the teacher is frozen in eval mode for the KD loss on purpose
    r"It is recommended to use `self.log\('val/",  # torchmetrics results are already synced across processes
)


def datamodule(cfg: DictConfig, task: Task, tokenizer, splits: dict, quiz_examples: int = 0) -> GlueDataModule:
    return GlueDataModule(task, tokenizer, settings=DataSettings.from_cfg(cfg), splits=splits,
                          quiz_examples=quiz_examples)


def _logger(cfg: DictConfig):
    if cfg.get("logger") is None:
        return False
    if "Wandb" in cfg.logger.get("_target_", "") and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # never block or fail without a network or an account
    return hydra.utils.instantiate(cfg.logger)


def run_hardware(cfg: DictConfig) -> Hardware:
    """The accelerator and precision this run will use, checked before anything is loaded."""
    hw = resolve_hardware(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("precision", "auto"))
    if is_rank_zero():
        print(f"{hw.accelerator}, {hw.note}")
    return hw


def _trainer(cfg: DictConfig, hw: Hardware, callbacks) -> pl.Trainer:
    trainer = hydra.utils.instantiate(cfg.trainer, accelerator=hw.accelerator, precision=hw.precision,
                                      callbacks=[*callbacks, *progress_bar(cfg.trainer)], logger=_logger(cfg))
    if trainer.logger is not None:  # W&B run config / CSV hparams.yaml: every resolved hyper-parameter
        trainer.logger.log_hyperparams({**_resolved(cfg), "resolved_precision": hw.precision,
                                        "run_name": basename(cfg.output_dir)})
    return trainer


def _close_logger(trainer: pl.Trainer) -> None:
    """End the W&B run: the jobs of a multirun share one process, and each must get its own run."""
    from pytorch_lightning.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            lg.experiment.finish()


def is_rank_zero() -> bool:
    # Under DDP, Lightning re-runs the script for ranks 1.. with LOCAL_RANK/RANK set; only rank 0 writes.
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


@dataclass(frozen=True)
class RunDir:
    """Where a training run writes and what it continues from, decided and checked before any model loads.

    A run writes into `.<output_dir>.partial/` (`stage`; its resumable checkpoint beside it, `checkpoint`) and is
    renamed into place when it finishes. A killed run leaves both behind: `resume=true` continues from the
    checkpoint, `overwrite=true` discards them.
    """

    out: Path
    stage: Path
    checkpoint: Path  # this run's own: .<output_dir>.checkpoint/last.ckpt
    resume_from: Optional[Path]  # the checkpoint it continues from; None: a fresh start
    saved: Optional[dict]  # that checkpoint's identity and settings (resume.saved_state), read once
    settings: dict  # this run's settings (resume.run_settings), stored in its checkpoints


def plan_run_dir(cfg: DictConfig, hw: Hardware) -> RunDir:
    """Every check of the output location: output_dir can be written and holds no results (unless overwrite=true),
    an unfinished run there is continued (resume=) or refused, a resumed checkpoint was written with this run's
    settings. Nothing is written."""
    check_writable(cfg.output_dir, "output_dir", beside=True)
    resume = resume_request(cfg.get("resume", False))
    out = Path(cfg.output_dir)
    stage, ckpt = staging_dir(out), checkpoint_path(out)
    if is_rank_zero():  # under DDP, rank 0 checks and writes; the others follow it
        check_output_dir(out, cfg.overwrite and not resume)
        _check_leftovers(out, stage, ckpt, resume=resume, overwrite=bool(cfg.overwrite))
    resume_from = (ckpt if resume is True else resume) if resume else None
    settings = run_settings(cfg, {"trainer.accelerator": hw.accelerator, "trainer.precision": hw.precision})
    saved = saved_state(resume_from) if resume_from is not None else None
    if saved is not None:
        check_settings(resume_from, saved, settings)
    return RunDir(out=out, stage=stage, checkpoint=ckpt, resume_from=resume_from, saved=saved, settings=settings)


def _check_leftovers(out: Path, stage: Path, ckpt: Path, *, resume, overwrite: bool) -> None:
    if resume is True and not ckpt.is_file():
        raise ConfigError(f"resume=true, but there is no checkpoint to continue from: {ckpt.resolve()} does not "
                          "exist (the run finished, never started, or was killed before its first checkpoint). "
                          "Run without resume=true to start it.")
    if resume or overwrite:
        return
    if ckpt.is_file():
        raise ConfigError(f"{out.resolve()} has an unfinished run; its checkpoint is {describe(ckpt.resolve())}. "
                          "Continue it with the same command plus resume=true, or pass overwrite=true to "
                          "start over.")
    if _has_files(stage):
        raise ConfigError(f"{stage.resolve()} holds the partial results of an earlier run that stopped before its "
                          "first checkpoint. Move it away, or pass overwrite=true to discard it.")


@contextmanager
def staged(run: RunDir):
    """Yield the staging folder, as plan_run_dir checked it: emptied for a fresh start (overwrite=true, or
    leftovers without a single file), kept for a resume. A run that fails before writing a file leaves no folder."""
    if not is_rank_zero():
        yield run.stage
        return
    if run.resume_from is None:
        shutil.rmtree(run.stage, ignore_errors=True)
        shutil.rmtree(run.checkpoint.parent, ignore_errors=True)
    run.stage.mkdir(parents=True, exist_ok=True)
    run.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield run.stage
    except BaseException:
        for d in (run.stage, run.checkpoint.parent):
            if d.is_dir() and not _has_files(d):
                shutil.rmtree(d)
        raise


def _has_files(d: Path) -> bool:
    return d.is_dir() and any(p.is_file() for p in d.rglob("*"))


def fit(cfg, hw: Hardware, *, module, dm, best: BestOnDev, identity: dict, run: RunDir) -> BestOnDev:
    """Train `module` on `dm`; `best` keeps the best-on-dev model. The run's identity goes into its checkpoints."""
    every = cfg.get("checkpoint_every_n_steps")
    saver = ResumableCheckpoint(run.checkpoint, int(every) if every else None, identity, run.settings)
    resume_from = run.resume_from
    if resume_from is not None:
        check_identity(resume_from, run.saved, identity)
        print(f"resuming from {describe(resume_from)}")
    trainer = _trainer(cfg, hw, [best, saver])  # BestOnDev first: the epoch checkpoint includes its record
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            for message in KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
        best.wall_s = time.perf_counter() - t0
    except NonFiniteLossError as e:
        where = best.save_dir.resolve()
        kept = (f"the best checkpoint so far (epoch {best.best['epoch']}) is kept in {where}" if best.best
                else f"no dev evaluation had finished, so there is no checkpoint ({where})")
        raise ConfigError(f"{e} Training stopped; {kept}. Lower the learning rate or check the data.") from None
    finally:
        _close_logger(trainer)
    if best.best is None:
        raise ConfigError("Training finished without a dev evaluation, so no model was selected. "
                          "Check trainer.limit_val_batches / check_val_every_n_epoch.")
    return best


def run_summary(cfg: DictConfig, task, best: BestOnDev, extra: dict) -> dict:
    config = _resolved(cfg)
    return {"task": task.name, **extra, "selection_metric": list(task.selection),
            "best": best.best, "final": best.history[-1], "history": best.history, "train_wall_s": best.wall_s,
            "output_dir": str(Path(cfg.output_dir).resolve()), "log_dir": config.get("log_dir"), "config": config}


def _resolved(cfg: DictConfig) -> dict:
    """The config with every value filled in (log_dir included), so a model points to its logs."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # ${hydra:...} outside a Hydra run (a config composed in code without log_dir)
        return OmegaConf.to_container(cfg, resolve=False)


def publish_run(stage: Path, out: Path, summary: dict, *, summary_file: str, what: str, model_dir: Path) -> None:
    """Rank 0: write the summary beside the staged models, move them into place, print best and final dev."""
    if not is_rank_zero():
        return
    write_json_atomic(stage / summary_file, summary)
    publish(stage, out)
    shutil.rmtree(checkpoint_path(out).parent, ignore_errors=True)  # finished: nothing left to resume
    log_dir = summary.get("log_dir")
    if log_dir and "${" not in str(log_dir):  # a copy beside the logs: a sweep's job folders list every run
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(log_dir) / summary_file, summary)
    b, f = summary["best"], summary["final"]
    own = lambda r: format_metrics({k: v for k, v in r.items() if not k.startswith("teacher_")})
    print(f"{what} saved to {model_dir}\n  best dev (epoch {b['epoch']}): {own(b)}\n"
          f"  final dev (epoch {f['epoch']}): {own(f)}")
    if "teacher_selection" in f:  # Reptile: what the updated teacher scores itself
        print(f"  teacher after distillation (epoch {f['epoch']}): {format_metrics(f, 'teacher_')}")
