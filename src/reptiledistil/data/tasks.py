"""The GLUE task table: one row per task, everything the data, metrics and submission code need.

Column names are those of the classic `glue_data/<TASK>/` TSV files written by `download_glue_data.py`;
`hub_*` fields describe the same task in the `nyu-mll/glue` dataset on the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ConfigError

CUSTOM = "custom"  # task=custom: the user's own data, described by custom_data.py from conf/task/custom.yaml's keys

# Label cells that mean "no label": what spreadsheets, pandas (NaN) and JSON (null, NaN) write for a missing value.
# Read as text they would become a class of their own, or (JSON NaN) turn every label of the file into a float.
MISSING_LABELS = ("", "nan", "null", "none")


def is_missing_label(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN
        return True
    return str(value).strip().lower() in MISSING_LABELS


@dataclass(frozen=True)
class EvalSplit:
    """One labelled evaluation file (MNLI has two: matched and mismatched)."""

    name: str  # metric prefix and log name, e.g. "dev" or "dev_mm"
    file: str  # file name in the task directory
    hub_split: str


@dataclass(frozen=True)
class TestSplit:
    """One unlabelled test file and the submission file the GLUE server expects for it."""

    file: str
    submission: str  # e.g. "MNLI-m.tsv"
    hub_split: str


@dataclass(frozen=True)
class Task:
    """What a task is: its files, columns, labels, metrics and submission names. A plain description: looking
    a task up reads no file (task=custom's description is built from the user's files by custom_data.py, which
    keeps the loaded splits to itself)."""

    name: str  # config key, lower case: "rte"
    dir: str  # folder under glue_data: "RTE"
    text_a: str  # column in the labelled files
    text_b: str | None
    label_col: str | None  # None for test-only tasks (AX)
    labels: tuple[str, ...]  # label names in id order; () for regression
    metrics: tuple[str, ...]  # names in reptiledistil.metrics
    selection: tuple[str, ...]  # model selection: mean of these metrics
    eval_splits: tuple[EvalSplit, ...]
    test_splits: tuple[TestSplit, ...]
    # Test files name their columns differently for some tasks.
    test_text_a: str
    test_text_b: str | None
    hub_config: str
    hub_text_a: str
    hub_text_b: str | None
    train_file: str | None = "train.tsv"
    # CoLA's train/dev files have no header: these names are given to their columns.
    headerless_columns: tuple[str, ...] = ()
    label_aliases: dict[str, str] = field(default_factory=dict)  # other names of our labels (the hub's), lower case
    id_header: str = "index"  # first column of the prediction files (GLUE: index; task=custom: id)

    @property
    def is_custom(self) -> bool:
        """task=custom: the user's own data (custom_data.py), not a row of the GLUE table."""
        return self.name == CUSTOM

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)


def _dev(hub: str = "validation") -> tuple[EvalSplit, ...]:
    return (EvalSplit(name="dev", file="dev.tsv", hub_split=hub),)


def _test(submission: str) -> tuple[TestSplit, ...]:
    return (TestSplit(file="test.tsv", submission=submission, hub_split="test"),)


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
MNLI_LABELS = ("entailment", "neutral", "contradiction")  # the hub's order, so hub ids map one-to-one


def hub_names(*names: str) -> dict[str, str]:
    """label_aliases: the hub's class names of a 0/1 task, in id order -> our labels. Models fine-tuned on the hub
    data (e.g. with transformers' run_glue.py) carry these names in their config."""
    return dict(zip(names, BINARY))


