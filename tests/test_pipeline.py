"""End to end through Hydra compose: fine-tune a tiny teacher, distil with each method, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from conftest import compose_cfg, quick
from reptiledistil.core.errors import ConfigError
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.teacher import finetune
from reptiledistil.pipelines.predict import predict


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bert):
    from conftest import write_glue

    tmp = tmp_path_factory.mktemp("pipe")
    glue = write_glue(tmp / "glue_data")
    teacher = tmp / "teacher"
    cfg = compose_cfg("finetune_teacher", quick(tmp, glue) + [
        "task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={teacher}"])
    summary = finetune(cfg)
    return tmp, glue, teacher, summary


def distil_overrides(tmp, glue, teacher, tiny_bert, out, *extra):
    return quick(tmp, glue) + ["task=rte", f"teacher_dir={teacher}", "model.student.start=pretrained", f"model.student.source={tiny_bert}",
                               "model.student.num_layers=2", f"output_dir={out}", *extra]


def test_finetune_writes_teacher_and_metrics(setup):
    tmp, glue, teacher, summary = setup
    assert (teacher / "config.json").is_file() and (teacher / "model.safetensors").is_file()
    metrics = json.loads((teacher / "dev_metrics.json").read_text())
    assert metrics["task"] == "rte" and 0.0 <= metrics["best"]["dev_accuracy"] <= 1.0
    assert metrics["best"] == summary["best"]
    m = AutoModelForSequenceClassification.from_pretrained(teacher)
    assert m.config.num_labels == 2 and m.config.finetuning_task == "rte"
    assert not list(teacher.parent.glob(".teacher.*")), "no staging directories left behind"


@pytest.mark.parametrize("method", ["reptile", "kd", "finetune", "metadistil"])
def test_distil_methods(setup, tiny_bert, method):
    tmp, glue, teacher, _ = setup
    out = tmp / f"student_{method}"
    extra = ["method.quiz_size=4"] if method == "metadistil" else []  # the synthetic RTE has 24 training examples
    summary = distil(compose_cfg("train", distil_overrides(tmp, glue, teacher, tiny_bert, out, f"method={method}",
                                                           *extra)))
    student = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 2
    assert (out / "teacher").is_dir() == (method in ("reptile", "metadistil"))  # the teacher that changed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and len(metrics["history"]) == 1
    assert metrics["final"]["epoch"] == 1 and "dev_accuracy" in metrics["best"]
    assert summary["best"]["selection"] == metrics["best"]["selection"]


def test_predict_writes_submission(setup, tiny_bert):
    tmp, glue, teacher, _ = setup
    out = tmp / "pred"
    res = predict(compose_cfg("predict", ["task=rte", f"model_dir={teacher}", f"output_dir={out}",
                                          f"data.glue_dir={glue}", "zip=true"]))
    lines = (out / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert {l.split("\t")[1] for l in lines[1:]} <= {"entailment", "not_entailment"}
    assert [int(l.split("\t")[0]) for l in lines[1:]] == list(range(10))
    assert Path(res["zip"]).is_file()
    with pytest.raises(ConfigError, match="overwrite=true"):
        predict(compose_cfg("predict", ["task=rte", f"model_dir={teacher}", f"output_dir={out}", f"data.glue_dir={glue}"]))


def test_existing_output_refused(setup, tiny_bert):
    tmp, glue, teacher, _ = setup
    cfg = compose_cfg("finetune_teacher", quick(tmp, glue) + ["task=rte", f"model.teacher_init={tiny_bert}",
                                                              f"output_dir={teacher}"])
    before = (teacher / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds results"):
        finetune(cfg)
    assert (teacher / "model.safetensors").read_bytes() == before


def test_reptile_without_head_keeps_the_teachers_classifier(setup, tiny_bert):
    tmp, glue, teacher, _ = setup
    out = tmp / "student_reptile_no_head"
    distil(compose_cfg("train", distil_overrides(tmp, glue, teacher, tiny_bert, out, "method=reptile",
                                                 "method.update_head=false")))
    before = AutoModelForSequenceClassification.from_pretrained(teacher).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(out / "teacher").state_dict()
    assert after["classifier.weight"].equal(before["classifier.weight"])
    assert after["classifier.bias"].equal(before["classifier.bias"])
    assert not after["bert.encoder.layer.1.attention.self.query.weight"].equal(
        before["bert.encoder.layer.1.attention.self.query.weight"])  # the mapped encoder still learns to teach


def test_patience_stops_when_dev_stops_improving(setup, tiny_bert):
    """model.distil.patience=1 with a learning rate too small to move the dev score: the run stops after the
    second epoch (one epoch without improvement), keeps epoch 1 as its best and still publishes its results."""
    tmp, glue, teacher, _ = setup
    out = tmp / "student_patience"
    cfg = compose_cfg("train", distil_overrides(tmp, glue, teacher, tiny_bert, out, "method=kd", "epochs=6",
                                                "model.distil.patience=1", "student_lr=1e-12"))
    assert cfg.patience == 1
    distil(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["best"]["epoch"] == 1 and metrics["config"]["patience"] == 1
