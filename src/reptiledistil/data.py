"""GLUE data: classic TSV files (or the hub) -> `datasets.Dataset` -> tokenised batches.

Every split becomes a Dataset with columns `idx`, `text_a`, `text_b` (None for single-sentence tasks)
and, for labelled splits, `labels` (class id, or float score for STS-B).

`task_data(cfg)` is where a run gets its task and its data: a GLUE row (files read when a split is asked for)
or task=custom (custom_data.py builds the task description from the user's files and loads the splits, all
checked before any model). `DataSettings` is what the data module reads from the config, built once.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import datasets
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from . import custom_data
from .errors import ConfigError
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
    if source not in ("tsv", "hub"):
        raise ConfigError(f"data.source must be 'tsv' or 'hub', got {source!r}.")
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


def task_data(cfg, model_dir: str | None = None) -> TaskData:
    """The task of a run (cfg.task.name) and its data (cfg.data.*).

    A GLUE task is a row of the table; its files are read when a split is asked for. task=custom is built from
    the user's files, checked and loaded here, before any model: labels come from the training file, or, with
    `model_dir` (predict.py), from that model's config (and cfg.split is the split loaded).
    """
    glue_dir, source = cfg.data.glue_dir, cfg.data.source
    if str(cfg.task.name).lower() != CUSTOM:
        return TaskData(task=get_task(cfg.task.name), glue_dir=glue_dir, source=source)
    settings = custom_data.custom_settings(cfg.get("data"))
    if model_dir is None:
        task, splits = custom_data.load_for_training(settings)
    else:
        task, splits = custom_data.load_for_prediction(settings, str(model_dir), str(cfg.get("split")))
    return TaskData(task=task, glue_dir=glue_dir, source=source, loaded=splits)


def tokenize(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> datasets.Dataset:
    """Adds input_ids / token_type_ids / attention_mask (unpadded: batches are padded dynamically)."""

    def enc(batch):
        b = batch["text_b"] if any(t is not None for t in batch["text_b"]) else None
        return tokenizer(batch["text_a"], b, truncation=True, max_length=max_seq_length)

    # In memory: never writes a cache file beside the (read-only) data. A given fingerprint spares datasets
    # from hashing the tokenizer (about a second per call) for a cache that is never used.
    return ds.map(enc, batched=True, remove_columns=["text_a", "text_b"], keep_in_memory=True,
                  load_from_cache_file=False, new_fingerprint=uuid.uuid4().hex)


def check_max_seq_length(max_seq_length: int, max_positions: int) -> None:
    if max_seq_length > max_positions:
        raise ConfigError(f"max_seq_length={max_seq_length} exceeds the model's position limit "
                          f"({max_positions}). Set max_seq_length<={max_positions}.")
    if max_seq_length < 8:
        raise ConfigError(f"max_seq_length={max_seq_length} is too short; use at least 8 (128 is the default).")


def subsample(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """The first n examples (quick runs); None or <=0 keeps all."""
    return ds.select(range(min(n, len(ds)))) if n and n > 0 else ds


def split_quiz(ds: datasets.Dataset, quiz_size: int, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rest, quiz set): `quiz_size` examples drawn at random (seeded) and held out of training."""
    if not 0 < quiz_size < len(ds):
        raise ConfigError(f"method.quiz_size={quiz_size} must be between 1 and the training examples minus one "
                          f"({len(ds) - 1} here): it is held out of training for the teacher's quiz.")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    return ds.select(sorted(order[quiz_size:])), ds.select(sorted(order[:quiz_size]))


# Batches per length-sorted group (transformers' group_by_length uses 50): wide enough that a batch's examples have
# nearly one length, narrow enough that which examples meet stays random.
MEGA_BATCHES = 50


