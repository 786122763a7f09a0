"""What the three scripts do: finetune(cfg), distil(cfg), predict(cfg). Plain functions, called by tests too."""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from .callbacks import BestOnDev, ResumableCheckpoint, progress_bar
from .checks import check_writable
from .config import check_config
from .data import (DataSettings, GlueDataModule, TaskData, check_max_seq_length, check_quiz_fits, resolve_glue_dir,
                   task_data)
from .errors import ConfigError
from .hardware import Hardware, resolve_hardware
from .layer_map import layer_mapping, parameter_pairs
from .metrics import format_metrics
from .methods import Method, build_method
from .model_card import write_model_card
from .models import build_student, check_finetuned_config, load_finetuned, load_for_finetuning, load_tokenizer
from .module import DistilModule, DistilSettings, FinetuneModule, NonFiniteLossError
from .naming import basename, is_multirun, preset_override, teacher_suffix
from .resume import (check_checkpoint, check_settings, checkpoint_owner, checkpoint_path, describe, resume_request,
                     run_settings)
from .outputs import (WriteFailed, atomic_dir, check_output_dir, check_output_target, owned, publish, remove_leftovers,
                      staging_dir, write_fault, write_json_atomic)
from .tasks import Task


# Lightning warnings that are by design here, not the user's to act on; silenced only around fit().
KNOWN_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # the teacher is frozen in eval mode for the KD loss on purpose
    r"It is recommended to use `self.log\('val/",  # torchmetrics results are already synced across processes
)

FINETUNE_HINT = "Fine-tune a teacher first: python finetune_teacher.py task={task} (it writes {path})."


def finetune_hint(task, teacher_dir) -> str:
    """How to get a teacher for `task` (and the preset, model=<preset>): the path named is the one
    finetune_teacher.py writes for them."""
    path = f"model/{task.name}/teacher{teacher_suffix()}"  # conf/finetune_teacher.yaml's output_dir
    preset = preset_override()
    task_arg = task.name + (f" {preset}" if preset else "") + (" (with the same data.* keys)" if task.is_custom else "")
    hint = FINETUNE_HINT.format(task=task_arg, path=path)
    if Path(str(teacher_dir)) != Path(path):
        hint = hint[:-1] + f"; then pass teacher_dir={path}."
    return hint


def _datamodule(cfg: DictConfig, task: Task, tokenizer, splits: dict, quiz_examples: int = 0) -> GlueDataModule:
    return GlueDataModule(task, tokenizer, settings=DataSettings.from_cfg(cfg), splits=splits,
                          quiz_examples=quiz_examples)


def _logger(cfg: DictConfig):
    if cfg.get("logger") is None:
        return False
    if "Wandb" in cfg.logger.get("_target_", "") and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # never block or fail without a network or an account
    return hydra.utils.instantiate(cfg.logger)


def _hardware(cfg: DictConfig) -> Hardware:
    """The accelerator and precision this run will use, checked before anything is loaded."""
    hw = resolve_hardware(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("precision", "auto"))
    if _is_rank_zero():
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


def _is_rank_zero() -> bool:
    # Under DDP, Lightning re-runs the script for ranks 1.. with LOCAL_RANK/RANK set; only rank 0 writes.
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


@dataclass(frozen=True)
class _Outputs:
    """Where a training run writes: its output folder, the staging folder it publishes, the checkpoint it continues
    from (None: it starts afresh), and whether publishing may replace an earlier result there."""
    out: Path
    stage: Path
    resume_from: Path | None
    replace: bool


