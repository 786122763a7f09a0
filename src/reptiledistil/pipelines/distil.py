"""train.py: distil a fine-tuned teacher into a student with the method conf/method/<name>.yaml builds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from ..config.naming import is_multirun, preset_override, teacher_suffix
from ..config.schema import CheckedConfig, checked
from ..core.errors import ConfigError
from ..core.files import atomic_dir
from ..core.hardware import is_rank_zero
from ..data.datamodule import check_max_seq_length, check_quiz_fits
from ..data.glue import task_data
from ..methods import Method
from ..models.layer_map import layer_mapping, parameter_pairs
from ..models.loading import build_student, check_finetuned_config, load_finetuned, load_tokenizer
from ..report.model_card import write_model_card
from ..training.callbacks import BestOnDev
from ..training.fit import datamodule, fit, run_hardware, run_summary
from ..training.run_dir import (DATA_KEYS, TrainingPlan, plan_run_dir, protected_inputs, publish_run,
                                releasing_on_error, staged, working)
from ..training.modules import DistilModule, DistilSettings

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


@dataclass(frozen=True)
class DistilPlan(TrainingPlan):
    """What train.py will do (see TrainingPlan), and with which method."""

    method: Method  # built once (when the config was checked), its hardware choices made


def plan(cfg: DictConfig | CheckedConfig) -> DistilPlan:
    """Every check, in the order a user fixes them: the config and the method (built once), the student's start,
    the data's task, the hardware, the teacher the student starts from, the output folder and an unfinished run in
    it, then the data files and the method's held-out share of them."""
    checked_cfg = checked(cfg)
    cfg = checked_cfg.cfg
    student_start(cfg)  # a named start that cannot be built is refused before anything loads
    data = task_data(cfg)  # task=custom: its files are read and checked here
    hw = run_hardware(cfg)
    if cfg.model.student.start == "teacher":  # the student alone (method=finetune) too starts from the teacher
        check_finetuned_config(cfg.teacher_dir, data.task, "Teacher (model.student.start=teacher)",
                               finetune_hint(data.task, cfg.teacher_dir) + " Or start the student from the "
                               "pretrained layers: model.student.start=pretrained.")
    method = checked_cfg.method.for_hardware(hw)
    run_dir = plan_run_dir(cfg, hw, protected=protected_inputs(cfg, "teacher_dir", "model.student.source", *DATA_KEYS,
                                                                "log_dir"))
    with releasing_on_error(run_dir):
        splits = data.training_splits()  # every bad file refused before any model is loaded
        check_quiz_fits(splits, method.quiz_examples(), cfg.data.get("max_train_samples"))
        return DistilPlan(cfg=cfg, task=data.task, splits=splits, hw=hw, method=method, run_dir=run_dir)


def run(plan: DistilPlan) -> dict:
    """Load, distil, publish: the best-on-dev student, the updated teacher if it learnt, metrics.json."""
    with working(plan.run_dir):
        teacher = _load_teacher(plan)
        with staged(plan.run_dir) as stage:
            student, tokenizer, pairs = _load_student(plan, teacher)
            best = _run_distil(plan, models=(teacher, student, pairs), tokenizer=tokenizer, stage=stage)
            _save_updated_teacher(plan, teacher, tokenizer, stage)
        return _publish_student(plan, best, teacher=teacher, student=student)


def distil(cfg: DictConfig | CheckedConfig) -> dict:
    """Distil a fine-tuned teacher into a student with the method conf/method/<name>.yaml builds."""
    return run(plan(cfg))


def _load_teacher(plan: DistilPlan):
    """The fine-tuned teacher, or None for a method without one."""
    if not plan.method.needs_teacher:
        return None
    teacher_dir = plan.cfg.teacher_dir
    return load_finetuned(teacher_dir, plan.task, "Teacher", finetune_hint(plan.task, teacher_dir))


def _load_student(plan: DistilPlan, teacher):
    """(student, tokenizer, teacher/student parameter pairs or None), seeded: the student's new head."""
    cfg, task, method = plan.cfg, plan.task, plan.method
    pl.seed_everything(cfg.seed, workers=True)
    init, source = student_start(cfg)
    student = build_student(init, source, task, num_layers=cfg.model.student.num_layers, strategy=cfg.strategy.name)
    tokenizer = load_tokenizer(cfg.teacher_dir if teacher is not None else source)
    check_max_seq_length(cfg.max_seq_length, student.config.max_position_embeddings)
    pairs = None
    if teacher is not None:
        mapping = layer_mapping(cfg.strategy.name, teacher.config.num_hidden_layers, student.config.num_hidden_layers)
        pairs = method.map_pairs(parameter_pairs(teacher, student, mapping), teacher)  # checks widths, vocab, labels
        if is_rank_zero():
            print(f"layer mapping ({cfg.strategy.name}): {mapping}")  # plain, like every console line
    return student, tokenizer, pairs


def _run_distil(plan: DistilPlan, *, models: tuple, tokenizer, stage: Path) -> BestOnDev:
    """models: (teacher or None, student, parameter pairs or None)."""
    cfg, task, method = plan.cfg, plan.task, plan.method
    teacher, student, pairs = models
    dm = datamodule(cfg, task, tokenizer, plan.splits, quiz_examples=method.quiz_examples())
    module = DistilModule(teacher, student, task, [s.name for s in task.eval_splits],
                          settings=distil_settings(cfg, method),
                          student_optimizer=hydra.utils.instantiate(cfg.student_optimizer),
                          teacher_optimizer=hydra.utils.instantiate(cfg.teacher_optimizer), pairs=pairs,
                          quiz_batch=dm.quiz_batch)
    identity = {"script": "train", "task": task.name, "method": method.name, "strategy": cfg.strategy.name,
                "teacher_layers": teacher.config.num_hidden_layers if teacher is not None else None,
                "student_layers": student.config.num_hidden_layers, "hidden_size": student.config.hidden_size}
    return fit(cfg, plan.hw, module=module, dm=dm, best=BestOnDev(stage / "student", tokenizer, cfg.patience),
               identity=identity, run=plan.run_dir)


def _save_updated_teacher(plan: DistilPlan, teacher, tokenizer, stage: Path) -> None:
    """A method that changes the teacher keeps it too (stage/teacher), unless save_teacher says not to."""
    if plan.method.teacher_learns and is_rank_zero() and _save_teacher(plan.cfg):
        with atomic_dir(stage / "teacher") as tmp:  # a kill mid-save leaves no half-written teacher to publish
            teacher.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)


def _publish_student(plan: DistilPlan, best: BestOnDev, *, teacher, student) -> dict:
    cfg, task, method = plan.cfg, plan.task, plan.method
    stage, out = plan.run_dir.stage, plan.run_dir.out
    teacher_dir = Path(cfg.teacher_dir) if teacher is not None else None
    summary = run_summary(cfg, task, best, {"method": method.name, "strategy": cfg.strategy.name,
                                         "teacher": str(cfg.teacher_dir) if teacher is not None else None,
                                         "student_layers": student.config.num_hidden_layers}, hw=plan.hw)
    if is_rank_zero():  # README.md (Hugging Face model card) beside the student's weights
        write_model_card(summary, stage / "student", teacher_dir, description=method.description)
    publish_run(plan.run_dir, summary, summary_file="metrics.json",
                what=f"Student ({method.name}, {cfg.strategy.name})", model_dir=out / "student")
    return summary
