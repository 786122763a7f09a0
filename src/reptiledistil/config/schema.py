"""The typed config of the three scripts: one dataclass schema per script and per config group.

Where things live:
  * default values: the YAML files in conf/ (with their comments); the schema fields are MISSING;
  * type: the dataclass annotation. OmegaConf converts and refuses while Hydra composes (overwrite=no is false,
    alpha=abc or batch_size=8.0 is refused), and cli.hydra_error_message turns the refusal into `error: ...`;
  * everything else about a setting is its field (`setting(...)`, core/rules.py): help, range or allowed words
    (checked by check_config once the config is composed: by the scripts before any library is imported, and by
    the pipelines for callers that compose a config themselves), and whether it changes the result (read by run
    names, naming.py, and by the settings a checkpoint stores, training/resume.py: flags_of).
Keys a script does not use are refused with the reason (SCOPE, and the missing fields of PredictConfig).

Open on purpose (typed `Any`): `method` (its fields are its class's, the one its `_target_` names: checked by the
same rules when the method is built), `trainer` and `logger` (their keys are Lightning's and the logger's, checked
when instantiated; trainer.accelerator and trainer.precision by core/hardware.py; TrainerKeys declares those this
project knows), `resume` (false | true | <checkpoint file>: resume.py), `data.text_columns` (a list or one name).

Light on purpose: dataclasses and omegaconf only, no torch.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from ..core.errors import ConfigError
from ..core.rules import KINDS, check_fields, group, rule, setting


POSITIVE = {"low": 0, "low_open": True}
COUNT = {"low": 1}  # a whole number of things: zero or fewer is refused


# --- config groups ----------------------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    name: str = setting("the task: a GLUE task (conf/task/) or custom", named=False)  # model/<task>/...


@dataclass
class StrategyConfig:
    name: str = setting("which teacher layers the student's layers come from and pair with (models/layer_map.py)",
                        choices=("first", "last", "skip", "both"), named=False)  # <method>-<strategy>-...


@dataclass
class StudentConfig:
    start: str = setting("where the student's weights come from: pretrained (model.student.source) or teacher (the "
                         "fine-tuned teacher's layers, picked by the strategy)", default="pretrained",
                         choices=("pretrained", "teacher"))
    init: str = setting("pretrained: load model.student.source as is; teacher_layers: take model.student.num_layers "
                        "of its layers", choices=("pretrained", "teacher_layers"))
    source: str = setting("a model directory or hub id", result=False, named=True)  # where it is; named unless a path
    num_layers: Optional[int] = setting("the student's layers (init=teacher_layers); null: as many as "
                                        "model.student.source has", **COUNT)


@dataclass
class TeacherSchedule:
    lr: float = setting("the teacher's learning rate in this preset", **POSITIVE)
    epochs: int = setting("the teacher's epochs in this preset", **COUNT)
    patience: Optional[int] = setting("stop the teacher once its dev score has not improved for this many epochs; "
                                      "null: train all epochs", default=None, **COUNT)


@dataclass
class StudentSchedule:
    epochs: int = setting("the student's epochs in this preset", **COUNT)
    patience: Optional[int] = setting("stop the student once its dev score has not improved for this many epochs; "
                                      "null: train all epochs", default=None, **COUNT)


@dataclass
class ModelConfig:
    name: str = setting("the preset (conf/model/)")
    teacher_init: str = setting("the pretrained teacher: a model directory or hub id", result=False, named=True)
    student: StudentConfig = group(StudentConfig, "the student: where it starts, how deep")
    finetune: TeacherSchedule = group(TeacherSchedule, "the preset's teacher schedule")
    distil: StudentSchedule = group(StudentSchedule, "the preset's student schedule")


@dataclass
class DataSource:
    source: str = setting("tsv: glue_data/<TASK>/*.tsv; hub: the Hugging Face hub's nyu-mll/glue",
                          choices=("tsv", "hub"))
    glue_dir: Optional[str] = setting("the folder of the GLUE TSVs; null: $GLUE_DIR, ./glue_data or "
                                      "../shared/glue_data", result=False)


@dataclass
class GlueData(DataSource):
    max_train_samples: Optional[int] = setting("training examples used (quick runs); null: all of them", **COUNT)
    max_eval_samples: Optional[int] = setting("dev examples used (quick runs); null: all of them", **COUNT)
    num_workers: int = setting("DataLoader worker processes; 0 loads batches in the main process", low=0,
                               result=False)
    group_by_length: bool = setting("training batches of examples of similar length (less padding, same "
                                    "randomness in which examples meet); false: uniformly random batches")


@dataclass
class CustomDataKeys:
    """task=custom's keys (defaults: conf/task/custom.yaml; checked by data/custom.py). null, and refused if set,
    with any other task (check_config). Which data, like task=: not in the run's name; the files say where it is."""
    train_file: Optional[str] = setting("task=custom: the training file", default=None, result=False)
    validation_file: Optional[str] = setting("task=custom: the dev file", default=None, result=False)
    test_file: Optional[str] = setting("task=custom: the file predict.py split=test reads", default=None,
                                       result=False)
    text_columns: Any = setting("task=custom: the text column(s), [a] or [a,b]", default=None, named=False)
    label_column: Optional[str] = setting("task=custom: the label column", default=None, named=False)
    id_column: Optional[str] = setting("task=custom: the id column of the test file", default=None, named=False)
    task_type: Optional[str] = setting("task=custom: classification or regression", default=None, named=False)