@contextmanager
def _owned(cfg: DictConfig, hw: Hardware, protected: dict):
    """Own the run's output folder from its first check until it publishes (outputs.owned: a second run on it is
    refused), check it before any model is loaded, and answer a failed write with what was kept. Yields _Outputs.

    A run writes into `.<output_dir>.partial/` (models) and `.<output_dir>.checkpoint/last.ckpt`, and the staging
    folder is renamed into place when it finishes. A killed run leaves both behind: `resume=true` continues from
    the checkpoint, `overwrite=true` discards them. `protected`: the run's inputs, which output_dir may not hold."""
    resume = resume_request(cfg.get("resume", False))
    if not _is_rank_zero():  # under DDP, rank 0 owns and checks the folder
        ckpt = resume if isinstance(resume, Path) else checkpoint_path(cfg.output_dir)
        yield _Outputs(Path(cfg.output_dir), staging_dir(cfg.output_dir), ckpt if resume else None, False)
        return
    out = check_output_target(cfg.output_dir, "output_dir", protected)
    check_writable(out, "output_dir", beside=True)
    with ExitStack() as held:
        held.enter_context(owned(out))
        other = checkpoint_owner(resume) if isinstance(resume, Path) else None
        if other is not None and other.resolve() != out.resolve():
            # resume=<another run's checkpoint>: that run must not write it (or finish and delete it) meanwhile
            held.enter_context(owned(other, fix="resume from a copy of its checkpoint"))
        outputs = _check_staging(cfg, hw, out, resume)
        try:
            yield outputs
        except Exception as e:
            fault = write_fault(e)
            if fault is None:
                raise
            raise ConfigError(f"{fault} {_kept(fault, outputs)}") from None


def _check_staging(cfg: DictConfig, hw: Hardware, out: Path, resume: bool | Path) -> _Outputs:
    """The output folder holds no result (unless overwrite=true), and what an unfinished run left there is resumed
    or discarded on purpose; a checkpoint to resume was written with these settings. Reads only."""
    out = check_output_dir(out, cfg.overwrite and not resume)
    stage, ckpt = staging_dir(out), checkpoint_path(out)
    if resume is True and not ckpt.is_file():
        raise ConfigError(f"resume=true, but there is no checkpoint to continue from: {ckpt.resolve()} does not "
                          "exist (the run finished, never started, or was killed before its first checkpoint). "
                          "Run without resume=true to start it.")
    if resume:
        ckpt = ckpt if resume is True else resume
        check_settings(ckpt, _run_settings(cfg, hw), _script(cfg))
        return _Outputs(out, stage, ckpt, replace=False)
    if ckpt.is_file() and not cfg.overwrite:
        raise ConfigError(f"{out.resolve()} has an unfinished run; its checkpoint is {describe(ckpt.resolve())}. "
                          "Continue it with the same command plus resume=true, or pass overwrite=true to start over.")
    if _has_files(stage) and not cfg.overwrite:
        raise ConfigError(f"{stage.resolve()} holds the partial results of an earlier run that stopped before its "
                          "first checkpoint. Move it away, or pass overwrite=true to discard it.")
    return _Outputs(out, stage, None, replace=bool(cfg.overwrite))


def _kept(fault: WriteFailed, o: _Outputs) -> str:
    """After a failed write: what is kept, and how to go on."""
    ckpt = checkpoint_path(o.out)
    if ckpt.is_file():
        return (f"Nothing half-written is left; the last complete checkpoint is kept, {describe(ckpt.resolve())}: "
                f"{fault.fix}, then run the same command plus resume=true to continue from it.")
    again = (f" with overwrite=true (it discards the partial results in {o.stage})" if _has_files(o.stage) else "")
    return (f"Nothing half-written is left, but no checkpoint had been completed yet: {fault.fix}, then run the same "
            f"command again{again}.")


@contextmanager
def _staged(o: _Outputs):
    """The staging and checkpoint folders, ready: an earlier run's leftovers discarded (a run starting afresh) or
    what a killed write left in them (a resumed run). If the run fails before writing anything, they are removed."""
    folders = (o.stage, checkpoint_path(o.out).parent)
    if _is_rank_zero():
        for d in folders:
            if o.resume_from is None:  # overwrite=true, or leftovers without a single file in them
                shutil.rmtree(d, ignore_errors=True)
            remove_leftovers(d)
            d.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for d in folders if _is_rank_zero() else ():
            if d.is_dir() and not _has_files(d):
                shutil.rmtree(d)
        raise


def _script(cfg: DictConfig) -> str:
    return "train" if "method" in cfg else "finetune_teacher"


def _protected(cfg: DictConfig, *keys: str) -> dict:
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


DATA_KEYS = ("data.glue_dir", "data.train_file", "data.validation_file", "data.test_file")


def _run_settings(cfg: DictConfig, hw: Hardware) -> dict:
    return run_settings(cfg, {"trainer.accelerator": hw.accelerator, "trainer.precision": hw.precision})


