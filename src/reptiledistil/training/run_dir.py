"""A training run's output folder: planned and checked before any model loads, owned (locked) while the run works,
staged, and published whole when it finishes.

A run writes into `.<output_dir>.partial/` (models) and `.<output_dir>.checkpoint/last.ckpt`, and the staging
folder is renamed into place when it finishes. A killed run leaves both behind: `resume=true` continues from the
checkpoint, `overwrite=true` discards them.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from ..core.errors import ConfigError
from ..core.faults import WriteFailed, write_fault
from ..core.files import publish, remove_leftovers, staging_dir, write_json_atomic
from ..core.lock import owned
from ..core.outputs import check_output_dir, check_output_target, check_writable
from ..core.hardware import Hardware, is_rank_zero
from ..data.glue import Splits, resolve_glue_dir
from ..data.metrics import format_metrics
from ..data.tasks import Task
from .resume import (check_settings, checkpoint_owner, checkpoint_path, describe, resume_request, run_settings,
                     saved_state)

DATA_KEYS = ("data.glue_dir", "data.train_file", "data.validation_file", "data.test_file")


@dataclass(frozen=True)
class RunDir:
    """Where a training run writes and what it continues from, decided and checked before any model loads."""

    out: Path
    stage: Path
    checkpoint: Path  # this run's own: .<output_dir>.checkpoint/last.ckpt
    resume_from: Optional[Path]  # the checkpoint it continues from; None: a fresh start
    saved: Optional[dict]  # that checkpoint's identity and settings (resume.saved_state), read once
    settings: dict  # this run's settings (resume.run_settings), stored in its checkpoints
    replace: bool  # publishing may replace an earlier result at `out` (overwrite=true)
    held: ExitStack  # the locks on the output folder (and on a resumed run's), held until the run ends (working)


@dataclass(frozen=True)
class TrainingPlan:
    """What a training script will do, every input checked: nothing is loaded or written yet, but the plan owns
    its output folder (a lock) until run(plan) ends (pipelines/teacher.py, distil.py)."""

    cfg: DictConfig
    task: Task
    splits: Splits  # train and dev, read and checked
    hw: Hardware
    run_dir: RunDir  # the output folder, and the checkpoint a resume continues from


def plan_run_dir(cfg: DictConfig, hw: Hardware, *, protected: dict) -> RunDir:
    """Every check of the output location, with the folder owned from here (core/lock.owned: a second run on it
    is refused) until the run ends: output_dir holds none of the run's inputs (`protected`), can be written and
    holds no results (unless overwrite=true); an unfinished run there is continued (resume=) or refused; a resumed
    checkpoint was written by this script with this run's settings. Nothing is written but the lock."""
    resume = resume_request(cfg.get("resume", False))
    settings = run_settings(cfg, {"trainer.accelerator": hw.accelerator, "trainer.precision": hw.precision})
    out, script = Path(cfg.output_dir), "train" if "method" in cfg else "finetune_teacher"
    if not is_rank_zero():  # under DDP, rank 0 owns and checks the folder
        resume_from = (resume if isinstance(resume, Path) else checkpoint_path(out)) if resume else None
        return RunDir(out=out, stage=staging_dir(out), checkpoint=checkpoint_path(out), resume_from=resume_from,
                      saved=saved_state(resume_from) if resume_from else None, settings=settings, replace=False,
                      held=ExitStack())
    out = check_output_target(cfg.output_dir, "output_dir", protected)
    check_writable(out, "output_dir", beside=True)
    held = ExitStack()
    try:
        held.enter_context(owned(out))
        other = checkpoint_owner(resume) if isinstance(resume, Path) else None
        if other is not None and other.resolve() != out.resolve():
            # resume=<another run's checkpoint>: that run must not write it (or finish and delete it) meanwhile
            held.enter_context(owned(other, fix="resume from a copy of its checkpoint"))
        return _checked(out, resume=resume, overwrite=bool(cfg.overwrite), settings=settings, script=script,
                        held=held)
    except BaseException:
        held.close()
        raise


def _checked(out: Path, *, resume, overwrite: bool, settings: dict, script: str, held: ExitStack) -> RunDir:
    """The output folder holds no result (unless overwrite=true), and what an unfinished run left there is resumed
    or discarded on purpose; a checkpoint to resume was written with these settings. Reads only."""
    out = check_output_dir(out, overwrite and not resume)
    stage, ckpt = staging_dir(out), checkpoint_path(out)
    if resume is True and not ckpt.is_file():
        raise ConfigError(f"resume=true, but there is no checkpoint to continue from: {ckpt.resolve()} does not "
                          "exist (the run finished, never started, or was killed before its first checkpoint). "
                          "Run without resume=true to start it.")
    plan = dict(out=out, stage=stage, checkpoint=ckpt, settings=settings, held=held)
    if resume:
        resume_from = ckpt if resume is True else resume
        saved = saved_state(resume_from)
        check_settings(resume_from, saved, settings, script)
        return RunDir(**plan, resume_from=resume_from, saved=saved, replace=False)
    if ckpt.is_file() and not overwrite:
        raise ConfigError(f"{out.resolve()} has an unfinished run; its checkpoint is {describe(ckpt.resolve())}. "
                          "Continue it with the same command plus resume=true, or pass overwrite=true to start over.")
    if _has_files(stage) and not overwrite:
        raise ConfigError(f"{stage.resolve()} holds the partial results of an earlier run that stopped before its "
                          "first checkpoint. Move it away, or pass overwrite=true to discard it.")
    return RunDir(**plan, resume_from=None, saved=None, replace=overwrite)