def length_grouped(order: list[int], lengths: Sequence[int], block: int, generator: torch.Generator) -> list[int]:
    """`order` (a random permutation) regrouped so that every `block` consecutive indices have similar lengths.

    As transformers' group_by_length: cut the permutation into mega-batches of MEGA_BATCHES blocks, sort each by
    length (longest first; the sort is stable, so ties keep their random order), cut into blocks, then shuffle
    the whole blocks with `generator`, so the order of the batches stays random too. A last, partial block stays
    last: the processes' shares of a block (every world_size-th index) would otherwise straddle two blocks.
    """
    mega = block * MEGA_BATCHES
    regrouped = [i for s in range(0, len(order), mega) for i in sorted(order[s:s + mega], key=lambda i: -lengths[i])]
    blocks = [regrouped[s:s + block] for s in range(0, len(regrouped), block)]
    tail = blocks.pop() if blocks and len(blocks[-1]) < block else []
    return [i for k in torch.randperm(len(blocks), generator=generator).tolist() for i in blocks[k]] + tail


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffled training order that a resumed run can pick up mid-epoch.

    Epoch e is a permutation seeded with seed + e (Lightning calls set_epoch), split across processes as
    DistributedSampler does (padded to a multiple of the process count, every world_size-th index); after
    skip_batches(k) the next pass starts k batches in, exactly where a killed run stopped. With `lengths` (the
    examples' token counts), the permutation is length-grouped (length_grouped) with blocks of one batch per
    process, so every process's batch pads to nearly its examples' own length.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 lengths: Sequence[int] | None = None):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.lengths = lengths
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_batches(self, k: int) -> None:
        self._skip = k

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

    def epoch_order(self) -> list[int]:
        """The whole epoch's order, before it is split across processes (the same on every process)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.lengths is not None:
            order = length_grouped(order, self.lengths, self.batch_size * self.world_size, g)
        return order

    def __iter__(self):
        order = self.epoch_order()
        order += order[: len(self) * self.world_size - self.n]  # pad so every process gets as many
        start, self._skip = self._skip * self.batch_size, 0
        return iter(order[self.rank::self.world_size][start:])


def sorted_by_length(ds: datasets.Dataset) -> datasets.Dataset:
    """`ds` (tokenized) longest first, so evaluation batches pad little (and the largest batch, the one that would
    run out of memory, comes first). Metrics do not depend on the order; predictions are put back in order."""
    return ds.select(length_order(ds))


def length_order(ds: datasets.Dataset) -> list[int]:
    """Row numbers of `ds` (tokenized), longest first; ties keep their order."""
    if len(ds) == 0:
        return []  # an empty split has no columns
    lengths = [len(x) for x in ds["input_ids"]]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


@dataclass(frozen=True)
class DataSettings:
    """What the data module reads from a training config: built once (from_cfg), passed by keyword."""

    glue_dir: str | None = None
    source: str = "tsv"
    max_seq_length: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64
    max_train_samples: int | None = None  # the first n examples (quick runs); None or <= 0: all
    max_eval_samples: int | None = None
    num_workers: int = 0
    group_by_length: bool = True  # training batches of similar lengths (ResumableSampler); False: uniformly random
    seed: int = 0  # the training order of epoch e is a permutation seeded with seed + e; the quiz draw too

    @classmethod
    def from_cfg(cls, cfg) -> DataSettings:
        d = cfg.data
        return cls(glue_dir=d.glue_dir, source=d.source, max_seq_length=cfg.max_seq_length,
                   batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                   max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples,
                   num_workers=d.num_workers, group_by_length=d.group_by_length, seed=cfg.seed)


def check_quiz_fits(splits: Splits, quiz_examples: int, max_train_samples: int | None) -> None:
    """A method's held-out quiz set must leave training data: checked on the loaded split, before any model."""
    if not quiz_examples:
        return
    n = len(splits["train"]["train"])
    n = min(n, max_train_samples) if max_train_samples and max_train_samples > 0 else n
    if quiz_examples >= n:
        raise ConfigError(f"method.quiz_size={quiz_examples} leaves no training data: there are {n} training "
                          f"examples. Pass a smaller method.quiz_size (e.g. {max(1, n // 10)}).")