def _has_files(d: Path) -> bool:
    return d.is_dir() and any(p.is_file() for p in d.rglob("*"))


def _fit(cfg, hw: Hardware, *, module, dm, best: BestOnDev, identity: dict, resume_from: Path | None) -> BestOnDev:
    """Train `module` on `dm`; `best` keeps the best-on-dev model. The run's identity goes into its checkpoints."""
    every = cfg.get("checkpoint_every_n_steps")
    saver = ResumableCheckpoint(checkpoint_path(cfg.output_dir), int(every) if every else None, identity,
                                _run_settings(cfg, hw))
    if resume_from is not None:
        check_checkpoint(resume_from, identity)
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


def _summary(cfg: DictConfig, task, best: BestOnDev, extra: dict) -> dict:
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


def _publish(o: _Outputs, summary: dict, *, summary_file: str, what: str, model_dir: Path) -> None:
    """Rank 0: write the summary beside the staged models, move them into place, print best and final dev."""
    if not _is_rank_zero():
        return
    write_json_atomic(o.stage / summary_file, summary)
    publish(o.stage, o.out, o.replace)
    shutil.rmtree(checkpoint_path(o.out).parent, ignore_errors=True)  # finished: nothing left to resume
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


# --- finetune_teacher.py ------------------------------------------------------------------------------------


def finetune(cfg: DictConfig) -> dict:
    """Fine-tune a teacher on one GLUE task; save the best-on-dev model and its dev metrics."""
    check_config(cfg)  # types, ranges, keys this script does not use (config.py)
    data = task_data(cfg)  # task=custom: its files are read and checked here
    hw = _hardware(cfg)
    with _owned(cfg, hw, _protected(cfg, "model.teacher_init", *DATA_KEYS, "log_dir")) as o:
        splits = data.training_splits()  # every bad file refused before any model is loaded
        with _staged(o):
            model, tokenizer = _load_finetune(cfg, data.task)
            best = _run_finetune(cfg, hw, data.task, model=model, tokenizer=tokenizer, splits=splits, stage=o.stage,
                                 resume_from=o.resume_from)
        return _publish_teacher(cfg, data.task, best, outputs=o)


def _load_finetune(cfg: DictConfig, task: Task):
    """The pretrained encoder with a new head (seeded: the head's initialisation) and its tokenizer."""
    pl.seed_everything(cfg.seed, workers=True)
    tokenizer = load_tokenizer(cfg.model.teacher_init)
    model = load_for_finetuning(cfg.model.teacher_init, task)
    check_max_seq_length(cfg.max_seq_length, model.config.max_position_embeddings)
    return model, tokenizer


def _run_finetune(cfg: DictConfig, hw: Hardware, task: Task, *, model, tokenizer, splits: dict, stage: Path,
                  resume_from: Path | None) -> BestOnDev:
    module = FinetuneModule(model, task, [s.name for s in task.eval_splits], hydra.utils.instantiate(cfg.optimizer),
                            warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm)
    identity = {"script": "finetune_teacher", "task": task.name, "layers": model.config.num_hidden_layers,
                "hidden_size": model.config.hidden_size, "num_labels": model.config.num_labels}
    return _fit(cfg, hw, module=module, dm=_datamodule(cfg, task, tokenizer, splits), best=BestOnDev(stage, tokenizer, cfg.patience),
                identity=identity, resume_from=resume_from)


def _publish_teacher(cfg: DictConfig, task: Task, best: BestOnDev, *, outputs: _Outputs) -> dict:
    summary = _summary(cfg, task, best, {"model": str(cfg.model.teacher_init)})
    _publish(outputs, summary, summary_file="dev_metrics.json", what="Teacher", model_dir=outputs.out)
    return summary


# --- train.py -----------------------------------------------------------------------------------------------


def _save_teacher(cfg: DictConfig) -> bool:
    """save_teacher: auto saves the updated teacher for a single run; a sweep's jobs skip it (90-440 MB each).
    The value was checked by check_config (auto, true or false)."""
    value = str(cfg.get("save_teacher", "auto")).lower()
    return not is_multirun() if value == "auto" else value == "true"