def protected_inputs(cfg: DictConfig, *keys: str) -> dict:
    """The run's inputs that are on this machine, {key: path}: its output folder may not hold them."""
    found = {}
    for key in keys:
        try:
            value = OmegaConf.select(cfg, key)
            if key == "data.glue_dir" and cfg.data.get("source", "tsv") == "tsv":
                value = resolve_glue_dir(value)  # unset: the folder it is found in
        except Exception:  # not found (refused later, with its fix) or outside a Hydra run (${hydra:...})
            continue
        if value and Path(str(value)).expanduser().exists():
            found[key] = Path(str(value))
    return found


@contextmanager
def releasing_on_error(run: RunDir):
    """The rest of a plan's checks: if one fails, the folder the plan owns is released at once."""
    try:
        yield
    except BaseException:
        run.held.close()
        raise


@contextmanager
def working(run: RunDir):
    """While the run works: its folders stay owned (released when it ends, however it ends), and a failed write is
    answered with what was kept and how to go on."""
    with run.held:
        try:
            yield
        except Exception as e:
            fault = write_fault(e) if is_rank_zero() else None
            if fault is None:
                raise
            raise ConfigError(f"{fault} {_kept(fault, run)}") from None


def _kept(fault: WriteFailed, run: RunDir) -> str:
    """After a failed write: what is kept, and how to go on."""
    if run.checkpoint.is_file():
        return (f"Nothing half-written is left; the last complete checkpoint is kept, "
                f"{describe(run.checkpoint.resolve())}: {fault.fix}, then run the same command plus resume=true to "
                "continue from it.")
    again = f" with overwrite=true (it discards the partial results in {run.stage})" if _has_files(run.stage) else ""
    return (f"Nothing half-written is left, but no checkpoint had been completed yet: {fault.fix}, then run the same "
            f"command again{again}.")


@contextmanager
def staged(run: RunDir):
    """Yield the staging folder, ready: an earlier run's leftovers discarded (a fresh start: overwrite=true, or
    leftovers without a single file), or what a killed write left in it (a resume). A run that fails before writing
    a file leaves no folder behind."""
    folders = (run.stage, run.checkpoint.parent)
    if is_rank_zero():
        for d in folders:
            if run.resume_from is None:
                shutil.rmtree(d, ignore_errors=True)
            remove_leftovers(d)
            d.mkdir(parents=True, exist_ok=True)
    try:
        yield run.stage
    except BaseException:
        for d in folders if is_rank_zero() else ():
            if d.is_dir() and not _has_files(d):
                shutil.rmtree(d)
        raise


def _has_files(d: Path) -> bool:
    return d.is_dir() and any(p.is_file() for p in d.rglob("*"))


def publish_run(run: RunDir, summary: dict, *, summary_file: str, what: str, model_dir: Path) -> None:
    """Rank 0: write the summary beside the staged models, move them into place, print best and final dev."""
    if not is_rank_zero():
        return
    write_json_atomic(run.stage / summary_file, summary)
    publish(run.stage, run.out, run.replace)
    shutil.rmtree(run.checkpoint.parent, ignore_errors=True)  # finished: nothing left to resume
    log_dir = summary.get("log_dir")
    if log_dir and "${" not in str(log_dir):  # a copy beside the logs: a sweep's job folders list every run
        try:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(log_dir) / summary_file, summary)
        except (WriteFailed, OSError) as e:  # the results are in place: a missing copy is not worth failing for
            print(f"warning: {summary_file} was not copied beside the logs ({e})")
    b, f = summary["best"], summary["final"]
    own = lambda r: format_metrics({k: v for k, v in r.items() if not k.startswith("teacher_")})
    print(f"{what} saved to {model_dir}\n  best dev (epoch {b['epoch']}): {own(b)}\n"
          f"  final dev (epoch {f['epoch']}): {own(f)}")
    if "teacher_selection" in f:  # Reptile: what the updated teacher scores itself
        print(f"  teacher after distillation (epoch {f['epoch']}): {format_metrics(f, 'teacher_')}")
