"""finetune_teacher.py: fine-tune a teacher on one task; the best-on-dev model and its dev metrics."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from ..config.schema import check_config
from ..core.hardware import Hardware
from ..data.datamodule import check_max_seq_length
from ..data.glue import task_data
from ..data.tasks import Task
from ..models.loading import load_for_finetuning, load_tokenizer
from ..training.callbacks import BestOnDev
from ..training.fit import check_outputs, datamodule, fit, publish_run, run_hardware, run_summary, staged
from ..training.modules import TeacherModule


def finetune(cfg: DictConfig) -> dict:
    """Fine-tune a teacher on one GLUE task; save the best-on-dev model and its dev metrics."""
    check_config(cfg)  # types, ranges, keys this script does not use (config.py)
    data = task_data(cfg)  # task=custom: its files are read and checked here
    hw = run_hardware(cfg)
    check_outputs(cfg, hw)
    splits = data.training_splits()  # every bad file refused before any model is loaded
    with staged(cfg) as (out, stage, resume_from):
        model, tokenizer = _load_finetune(cfg, data.task)
        best = _run_finetune(cfg, hw, data.task, model=model, tokenizer=tokenizer, splits=splits, stage=stage,
                             resume_from=resume_from)
    return _publish_teacher(cfg, data.task, best, stage=stage, out=out)


def _load_finetune(cfg: DictConfig, task: Task):
    """The pretrained encoder with a new head (seeded: the head's initialisation) and its tokenizer."""
    pl.seed_everything(cfg.seed, workers=True)
    tokenizer = load_tokenizer(cfg.model.teacher_init)
    model = load_for_finetuning(cfg.model.teacher_init, task)
    check_max_seq_length(cfg.max_seq_length, model.config.max_position_embeddings)
    return model, tokenizer


def _run_finetune(cfg: DictConfig, hw: Hardware, task: Task, *, model, tokenizer, splits: dict, stage: Path,
                  resume_from: Path | None) -> BestOnDev:
    module = TeacherModule(model, task, [s.name for s in task.eval_splits], hydra.utils.instantiate(cfg.optimizer),
                            warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm)
    identity = {"script": "finetune_teacher", "task": task.name, "layers": model.config.num_hidden_layers,
                "hidden_size": model.config.hidden_size, "num_labels": model.config.num_labels}
    return fit(cfg, hw, module=module, dm=datamodule(cfg, task, tokenizer, splits), best=BestOnDev(stage, tokenizer, cfg.patience),
                identity=identity, resume_from=resume_from)


def _publish_teacher(cfg: DictConfig, task: Task, best: BestOnDev, *, stage: Path, out: Path) -> dict:
    summary = run_summary(cfg, task, best, {"model": str(cfg.model.teacher_init)})
    publish_run(stage, out, summary, summary_file="dev_metrics.json", what="Teacher", model_dir=out)
    return summary