def student_start(cfg: DictConfig) -> tuple[str, str]:
    """(init, source) of the student. model.student.start=teacher: model.student.num_layers of the fine-tuned
    teacher's layers (teacher_dir), picked by the strategy, its head included; pretrained: the preset's source."""
    st = cfg.model.student
    if st.start != "teacher":
        return st.init, st.source
    if st.num_layers is None:
        raise ConfigError("model.student.start=teacher takes some of the teacher's layers: pass "
                          "model.student.num_layers=<fewer than the teacher has>, e.g. 3.")
    return "teacher_layers", str(cfg.teacher_dir)


def distil_settings(cfg: DictConfig, method: Method) -> DistilSettings:
    return DistilSettings(method=method, alpha=float(cfg.alpha), temperature=float(cfg.temperature),
                          warmup_ratio=float(cfg.warmup_ratio), max_grad_norm=float(cfg.max_grad_norm))


def distil(cfg: DictConfig) -> dict:
    """Distil a fine-tuned teacher into a student with the method conf/method/<name>.yaml builds."""
    check_config(cfg)  # types, ranges, save_teacher's words (config.py)
    method = build_method(cfg)
    student_start(cfg)  # a named start that cannot be built is refused before anything loads
    data = task_data(cfg)  # task=custom: its files are read and checked here
    hw = _hardware(cfg)
    if cfg.model.student.start == "teacher":  # the student alone (method=finetune) too starts from the teacher
        check_finetuned_config(cfg.teacher_dir, data.task, "Teacher (model.student.start=teacher)",
                               finetune_hint(data.task, cfg.teacher_dir) + " Or start the student from the "
                               "pretrained layers: model.student.start=pretrained.")
    method = method.for_hardware(hw)
    with _owned(cfg, hw, _protected(cfg, "teacher_dir", "model.student.source", *DATA_KEYS, "log_dir")) as o:
        splits = data.training_splits()  # every bad file refused before any model is loaded
        check_quiz_fits(splits, method.quiz_examples(), cfg.data.get("max_train_samples"))
        teacher = _load_teacher(cfg, data.task, method)
        with _staged(o):
            student, tokenizer, pairs = _load_student(cfg, data.task, method, teacher)
            best = _run_distil(cfg, hw, data.task, method=method, models=(teacher, student, pairs),
                               tokenizer=tokenizer, splits=splits, stage=o.stage, resume_from=o.resume_from)
            _save_updated_teacher(cfg, method, teacher, tokenizer, o.stage)
        return _publish_student(cfg, data.task, best, method=method, teacher=teacher, student=student, outputs=o)


def _load_teacher(cfg: DictConfig, task: Task, method: Method):
    """The fine-tuned teacher, or None for a method without one."""
    if not method.needs_teacher:
        return None
    return load_finetuned(cfg.teacher_dir, task, "Teacher", finetune_hint(task, cfg.teacher_dir))


def _load_student(cfg: DictConfig, task: Task, method: Method, teacher):
    """(student, tokenizer, teacher/student parameter pairs or None), seeded: the student's new head."""
    pl.seed_everything(cfg.seed, workers=True)
    init, source = student_start(cfg)
    student = build_student(init, source, task, num_layers=cfg.model.student.num_layers, strategy=cfg.strategy.name)
    tokenizer = load_tokenizer(cfg.teacher_dir if teacher is not None else source)
    check_max_seq_length(cfg.max_seq_length, student.config.max_position_embeddings)
    pairs = None
    if teacher is not None:
        mapping = layer_mapping(cfg.strategy.name, teacher.config.num_hidden_layers, student.config.num_hidden_layers)
        pairs = method.map_pairs(parameter_pairs(teacher, student, mapping), teacher)  # checks widths, vocab, labels
        if _is_rank_zero():
            print(f"layer mapping ({cfg.strategy.name}): {mapping}")  # plain, like every console line
    return student, tokenizer, pairs


