"""Tokenised batches for training and evaluation: tokenisation, the resumable (length-grouped) training order, the
held-out quiz set a method may ask for, and the Lightning data module. `DataSettings` is what the data module reads
from the config, built once. (The examples themselves come from glue.py and custom.py.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Sequence

import datasets
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from ..core.errors import ConfigError
from .glue import Splits, load_training_splits
from .tasks import Task


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
    """The model's position limit; the lower bound is the schema's (config/schema.py)."""
    if max_seq_length > max_positions:
        raise ConfigError(f"max_seq_length={max_seq_length} exceeds the model's position limit "
                          f"({max_positions}). Set max_seq_length<={max_positions}.")


def subsample(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """The first n examples (quick runs); None or <=0 keeps all."""
    return ds.select(range(min(n, len(ds)))) if n and n > 0 else ds


def split_quiz(ds: datasets.Dataset, quiz_size: int, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rest, quiz set): `quiz_size` examples drawn at random (seeded) and held out of training. The size
    was checked against the data before any model (check_quiz_fits)."""
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


def token_lengths(ds: datasets.Dataset) -> list[int]:
    """Tokens per example of `ds` (tokenized, unpadded)."""
    return [len(x) for x in ds["input_ids"]]


def length_order(ds: datasets.Dataset) -> list[int]:
    """Row numbers of `ds` (tokenized), longest first; ties keep their order."""
    if len(ds) == 0:
        return []  # an empty split has no columns
    lengths = token_lengths(ds)
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
        lengths = token_lengths(self.train_ds) if self.settings.group_by_length else None
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
