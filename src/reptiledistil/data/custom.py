"""task=custom: the user's own text-classification or regression data (CSV, TSV or JSON lines).

The settings are the `data.*` keys of conf/task/custom.yaml (their one source of defaults). Files are read with
the `datasets` library into the columns the GLUE loaders produce (`idx`, `text_a`, `text_b`, `labels`), so the data
module, tokenisation, metrics and models work unchanged. Everything is checked before a model is loaded:
settings, files (existence, extension, UTF-8, emptiness), columns and labels; each problem is a ConfigError
naming the file (and line) and the fix.

What it gives the rest of the code is a Task (a plain description: labels, columns, task type) and the loaded
splits beside it, never inside it (`load_for_training`, `load_for_prediction`; datamodule.task_data picks).

Label names (classification) are read from the training file, sorted (numerically when they are all numbers,
else as strings) and saved with the model (config id2label/label2id, finetuning_task="custom"); predict.py takes
them, and the task type, from the model's config.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import datasets

from ..core.errors import ConfigError
from .tasks import CUSTOM, EvalSplit, Task, TestSplit, is_missing_label

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}
TASK_TYPES = ("classification", "regression")
PREDICTIONS_FILE = "predictions.tsv"
SEE = "The data.* keys of task=custom are described in conf/task/custom.yaml."
FORMAT_HELP = ("Use .csv (comma-separated, header line first), .tsv (tab-separated, header line first, no quoting) "
               "or .json/.jsonl (JSON lines: one object per line); the extension decides how the file is read.")

csv.field_size_limit(sys.maxsize)


Splits = dict[str, dict[str, datasets.Dataset]]  # "train"/"dev"/"test" -> {name: Dataset}, as data.load_split gives


@dataclass(frozen=True)
class CustomSettings:
    """The data.* keys of task=custom, checked."""

    train_file: str | None
    validation_file: str | None
    test_file: str | None
    text_columns: tuple[str, ...]  # one column (single texts) or two (text pairs)
    label_column: str
    id_column: str | None  # None: the row number (0 = first data row)
    task_type: str  # classification | regression


# --- settings -------------------------------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def custom_settings(data_cfg) -> CustomSettings:
    """Check the data.* keys of task=custom (task_type, text_columns, label_column)."""
    d = data_cfg if data_cfg is not None else {}
    task_type = str(d.get("task_type", "classification")).strip().lower()
    if task_type not in TASK_TYPES:
        raise ConfigError(f"data.task_type={d.get('task_type')!r} is not supported. Use data.task_type=classification "
                          "(labels are class names) or data.task_type=regression (labels are numbers).")
    cols = d.get("text_columns")
    if isinstance(cols, str):
        cols = [cols]
    cols = [] if cols is None else [str(c) for c in cols]
    if not cols or any(not c.strip() for c in cols):
        raise ConfigError("data.text_columns is empty: name the column holding the text, e.g. "
                          "data.text_columns=[sentence], or two for text pairs: data.text_columns=[question,answer].")
    if len(cols) > 2:
        raise ConfigError(f"data.text_columns has {len(cols)} columns ({', '.join(cols)}), but a model reads one text "
                          "or a pair: give one or two, e.g. data.text_columns=[question,answer] (join other columns "
                          "into one beforehand).")
    label = _opt_str(d.get("label_column"))
    if label is None:
        raise ConfigError("data.label_column is not set: name the column holding the labels, e.g. data.label_column=label.")
    return CustomSettings(train_file=_opt_str(d.get("train_file")), validation_file=_opt_str(d.get("validation_file")),
                          test_file=_opt_str(d.get("test_file")), text_columns=tuple(cols), label_column=label,
                          id_column=_opt_str(d.get("id_column")), task_type=task_type)


# --- reading one file -----------------------------------------------------------------------------------------


def _check_file(value: str | None, key: str) -> tuple[Path, str]:
    """The path of data.<key> and its format, or a ConfigError (unset, missing, not a file, unknown extension)."""
    if value is None:
        raise ConfigError(f"data.{key} is not set, and task=custom needs it. Pass data.{key}=<a .csv, .tsv or .jsonl "
                          f"file>. {SEE}")
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"data.{key}={value}: {path.resolve()} does not exist. Check the path (a relative path "
                          f"starts from {Path.cwd()}).")
    if not path.is_file():
        raise ConfigError(f"data.{key}={value}: {path.resolve()} is not a file. Pass the data file itself.")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"data.{key}={value}: unsupported file type {path.suffix or '(no extension)'!r}. {FORMAT_HELP}")
    return path, fmt


def _scan(path: Path, fmt: str, key: str) -> None:
    """Read the bytes once: UTF-8 everywhere (the first bad byte is reported with its line), not empty, and
    (CSV/TSV) more than a header line. datasets' own errors for these say little about where or why."""
    nonblank = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(
                    f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}). Save the file "
                    "as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv (with the file's real encoding).") from None
            if text.lstrip("\ufeff").strip():
                nonblank += 1
    layout = "one JSON object per line" if fmt == "json" else "a header line, then one example per line"
    if nonblank == 0:
        raise ConfigError(f"{path} is empty. Fill it with examples ({layout}), or point data.{key} to another file.")
    if nonblank == 1 and fmt != "json":
        raise ConfigError(f"{path} has a header line but no data rows. Add one example per line below the header, "
                          f"or point data.{key} to another file.")