def _run_distil(cfg: DictConfig, hw: Hardware, task: Task, *, method: Method, models: tuple, tokenizer, splits: dict,
                stage: Path, resume_from: Path | None) -> BestOnDev:
    """models: (teacher or None, student, parameter pairs or None)."""
    teacher, student, pairs = models
    dm = _datamodule(cfg, task, tokenizer, splits, quiz_examples=method.quiz_examples())
    module = DistilModule(teacher, student, task, [s.name for s in task.eval_splits],
                          settings=distil_settings(cfg, method),
                          student_optimizer=hydra.utils.instantiate(cfg.student_optimizer),
                          teacher_optimizer=hydra.utils.instantiate(cfg.teacher_optimizer), pairs=pairs,
                          quiz_batch=dm.quiz_batch)
    identity = {"script": "train", "task": task.name, "method": method.name, "strategy": cfg.strategy.name,
                "teacher_layers": teacher.config.num_hidden_layers if teacher is not None else None,
                "student_layers": student.config.num_hidden_layers, "hidden_size": student.config.hidden_size}
    return _fit(cfg, hw, module=module, dm=dm, best=BestOnDev(stage / "student", tokenizer, cfg.patience), identity=identity,
                resume_from=resume_from)


def _save_updated_teacher(cfg: DictConfig, method: Method, teacher, tokenizer, stage: Path) -> None:
    """A method that changes the teacher keeps it too (stage/teacher), unless save_teacher says not to."""
    if method.teacher_learns and _is_rank_zero() and _save_teacher(cfg):
        with atomic_dir(stage / "teacher") as tmp:  # a kill mid-save leaves no half-written teacher to publish
            teacher.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)


def _publish_student(cfg: DictConfig, task: Task, best: BestOnDev, *, method: Method, teacher, student,
                     outputs: _Outputs) -> dict:
    teacher_dir = Path(cfg.teacher_dir) if teacher is not None else None
    summary = _summary(cfg, task, best, {"method": method.name, "strategy": cfg.strategy.name,
                                         "teacher": str(cfg.teacher_dir) if teacher is not None else None,
                                         "student_layers": student.config.num_hidden_layers})
    if _is_rank_zero():  # README.md (Hugging Face model card) beside the student's weights
        write_model_card(summary, outputs.stage / "student", teacher_dir, description=method.description)
    _publish(outputs, summary, summary_file="metrics.json", what=f"Student ({method.name}, {cfg.strategy.name})",
             model_dir=outputs.out / "student")
    return summary


# --- predict.py ---------------------------------------------------------------------------------------------


def predict(cfg: DictConfig) -> dict:
    """Dev metrics (split=dev) or GLUE submission files (split=test) from a fine-tuned model or an export.

    With export=onnx the model is first written for serving to export_dir, and that export then runs; the onnx
    engine on a PyTorch model directory (engine=onnx or quantize=int8 without export) exports to a temporary one.
    """
    import tempfile

    from .engines import is_onnx_dir, resolve_engine

    check_config(cfg)  # types, ranges, split/engine/precision/quantize words (config.py)
    data = task_data(cfg, cfg.model_dir)  # task=custom: labels from the model's config, its split read here
    export = _export_request(cfg)
    choice = resolve_engine("onnx" if export else cfg.engine, cfg.precision, cfg.quantize, cfg.model_dir)
    with _owned_predictions(cfg, data.task, export) as out:
        splits = data.split(cfg.split)  # bad data: refused before the model
        tokenizer = _load_prediction_tokenizer(cfg, data.task)
        print(f"engine: {choice.note}")
        result: dict = {"task": data.task.name, "model_dir": str(cfg.model_dir), "split": cfg.split,
                        "engine": choice.engine, "precision": choice.precision}
        with tempfile.TemporaryDirectory(prefix="reptiledistil-onnx-") as tmp:
            if choice.engine == "onnx" and not is_onnx_dir(cfg.model_dir):  # export first: export_dir, or a temp dir
                target = Path(cfg.export_dir) if export else Path(tmp) / "model"
                runner, check = _export_runner(cfg, data, choice, tokenizer=tokenizer, splits=splits, target=target,
                                               export=export, result=result)
            else:
                runner, check = _model_runner(cfg, data.task, choice), None
            _run_predictions(cfg, data.task, runner, tokenizer, splits=splits, check=check, out=out, result=result)
        _publish_predictions(cfg, data.task, out, result)
    return result


def _model_hint(task: Task) -> str:
    return ("AX is predicted with an MNLI model: pass model_dir=<an MNLI model directory>." if task.name == "ax"
            else f"Pass model_dir=<a model fine-tuned or distilled on {task.name}>.")


