"""The real GLUE files in ../shared/glue_data (read-only; skipped where absent): row counts, quirks, predict.

Nothing is written inside SHARED_GLUE: outputs go to tmp_path, and tokenising keeps datasets in memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_GLUE, compose_cfg
from reptiledistil.data.datamodule import DataSettings, GlueDataModule
from reptiledistil.data.glue import load_split
from reptiledistil.pipelines.predict import predict
from reptiledistil.data.tasks import get_task

pytestmark = pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason=f"real GLUE data not found at {SHARED_GLUE}")


def need(*files: str) -> None:
    for f in files:
        if not (SHARED_GLUE / f).is_file():
            pytest.skip(f"{SHARED_GLUE / f} not present")


def load(task: str, split: str):
    return load_split(get_task(task), split, str(SHARED_GLUE))


def raw_data_lines(rel: str, header: bool = True) -> list[list[str]]:
    """An independent reading: split lines on tabs (no csv module)."""
    lines = (SHARED_GLUE / rel).read_text(encoding="utf-8-sig").split("\n")
    lines = [l for l in lines if l]
    return [l.split("\t") for l in (lines[1:] if header else lines)]


@pytest.mark.parametrize("task, split, file, n", [
    ("rte", "train", "RTE/train.tsv", 2490), ("rte", "dev", "RTE/dev.tsv", 277),
    ("cola", "train", "CoLA/train.tsv", 8551), ("cola", "dev", "CoLA/dev.tsv", 1043),
    ("mrpc", "dev", "MRPC/dev.tsv", 408), ("mrpc", "train", "MRPC/train.tsv", 3668),
    ("stsb", "dev", "STS-B/dev.tsv", 1500), ("qnli", "dev", "QNLI/dev.tsv", 5463),
    ("wnli", "train", "WNLI/train.tsv", 635), ("wnli", "dev", "WNLI/dev.tsv", 71), ("sst2", "dev", "SST-2/dev.tsv", 872),
])
def test_labelled_row_counts(task, split, file, n):
    need(file)
    ds = next(iter(load(task, split).values()))
    assert len(ds) == n
    assert "labels" in ds.column_names


@pytest.mark.parametrize("task, name, file, n", [
    ("rte", "RTE.tsv", "RTE/test.tsv", 3000), ("ax", "AX.tsv", "diagnostic/diagnostic.tsv", 1104),
    ("cola", "CoLA.tsv", "CoLA/test.tsv", 1063), ("stsb", "STS-B.tsv", "STS-B/test.tsv", 1379),
    ("mrpc", "MRPC.tsv", "MRPC/test.tsv", 1725), ("wnli", "WNLI.tsv", "WNLI/test.tsv", 146),
    ("qnli", "QNLI.tsv", "QNLI/test.tsv", 5463), ("sst2", "SST-2.tsv", "SST-2/test.tsv", 1821),
])
def test_test_row_counts_and_idx(task, name, file, n):
    need(file)
    ds = load(task, "test")[name]
    assert len(ds) == n and "labels" not in ds.column_names
    assert ds["idx"] == list(range(n))  # GLUE test files are indexed 0..n-1 in order


def test_cola_headerless_train():
    need("CoLA/train.tsv")
    ds = load("cola", "train")["train"]
    raw = raw_data_lines("CoLA/train.tsv", header=False)
    assert len(raw) == 8551
    assert ds["labels"] == [int(r[1]) for r in raw]  # label from column 2, first line included
    assert ds[0]["text_a"] == raw[0][3] and ds[0]["text_b"] is None
    assert 0 < sum(ds["labels"]) < len(ds)


def test_mrpc_dev_bom():
    need("MRPC/dev.tsv")
    assert (SHARED_GLUE / "MRPC" / "dev.tsv").read_bytes()[:3] == b"\xef\xbb\xbf"
    ds = load("mrpc", "dev")["dev"]
    raw = raw_data_lines("MRPC/dev.tsv")
    assert ds["labels"] == [int(r[0]) for r in raw]
    assert (ds[0]["text_a"], ds[0]["text_b"]) == (raw[0][3], raw[0][4])  # quotes kept as literal text


def test_stsb_dev_float_labels():
    need("STS-B/dev.tsv")
    ds = load("stsb", "dev")["dev"]
    assert len(ds) == 1500
    labels = ds["labels"]
    assert all(isinstance(x, float) and 0.0 <= x <= 5.0 for x in labels)
    assert labels == pytest.approx([float(r[-1]) for r in raw_data_lines("STS-B/dev.tsv")])
    assert len(set(labels)) > 10  # real scores, not class ids


def test_nli_labels_real():
    need("RTE/dev.tsv", "QNLI/dev.tsv")
    for task, file in (("rte", "RTE/dev.tsv"), ("qnli", "QNLI/dev.tsv")):
        ds = load(task, "dev")["dev"]
        names = get_task(task).labels
        assert [names[i] for i in ds["labels"]] == [r[-1] for r in raw_data_lines(file)]


def test_diagnostic_texts():
    need("diagnostic/diagnostic.tsv")
    ds = load("ax", "test")["AX.tsv"]
    raw = raw_data_lines("diagnostic/diagnostic.tsv")
    assert len(raw) == 1104
    assert (ds[0]["text_a"], ds[0]["text_b"]) == (raw[0][1], raw[0][2])
    assert (ds[1103]["text_a"], ds[1103]["text_b"]) == (raw[1103][1], raw[1103][2])


def test_datamodule_on_real_mrpc(tokenizer):
    need("MRPC/train.tsv", "MRPC/dev.tsv")
    dm = GlueDataModule(get_task("mrpc"), tokenizer, settings=DataSettings(
        glue_dir=str(SHARED_GLUE), max_seq_length=64, batch_size=8, eval_batch_size=16, max_train_samples=32,
        max_eval_samples=16))
    dm.setup()
    assert len(dm.train_ds) == 32 and len(dm.eval_ds["dev"]) == 16
    b = next(iter(dm.val_dataloader()[0]))
    assert b["input_ids"].shape[0] == 16 and b["input_ids"].shape[1] <= 64
    assert int(b["attention_mask"].sum(1).max()) == b["input_ids"].shape[1]  # padded to the longest only


@pytest.fixture(scope="module")
def mnli_model(tmp_path_factory):
    from test_predict import save_tiny_mnli

    return save_tiny_mnli(tmp_path_factory.mktemp("real_mnli") / "mnli")


def check_submission(path: Path, n: int, labels: set[str]) -> None:
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == n + 1
    r = [l.split("\t") for l in lines[1:]]
    assert [int(i) for i, _ in r] == list(range(n))
    assert {p for _, p in r} <= labels


def test_predict_ax_real_diagnostic(mnli_model, tmp_path):
    need("diagnostic/diagnostic.tsv")
    out = tmp_path / "pred"
    predict(compose_cfg("predict", ["task=ax", f"model_dir={mnli_model}", f"output_dir={out}",
                                    f"data.glue_dir={SHARED_GLUE}", "max_seq_length=32"]))
    check_submission(out / "AX.tsv", 1104, {"entailment", "neutral", "contradiction"})


def test_predict_rte_real_test(tmp_path):
    need("RTE/test.tsv")
    from test_predict import save_tiny_classifier

    model = save_tiny_classifier(tmp_path / "rte_model", 2, "rte", ("entailment", "not_entailment"))
    out = tmp_path / "pred"
    predict(compose_cfg("predict", ["task=rte", f"model_dir={model}", f"output_dir={out}",
                                    f"data.glue_dir={SHARED_GLUE}", "max_seq_length=32", "zip=true"]))
    check_submission(out / "RTE.tsv", 3000, {"entailment", "not_entailment"})
    assert (out / "glue_submission.zip").is_file()