def _csv_kwargs(fmt: str) -> dict:
    return {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"delimiter": ","}


def _csv_rows(path: Path, fmt: str):
    """(start line, fields) of every non-blank row, header first, as Python's csv module reads them."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, **_csv_kwargs(fmt))
        prev = 0
        for row in reader:
            if row:  # an empty line; pandas skips those too
                yield prev + 1, row
            prev = reader.line_num


def _line_of(path: Path, fmt: str, row: int) -> int | None:
    """The line where data row `row` (0 = first) starts; only computed for error messages."""
    if fmt == "json":
        with open(path, encoding="utf-8-sig") as f:
            lines = [n for n, line in enumerate(f, start=1) if line.strip()]
    else:
        lines = [n for n, _ in _csv_rows(path, fmt)][1:]  # the header is not a data row
    return lines[row] if row < len(lines) else None


def _where(path: Path, fmt: str, row: int) -> str:
    line = _line_of(path, fmt, row)
    return f"{path}:{line}" if line is not None else f"{path} (data row {row + 1})"


def _json_error(path: Path) -> str | None:
    """The first line of a JSON-lines file that is not a JSON object, as a message."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return f"{path}:{lineno}: not valid JSON ({e.msg})"
            if not isinstance(obj, dict):
                return f"{path}:{lineno}: a JSON {type(obj).__name__}, not an object"
    return None


def read_table(value: str | None, key: str) -> tuple[datasets.Dataset, Path, str]:
    """data.<key> as a Dataset with the file's own columns (CSV/TSV: every value a string, as written)."""
    path, fmt = _check_file(value, key)
    _scan(path, fmt, key)
    kw: dict = {}
    if fmt != "json":
        header = next(iter(row for _, row in _csv_rows(path, fmt)))
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise ConfigError(f"{path}: column name(s) {repeated} appear more than once in the header line. "
                              "Give every column its own name.")
        # Strings as written (ids like 007, labels like 1.0 stay so); "NA" or an empty field is text, not missing.
        kw = dict(_csv_kwargs(fmt), encoding="utf-8-sig", na_filter=False,
                  features=datasets.Features({c: datasets.Value("string") for c in header}))
    # A throw-away cache: datasets writes Arrow files while it builds, never beside the data or in ~/.cache.
    with tempfile.TemporaryDirectory(prefix="reptiledistil-data-") as cache:
        try:
            ds = datasets.load_dataset("json" if fmt == "json" else "csv", data_files=str(path.resolve()),
                                       split="train", keep_in_memory=True, cache_dir=cache, **kw)
        except Exception as e:  # datasets wraps parser errors; say where, and what the format should be
            detail = _json_error(path) if fmt == "json" else None
            cause = e.__cause__ or e
            raise ConfigError(f"{detail or f'{path}: could not be read as {fmt.upper()}'} "
                              f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}). "
                              f"{FORMAT_HELP}") from None
    if len(ds) == 0:
        raise ConfigError(f"{path} holds no examples. {FORMAT_HELP}")
    return ds, path, fmt