@contextmanager
def _owned_predictions(cfg: DictConfig, task: Task, export: bool):
    """predict.py owns its output folder (a lock inside it: runs may share the folder, one at a time) and its
    export_dir while it writes; the files it writes must not exist (unless overwrite=true), checked under the lock;
    a failed write is answered. Yields output_dir."""
    if not str(cfg.output_dir).strip():
        raise ConfigError("output_dir is empty. Pass output_dir=<dir> (output_dir=. for the working directory).")
    out = Path(cfg.output_dir)
    check_writable(out, "output_dir")
    with ExitStack() as held:
        held.enter_context(owned(out, lock=out / ".predict.lock"))
        if export:
            held.enter_context(owned(cfg.export_dir, fix="choose another export_dir=<dir>"))
            check_output_dir(cfg.export_dir, cfg.overwrite, "export_dir")
        clash = [f for f in _prediction_files(cfg, task, out) if f.exists()]
        if clash and not cfg.overwrite:
            raise ConfigError(f"{', '.join(map(str, clash))} already exist(s). Pass overwrite=true to replace, "
                              "or choose another output_dir=<dir>.")
        try:
            yield out
        except Exception as e:
            fault = write_fault(e)
            if fault is None:
                raise
            raise ConfigError(f"{fault} Nothing half-written is left, and what {out} held before is as it was: "
                              f"{fault.fix}, then run the command again.") from None


def _prediction_files(cfg: DictConfig, task: Task, out: Path) -> list[Path]:
    return ([out / s.submission for s in task.test_splits] if cfg.split == "test"
            else [out / f"{task.name}_dev_metrics.json"])


def _unless_appeared(path: Path, overwrite: bool) -> Path:
    """A file checked absent before the model loaded is not replaced if it appeared since (unless overwrite=true)."""
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} appeared while this run was working, and was left as it is. Move it away and run "
                          "again, or pass overwrite=true to replace it.")
    return path


def _load_prediction_tokenizer(cfg: DictConfig, task: Task):
    """The model directory's config checked against the task (no weights loaded yet), then its tokenizer."""
    config = check_finetuned_config(cfg.model_dir, task, "Model", _model_hint(task))
    check_max_seq_length(cfg.max_seq_length, config.max_position_embeddings)
    return load_tokenizer(cfg.model_dir)


def _model_runner(cfg: DictConfig, task: Task, choice):
    """An ONNX export directory as it is, or the PyTorch model with the chosen engine."""
    from .engines import OnnxRunner, TorchRunner

    if choice.engine == "onnx":
        return OnnxRunner(cfg.model_dir)
    return TorchRunner(load_finetuned(cfg.model_dir, task, "Model", _model_hint(task)), choice)


def _export_runner(cfg: DictConfig, data: TaskData, choice, *, tokenizer, splits: dict, target: Path, export: bool,
                   result: dict):
    """Export the PyTorch model to ONNX at `target` (export_dir, or a temporary folder) and run that; with
    export=onnx and export_check, its dev metric is checked against the source model's. (runner, check or None)."""
    from .engines import EngineChoice, OnnxRunner, TorchRunner, export_onnx, record_dev_check
    from .submission import sample_batch

    model = load_finetuned(cfg.model_dir, data.task, "Model", _model_hint(data.task))
    sample = sample_batch(tokenizer, next(iter(splits.values())), cfg.max_seq_length)
    export_onnx(model, tokenizer, target, quantize="int8" if choice.precision == "int8" else "none",
                task=data.task.name, sample=sample, overwrite=cfg.overwrite, source=str(cfg.model_dir))
    runner = OnnxRunner(target)
    check = None
    if export:
        result["export_dir"] = str(target)
        print(f"wrote the ONNX {choice.precision} model to {target}")
    if export and cfg.export_check:
        reference = TorchRunner(model, EngineChoice("torch", "fp32", "cpu", ""))
        check = _dev_check(cfg, data, tokenizer, reference=reference, exported=runner, splits=splits)
        if check is not None:
            result["export_check"] = check
            record_dev_check(target, check)
    return runner, check


