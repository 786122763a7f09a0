"""predict (pipelines.predict through Hydra compose) and submission.py: GLUE submission files and dev metrics."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from conftest import compose_cfg
from reptiledistil.data.glue import load_split
from reptiledistil.core.errors import ConfigError
from reptiledistil.models.loading import minilm_dir
from reptiledistil.pipelines.predict import predict
from reptiledistil.inference.submission import format_predictions, predict_logits, write_submission, zip_submissions
from reptiledistil.data.tasks import get_task

MNLI = ("entailment", "neutral", "contradiction")
HEADER = "index\tprediction"


def save_tiny_classifier(path: Path, num_labels: int, finetuning_task: str, labels: tuple[str, ...] = (),
                         seed: int = 0) -> Path:
    """A tiny random fine-tuned-style model: BertConfig head for `finetuning_task`, plus the MiniLM tokenizer."""
    torch.manual_seed(seed)
    kw = dict(id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}) if labels else {}
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                     finetuning_task=finetuning_task, **kw)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    return path


def save_tiny_mnli(path: Path) -> Path:
    return save_tiny_classifier(path, 3, "mnli", MNLI)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_models")
    return {"rte": save_tiny_classifier(root / "rte", 2, "rte", ("entailment", "not_entailment")),
            "stsb": save_tiny_classifier(root / "stsb", 1, "stsb", seed=1),
            "cola": save_tiny_classifier(root / "cola", 2, "cola", ("0", "1"), seed=2),
            "mnli": save_tiny_mnli(root / "mnli")}


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    from conftest import write_glue

    return write_glue(tmp_path_factory.mktemp("predict_glue") / "glue_data")


def run_predict(task: str, model: Path, out: Path, glue: Path, *extra: str) -> dict:
    return predict(compose_cfg("predict", [f"task={task}", f"model_dir={model}", f"output_dir={out}",
                                           f"data.glue_dir={glue}", "max_seq_length=32", "eval_batch_size=4", *extra]))


def rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    return [l.split("\t") for l in lines[1:]]


# --- format_predictions / write_submission / zip ------------------------------------------------------------


def test_format_stsb_clipped_three_decimals():
    logits = torch.tensor([[-1.0], [0.12345], [2.5], [5.0004], [7.0], [-0.0], [4.9996], [-1e-4]])
    assert format_predictions(get_task("stsb"), logits) == [
        "0.000", "0.123", "2.500", "5.000", "5.000", "0.000", "5.000", "0.000"]


def test_format_classification_labels():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    assert format_predictions(get_task("mnli"), logits) == ["neutral", "entailment", "contradiction"]
    assert format_predictions(get_task("ax"), logits) == ["neutral", "entailment", "contradiction"]
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert format_predictions(get_task("rte"), two) == ["entailment", "not_entailment"]
    assert format_predictions(get_task("cola"), two) == ["0", "1"]
    assert format_predictions(get_task("qnli"), two) == ["entailment", "not_entailment"]


def test_write_submission_and_zip(tmp_path):
    write_submission(tmp_path / "RTE.tsv", [5, 2], ["entailment", "not_entailment"])
    assert (tmp_path / "RTE.tsv").read_text() == "index\tprediction\n5\tentailment\n2\tnot_entailment\n"
    write_submission(tmp_path / "CoLA.tsv", [0], ["1"])
    (tmp_path / "notes.txt").write_text("not a submission")
    z = zip_submissions(tmp_path)
    assert z == tmp_path / "glue_submission.zip"
    with zipfile.ZipFile(z) as f:
        assert f.namelist() == ["CoLA.tsv", "RTE.tsv"]
        assert f.read("RTE.tsv").decode() == (tmp_path / "RTE.tsv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CoLA.tsv", "RTE.tsv", "glue_submission.zip", "notes.txt"]


def test_predict_logits_batching_does_not_change_results(models, glue, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(models["rte"])
    ds = load_split(get_task("rte"), "test", str(glue))["RTE.tsv"]
    batched = predict_logits(model, tokenizer, ds, 32, batch_size=4)
    single = predict_logits(model, tokenizer, ds, 32, batch_size=1)
    assert batched.shape == (10, 2)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])  # different inputs give different outputs


def test_predict_logits_empty(models, tokenizer):
    import datasets

    model = AutoModelForSequenceClassification.from_pretrained(models["rte"])
    empty = datasets.Dataset.from_dict({"idx": [], "text_a": [], "text_b": []})
    assert predict_logits(model, tokenizer, empty, 32).shape == (0, 2)


# --- predict: test split ------------------------------------------------------------------------------------


def test_rte_submission(models, glue, tmp_path, tokenizer):
    out = tmp_path / "pred"
    res = run_predict("rte", models["rte"], out, glue)
    r = rows(out / "RTE.tsv")
    assert [int(i) for i, _ in r] == list(range(10))
    assert {p for _, p in r} <= {"entailment", "not_entailment"}
    assert res["RTE.tsv"] == str(out / "RTE.tsv") and res["split"] == "test" and res["task"] == "rte"
    # the file holds the model's argmax for each test pair, in file order
    model = AutoModelForSequenceClassification.from_pretrained(models["rte"])
    ds = load_split(get_task("rte"), "test", str(glue))["RTE.tsv"]
    expected = format_predictions(get_task("rte"), predict_logits(model, tokenizer, ds, 32))
    assert [p for _, p in r] == expected
    assert "zip" not in res and not (out / "glue_submission.zip").exists()


def test_idx_order_follows_file(models, tmp_path):
    glue = tmp_path / "glue"
    (glue / "CoLA").mkdir(parents=True)
    (glue / "CoLA" / "test.tsv").write_text("index\tsentence\n9\ta cat\n4\ta dog sat\n0\tthe mat\n")
    run_predict("cola", models["cola"], tmp_path / "out", glue)
    r = rows(tmp_path / "out" / "CoLA.tsv")
    assert [i for i, _ in r] == ["9", "4", "0"] and {p for _, p in r} <= {"0", "1"}


def test_stsb_submission_clipped(models, glue, tmp_path):
    run_predict("stsb", models["stsb"], tmp_path / "out", glue)
    r = rows(tmp_path / "out" / "STS-B.tsv")
    assert len(r) == 10
    for _, p in r:
        assert re.fullmatch(r"\d\.\d{3}", p) and 0.0 <= float(p) <= 5.0


def test_mnli_writes_matched_and_mismatched(models, glue, tmp_path):
    out = tmp_path / "out"
    res = run_predict("mnli", models["mnli"], out, glue)
    assert set(res) >= {"MNLI-m.tsv", "MNLI-mm.tsv"}
    for name in ("MNLI-m.tsv", "MNLI-mm.tsv"):
        r = rows(out / name)
        assert [int(i) for i, _ in r] == list(range(10)) and {p for _, p in r} <= set(MNLI)
    assert sorted(p.name for p in out.iterdir()) == ["MNLI-m.tsv", "MNLI-mm.tsv"]


def test_ax_with_mnli_model(models, glue, tmp_path):
    out = tmp_path / "out"
    res = run_predict("ax", models["mnli"], out, glue, "zip=true")
    r = rows(out / "AX.tsv")
    assert len(r) == 10 and [int(i) for i, _ in r] == list(range(10))
    assert {p for _, p in r} <= set(MNLI)
    with zipfile.ZipFile(res["zip"]) as z:
        assert z.namelist() == ["AX.tsv"]


def test_ax_refuses_non_mnli_model(models, glue, tmp_path):
    with pytest.raises(ConfigError, match=r"fine-tuned on task 'rte', not 'ax'\. AX is predicted with an MNLI model: "
                                          r"pass model_dir="):
        run_predict("ax", models["rte"], tmp_path / "out", glue)


def test_ax_dev_split_is_an_error(models, glue, tmp_path):
    with pytest.raises(ConfigError, match="Task ax has no labelled dev set: use split=test"):
        run_predict("ax", models["mnli"], tmp_path / "out", glue, "split=dev")
    assert not (tmp_path / "out" / "ax_dev_metrics.json").exists()


def test_bad_split(models, glue, tmp_path):
    with pytest.raises(ConfigError, match=r"split=train is not one of dev, test"):
        run_predict("rte", models["rte"], tmp_path / "out", glue, "split=train")


def test_wrong_task_model(models, glue, tmp_path):
    with pytest.raises(ConfigError, match=r"not 'mrpc'\. Pass model_dir=<a model fine-tuned or distilled on mrpc>"):
        run_predict("mrpc", models["rte"], tmp_path / "out", glue)


def test_missing_model_dir(glue, tmp_path):
    with pytest.raises(ConfigError, match=rf"Model {tmp_path / 'nope'} does not exist\. Pass model_dir="):
        run_predict("rte", tmp_path / "nope", tmp_path / "out", glue)


def test_max_seq_length_beyond_model(models, glue, tmp_path):
    with pytest.raises(ConfigError, match=r"max_seq_length=512 exceeds the model's position limit \(128\)"):
        predict(compose_cfg("predict", ["task=rte", f"model_dir={models['rte']}", f"output_dir={tmp_path}",
                                        f"data.glue_dir={glue}", "max_seq_length=512"]))


def test_existing_submission_refused_then_overwritten(models, glue, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "RTE.tsv").write_text("precious\n")
    with pytest.raises(ConfigError, match=r"RTE\.tsv already exist\(s\)\. Pass overwrite=true to replace"):
        run_predict("rte", models["rte"], out, glue)
    assert (out / "RTE.tsv").read_text() == "precious\n"
    # refused before anything slow: even a missing model is not reached
    with pytest.raises(ConfigError, match="overwrite=true"):
        run_predict("rte", tmp_path / "no_model", out, glue)
    run_predict("rte", models["rte"], out, glue, "overwrite=true")
    assert len(rows(out / "RTE.tsv")) == 10


def test_existing_mnli_mm_alone_is_refused(models, glue, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "MNLI-mm.tsv").write_text("old\n")
    with pytest.raises(ConfigError, match=r"MNLI-mm\.tsv already exist"):
        run_predict("mnli", models["mnli"], out, glue)
    assert not (out / "MNLI-m.tsv").exists() and (out / "MNLI-mm.tsv").read_text() == "old\n"


def test_other_tasks_files_are_kept_and_zipped(models, glue, tmp_path):
    out = tmp_path / "out"
    run_predict("rte", models["rte"], out, glue)
    res = run_predict("ax", models["mnli"], out, glue, "zip=true")  # RTE.tsv is not AX's file: no clash
    with zipfile.ZipFile(res["zip"]) as z:
        assert z.namelist() == ["AX.tsv", "RTE.tsv"]
        assert z.read("RTE.tsv").decode() == (out / "RTE.tsv").read_text()
    assert not list(out.glob(".*"))  # no temporary files left


# --- predict: dev split -------------------------------------------------------------------------------------


def test_dev_metrics(models, glue, tmp_path, tokenizer):
    out = tmp_path / "out"
    res = run_predict("rte", models["rte"], out, glue, "split=dev")
    saved = json.loads((out / "rte_dev_metrics.json").read_text())
    assert saved["dev"] == res["dev"] and set(res["dev"]) == {"accuracy"}
    model = AutoModelForSequenceClassification.from_pretrained(models["rte"])
    ds = load_split(get_task("rte"), "dev", str(glue))["dev"]
    pred = predict_logits(model, tokenizer, ds, 32).argmax(-1).tolist()
    expected = sum(p == l for p, l in zip(pred, ds["labels"])) / len(pred)
    assert res["dev"]["accuracy"] == pytest.approx(expected)
    assert not (out / "RTE.tsv").exists()


def test_dev_metrics_mnli_both_splits(models, glue, tmp_path):
    res = run_predict("mnli", models["mnli"], tmp_path / "out", glue, "split=dev")
    assert set(res["dev"]) == {"accuracy"} and set(res["dev_mm"]) == {"accuracy"}
    assert 0.0 <= res["dev_mm"]["accuracy"] <= 1.0


def test_dev_metrics_stsb(models, glue, tmp_path):
    res = run_predict("stsb", models["stsb"], tmp_path / "out", glue, "split=dev")
    assert set(res["dev"]) == {"pearson", "spearman"}
    assert all(-1.0 <= v <= 1.0 for v in res["dev"].values())
