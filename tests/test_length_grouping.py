"""Length-grouped training batches (data.group_by_length) and length-sorted evaluation and prediction."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import SHARED_GLUE, compose_cfg, write_glue
from reptiledistil.data import (MEGA_BATCHES, DataSettings, GlueDataModule, ResumableSampler, length_grouped,
                                load_split)
from reptiledistil.metrics import compute_metrics, predictions
from reptiledistil.models import minilm_dir
from reptiledistil.submission import format_predictions, predict_logits, token_batches
from reptiledistil.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice([rng.randint(5, 20), rng.randint(20, 128)]) for _ in range(n)]


def _padded_share(batches: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def _batches(sampler: ResumableSampler) -> list[list[int]]:
    order = list(sampler)
    return [order[s:s + sampler.batch_size] for s in range(0, len(order), sampler.batch_size)]


def test_grouped_order_is_a_permutation_that_pads_little():
    n, bs, lengths = 5000, 32, _lengths(5000)
    grouped = ResumableSampler(n, bs, seed=3, lengths=lengths)
    plain = ResumableSampler(n, bs, seed=3)
    assert sorted(grouped) == list(range(n))
    assert _padded_share(_batches(plain), lengths) > 0.3
    assert _padded_share(_batches(grouped), lengths) < 0.05


def test_grouped_order_is_seeded_and_random():
    n, bs, lengths = 5000, 32, _lengths(5000)
    first = list(ResumableSampler(n, bs, seed=3, lengths=lengths))
    assert first == list(ResumableSampler(n, bs, seed=3, lengths=lengths)), "same seed, same order"
    other = ResumableSampler(n, bs, seed=3, lengths=lengths)
    other.set_epoch(1)
    assert list(other) != first and list(ResumableSampler(n, bs, seed=4, lengths=lengths)) != first
    # The batches' order is shuffled, not longest first within each mega-batch: the longest batch of the first
    # mega-batch is not usually the first batch.
    firsts = [_batches(ResumableSampler(n, bs, seed=s, lengths=lengths))[0] for s in range(10)]
    assert len({max(lengths[i] for i in b) for b in firsts}) > 3


def test_ungrouped_order_is_the_plain_permutation():
    """data.group_by_length=false draws exactly what every run before the setting drew."""
    s = ResumableSampler(100, 8, seed=7)
    s.set_epoch(2)
    assert list(s) == torch.randperm(100, generator=torch.Generator().manual_seed(9)).tolist()


def test_length_grouped_keeps_a_partial_last_block_last():
    lengths = list(range(1, 106))
    out = length_grouped(list(range(105)), lengths, block=10, generator=torch.Generator().manual_seed(0))
    assert sorted(out) == list(range(105)) and len(out[-5:]) == 5
    # the whole blocks are the sorted mega-batch cut in tens, shuffled; the 5 left over are the last five
    assert sorted(out[-5:]) == [0, 1, 2, 3, 4]
    blocks = [out[s:s + 10] for s in range(0, 100, 10)]
    assert all(max(b) - min(b) == 9 for b in blocks) and blocks != sorted(blocks, key=lambda b: -b[0])
    assert MEGA_BATCHES == 50


@pytest.mark.parametrize("world_size", [2, 3])
def test_grouped_ranks_share_one_permutation(world_size):
    """Every process draws the same epoch order from seed and epoch, takes every world_size-th index of it, and
    so gets as many batches as the others, each batch of similar lengths, no example twice (but the padding)."""
    n, bs, lengths = 1001, 16, _lengths(1001, seed=1)
    ranks = [ResumableSampler(n, bs, seed=5, rank=r, world_size=world_size, lengths=lengths) for r in range(world_size)]
    for s in ranks:
        s.set_epoch(4)
    orders = [list(s) for s in ranks]
    assert len({len(o) for o in orders}) == 1 and len({len(_batches(s)) for s in ranks}) == 1
    seen = [i for o in orders for i in o]
    assert set(seen) == set(range(n)) and len(seen) - n < world_size
    assert _padded_share([b for s in ranks for b in _batches(s)], lengths) < 0.08


def test_grouped_resume_mid_epoch_continues_exactly():
    n, bs, lengths = 700, 8, _lengths(700)
    full = ResumableSampler(n, bs, seed=1, rank=1, world_size=2, lengths=lengths)
    full.set_epoch(3)
    resumed = ResumableSampler(n, bs, seed=1, rank=1, world_size=2, lengths=lengths)
    resumed.set_epoch(3)
    resumed.skip_batches(11)
    assert list(resumed) == list(full)[11 * bs:]
    assert list(resumed) == list(full), "the skip applies to one pass only"


def test_data_module_groups_training_and_sorts_evaluation(tokenizer, tmp_path):
    glue = write_glue(tmp_path / "glue", n_train=200, n_dev=30)
    dm = GlueDataModule(get_task("rte"), tokenizer, settings=DataSettings(glue_dir=str(glue), batch_size=8,
                                                                          eval_batch_size=7, seed=2))
    dm.setup()
    lengths = [len(x) for x in dm.train_ds["input_ids"]]
    loader = dm.train_dataloader()
    assert loader.sampler.lengths == lengths
    off = GlueDataModule(get_task("rte"), tokenizer, settings=DataSettings(glue_dir=str(glue), batch_size=8, seed=2,
                                                                           group_by_length=False))
    off.setup()
    assert off.train_dataloader().sampler.lengths is None
    dev = dm.eval_ds["dev"]
    dev_lengths = [len(x) for x in dev["input_ids"]]
    assert dev_lengths == sorted(dev_lengths, reverse=True)
    assert sorted(dev["idx"]) == sorted(off.eval_ds["dev"]["idx"]), "the same dev examples, longest first"


def test_the_setting_defaults_on_and_a_bad_value_is_refused(tmp_path):
    assert compose_cfg("train", [f"log_dir={tmp_path}"]).data.group_by_length is True
    assert compose_cfg("finetune_teacher", [f"log_dir={tmp_path}", "data.group_by_length=false"]).data.group_by_length is False
    res = subprocess.run([sys.executable, "train.py", "data.group_by_length=maybe"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error:" in res.stderr and "group_by_length" in res.stderr


@pytest.mark.skipif(not (SHARED_GLUE / "RTE" / "dev.tsv").is_file(), reason="needs the GLUE TSVs in ../shared")
@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_sorted_prediction_gives_todays_files_and_metrics(task):
    """Real GLUE lengths, MiniLM with a seeded random head: predictions in length order, put back in file order,
    against the file-order batches every earlier version ran. Class labels, and so the submission files and the
    classification metrics, are the same to the byte; regression scores can differ in the last float bits (a
    padded length changes the kernels' rounding, as a batch size does), so STS-B is compared to 1e-5."""
    t = get_task(task)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=t.num_labels).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    ds = load_split(t, "dev", str(SHARED_GLUE))["dev"].select(range(160))
    with torch.no_grad():
        before = torch.cat([model(**b).logits for b in token_batches(tok, ds, 128, 32)])
    after = predict_logits(model, tok, ds, 128, batch_size=32)
    labels = torch.tensor(ds["labels"])
    if t.is_regression:
        torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
        old, new = (compute_metrics(t, predictions(t, x), labels) for x in (before, after))
        assert all(abs(old[k] - new[k]) < 1e-6 for k in old)
    else:
        assert format_predictions(t, after) == format_predictions(t, before)
        assert (compute_metrics(t, predictions(t, after), labels) == compute_metrics(t, predictions(t, before), labels))
