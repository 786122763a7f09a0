"""The GLUE task table: one row per task, everything the data, metrics and submission code need.

Column names are those of the classic `glue_data/<TASK>/` TSV files written by `download_glue_data.py`;
`hub_*` fields describe the same task in the `nyu-mll/glue` dataset on the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .custom_data import CustomData


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
    # task=custom only: the user's data settings and loaded splits (custom_data.py); None for GLUE tasks.
    custom: CustomData | None = field(default=None, compare=False, repr=False)

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)


def _dev(hub: str = "validation") -> tuple[EvalSplit, ...]:
    return (EvalSplit("dev", "dev.tsv", hub),)


def _test(submission: str) -> tuple[TestSplit, ...]:
    return (TestSplit("test.tsv", submission, "test"),)


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
MNLI_LABELS = ("entailment", "neutral", "contradiction")  # the hub's order, so hub ids map one-to-one


def hub_names(*names: str) -> dict[str, str]:
    """label_aliases: the hub's class names of a 0/1 task, in id order -> our labels. Models fine-tuned on the hub
    data (e.g. with transformers' run_glue.py) carry these names in their config."""
    return dict(zip(names, BINARY))


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cola", "CoLA", "sentence", None, "label", BINARY, ("mcc", "accuracy"), ("mcc",),
             _dev(), _test("CoLA.tsv"), "sentence", None, "cola", "sentence", None,
             headerless_columns=("source", "label", "label_notation", "sentence"),
             label_aliases=hub_names("unacceptable", "acceptable")),
        Task("sst2", "SST-2", "sentence", None, "label", BINARY, ("accuracy",), ("accuracy",),
             _dev(), _test("SST-2.tsv"), "sentence", None, "sst2", "sentence", None,
             label_aliases=hub_names("negative", "positive")),
        Task("mrpc", "MRPC", "#1 String", "#2 String", "Quality", BINARY, ("f1", "accuracy"), ("f1", "accuracy"),
             _dev(), _test("MRPC.tsv"), "#1 String", "#2 String", "mrpc", "sentence1", "sentence2",
             label_aliases=hub_names("not_equivalent", "equivalent")),
        Task("stsb", "STS-B", "sentence1", "sentence2", "score", (), ("pearson", "spearman"), ("pearson", "spearman"),
             _dev(), _test("STS-B.tsv"), "sentence1", "sentence2", "stsb", "sentence1", "sentence2"),
        Task("qqp", "QQP", "question1", "question2", "is_duplicate", BINARY, ("f1", "accuracy"), ("f1", "accuracy"),
             _dev(), _test("QQP.tsv"), "question1", "question2", "qqp", "question1", "question2",
             label_aliases=hub_names("not_duplicate", "duplicate")),
        Task("mnli", "MNLI", "sentence1", "sentence2", "gold_label", MNLI_LABELS, ("accuracy",), ("accuracy",),
             (EvalSplit("dev", "dev_matched.tsv", "validation_matched"),
              EvalSplit("dev_mm", "dev_mismatched.tsv", "validation_mismatched")),
             (TestSplit("test_matched.tsv", "MNLI-m.tsv", "test_matched"),
              TestSplit("test_mismatched.tsv", "MNLI-mm.tsv", "test_mismatched")),
             "sentence1", "sentence2", "mnli", "premise", "hypothesis"),
        Task("qnli", "QNLI", "question", "sentence", "label", NLI2, ("accuracy",), ("accuracy",),
             _dev(), _test("QNLI.tsv"), "question", "sentence", "qnli", "question", "sentence"),
        Task("rte", "RTE", "sentence1", "sentence2", "label", NLI2, ("accuracy",), ("accuracy",),
             _dev(), _test("RTE.tsv"), "sentence1", "sentence2", "rte", "sentence1", "sentence2"),
        Task("wnli", "WNLI", "sentence1", "sentence2", "label", BINARY, ("accuracy",), ("accuracy",),
             _dev(), _test("WNLI.tsv"), "sentence1", "sentence2", "wnli", "sentence1", "sentence2",
             label_aliases=hub_names("not_entailment", "entailment")),
        # AX: diagnostic set, test only, predicted with an MNLI model (hence MNLI's labels).
        Task("ax", "diagnostic", "sentence1", "sentence2", None, MNLI_LABELS, (), (),
             (), (TestSplit("diagnostic.tsv", "AX.tsv", "test"),), "sentence1", "sentence2",
             "ax", "premise", "hypothesis", train_file=None),
    ]
}


CUSTOM = "custom"  # task=custom: the user's own data, see custom_data.py and conf/task/custom.yaml


def get_task(name: str) -> Task:
    key = str(name).lower().replace("-", "")
    if key == CUSTOM:
        raise ConfigError("task=custom is not in the GLUE table: it is built from your data files (data.train_file "
                          "and the other keys in conf/task/custom.yaml) by tasks.task_for(cfg).")
    if key not in TASKS:
        raise ConfigError(
            f"Unknown task {name!r}. Valid tasks: {', '.join(TASKS)}, or {CUSTOM} for your own data files. "
            "Pick one with task=<name>, e.g. `python finetune_teacher.py task=rte`."
        )
    return TASKS[key]


def task_for(cfg, model_dir: str | None = None) -> Task:
    """The task of a run: a GLUE task from the table, or task=custom built from the data.* files.

    For task=custom the files are checked and loaded here, before any model: labels come from the training file,
    or, with `model_dir` (predict.py), from that model's config.
    """
    if str(cfg.task.name).lower() == CUSTOM:
        from .custom_data import custom_task_for  # reads the user's files: only when asked to

        return custom_task_for(cfg, model_dir)
    return get_task(cfg.task.name)
