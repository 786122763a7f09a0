"""What a run records: CSV and (offline) W&B logs with hyper-parameters and the Reptile signals; run names."""

from __future__ import annotations

import csv

import pytest
import yaml

from conftest import compose_cfg, quick
from reptiledistil.config.naming import format_number, name_suffix
from reptiledistil.pipelines.distil import distil

STEP_KEYS = ["train/loss", "train/task_loss", "train/kd_term", "lr/student", "lr/teacher", "grad_norm/student",
             "grad_norm/fast_step", "grad_norm/teacher_pseudo"]
EPOCH_KEYS = ["val/dev_accuracy", "teacher_val/dev_accuracy", "teacher_val/selection", "teacher_drift/layer_1",
              "teacher_drift/layer_3", "teacher_drift/embeddings", "teacher_drift/head"]


@pytest.fixture
def env(rte_teacher):
    return rte_teacher


def _run(env, tiny_bert, name, *extra):
    tmp, glue = env
    overrides = [o for o in quick(tmp, glue) if o != "~logger"] + [
        "task=rte", f"teacher_dir={tmp / 'teacher'}", "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2",
        f"output_dir={tmp / name}", f"log_dir={tmp / name}-logs", "epochs=2", "trainer.log_every_n_steps=1", *extra]
    return distil(compose_cfg("train", overrides))


def test_csv_logs_hparams_and_reptile_signals(env, tiny_bert):
    summary = _run(env, tiny_bert, "csv")
    logs = env[0] / "csv-logs" / "csv" / "version_0"
    hparams = yaml.safe_load((logs / "hparams.yaml").read_text())
    assert hparams["alpha"] == 0.5 and hparams["temperature"] == 5.0 and hparams["method"]["name"] == "reptile"
    assert hparams["strategy"]["name"] == "skip" and hparams["student_lr"] == 5e-5 and hparams["teacher_lr"] == 5e-5
    rows = list(csv.DictReader(open(logs / "metrics.csv")))
    for key in STEP_KEYS + EPOCH_KEYS:
        assert any(r.get(key) for r in rows), f"{key} never logged"
    assert {float(r["epoch"]) for r in rows if r.get("val/dev_accuracy")} == {1.0, 2.0}, "epochs 1-based, as metrics.json"
    last = summary["final"]
    assert last["epoch"] == 2 and "teacher_selection" in last and last["teacher_drift_layer_1"] > 0
    assert "teacher_drift_layer_0" not in last, "layer 0 of the teacher is not mapped by skip (4 -> 2 layers)"


def test_wandb_offline_run_has_config_and_signals(env, tiny_bert, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    _run(env, tiny_bert, "wb", "logger=wandb")
    files = list((env[0] / "wb-logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    blob = files[0].read_bytes()  # protobuf records: keys and names are stored as plain UTF-8
    for key in STEP_KEYS + EPOCH_KEYS + ["alpha", "temperature", "student_lr", "teacher_lr", "share_forward"]:
        assert key.encode() in blob, f"{key} missing from the W&B run"
    assert b"rte/wb" in blob, "short run name: task/output folder"


def test_kd_run_logs_no_teacher_signals(env, tiny_bert):
    _run(env, tiny_bert, "kd", "method=kd")
    rows = list(csv.DictReader(open(env[0] / "kd-logs" / "csv" / "version_0" / "metrics.csv")))
    assert any(r.get("train/kd_term") for r in rows)
    assert "teacher_val/selection" not in rows[0] and "lr/teacher" not in rows[0]


@pytest.mark.parametrize("value, text", [(5, "5"), ("5.0", "5"), (0.5, "0.5"), ("1e-4", "0.0001"), (2e-5, "2e-05"),
                                         ("abc", "abc"), (True, "1")])
def test_numbers_are_spelled_one_way(value, text):
    assert format_number(value) == text


def test_name_suffix_keeps_what_changes_the_run_and_drops_paths():
    overrides = ["task=rte", "seed=2", "alpha=0.3", "student_lr=1e-4", "output_dir=/x", "teacher_dir=model/t",
                 "model.student.source=/tmp/tiny", "trainer.enable_progress_bar=false", "hydra.run.dir=x", "epochs=3.0"]
    assert name_suffix(overrides) == "-epochs3-seed2-student_lr0.0001"


def test_student_has_a_model_card(env, tiny_bert):
    _run(env, tiny_bert, "card")
    card = (env[0] / "card" / "student" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "pipeline_tag: text-classification" in card
    for text in ("| task | rte |", "reptile / skip", "| alpha, temperature | 0.5, 5.0 |", "dev (best epoch",
                 "measured speed-up", "parameters"):
        assert text in card, text