def _require_columns(ds: datasets.Dataset, path: Path, columns: Sequence[tuple[str, str]]) -> None:
    """columns: (name, the data.* key that names it)."""
    for name, key in columns:
        if name not in ds.column_names:
            raise ConfigError(f"{path} has no column {name!r} (data.{key}); its columns are: "
                              f"{', '.join(ds.column_names)}. Set data.{key} to one of them.")


# --- labels -------------------------------------------------------------------------------------------------


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def sort_labels(names) -> tuple[str, ...]:
    """A stable order: numerically when every name is a number ("2" before "10"), else as strings."""
    names = set(names)
    if names and all(_is_number(n) for n in names):
        return tuple(sorted(names, key=lambda n: (float(n), n)))
    return tuple(sorted(names))


def _label_name(value: Any) -> str | None:
    return None if is_missing_label(value) else str(value).strip()


def _missing(path: Path, fmt: str, ds: datasets.Dataset, col: str) -> None:
    """Refuse the first empty, NaN, null or None label, naming its file and line."""
    bad = next((i for i, v in enumerate(ds[col]) if is_missing_label(v)), None)
    if bad is not None:
        raise _missing_label(_where(path, fmt, bad), col, ds[col][bad])


def _missing_label(where: str, col: str, value: Any) -> ConfigError:
    shown = "null" if value is None else "an empty cell" if str(value).strip() == "" else repr(value)
    return ConfigError(f"{where}: missing label in column {col!r} ({shown}; empty cells, NaN, null and None are not "
                       "labels). Every example needs a label: fill it in or remove the row.")