def _glue(name: str, dir: str, text_a: str, text_b: str | None, label_col: str | None, labels: tuple[str, ...],
          metrics: tuple[str, ...], **fields) -> Task:
    """A GLUE row: the test files name their text columns as the labelled files do unless told otherwise, the
    hub config is the task's name, and selection is by every metric unless told otherwise."""
    fields.setdefault("selection", metrics)
    fields.setdefault("eval_splits", _dev())
    fields.setdefault("test_text_a", text_a)
    fields.setdefault("test_text_b", text_b)
    fields.setdefault("hub_config", name)
    fields.setdefault("hub_text_a", text_a)
    fields.setdefault("hub_text_b", text_b)
    return Task(name=name, dir=dir, text_a=text_a, text_b=text_b, label_col=label_col, labels=labels,
                metrics=metrics, **fields)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _glue(name="cola", dir="CoLA", text_a="sentence", text_b=None, label_col="label", labels=BINARY,
              metrics=("mcc", "accuracy"), selection=("mcc",), test_splits=_test("CoLA.tsv"),
              headerless_columns=("source", "label", "label_notation", "sentence"),
              label_aliases=hub_names("unacceptable", "acceptable")),
        _glue(name="sst2", dir="SST-2", text_a="sentence", text_b=None, label_col="label", labels=BINARY,
              metrics=("accuracy",), test_splits=_test("SST-2.tsv"),
              label_aliases=hub_names("negative", "positive")),
        _glue(name="mrpc", dir="MRPC", text_a="#1 String", text_b="#2 String", label_col="Quality", labels=BINARY,
              metrics=("f1", "accuracy"), test_splits=_test("MRPC.tsv"), hub_text_a="sentence1",
              hub_text_b="sentence2", label_aliases=hub_names("not_equivalent", "equivalent")),
        _glue(name="stsb", dir="STS-B", text_a="sentence1", text_b="sentence2", label_col="score", labels=(),
              metrics=("pearson", "spearman"), test_splits=_test("STS-B.tsv")),
        _glue(name="qqp", dir="QQP", text_a="question1", text_b="question2", label_col="is_duplicate",
              labels=BINARY, metrics=("f1", "accuracy"), test_splits=_test("QQP.tsv"),
              label_aliases=hub_names("not_duplicate", "duplicate")),
        _glue(name="mnli", dir="MNLI", text_a="sentence1", text_b="sentence2", label_col="gold_label",
              labels=MNLI_LABELS, metrics=("accuracy",),
              eval_splits=(EvalSplit(name="dev", file="dev_matched.tsv", hub_split="validation_matched"),
                           EvalSplit(name="dev_mm", file="dev_mismatched.tsv", hub_split="validation_mismatched")),
              test_splits=(TestSplit(file="test_matched.tsv", submission="MNLI-m.tsv", hub_split="test_matched"),
                           TestSplit(file="test_mismatched.tsv", submission="MNLI-mm.tsv",
                                     hub_split="test_mismatched")),
              hub_text_a="premise", hub_text_b="hypothesis"),
        _glue(name="qnli", dir="QNLI", text_a="question", text_b="sentence", label_col="label", labels=NLI2,
              metrics=("accuracy",), test_splits=_test("QNLI.tsv")),
        _glue(name="rte", dir="RTE", text_a="sentence1", text_b="sentence2", label_col="label", labels=NLI2,
              metrics=("accuracy",), test_splits=_test("RTE.tsv")),
        _glue(name="wnli", dir="WNLI", text_a="sentence1", text_b="sentence2", label_col="label", labels=BINARY,
              metrics=("accuracy",), test_splits=_test("WNLI.tsv"),
              label_aliases=hub_names("not_entailment", "entailment")),
        # AX: diagnostic set, test only, predicted with an MNLI model (hence MNLI's labels).
        _glue(name="ax", dir="diagnostic", text_a="sentence1", text_b="sentence2", label_col=None,
              labels=MNLI_LABELS, metrics=(), selection=(), eval_splits=(),
              test_splits=(TestSplit(file="diagnostic.tsv", submission="AX.tsv", hub_split="test"),),
              hub_text_a="premise", hub_text_b="hypothesis", train_file=None),
    ]
}


def get_task(name: str) -> Task:
    key = str(name).lower().replace("-", "")
    if key == CUSTOM:
        raise ConfigError("task=custom is not in the GLUE table: it is built from your data files (data.train_file "
                          "and the other keys in conf/task/custom.yaml) by data.task_and_splits(cfg) (custom_data.py).")
    if key not in TASKS:
        raise ConfigError(
            f"Unknown task {name!r}. Valid tasks: {', '.join(TASKS)}, or {CUSTOM} for your own data files. "
            "Pick one with task=<name>, e.g. `python finetune_teacher.py task=rte`."
        )
    return TASKS[key]