@dataclass
class TrainData(CustomDataKeys, GlueData):  # fields in this order: GlueData's, then task=custom's
    pass


@dataclass
class PredictData(CustomDataKeys, DataSource):
    pass


@dataclass
class OptimizerConfig:
    """+student_optimizer.<key>=... adds another keyword argument of the optimizer class (open)."""
    OPEN = True
    _target_: str = setting("the optimizer class")
    _partial_: bool = setting("built by the module with its parameters")
    lr: Optional[float] = setting("the learning rate (set by the top-level lr, student_lr or teacher_lr)")
    weight_decay: float = setting("decoupled weight decay", low=0)
    eps: float = setting("AdamW's epsilon", **POSITIVE)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999],
                               metadata=rule("the decay rates of AdamW's running averages"))
    fused: bool = setting("one kernel per step")


@dataclass
class TrainerKeys:
    """Keys of the open trainer group (Lightning's Trainer arguments) that do not make a run what it is. Any other
    argument, +trainer.<argument>=... included, changes the result; Lightning checks them all."""
    accelerator: Any = setting("where the run trains (core/hardware.py)", named=False)
    devices: Any = setting("how many devices", named=False)
    num_nodes: Any = setting("how many machines", named=False)
    strategy: Any = setting("how the devices share the work (ddp)", named=False)
    default_root_dir: Any = setting("Lightning's own files", result=False)
    enable_progress_bar: Any = setting("the progress bar", result=False)
    enable_model_summary: Any = setting("the model summary", result=False)
    enable_checkpointing: Any = setting("Lightning's own checkpoints (ours: ResumableCheckpoint)", result=False)
    log_every_n_steps: Any = setting("how often a step is logged", result=False)


# --- what the scripts share ----------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """The keys of both training scripts (finetune_teacher.py, train.py)."""
    task: TaskConfig = group(TaskConfig, "the task", named=False)
    model: ModelConfig = group(ModelConfig, "the model preset (conf/model/)")
    trainer: Any = field(default=MISSING, metadata=rule(  # its own keys (+trainer.<key>=... adds one)
        "Lightning's Trainer arguments (conf/trainer/)", named=False, keys=TrainerKeys))
    logger: Any = field(default=None, metadata=rule("the logger's own keys (~logger: none)", result=False))
    data: TrainData = group(TrainData, "the data")
    seed: int = setting("the random seed", low=0, high=2**32 - 1)
    epochs: int = setting("each epoch ends with the dev evaluation that selects the model", **COUNT)
    patience: Optional[int] = setting("stop once the dev score has not improved for this many epochs (the "
                                      "learning-rate schedule still spans `epochs`); null: train all epochs", **COUNT)
    batch_size: int = setting("training examples per step", **COUNT)
    eval_batch_size: int = setting("dev examples per batch", result=False, **COUNT)
    max_seq_length: int = setting("tokens per example (at most the model's position limit)", low=8)
    max_grad_norm: float = setting("the gradient-clipping norm; 0 turns clipping off", low=0)
    weight_decay: float = setting("AdamW's decoupled weight decay", low=0)
    warmup_ratio: float = setting("the share of training steps spent warming the learning rate up",
                                  low=0, high=1, high_open=True)
    output_dir: str = setting("where the model and its metrics go", result=False)
    overwrite: bool = setting("replace a previous run's results (never files no run wrote)", result=False)
    resume: Any = field(default=False, metadata=rule(  # checked by training/resume.resume_request
        "false | true | <checkpoint file>: continue an interrupted run", result=False))
    checkpoint_every_n_steps: Optional[int] = setting("training steps between checkpoints, or null for one at the "
                                                      "end of every epoch only", result=False, **COUNT)
    log_dir: str = setting("the run's log folder", result=False)