def _json_missing_label(path: Path, col: str) -> None:
    """The first JSON line whose label is missing (NaN, null, "", "None", ...), as a ConfigError with its line.
    A line without the column, or that is not a JSON object, is left to read_table and _require_columns."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                obj = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and col in obj and is_missing_label(obj[col]):
                raise _missing_label(f"{path}:{lineno}", col, obj[col])


def _class_names(ds: datasets.Dataset, path: Path, fmt: str, col: str) -> list[str]:
    _missing(path, fmt, ds, col)
    return [_label_name(v) for v in ds[col]]


def _scores(ds: datasets.Dataset, path: Path, fmt: str, col: str) -> list[float]:
    _missing(path, fmt, ds, col)
    out = []
    for i, v in enumerate(ds[col]):
        s = _label_name(v)
        if s is None or isinstance(v, bool) or not _is_number(s):
            raise ConfigError(f"{_where(path, fmt, i)}: label {v!r} in column {col!r} is not a number, but "
                              "data.task_type=regression. Fix the value, or use data.task_type=classification.")
        out.append(float(s))
    return out


# --- datasets in the GLUE loaders' columns --------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _glue_columns(ds: datasets.Dataset, s: CustomSettings, path: Path, ids: bool) -> dict[str, list]:
    """idx, text_a, text_b of one file. idx: the id column's values (ids=True and data.id_column set), else the
    row number (training needs integer ids to batch; they are only written to predictions.tsv)."""
    a = [_text(v) for v in ds[s.text_columns[0]]]
    b = [_text(v) for v in ds[s.text_columns[1]]] if len(s.text_columns) == 2 else [None] * len(a)
    idx: list = list(range(len(a)))
    if ids and s.id_column:
        idx = [_text(v) for v in ds[s.id_column]]
        bad = next((i for i, v in enumerate(idx) if "\t" in v or "\n" in v or "\r" in v), None)
        if bad is not None:
            raise ConfigError(f"{path}: id {idx[bad]!r} (data row {bad + 1}, column {s.id_column!r}) holds a tab or a "
                              "line break, which predictions.tsv cannot hold. Clean the ids or unset data.id_column.")
    return {"idx": idx, "text_a": a, "text_b": b}


def _labelled(s: CustomSettings, key: str, labels: tuple[str, ...] | None, known_from: str):
    """A labelled file as a GLUE-style Dataset, and the class names in id order (() for regression).

    Classification, `labels` None: the training file, whose labels define the classes. Otherwise every label must
    be one of `labels` (`known_from` says where they come from, for the message).
    """
    path, fmt = _check_file(getattr(s, key), key)
    if fmt == "json":  # before datasets reads it: a NaN turns the column into floats, a "" next to ints fails it
        _json_missing_label(path, s.label_column)
    ds, path, fmt = read_table(getattr(s, key), key)
    _require_columns(ds, path, [(c, "text_columns") for c in s.text_columns] + [(s.label_column, "label_column")])
    cols = _glue_columns(ds, s, path, ids=False)
    if s.task_type == "regression":
        cols["labels"] = _scores(ds, path, fmt, s.label_column)
        return datasets.Dataset.from_dict(cols), ()
    names = _class_names(ds, path, fmt, s.label_column)
    if labels is None:
        labels = sort_labels(names)
        if len(labels) < 2:
            raise ConfigError(f"{path}: every example has the label {labels[0]!r} (column {s.label_column!r}); a "
                              "classifier needs at least two classes. Add examples of the other classes, or use "
                              "data.task_type=regression if the labels are scores.")
    else:
        index = set(labels)
        bad = next((i for i, n in enumerate(names) if n not in index), None)
        if bad is not None:
            raise ConfigError(f"{_where(path, fmt, bad)}: label {names[bad]!r} does not occur in {known_from}, whose "
                              f"labels are {list(labels)}. Fix the label, or add training examples with it and "
                              "train again.")
    ids = {n: i for i, n in enumerate(labels)}
    cols["labels"] = [ids[n] for n in names]
    return datasets.Dataset.from_dict(cols), labels


def _test_split(s: CustomSettings) -> datasets.Dataset:
    ds, path, _ = read_table(s.test_file, "test_file")
    required = [(c, "text_columns") for c in s.text_columns] + ([(s.id_column, "id_column")] if s.id_column else [])
    _require_columns(ds, path, required)
    return datasets.Dataset.from_dict(_glue_columns(ds, s, path, ids=True))


# --- the Task and its splits -----------------------------------------------------------------------------------


def custom_task(s: CustomSettings, labels: Sequence[str]) -> Task:
    """The Task for the user's data: labels in id order (() for regression), metrics and selection by type."""
    labels = tuple(labels) if s.task_type == "classification" else ()
    a, b = s.text_columns[0], (s.text_columns[1] if len(s.text_columns) == 2 else None)
    if labels:
        metrics, selection = ("accuracy", "macro_f1"), ("accuracy",)
    else:
        metrics, selection = ("pearson", "spearman"), ("pearson", "spearman")
    return Task(name=CUSTOM, dir=CUSTOM, text_a=a, text_b=b, label_col=s.label_column, labels=labels, metrics=metrics,
                selection=selection,
                eval_splits=(EvalSplit(name="dev", file=s.validation_file or "", hub_split="validation"),),
                test_splits=(TestSplit(file=s.test_file or "", submission=PREDICTIONS_FILE, hub_split="test"),),
                test_text_a=a, test_text_b=b, hub_config=CUSTOM, hub_text_a=a, hub_text_b=b,
                train_file=s.train_file, id_header="id")


def load_for_training(s: CustomSettings) -> tuple[Task, Splits]:
    """finetune_teacher.py and train.py: labels from the training file; the train and dev splits loaded."""
    _check_file(s.train_file, "train_file")  # both settings before reading either file
    _check_file(s.validation_file, "validation_file")
    train, labels = _labelled(s, "train_file", None, "")
    dev, _ = _labelled(s, "validation_file", labels, f"the training data ({s.train_file})")
    return custom_task(s, labels), {"train": {"train": train}, "dev": {"dev": dev}}


@dataclass(frozen=True)
class SavedLabels:
    """What a trained model's config says about its task=custom data (read by models.loading.model_labels)."""

    model_dir: str
    task_type: str  # classification | regression
    labels: tuple[str, ...]  # in id order; () for regression


def load_for_prediction(s: CustomSettings, split: str, saved: SavedLabels) -> tuple[Task, Splits]:
    """predict.py: the task type and labels saved with the model; the requested split (dev or test) loaded."""
    model_dir, labels = saved.model_dir, saved.labels
    s = dataclasses.replace(s, task_type=saved.task_type)
    splits: Splits = {}
    if split == "dev":
        dev, _ = _labelled(s, "validation_file", labels, f"the labels of the model ({model_dir})")
        splits["dev"] = {"dev": dev}
    elif split == "test":
        splits["test"] = {PREDICTIONS_FILE: _test_split(s)}
    return custom_task(s, labels), splits
