"""One training run of a Lightning module, as finetune_teacher.py and train.py both do it: the hardware, the data
module, the trainer and its logger, and the checkpoints a killed run resumes from (its folder: run_dir.py)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ..config.naming import basename
from ..core.errors import ConfigError
from ..core.hardware import Hardware, is_rank_zero, resolve_hardware
from ..data.datamodule import DataSettings, GlueDataModule
from ..data.tasks import Task
from .callbacks import BestOnDev, ResumableCheckpoint, progress_bar
from .modules import NonFiniteLossError
from .resume import check_identity, describe
from .run_dir import RunDir

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


def run_summary(cfg: DictConfig, task, best: BestOnDev, extra: dict, *, hw: Hardware) -> dict:
    config = _resolved(cfg)
    # what `auto` became on this machine: the config keeps only the setting
    return {"task": task.name, **extra, "hardware": {"accelerator": hw.accelerator, "precision": hw.precision},
            "selection_metric": list(task.selection),
            "best": best.best, "final": best.history[-1], "history": best.history, "train_wall_s": best.wall_s,
            "spent_before_resume": best.spent_before,  # zeros for a run never interrupted; None: not known
            "output_dir": str(Path(cfg.output_dir).resolve()), "log_dir": config.get("log_dir"), "config": config}


def _resolved(cfg: DictConfig) -> dict:
    """The config with every value filled in (log_dir included), so a model points to its logs."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # ${hydra:...} outside a Hydra run (a config composed in code without log_dir)
        return OmegaConf.to_container(cfg, resolve=False)