class GlueDataModule(pl.LightningDataModule):
    """Train and dev loaders for one task; one val loader per eval split (MNLI: matched, mismatched); and, when a
    method asks for one (`quiz_examples`: method.quiz_examples()), a held-out quiz set drawn from the training data
    (quiz_batch)."""

    def __init__(self, task: Task, tokenizer: PreTrainedTokenizerBase, settings: DataSettings = DataSettings(),
                 splits: Splits | None = None, quiz_examples: int = 0):
        super().__init__()
        # {"train": ..., "dev": ...} as load_training_splits returns them, when loaded (and checked) beforehand
        self.splits = splits
        self.settings = settings
        self.seed = settings.seed  # the training order of epoch e is a permutation seeded with seed + e
        self.train_batches_done = 0  # in the current epoch; kept in checkpoints (set by ResumableCheckpoint)
        self._resume_skip = 0
        self.task, self.tokenizer = task, tokenizer
        self.batch_size = settings.batch_size
        self.collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.quiz_examples = quiz_examples  # examples a method holds out of training (MetaDistil: the teacher's quiz)
        self.train_ds: datasets.Dataset | None = None
        self.quiz_ds: datasets.Dataset | None = None
        self.eval_ds: dict[str, datasets.Dataset] = {}

    @property
    def eval_names(self) -> list[str]:
        return [s.name for s in self.task.eval_splits]

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is not None:
            return
        s = self.settings
        splits = self.splits or load_training_splits(self.task, s.glue_dir, s.source)
        self.train_ds = tokenize(subsample(splits["train"]["train"], s.max_train_samples), self.tokenizer,
                                 s.max_seq_length)
        if self.quiz_examples:
            self.train_ds, self.quiz_ds = split_quiz(self.train_ds, self.quiz_examples, self.seed)
        for name, ds in splits["dev"].items():
            self.eval_ds[name] = sorted_by_length(tokenize(subsample(ds, s.max_eval_samples), self.tokenizer,
                                                           s.max_seq_length))
        self.splits = None  # the untokenised text is no longer needed

    def _loader(self, ds, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(ds.with_format("python"), batch_size=batch_size, shuffle=shuffle,
                          collate_fn=self.collate, num_workers=self.settings.num_workers)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        lengths = [len(x) for x in self.train_ds["input_ids"]] if self.settings.group_by_length else None
        sampler = ResumableSampler(len(self.train_ds), self.batch_size, self.seed, t.global_rank if t else 0,
                                   t.world_size if t else 1, lengths=lengths)
        sampler.skip_batches(self._resume_skip)  # a run resumed mid-epoch starts where it stopped
        self._resume_skip = 0
        return DataLoader(self.train_ds.with_format("python"), batch_size=self.batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=self.settings.num_workers)

    def quiz_batch(self, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
        """A batch of the quiz set for training step `step` on process `rank`: drawn without replacement by a
        generator seeded with (seed, step, rank), so a resumed run draws what the killed one would have."""
        g = torch.Generator().manual_seed(hash((self.seed, step, rank)) & 0x7FFF_FFFF_FFFF_FFFF)
        n = min(self.batch_size, len(self.quiz_ds))
        rows = self.quiz_ds.with_format("python")
        return self.collate([rows[i] for i in torch.randperm(len(self.quiz_ds), generator=g)[:n].tolist()])

    def state_dict(self) -> dict:
        return {"train_batches_done": self.train_batches_done}

    def load_state_dict(self, state: dict) -> None:
        self._resume_skip = self.train_batches_done = state["train_batches_done"]

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.eval_ds[n], False, self.settings.eval_batch_size) for n in self.eval_names]


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys a BERT forward takes (drops labels and idx)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