@dataclass
class FinetuneConfig(RunConfig):
    """finetune_teacher.py (conf/finetune_teacher.yaml)."""
    lr: float = setting("the teacher's learning rate; pass e.g. lr=1e-4", **POSITIVE)
    optimizer: OptimizerConfig = group(OptimizerConfig, "the teacher's optimizer (conf/optimizer/)")


@dataclass
class TrainConfig(RunConfig):
    """train.py (conf/train.yaml)."""
    strategy: StrategyConfig = group(StrategyConfig, "the layer mapping", named=False)
    method: Any = field(default=MISSING, metadata=rule(  # its fields: the class its _target_ names (methods/)
        "the distillation method (conf/method/)", named=False))
    alpha: float = setting("the weight of the KD term against the task loss", low=0, high=1, named=False)
    temperature: float = setting("the softmax temperature of the KD term; the paper uses 5", named=False,
                                 **POSITIVE)
    teacher_lr: Optional[float] = setting("the teacher's learning rate (null where the teacher does not learn); "
                                          "pass e.g. teacher_lr=5e-5", **POSITIVE)
    student_lr: float = setting("the student's learning rate; pass e.g. student_lr=5e-5", **POSITIVE)
    teacher_dir: str = setting("the fine-tuned teacher (finetune_teacher.py's output_dir)", result=False)
    save_teacher: str = setting("also save the updated teacher: auto (yes for a single run, no in a multirun), "
                                "true or false", choices=("auto", "true", "false"), result=False)
    student_optimizer: OptimizerConfig = group(OptimizerConfig, "the student's optimizer (conf/optimizer/)")
    teacher_optimizer: OptimizerConfig = group(OptimizerConfig, "the teacher's optimizer (conf/optimizer/)")


@dataclass
class PredictConfig:
    """predict.py (conf/predict.yaml). It trains nothing: no trainer, logger, model preset or training keys."""
    task: TaskConfig = group(TaskConfig, "the task", named=False)
    data: PredictData = group(PredictData, "the data")
    model_dir: str = setting("the fine-tuned or distilled model (or an ONNX export) that predicts")
    split: str = setting("dev: metrics on the labelled dev set; test: GLUE submission files", choices=("dev", "test"))
    output_dir: str = setting("where predictions and metrics go")
    overwrite: bool = setting("replace existing predictions")
    zip: bool = setting("zip the submission files (split=test)")
    eval_batch_size: int = setting("examples per inference batch", **COUNT)
    max_seq_length: int = setting("tokens per example (at most the model's position limit)", low=8)
    engine: str = setting("what runs the model", choices=("auto", "torch", "onnx"))
    precision: str = setting("the torch engine's precision", choices=("auto", "fp32", "bf16"))
    quantize: str = setting("none, or int8: ONNX Runtime dynamic int8 (CPU)", choices=("none", "int8"))
    export: Optional[str] = setting("onnx: write the model for serving to export_dir", choices=("onnx",))
    export_dir: Optional[str] = setting("where export=onnx writes the model")
    export_check: bool = setting("compare the export's dev metric with the source model's")
    max_metric_drop: float = setting("points of dev metric an export may lose before the check warns; the default "
                                     "is 1.0", low=0)


SCHEMAS = {"finetune_teacher": FinetuneConfig, "train": TrainConfig, "predict": PredictConfig}
SCRIPT_OF = {cls: name for name, cls in SCHEMAS.items()}