def _run_predictions(cfg: DictConfig, task: Task, runner, tokenizer, *, splits: dict, check: dict | None, out: Path,
                     result: dict) -> None:
    """split=dev: metrics per split into `result`; split=test: one submission file per split."""
    from .metrics import compute_metrics, predictions
    from .submission import format_predictions, predict_logits, write_submission

    for name, ds in splits.items():
        if cfg.split == "dev":
            if check is not None:  # the export check has just scored the export on this split
                m = check["splits"][name]["export"]
            else:
                logits = predict_logits(runner, tokenizer, ds, cfg.max_seq_length, cfg.eval_batch_size)
                m = compute_metrics(task, predictions(task, logits), torch.tensor(ds["labels"]))
            result[name] = m
            print(f"{task.name} {name} ({len(ds)} examples): {format_metrics(m)}")
        else:
            logits = predict_logits(runner, tokenizer, ds, cfg.max_seq_length, cfg.eval_batch_size)
            write_submission(_unless_appeared(out / name, cfg.overwrite), ds["idx"], format_predictions(task, logits),
                             task.id_header)
            result[name] = str(out / name)
            print(f"wrote {out / name} ({len(ds)} rows)")


def _publish_predictions(cfg: DictConfig, task: Task, out: Path, result: dict) -> None:
    """split=dev: the metrics file; split=test with zip=true: the submission zip."""
    from .submission import zip_submissions

    if cfg.split == "dev":
        write_json_atomic(_unless_appeared(out / f"{task.name}_dev_metrics.json", cfg.overwrite), result)
    elif cfg.zip:
        result["zip"] = str(zip_submissions(out))
        print(f"wrote {result['zip']}")


def _export_request(cfg: DictConfig) -> bool:
    """export=onnx / export_dir= checked before anything is loaded: True when the model is to be exported."""
    export, export_dir = cfg.get("export"), cfg.get("export_dir")
    if export is None and export_dir is None:
        return False
    if str(export).lower() != "onnx":
        raise ConfigError(f"export={export!r} is not supported; use export=onnx export_dir=<dir> (fp32, or int8 with "
                          "quantize=int8), run by ONNX Runtime.")
    if export_dir is None:
        raise ConfigError("export=onnx writes a model directory: pass export_dir=<dir> too.")
    if str(cfg.engine).lower() not in ("auto", "onnx"):
        raise ConfigError(f"engine={cfg.engine} and export=onnx disagree: the export is what runs. Drop engine=.")
    from .engines import is_export_dir

    if is_export_dir(cfg.model_dir):
        raise ConfigError(f"{cfg.model_dir} is already an export; export from the fp32 model directory it came from.")
    check_output_target(export_dir, "export_dir", _protected(cfg, "model_dir", *DATA_KEYS))
    check_writable(export_dir, "export_dir", beside=True)
    return True  # what export_dir holds is checked once predict owns it (_owned_predictions)


def _dev_check(cfg: DictConfig, data: TaskData, tokenizer, *, reference, exported, splits: dict) -> dict | None:
    """The export's dev metric against its source model's; warns loudly past max_metric_drop points."""
    from .metrics import compute_metrics, predictions, selection_score
    from .submission import predict_logits

    try:
        dev = splits if cfg.split == "dev" else data.split("dev")
    except ConfigError as e:
        print(f"export check skipped (no labelled dev data: {e})")
        return None
    task = data.task
    check: dict = {"max_metric_drop": float(cfg.max_metric_drop), "splits": {}}
    for name, ds in dev.items():
        labels = torch.tensor(ds["labels"])
        m = {k: compute_metrics(task, predictions(task, predict_logits(r, tokenizer, ds, cfg.max_seq_length,
                                                                       cfg.eval_batch_size)), labels)
             for k, r in (("source", reference), ("export", exported))}
        sel = {k: selection_score(task, v) for k, v in m.items()}
        drop = 100 * (sel["source"] - sel["export"])
        check["splits"][name] = {**m, "selection": sel, "drop_points": drop}
        print(f"export check, {task.name} {name}: source {100 * sel['source']:.2f}, export "
              f"{100 * sel['export']:.2f} ({-drop:+.2f} points)")
        if drop > cfg.max_metric_drop:
            print(f"\n{'!' * 78}\nWARNING: the export loses {drop:.2f} points of dev metric on {task.name} {name} "
                  f"(more than max_metric_drop={cfg.max_metric_drop:g}).\nServe the fp32 model or export=onnx without "
                  f"quantize=int8, or accept the loss knowingly.\n{'!' * 78}\n", file=sys.stderr)
    return check
