"""GLUE data: classic TSV files (or the hub) -> `datasets.Dataset`, and a run's task with its data.

Every split becomes a Dataset with columns `idx`, `text_a`, `text_b` (None for single-sentence tasks)
and, for labelled splits, `labels` (class id, or float score for STS-B).

`task_data(cfg)` is where a run gets its task and its data: a GLUE row (files read when a split is asked for)
or task=custom (custom.py builds the task description from the user's files and loads the splits, all checked
before any model).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import datasets

from ..core.errors import ConfigError
from . import custom as custom_data
from .tasks import CUSTOM, Task, get_task, is_missing_label

Splits = custom_data.Splits  # "train"/"dev"/"test" -> {name: Dataset}

GLUE_HELP = (
    "Get GLUE with the classic download_glue_data.py script (it writes glue_data/<TASK>/*.tsv), "
    "point to it with data.glue_dir=<dir> or GLUE_DIR=<dir>, or use data.source=hub to load it "
    "from the Hugging Face hub."
)
AX_HELP = ("AX, the GLUE diagnostic set, is predicted with a model trained on MNLI, never trained itself: "
           "python finetune_teacher.py task=mnli (and train.py task=mnli to distil it), then "
           "python predict.py task=ax model_dir=<the MNLI model>.")
# Searched in order when neither data.glue_dir nor GLUE_DIR is set.
DEFAULT_GLUE_DIRS = ("glue_data", "../shared/glue_data")

csv.field_size_limit(sys.maxsize)  # some GLUE fields exceed csv's 128 KiB default


def resolve_glue_dir(glue_dir: str | os.PathLike | None) -> Path:
    """The GLUE root: the configured one, else $GLUE_DIR, else the first default that exists."""
    candidates = [glue_dir] if glue_dir else ([os.environ["GLUE_DIR"]] if os.environ.get("GLUE_DIR") else list(DEFAULT_GLUE_DIRS))
    for c in candidates:
        if Path(c).is_dir():
            return Path(c)
    looked = ", ".join(str(Path(c).resolve()) for c in candidates)
    raise ConfigError(f"GLUE data directory not found (looked in: {looked}). {GLUE_HELP}")


def read_tsv(path: Path, header: Sequence[str] | None = None) -> list[tuple[int, dict[str, str]]]:
    """Rows of a GLUE TSV as (line number, {column: value}).

    GLUE files are tab-separated without quoting (quotes are literal text). `header` names the columns
    of a file without a header line (CoLA train/dev); otherwise the first line is the header.
    A UTF-8 BOM (MRPC) is dropped. A row with the wrong number of fields is an error naming file and line.
    """
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if header is None:
                header = next(reader, None)
                if header is None:
                    raise ConfigError(f"{path} is empty: expected a header line. {GLUE_HELP}")
            for row in reader:
                lineno = reader.line_num
                if not row:
                    continue  # a trailing blank line
                if len(row) != len(header):
                    raise ConfigError(
                        f"{path}:{lineno}: malformed row: expected {len(header)} tab-separated fields "
                        f"({', '.join(header)}), found {len(row)}. Re-download the file or fix that line."
                    )
                rows.append((lineno, dict(zip(header, row))))
    except UnicodeDecodeError:
        raise ConfigError(_not_utf8(path)) from None
    return rows


def _not_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is, as a message (only computed once decoding has failed)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}). GLUE files "
                        "are UTF-8: re-download the file, or convert it, e.g. iconv -f latin1 -t utf-8 in.tsv > out.tsv "
                        "(with the file's real encoding).")
    return f"{path}: not UTF-8. Re-download the file, or convert it to UTF-8."


def _label_id(task: Task, value: str, where: str) -> float | int:
    if is_missing_label(value):  # float("nan") would pass as an STS-B score and poison every metric
        raise ConfigError(f"{where}: the label is missing ({value!r}). Re-download the file, or fix that line.")
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = None
        if score is None or not math.isfinite(score):
            raise ConfigError(f"{where}: label {value!r} is not a number (task {task.name} is a regression task).")
        return score
    if value not in task.labels:
        raise ConfigError(f"{where}: unknown label {value!r} for task {task.name}; expected one of {list(task.labels)}.")
    return task.labels.index(value)


def _task_file(task: Task, glue_dir: Path, file: str) -> Path:
    path = glue_dir / task.dir / file
    if not path.is_file():
        raise ConfigError(f"Missing GLUE file for task {task.name}: {path.resolve()} does not exist. {GLUE_HELP}")
    return path


_UNLABELLED = ("{path} has no {col!r} column: it looks like an unlabelled test file, which cannot give metrics. "
               "Use split=test to write predictions, or a dev file for metrics.")


def _first_field(path: Path) -> str:
    with open(path, "rb") as f:  # bytes: a file that is not UTF-8 is reported by read_tsv, with its line
        return f.readline().decode("utf-8", errors="replace").lstrip("\ufeff").split("\t", 1)[0].strip()


def load_tsv_split(task: Task, glue_dir: Path, file: str, labelled: bool) -> datasets.Dataset:
    """One split of `task` from its classic TSV file."""
    path = _task_file(task, glue_dir, file)
    header = task.headerless_columns if (labelled and task.headerless_columns) else None
    if header and _first_field(path) == "index":
        # A test file ("index<TAB>sentence") where a headerless labelled file belongs (CoLA): say so, rather
        # than report its header as a malformed row.
        raise ConfigError(_UNLABELLED.format(path=path, col=task.label_col))
    rows = read_tsv(path, header)
    if not rows:
        raise ConfigError(f"{path} has {'a header line but ' if header is None else ''}no data rows. Re-download "
                          f"the file (every GLUE split has examples), or point to complete files. {GLUE_HELP}")
    a_col, b_col = (task.text_a, task.text_b) if labelled else (task.test_text_a, task.test_text_b)
    cols: dict[str, list] = {"idx": [], "text_a": [], "text_b": []}
    if labelled:
        cols["labels"] = []
    for i, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        try:
            cols["text_a"].append(row[a_col])
            cols["text_b"].append(row[b_col] if b_col else None)
        except KeyError as e:
            raise ConfigError(f"{where}: column {e.args[0]!r} not found; the file has columns {list(row)}. "
                              f"Is this the {task.dir} file from download_glue_data.py?") from None
        idx = row.get("index", row.get("id"))
        cols["idx"].append(int(idx) if idx is not None and idx.isdigit() else i)
        if labelled:
            if task.label_col not in row:
                raise ConfigError(_UNLABELLED.format(path=path, col=task.label_col))
            cols["labels"].append(_label_id(task, row[task.label_col], where))
    return datasets.Dataset.from_dict(cols)


def load_hub_split(task: Task, hub_split: str, labelled: bool, hub_name: str = "nyu-mll/glue") -> datasets.Dataset:
    """One split from the Hugging Face hub (needs internet); hub label ids equal ours by construction."""
    try:
        ds = datasets.load_dataset(hub_name, task.hub_config, split=hub_split)
    except OSError as e:  # ConnectionError and the hub client's HTTP errors; offline mode raises ConnectionError
        raise ConfigError(f"data.source=hub: the Hugging Face hub cannot be reached to load {hub_name} "
                          f"({task.hub_config}, {hub_split}): {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                          "Use the GLUE TSV files instead: data.source=tsv data.glue_dir=<dir with <TASK>/*.tsv> "
                          "(download_glue_data.py writes them), or connect to the network (unset HF_HUB_OFFLINE / "
                          "HF_DATASETS_OFFLINE).") from None
    out = {"idx": ds["idx"], "text_a": ds[task.hub_text_a],
           "text_b": ds[task.hub_text_b] if task.hub_text_b else [None] * len(ds)}
    if labelled:
        out["labels"] = [float(x) for x in ds["label"]] if task.is_regression else ds["label"]
    return datasets.Dataset.from_dict(out)


def load_split(task: Task, split: str, glue_dir: str | None = None, source: str = "tsv") -> dict[str, datasets.Dataset]:
    """`split` is "train", "dev" (every eval split: MNLI gives dev and dev_mm) or "test" (every test file).

    Returns {name: Dataset}; test datasets are keyed by their submission file name (e.g. "MNLI-m.tsv").
    """
    if task.is_custom:
        raise ConfigError(f"split={split!r} of task=custom was not loaded: its files are the data.* keys, read (and "
                          "checked) when the task is built (data.task_data(cfg)); train and dev are read for "
                          "training, dev or test for predict.py (split=dev|test).")
    if split == "train" and task.train_file is None:
        raise ConfigError(f"Task {task.name} has no training data: it is test only. "
                          + (AX_HELP if task.name == "ax" else "Pick a task with training data."))
    if split == "dev" and not task.eval_splits:
        raise ConfigError(f"Task {task.name} has no labelled dev set: use split=test to write predictions.")
    root = resolve_glue_dir(glue_dir) if source == "tsv" else None

    def one(file: str, hub_split: str, labelled: bool) -> datasets.Dataset:
        if source == "hub":
            return load_hub_split(task, hub_split, labelled)
        return load_tsv_split(task, root, file, labelled)

    if split == "train":
        return {"train": one(task.train_file, "train", True)}
    if split == "dev":
        return {s.name: one(s.file, s.hub_split, True) for s in task.eval_splits}
    if split == "test":
        return {s.submission: one(s.file, s.hub_split, False) for s in task.test_splits}
    raise ConfigError(f"split must be train, dev or test, got {split!r}.")


def load_training_splits(task: Task, glue_dir: str | None = None, source: str = "tsv") -> Splits:
    """{"train": {"train": ...}, "dev": {name: ...}}: what fine-tuning and distillation read, loaded and checked
    (missing, empty, malformed or non-UTF-8 files; an unreachable hub) before any model is loaded."""
    return {"train": load_split(task, "train", glue_dir, source), "dev": load_split(task, "dev", glue_dir, source)}


@dataclass(frozen=True)
class TaskData:
    """A run's task and where its splits come from: GLUE files (read when a split is asked for), or task=custom's
    files (read, and checked, when the task was built: `loaded`)."""

    task: Task
    glue_dir: str | None = None
    source: str = "tsv"
    loaded: Splits | None = field(default=None, compare=False, repr=False)

    def split(self, split: str) -> dict[str, datasets.Dataset]:
        """{name: Dataset} of "train", "dev" or "test", as load_split gives them."""
        if self.loaded is None:
            return load_split(self.task, split, self.glue_dir, self.source)
        if split not in self.loaded:
            raise ConfigError(f"split={split!r} of task=custom was not loaded: train and dev are read for training, "
                              "dev or test for predict.py (split=dev|test).")
        return self.loaded[split]

    def training_splits(self) -> Splits:
        """{"train": ..., "dev": ...}: what fine-tuning and distillation read, loaded and checked before any model."""
        return {"train": self.split("train"), "dev": self.split("dev")}


def task_data(cfg, saved: custom_data.SavedLabels | None = None) -> TaskData:
    """The task of a run (cfg.task.name) and its data (cfg.data.*).

    A GLUE task is a row of the table; its files are read when a split is asked for. task=custom is built from
    the user's files, checked and loaded here, before any model: labels come from the training file, or (predict.py)
    from those `saved` in the model's config (models.loading.model_labels; cfg.split is the split loaded).
    """
    glue_dir, source = cfg.data.glue_dir, cfg.data.source
    if str(cfg.task.name).lower() != CUSTOM:
        return TaskData(task=get_task(cfg.task.name), glue_dir=glue_dir, source=source)
    settings = custom_data.custom_settings(cfg.get("data"))
    if saved is None:
        task, splits = custom_data.load_for_training(settings)
    else:
        task, splits = custom_data.load_for_prediction(settings, str(cfg.get("split")), saved)
    return TaskData(task=task, glue_dir=glue_dir, source=source, loaded=splits)