def register_schemas() -> None:
    """The schemas as `<script>_schema`, first in each script's defaults list (conf/<script>.yaml)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, cls in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=cls)


# --- keys a script does not use ---------------------------------------------------------------------------------

# (script, key prefix) -> why an override of it is refused. Hydra refuses keys a schema lacks (predict.py has no
# trainer); these keys exist because a shared group (conf/model/) carries them, but this script does not read them.
SCOPE = {
    ("finetune_teacher", "model.student"): "finetune_teacher.py fine-tunes the teacher (model.teacher_init) only; "
                                           "the student's settings are read by train.py",
    ("finetune_teacher", "model.distil"): "finetune_teacher.py uses model.finetune.*; model.distil.* is train.py's",
}
# Keys predict.py lacks, and why (Hydra's "not in PredictConfig" becomes this).
NOT_IN_PREDICT = {
    "trainer": "predict.py trains nothing, so it takes no trainer: it runs on the GPU by itself when one is found "
               "(engine=torch); engine=onnx and quantize=int8 run on the CPU (ONNX Runtime). Drop the trainer "
               "override; choose the engine with engine=auto|torch|onnx, precision=auto|fp32|bf16",
    "logger": "predict.py logs nothing: its metrics are written to output_dir. Drop the logger override",
    "model": "predict.py reads its model from model_dir=<dir>, not from a preset. Drop the model override",
    "method": "predict.py runs a trained model (model_dir=<dir>); the method is train.py's. Drop the override",
    "strategy": "predict.py runs a trained model (model_dir=<dir>); the strategy is train.py's. Drop the override",
}


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# --- checks --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedConfig:
    """A composed config that check_config has passed: what a pipeline plans from (pipelines/), so that a script's
    config is checked once, before any library loads. `method`: train.py's, built once."""

    cfg: DictConfig
    script: Optional[str]  # None: a config composed without the schemas, left alone
    method: Any = None


def checked(cfg: DictConfig | CheckedConfig) -> CheckedConfig:
    """`cfg` checked once: a script hands its pipeline the config it checked before any library loaded; a caller
    that composed one itself (tests) gets it checked here."""
    return cfg if isinstance(cfg, CheckedConfig) else check_config(cfg)


def check_config(cfg: DictConfig, overrides: list[str] | None = None) -> CheckedConfig:
    """Every setting's range and allowed words, and the keys this script does not use: a ConfigError naming the
    key and the fix. `overrides`: the command line's (naming.current_overrides() in a script). A config that is
    not one of the schemas (composed without them) is left alone."""
    script = SCRIPT_OF.get(OmegaConf.get_type(cfg))
    if script is None:
        return CheckedConfig(cfg, None)
    overrides = list(overrides or [])
    for o in overrides:
        key = _override_key(o)
        for (s, prefix), why in SCOPE.items():
            if s == script and (key == prefix or key.startswith(prefix + ".")):
                raise ConfigError(f"{o.lstrip('+~')} does not apply here: {why}. Drop it (pass it to train.py).")
    _check_node(cfg, "", script)
    resume = cfg.get("resume", False)
    if resume is not None and not isinstance(resume, (bool, str)):
        raise ConfigError(f"resume={resume} must be false, true (continue from the output directory's checkpoint) "
                          "or the path of a .ckpt file.")
    method = None
    if script == "train":  # the method's fields are its class's (methods/), checked by the same rules and built here
        from ..methods import build_method

        method = build_method(cfg)
        _check_student_start(cfg, overrides)
    task = OmegaConf.select(cfg, "task.name")
    if str(task).lower() != "custom":
        for f in dataclasses.fields(CustomDataKeys):
            if cfg.data.get(f.name) is not None:
                raise ConfigError(f"data.{f.name}={cfg.data.get(f.name)} applies to task=custom only (your own data "
                                  f"files), not task={task}. Pass task=custom, or drop data.{f.name}.")
    return CheckedConfig(cfg, script, method)


def _check_student_start(cfg: DictConfig, overrides: list[str]) -> None:
    """A student started from the teacher's layers reads neither model.student.source nor .init: one given on the
    command line would be silently ignored (minilm starts from the teacher by default)."""
    if OmegaConf.select(cfg, "model.student.start") != "teacher":
        return
    for o in overrides:
        if _override_key(o) in ("model.student.source", "model.student.init"):
            raise ConfigError(f"{o.lstrip('+~')} would not be read: with model.student.start=teacher the student is "
                              "built from teacher_dir's layers. Add model.student.start=pretrained to start from it, "
                              "or drop it.")


