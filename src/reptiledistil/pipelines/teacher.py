"""finetune_teacher.py: fine-tune a teacher on one task; the best-on-dev model and its dev metrics."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from ..config.schema import CheckedConfig, checked
from ..data.datamodule import check_max_seq_length
from ..data.glue import task_data
from ..data.tasks import Task
from ..models.loading import load_for_finetuning, load_tokenizer
from ..training.callbacks import BestOnDev
from ..training.fit import datamodule, fit, run_hardware, run_summary
from ..training.run_dir import (DATA_KEYS, TrainingPlan, plan_run_dir, protected_inputs, publish_run,
                                releasing_on_error, staged, working)
from ..training.modules import TeacherModule


def plan(cfg: DictConfig | CheckedConfig) -> TrainingPlan:
    """Every check, in the order a user fixes them: the config, the data's task, the hardware, the output folder
    and an unfinished run in it, then the data files themselves."""
    cfg = checked(cfg).cfg
    data = task_data(cfg)  # task=custom: its files are read and checked here
    hw = run_hardware(cfg)
    run_dir = plan_run_dir(cfg, hw, protected=protected_inputs(cfg, "model.teacher_init", *DATA_KEYS, "log_dir"))
    with releasing_on_error(run_dir):
        return TrainingPlan(cfg=cfg, task=data.task, splits=data.training_splits(), hw=hw, run_dir=run_dir)


def run(plan: TrainingPlan) -> dict:
    """Load, train, publish: the best-on-dev model and its dev metrics (dev_metrics.json)."""
    with working(plan.run_dir):
        with staged(plan.run_dir) as stage:
            model, tokenizer = _load_finetune(plan.cfg, plan.task)
            best = _run_finetune(plan, model=model, tokenizer=tokenizer, stage=stage)
        return _publish_teacher(plan, best)


def finetune(cfg: DictConfig | CheckedConfig) -> dict:
    """Fine-tune a teacher on one task; save the best-on-dev model and its dev metrics."""
    return run(plan(cfg))


def _load_finetune(cfg: DictConfig, task: Task):
    """The pretrained encoder with a new head (seeded: the head's initialisation) and its tokenizer."""
    pl.seed_everything(cfg.seed, workers=True)
    tokenizer = load_tokenizer(cfg.model.teacher_init)
    model = load_for_finetuning(cfg.model.teacher_init, task)
    check_max_seq_length(cfg.max_seq_length, model.config.max_position_embeddings)
    return model, tokenizer


def _run_finetune(plan: TrainingPlan, *, model, tokenizer, stage: Path) -> BestOnDev:
    cfg, task = plan.cfg, plan.task
    module = TeacherModule(model, task, [s.name for s in task.eval_splits], hydra.utils.instantiate(cfg.optimizer),
                           warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm)
    identity = {"script": "finetune_teacher", "task": task.name, "layers": model.config.num_hidden_layers,
                "hidden_size": model.config.hidden_size, "num_labels": model.config.num_labels}
    return fit(cfg, plan.hw, module=module, dm=datamodule(cfg, task, tokenizer, plan.splits),
               best=BestOnDev(stage, tokenizer, cfg.patience), identity=identity, run=plan.run_dir)


def _publish_teacher(plan: TrainingPlan, best: BestOnDev) -> dict:
    summary = run_summary(plan.cfg, plan.task, best, {"model": str(plan.cfg.model.teacher_init)}, hw=plan.hw)
    publish_run(plan.run_dir, summary, summary_file="dev_metrics.json", what="Teacher", model_dir=plan.run_dir.out)
    return summary
