"""Dynamic int8 quantization: accuracy against fp32, the saved format, and predict.py quantize=int8 / export_dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import compose_cfg
from reptiledistil import quantize as q8
from reptiledistil.errors import ConfigError
from reptiledistil.models import load_finetuned, load_for_finetuning, load_tokenizer
from reptiledistil.quantize import is_quantized, load_quantized, quantize_int8, save_quantized
from reptiledistil.run import predict
from reptiledistil.tasks import get_task

RTE = get_task("rte")


@pytest.fixture(scope="module")
def rte_model(tmp_path_factory, tiny_bert) -> Path:
    """The tiny random BERT with an RTE head, saved as a fine-tuned model directory (no training: seconds)."""
    path = tmp_path_factory.mktemp("rte_model")
    torch.manual_seed(1)
    load_for_finetuning(str(tiny_bert), RTE).save_pretrained(path)
    load_tokenizer(str(tiny_bert)).save_pretrained(path)
    return path


def _inputs(n: int = 16, length: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[: n // 2, length // 2:] = 0  # some padding, as in real batches
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@torch.inference_mode()
def _logits(model, x) -> torch.Tensor:
    return model.eval()(**x).logits


def _count(model: nn.Module, cls) -> int:
    return sum(type(m) is cls for m in model.modules())


def test_every_linear_is_replaced_and_the_input_model_is_kept(rte_model):
    import torch.ao.nn.quantized.dynamic as nnqd

    fp32 = load_finetuned(str(rte_model), RTE)
    n = _count(fp32, nn.Linear)
    assert n == 4 * 6 + 2  # 4 layers x (q, k, v, attention out, intermediate, output) + pooler + classifier
    q = quantize_int8(fp32)
    assert _count(q, nn.Linear) == 0 and _count(q, nnqd.Linear) == n and is_quantized(q)
    assert _count(fp32, nn.Linear) == n and not is_quantized(fp32), "inplace=False must not touch the input"
    assert q.classifier._packed_params.dtype == torch.qint8
    assert q.bert.encoder.layer[0].attention.self.query.weight().qscheme() == torch.per_channel_affine


def test_int8_logits_are_close_to_fp32(rte_model):
    # Tolerance: int8 has 255 steps across each weight row's (and each batch's activation) range, so one
    # quantized matmul carries roughly 1% relative noise; 26 of them in sequence (with residuals) measured 1.3-2.7%
    # relative error on tiny random BERTs like this one. 10% leaves ~4x margin, while a broken quantization (wrong scale,
    # lost weights) lands near 100%. The lower bound proves the logits did go through int8 kernels.
    fp32 = load_finetuned(str(rte_model), RTE)
    x = _inputs()
    ref, got = _logits(fp32, x), _logits(quantize_int8(fp32), x)
    rel = float((got - ref).norm() / ref.norm())
    assert 0.0 < rel < 0.10, rel


def test_save_load_round_trip_gives_identical_logits(rte_model, tmp_path):
    q = quantize_int8(load_finetuned(str(rte_model), RTE))
    out = save_quantized(q, load_tokenizer(str(rte_model)), tmp_path / "int8")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", q8.WEIGHTS, q8.MARKER, "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    marker = json.loads((out / q8.MARKER).read_text())
    assert marker["format"] == q8.FORMAT and marker["version"] == q8.VERSION and marker["dtype"] == "qint8"
    assert marker["qscheme"] == "per_channel"
    assert [p.name for p in tmp_path.iterdir()] == ["int8"], "no temporary directories left behind"

    x = _inputs(seed=3)
    expected = _logits(q, x)
    loaded = load_quantized(out)
    assert is_quantized(loaded) and torch.equal(_logits(loaded, x), expected)
    via_models = load_finetuned(str(out), RTE)  # what predict.py model_dir=<export> does
    assert is_quantized(via_models) and torch.equal(_logits(via_models, x), expected)
    assert load_tokenizer(str(out))("a cat")["input_ids"] == load_tokenizer(str(rte_model))("a cat")["input_ids"]


def test_save_refuses_overwrite_and_an_interrupted_export_leaves_nothing(rte_model, tmp_path, monkeypatch):
    q = quantize_int8(load_finetuned(str(rte_model), RTE))
    out = save_quantized(q, None, tmp_path / "int8")
    before = (out / q8.WEIGHTS).read_bytes()
    with pytest.raises(ConfigError, match="already holds results"):
        save_quantized(q, None, out)
    assert (out / q8.WEIGHTS).read_bytes() == before
    save_quantized(q, None, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]

    def broken_save(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(q8.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_quantized(q, None, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"], "nothing half-written"


def test_save_and_load_refuse_what_is_not_an_int8_model(rte_model, tmp_path):
    with pytest.raises(ConfigError, match="quantize_int8"):
        save_quantized(load_finetuned(str(rte_model), RTE), None, tmp_path / "fp32")
    assert not (tmp_path / "fp32").exists()
    with pytest.raises(ConfigError, match="not a quantized model directory"):
        load_quantized(rte_model)
    out = save_quantized(quantize_int8(load_finetuned(str(rte_model), RTE)), None, tmp_path / "int8")
    (out / q8.MARKER).write_text(json.dumps({"format": q8.FORMAT, "version": 99}))
    with pytest.raises(ConfigError, match="version 99"):
        load_quantized(out)


def _predict_cfg(model_dir, out, glue, *extra):
    return compose_cfg("predict", ["task=rte", f"model_dir={model_dir}", f"output_dir={out}",
                                   f"data.glue_dir={glue}", "max_seq_length=32", *extra])


@pytest.fixture
def spy(monkeypatch):
    """Records, for each predict_logits call, whether the model it got was int8."""
    import reptiledistil.submission as sub

    seen, real = [], sub.predict_logits

    def wrapped(runner, *a, **k):
        seen.append(is_quantized(runner.model))
        return real(runner, *a, **k)

    monkeypatch.setattr(sub, "predict_logits", wrapped)
    return seen


def test_predict_int8_writes_submission_and_a_loadable_export(rte_model, glue_dir, tmp_path, spy):
    out, export = tmp_path / "pred", tmp_path / "int8"
    res = predict(_predict_cfg(rte_model, out, glue_dir, "quantize=int8", f"export_dir={export}",
                                  "export_check=false"))
    assert spy == [True] and res["quantize"] == "int8" and res["export_dir"] == str(export)
    lines = (out / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert [int(l.split("\t")[0]) for l in lines[1:]] == list(range(10))
    assert {l.split("\t")[1] for l in lines[1:]} <= {"entailment", "not_entailment"}
    assert (export / q8.MARKER).is_file()

    # The export is a model directory for predict.py as it stands: same predictions, still int8.
    res2 = predict(_predict_cfg(export, tmp_path / "pred2", glue_dir))
    assert spy == [True, True] and res2["quantize"] == "int8"
    assert (tmp_path / "pred2" / "RTE.tsv").read_text() == "\n".join(lines) + "\n"

    dev = predict(_predict_cfg(rte_model, tmp_path / "dev", glue_dir, "quantize=int8", "split=dev"))
    assert spy[-1] is True and 0.0 <= dev["dev"]["accuracy"] <= 1.0


@pytest.mark.parametrize("extra,match", [
    (["quantize=int4"], "use one of none, int8"),
    (["export_dir={tmp}/int8"], "needs quantize=int8"),
    (["quantize=int8", "export_dir={tmp}/taken"], "already holds results"),
    (["quantize=int8", "cuda"], "CPU only"),
])
def test_predict_refuses_bad_quantize_settings(rte_model, glue_dir, tmp_path, monkeypatch, spy, extra, match):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("earlier export")
    if "cuda" in extra:
        extra = [e for e in extra if e != "cuda"]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import reptiledistil.run as run

    loaded = []
    monkeypatch.setattr(run, "load_finetuned", lambda *a, **k: loaded.append(a) or pytest.fail("model loaded"))
    out = tmp_path / "pred"
    with pytest.raises(ConfigError, match=match):
        predict(_predict_cfg(rte_model, out, glue_dir, *[e.format(tmp=tmp_path) for e in extra]))
    assert loaded == [] and spy == [] and not out.exists(), "refused before loading the model or writing anything"
    assert not (tmp_path / "int8").exists()
    assert (tmp_path / "taken" / "keep.txt").read_text() == "earlier export"