def _check_node(node: DictConfig, prefix: str, script: str) -> None:
    cls = OmegaConf.get_type(node)
    names = {f.name for f in dataclasses.fields(cls)}
    for extra in (k for k in node.keys() if k not in names and not getattr(cls, "OPEN", False)):
        # added with +key=... (Hydra lets `+` add a key to any node): nothing would read it
        why = NOT_IN_PREDICT.get(str(extra)) if cls is PredictConfig else None
        raise ConfigError(f"+{prefix}{extra}: " + (f"{why}." if why else f"{script}.py has no key {prefix}{extra}, so "
                          f"nothing would read it. Drop it (python {script}.py --cfg job lists every key)."))
    for f in dataclasses.fields(cls):
        child = node._get_node(f.name)
        if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            _check_node(child, prefix + f.name + ".", script)
    try:
        check_fields(node, cls, prefix, typed=True)
    except ValidationError as e:  # an interpolation whose value has the wrong type (teacher_lr=${method.x})
        raise ConfigError(type_error_message(e, None, prefix + str(e.key))) from None


# --- what a key is (run names, a checkpoint's settings) ----------------------------------------------------------


def flags_of(key: str) -> tuple[bool, bool]:
    """(changes the result, named) of a dotted key of train.py's or finetune_teacher.py's config, read from its
    field (core/rules.rule). A key under one that does not change the result does not either; a key the schema does
    not declare (a method's field, +trainer.<argument>) does, and is named."""
    for cls in (TrainConfig, FinetuneConfig):
        meta = _meta_of(cls, key.split("."))
        if meta is not None:
            return meta
    return True, True


def _meta_of(cls, parts: list[str]) -> tuple[bool, bool] | None:
    f = next((f for f in dataclasses.fields(cls) if f.name == parts[0]), None)
    if f is None:
        return None
    result, named = f.metadata.get("result", True), f.metadata.get("named", True)
    if len(parts) == 1 or not result:
        return result, named if len(parts) == 1 else False
    inner = f.metadata.get("keys") or (f.type if dataclasses.is_dataclass(f.type) else None)
    inner = inner or _dataclass_of(cls, f.name)
    found = _meta_of(inner, parts[1:]) if inner is not None else None
    return found if found is not None else (True, True)


def _dataclass_of(cls, name: str):
    typ = typing.get_type_hints(cls).get(name)
    return typ if dataclasses.is_dataclass(typ) else None


def _field(object_type, key: str):
    if dataclasses.is_dataclass(object_type):
        for f in dataclasses.fields(object_type):
            if f.name == key:
                return f
    return None


def type_error_message(e: OmegaConfBaseException, raw: str | None, full_key: str | None = None) -> str:
    """OmegaConf's refusal of a value of the wrong type, as the key, its type, what it is for and the fix.
    raw: the value as the user typed it (None: read from OmegaConf's message, e.g. for an interpolated value)."""
    import re

    key = full_key or str(getattr(e, "full_key", "") or getattr(e, "key", "") or "")
    f = _field(getattr(e, "object_type", None), str(getattr(e, "key", "") or key.rsplit(".", 1)[-1]))
    if f is None:
        return f"{key}: {getattr(e, 'msg', str(e)).splitlines()[0]}"
    typ = typing.get_type_hints(e.object_type).get(f.name)
    optional = getattr(typ, "__origin__", None) is not None and type(None) in typ.__args__
    base = next((t for t in getattr(typ, "__args__", (typ,)) if t is not type(None)), typ)
    kind = KINDS.get(base, getattr(base, "__name__", str(base)))
    help_, rng = f.metadata.get("help"), f.metadata.get("range")
    what = "; ".join(x for x in (help_, rng and rng.text(base is int)) if x)
    target, shown = key, raw
    if raw is None:  # an interpolated value (teacher_lr: ${method.teacher_lr}): fix it where it comes from
        given = re.search(r"Value '(.*)' of type", str(e))
        node = e.parent_node._get_node(f.name) if getattr(e, "parent_node", None) is not None else None
        ref = re.fullmatch(r"\$\{([\w.]+)\}", str(node._value())) if node is not None else None
        shown = f"{given.group(1) if given else '?'}" + (f" (from {ref.group(1)})" if ref else "")
        target = ref.group(1) if ref else key
    alt = (", or null" + (" for all of them" if "null: all" in (help_ or "") else "")) if optional else ""
    return (f"{key}={shown} is not {kind} ({key}: {getattr(base, '__name__', base)}"
            f"{', ' + what if what else ''}). Pass {target}=<{kind}>{alt}.")
