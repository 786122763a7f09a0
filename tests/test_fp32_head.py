"""bf16 where it is safe, fp32 where it counts: the task head (regression scores, the logits that losses and metrics
read) runs in fp32 under bf16 autocast; an undefined correlation is said in words; the suite's STS-B prediction
passes under both precisions, whatever the machine has."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig

import reptiledistil.inference.engines as engines
from reptiledistil.data.metrics import UNDEFINED, format_metrics
from reptiledistil.models.loading import fp32_head, load_finetuned
from reptiledistil.data.tasks import get_task
from test_predict import glue, models, run_predict  # noqa: F401  (fixtures)


def _tiny(config_cls=BertConfig, **kw):
    torch.manual_seed(0)
    base = dict(vocab_size=100, num_labels=1, max_position_embeddings=64)
    if config_cls is BertConfig:
        base.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    else:
        base.update(dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    return AutoModelForSequenceClassification.from_config(config_cls(**base, **kw)).eval()


def _scores(model, bf16: bool) -> torch.Tensor:
    ids = torch.randint(5, 100, (16, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("config_cls", [BertConfig, DistilBertConfig])
def test_head_runs_in_fp32_under_bf16(config_cls):
    model = _tiny(config_cls)
    plain = _scores(copy.deepcopy(model), bf16=True)
    assert plain.dtype == torch.bfloat16  # what the project used to read: ~3 significant digits
    head = fp32_head(model)
    out = _scores(head, bf16=True)
    assert out.dtype == torch.float32
    # fp32 scores carry what the bf16 encoder computed: distinct values, close to the all-fp32 model
    assert out.unique().numel() == out.numel()
    assert torch.allclose(out, _scores(head, bf16=False), atol=0.05)


def test_fp32_head_changes_nothing_else():
    model = _tiny()
    names = list(model.state_dict())
    fp32_head(fp32_head(model))  # twice: no second wrapping
    assert list(model.state_dict()) == names  # the saved files are the same
    assert type(model.classifier).__mro__[2] is torch.nn.Linear
    assert torch.equal(_scores(model, bf16=False), _scores(copy.deepcopy(model), bf16=False))
    assert type(model.bert).__name__ == "BertModel"  # the encoder keeps bf16


def test_loaded_models_get_the_fp32_head(models):  # noqa: F811
    model = load_finetuned(str(models["stsb"]), get_task("stsb"))
    assert _scores_from(model).dtype == torch.float32


def _scores_from(model):
    ids = torch.randint(5, 1000, (4, 8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(input_ids=ids).logits


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_stsb_dev_metrics_under_both_precisions(models, glue, tmp_path, monkeypatch, capsys, precision):  # noqa: F811
    monkeypatch.setattr(engines, "cpu_supports_bf16", lambda: True)  # bf16 runs (slowly) on any CPU
    res = run_predict("stsb", models["stsb"], tmp_path / "out", glue, "split=dev", f"precision={precision}")
    assert res["precision"] == precision
    assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in res["dev"].values())
    assert "nan" not in capsys.readouterr().out


def test_undefined_correlation_is_said_in_words():
    text = format_metrics({"pearson": float("nan"), "spearman": 0.25})
    assert text == f"pearson={UNDEFINED}, spearman=0.2500"
    assert "nan" not in text
