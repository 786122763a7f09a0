"""Inference engines as predict.py runs them: every engine round-trips on a tiny model, the ONNX export matches
PyTorch, the export's dev check, and the refusals (all before any model is loaded or anything is written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from reptiledistil.inference import engines
from reptiledistil.core.errors import ConfigError
from reptiledistil.models.loading import load_for_finetuning, load_tokenizer
from reptiledistil.pipelines.predict import predict
from reptiledistil.data.tasks import get_task

@pytest.fixture(scope="module")
def rte_model(tmp_path_factory, tiny_bert) -> Path:
    """The tiny random BERT with an RTE head, saved as a fine-tuned model directory (no training: seconds)."""
    path = tmp_path_factory.mktemp("rte_model")
    torch.manual_seed(1)
    load_for_finetuning(str(tiny_bert), get_task("rte")).save_pretrained(path)
    load_tokenizer(str(tiny_bert)).save_pretrained(path)
    return path


def _cfg(model_dir, out, glue, *extra):
    return compose_cfg("predict", ["task=rte", f"model_dir={model_dir}", f"output_dir={out}",
                                   f"data.glue_dir={glue}", "max_seq_length=32", *extra])


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def onnx_exports(rte_model, tmp_path_factory):
    """fp32 and int8 ONNX exports of rte_model, made the way users make them (predict.py export=onnx)."""
    pytest.importorskip("onnxruntime")
    from conftest import write_glue

    tmp = tmp_path_factory.mktemp("onnx")
    glue = write_glue(tmp / "glue_data")
    out = {}
    for q in ("none", "int8"):
        res = predict(_cfg(rte_model, tmp / f"pred-{q}", glue, "split=dev", "export=onnx", f"quantize={q}",
                           f"export_dir={tmp / q}"))
        out[q] = (tmp / q, res)
    return out, glue


def test_onnx_fp32_export_matches_pytorch_on_real_examples(onnx_exports):
    exports, _ = onnx_exports
    fp32_dir, res = exports["none"]
    marker = json.loads((fp32_dir / engines.MARKER).read_text())
    assert marker["quantize"] == "none" and marker["task"] == "rte"
    assert marker["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert marker["parity"]["max_abs_logit_diff"] < 1e-4 and marker["parity"]["examples"] == 8
    # ORT's transformer fusions were applied: one fused Attention per layer (the tiny BERT has 4)
    assert marker["fused_operators"].get("Attention") == 4, marker["fused_operators"]
    check = marker["dev_check"]["splits"]["dev"]
    assert abs(check["drop_points"]) < 1e-6 and res["export_check"]["splits"]["dev"]["drop_points"] == check["drop_points"]
    assert (fp32_dir / "config.json").is_file() and (fp32_dir / "tokenizer.json").is_file()


def test_onnx_graph_has_dynamic_batch_and_sequence_axes(onnx_exports, rte_model):
    exports, _ = onnx_exports
    runner = engines.OnnxRunner(exports["none"][0])
    ref = engines.TorchRunner(load_for_finetuning_dir(rte_model), engines.EngineChoice("torch", "fp32", "cpu", ""))
    for batch, length in ((1, 5), (3, 40), (17, 64)):  # none of them the traced shape (8 x ~12)
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(1000, 30000, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, length // 2:] = 0
        x = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        torch.testing.assert_close(runner(x), ref(x), atol=1e-4, rtol=0)


def load_for_finetuning_dir(path):
    from reptiledistil.models.loading import load_finetuned

    return load_finetuned(str(path), get_task("rte"))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_export_reads_back_for_dev_and_test(onnx_exports, tmp_path, quantize):
    exports, glue = onnx_exports
    export_dir, at_export = exports[quantize]
    dev = predict(_cfg(export_dir, tmp_path / "dev", glue, "split=dev"))
    assert dev["engine"] == "onnx" and dev["precision"] == ("int8" if quantize == "int8" else "fp32")
    assert dev["dev"] == at_export["dev"]  # the run at export time used the export too
    predict(_cfg(export_dir, tmp_path / "test", glue))
    rows = _rows(tmp_path / "test" / "RTE.tsv")
    assert rows[0] == "index\tprediction" and len(rows) == 11
    assert {r.split("\t")[1] for r in rows[1:]} <= {"entailment", "not_entailment"}


def test_every_engine_round_trips(rte_model, onnx_exports, tmp_path, monkeypatch):
    exports, glue = onnx_exports
    fp32 = predict(_cfg(rte_model, tmp_path / "fp32", glue, "split=dev", "precision=fp32"))
    assert (fp32["engine"], fp32["precision"]) == ("torch", "fp32")
    # int8 or engine=onnx on a PyTorch directory: exported to a temporary directory, run by ONNX Runtime
    int8 = predict(_cfg(rte_model, tmp_path / "int8", glue, "split=dev", "quantize=int8"))
    assert (int8["engine"], int8["precision"]) == ("onnx", "int8") and int8["dev"] == exports["int8"][1]["dev"]
    onnx = predict(_cfg(rte_model, tmp_path / "onnx", glue, "split=dev", "engine=onnx"))
    assert (onnx["engine"], onnx["precision"]) == ("onnx", "fp32") and onnx["dev"] == fp32["dev"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32", "int8", "onnx"], "temporary exports are removed"
    # bf16 autocast runs on any CPU (slowly without bf16 units): pretend this one has them
    monkeypatch.setattr(engines, "cpu_supports_bf16", lambda: True)
    bf16 = predict(_cfg(rte_model, tmp_path / "bf16", glue, "split=dev"))
    assert (bf16["engine"], bf16["precision"]) == ("torch", "bf16"), "auto picks bf16 where the CPU has bf16 units"
    assert abs(bf16["dev"]["accuracy"] - fp32["dev"]["accuracy"]) <= 2 / 12  # 12 dev examples, bf16 rounding


def test_auto_precision_is_fp32_without_bf16_units(rte_model, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "cpu_supports_bf16", lambda: False)
    res = predict(_cfg(rte_model, tmp_path / "p", glue_dir, "split=dev"))
    assert (res["engine"], res["precision"]) == ("torch", "fp32")


def test_dev_check_warns_loudly_past_the_margin(rte_model, glue_dir, tmp_path, capsys):
    """A source that is always right and an 'export' that is always wrong: 100 points lost, a loud warning."""
    from reptiledistil.pipelines.predict import _dev_check

    task = get_task("rte")
    cfg = _cfg(rte_model, tmp_path / "p", glue_dir, "split=dev")
    from reptiledistil.data.glue import TaskData, load_split

    splits = load_split(task, "dev", str(glue_dir))
    labels = torch.tensor(splits["dev"]["labels"])
    seen = iter([labels, 1 - labels])  # predict_logits runs the source first, then the export, one batch each

    def runner_of(it):
        def run(batch):
            y = next(it)
            return torch.nn.functional.one_hot(y, 2).float()
        run.num_labels = 2
        return run

    one = runner_of(seen)
    check = _dev_check(cfg, TaskData(task=task, glue_dir=str(glue_dir)), load_tokenizer(str(rte_model)), reference=one,
                       exported=one, splits=splits)
    assert check["splits"]["dev"]["drop_points"] == pytest.approx(100.0)
    err = capsys.readouterr().err
    assert "WARNING: the export loses 100.00 points" in err and "max_metric_drop=1" in err


# --- refusals: before any model is loaded, nothing written ---------------------------------------------------

@pytest.fixture
def no_model_load(monkeypatch):
    import reptiledistil.pipelines.predict as pipeline

    monkeypatch.setattr(pipeline, "load_finetuned", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(engines, "export_onnx", lambda *a, **k: pytest.fail("exported"))


@pytest.mark.parametrize("extra,match", [
    (["engine=tensorrt"], r"engine=tensorrt is not one of auto, torch, onnx .*Pass engine=<auto\|torch\|onnx>"),
    (["precision=fp16"], r"precision=fp16 is not one of auto, fp32, bf16 .*Pass precision="),
    (["precision=bf16", "quantize=int8"], "exclude each other"),
    (["export=tflite", "export_dir={tmp}/x"], r"export=tflite is not one of onnx .*Pass export=<onnx>"),
    (["export=onnx"], "pass export_dir=<dir> too"),
    (["export=torch", "export_dir={tmp}/x"], r"export=torch is not one of onnx"),
    (["export=onnx", "engine=torch", "export_dir={tmp}/x"], "disagree"),
    (["export=onnx", "export_dir={tmp}/taken"], "already holds results"),
    (["max_metric_drop=-1"], "must be >= 0"),
    (["quantize=int8", "engine=torch"], "int8 runs on ONNX Runtime"),
    (["precision=bf16", "no-bf16"], "this CPU has no bf16 units"),
    (["engine=onnx", "no-onnxruntime"], r"pip install '\.\[onnx\]'"),
    (["export=onnx", "export_dir={tmp}/x", "no-onnxruntime"], r"pip install '\.\[onnx\]'"),
])
def test_refusals(rte_model, glue_dir, tmp_path, monkeypatch, no_model_load, extra, match):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("earlier export")
    if "cuda" in extra:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if "no-bf16" in extra:
        monkeypatch.setattr(engines, "cpu_supports_bf16", lambda: False)
    if "no-onnxruntime" in extra:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    extra = [e.format(tmp=tmp_path) for e in extra if e not in ("cuda", "no-bf16", "no-onnxruntime")]
    out = tmp_path / "pred"
    with pytest.raises(ConfigError, match=match):
        predict(_cfg(rte_model, out, glue_dir, *extra))
    assert not out.exists() and not (tmp_path / "x").exists()
    assert (tmp_path / "taken" / "keep.txt").read_text() == "earlier export"


def test_refuses_to_export_a_model_without_a_classification_head(tiny_bert, glue_dir, tmp_path, no_model_load):
    with pytest.raises(ConfigError, match="not a sequence classifier.*BertModel"):
        predict(_cfg(tiny_bert, tmp_path / "p", glue_dir, "export=onnx", f"export_dir={tmp_path / 'x'}"))
    assert not (tmp_path / "x").exists()


def test_export_refusals_for_exports(onnx_exports, tmp_path, monkeypatch):
    exports, glue = onnx_exports
    fp32_dir = exports["none"][0]
    with pytest.raises(ConfigError, match="already an export"):
        predict(_cfg(fp32_dir, tmp_path / "p", glue, "export=onnx", f"export_dir={tmp_path / 'x'}"))
    with pytest.raises(ConfigError, match="PyTorch cannot run it"):
        predict(_cfg(fp32_dir, tmp_path / "p", glue, "engine=torch"))
    with pytest.raises(ConfigError, match="fp32 ONNX export; quantize=int8 needs an int8 one"):
        predict(_cfg(fp32_dir, tmp_path / "p", glue, "quantize=int8"))
    with pytest.raises(ConfigError, match="fine-tuned on task 'rte', not 'mrpc'"):
        predict(compose_cfg("predict", ["task=mrpc", f"model_dir={fp32_dir}", f"output_dir={tmp_path / 'p'}",
                                        f"data.glue_dir={glue}"]))
    # a teacher for distillation must be the PyTorch model
    from reptiledistil.models.loading import load_finetuned

    with pytest.raises(ConfigError, match="is an export for inference \(predict.py\) only"):
        load_finetuned(str(fp32_dir), get_task("rte"), "Teacher")
    assert not (tmp_path / "p").exists() and not (tmp_path / "x").exists()


def test_pytorch_int8_directories_of_earlier_versions_are_refused(rte_model, glue_dir, tmp_path):
    import shutil

    old = tmp_path / "old-int8"
    shutil.copytree(rte_model, old)
    (old / engines.OLD_INT8_MARKER).write_text("{}")
    with pytest.raises(ConfigError, match="export=onnx quantize=int8"):
        predict(_cfg(old, tmp_path / "p", glue_dir))
    from reptiledistil.models.loading import load_finetuned

    with pytest.raises(ConfigError, match="export for inference"):
        load_finetuned(str(old), get_task("rte"), "Teacher")


def test_incomplete_export_is_named(onnx_exports, tmp_path):
    import shutil

    exports, glue = onnx_exports
    broken = tmp_path / "broken"
    shutil.copytree(exports["none"][0], broken)
    (broken / engines.MODEL_FILE).unlink()
    with pytest.raises(ConfigError, match="model.onnx is missing"):
        predict(_cfg(broken, tmp_path / "p", glue))
