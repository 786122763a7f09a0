"""model.student.start: a student starts from the preset's pretrained source, or from the fine-tuned teacher's
layers (a named option, so grids, records and users say which start they mean)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import compose_cfg, quick
from reptiledistil.pipelines import distil as run
from reptiledistil.core.errors import ConfigError
from reptiledistil.models.loading import build_student
from reptiledistil.data.tasks import get_task


def _overrides(tmp, glue, teacher, tiny_bert, out, *extra):
    return quick(tmp, glue) + ["task=rte", f"teacher_dir={teacher}", "model.student.start=pretrained", f"model.student.source={tiny_bert}",
                               "model.student.num_layers=2", f"output_dir={out}", *extra]


def test_start_names_the_source(rte_teacher, tiny_bert):
    tmp, glue = rte_teacher
    teacher = tmp / "teacher"
    cfg = compose_cfg("train", quick(tmp, glue) + ["task=rte", f"teacher_dir={teacher}"])
    assert cfg.model.student.start == "teacher"  # the minilm preset's default (measured: results/minilm/)
    assert run.student_start(cfg) == ("teacher_layers", str(teacher))
    cfg = compose_cfg("train", _overrides(tmp, glue, teacher, tiny_bert, tmp / "x"))
    assert cfg.model.student.start == "pretrained"
    assert run.student_start(cfg) == ("teacher_layers", str(tiny_bert))
    assert compose_cfg("train", ["model=bert_base"]).model.student.start == "pretrained"  # the other presets'
    # from the teacher: its mapped layers (skip on 4 -> 2: 1 and 3) and its fine-tuned head
    student = build_student("teacher_layers", str(teacher), get_task("rte"), num_layers=2, strategy="skip")
    t = AutoModelForSequenceClassification.from_pretrained(teacher).state_dict()
    s = student.state_dict()
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(s["bert.encoder.layer.1.output.dense.weight"], t["bert.encoder.layer.3.output.dense.weight"])


def test_start_is_refused_before_anything_loads(rte_teacher, tiny_bert, monkeypatch):
    tmp, glue = rte_teacher
    for name in ("load_finetuned", "build_student", "load_tokenizer"):
        monkeypatch.setattr(run, name, lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="model.student.start=teacher takes some of the teacher's layers"):
        run.distil(compose_cfg("train", _overrides(tmp, glue, tmp / "teacher", tiny_bert, tmp / "y",
                                                   "model.student.start=teacher", "model.student.num_layers=null")))
    with pytest.raises(ConfigError, match="model.student.start"):
        compose_and_check = compose_cfg("train", _overrides(tmp, glue, tmp / "teacher", tiny_bert, tmp / "y",
                                                            "model.student.start=finetuned"))
        run.distil(compose_and_check)
    assert not (tmp / "y").exists()


def test_the_student_alone_from_a_missing_teacher_is_refused_with_both_fixes(rte_teacher, tiny_bert, monkeypatch):
    tmp, glue = rte_teacher
    for name in ("build_student", "load_tokenizer"):
        monkeypatch.setattr(run, name, lambda *a, **k: pytest.fail("a model was loaded"))
    cfg = compose_cfg("train", quick(tmp, glue) + ["task=rte", "method=finetune", f"teacher_dir={tmp / 'none'}",
                                                   f"output_dir={tmp / 'z'}"])
    with pytest.raises(ConfigError, match=r"does not exist. Fine-tune a teacher first.*model.student.start=pretrained"):
        run.distil(cfg)
    assert not (tmp / "z").exists()


def test_distil_from_the_teacher_records_its_start(rte_teacher, tiny_bert):
    tmp, glue = rte_teacher
    out = tmp / "kd_from_teacher"
    run.distil(compose_cfg("train", _overrides(tmp, glue, tmp / "teacher", tiny_bert, out, "method=kd",
                                               "model.student.start=teacher")))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"]["student"]["start"] == "teacher"
