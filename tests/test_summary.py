"""The main command's closing table (python -m reptiledistil.report.summary): scores, sizes, speed-up, the majority floor,
where every output went."""

from __future__ import annotations

import json

from conftest import compose_cfg, quick
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.predict import predict
from reptiledistil.report.summary import count_parameters, summary_table


def test_summary_of_a_distilled_run(rte_teacher, tiny_bert, monkeypatch):
    tmp, glue = rte_teacher
    run, preds = tmp / "summary-run", tmp / "summary-preds"
    distil(compose_cfg("train", quick(tmp, glue) + [
        "task=rte", f"teacher_dir={tmp / 'teacher'}", "model.student.start=pretrained", f"model.student.source={tiny_bert}",
        "model.student.num_layers=2", f"output_dir={run}"]))
    predict(compose_cfg("predict", [f"data.glue_dir={glue}", "task=rte", f"model_dir={run / 'student'}",
                                    f"output_dir={preds}", "zip=true", "max_seq_length=32"]))
    monkeypatch.setenv("GLUE_DIR", str(glue))  # the summary reads dev as the quickstart does: from the default place

    lines = summary_table("rte", tmp / "teacher", run, preds).splitlines()

    assert lines[0] == "== Summary: RTE dev (best epoch), reptile / skip"
    teacher_acc = json.loads((tmp / "teacher" / "dev_metrics.json").read_text())["best"]["dev_accuracy"]
    student_acc = json.loads((run / "metrics.json").read_text())["best"]["dev_accuracy"]
    teacher, student = lines[2].split(), lines[3].split()
    assert teacher[:3] == ["teacher", "accuracy", f"{100 * teacher_acc:.1f}"]
    assert student[:3] == ["student", "accuracy", f"{100 * student_acc:.1f}"]
    n_t, n_s = count_parameters(tmp / "teacher"), count_parameters(run / "student")
    assert n_s < n_t and teacher[3] == f"{n_t / 1e6:.1f}M" and student[3] == f"{n_s / 1e6:.1f}M"
    assert teacher[-1] == "1.00x" and float(student[-1].rstrip("x")) > 0
    assert lines[4] == "(majority class on dev: accuracy 50.0)"  # synthetic RTE dev: 6 of each label
    assert any(l.split() == ["submission", f"{preds}/", "(RTE.tsv,", "glue_submission.zip)"] for l in lines)
    assert any(l.split() == ["final", "teacher", f"{run}/teacher/"] for l in lines)
    monkeypatch.chdir(tmp)  # the log folder (Hydra records it absolute) is shown as typed from where one stands
    assert "  logs          logs" in summary_table("rte", tmp / "teacher", run, preds).splitlines()
