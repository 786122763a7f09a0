"""bench/report_grid.py: the results grid's tables and chart, from JSON files as bench/reproduce.py writes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import SHARED_GLUE, write_glue
from reptiledistil.report.summary import majority_class_scores
from reptiledistil.data.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from report_grid import load_runs, still_to_run, summarise, write_report  # noqa: E402


def run(task: str, method: str, seed: int | None, acc: float, teacher_after: float | None = None) -> dict:
    best = {"epoch": 2, "step": 20, "dev_accuracy": acc, "selection": acc}
    doc = {"task": task, "method": method, "best": best, "final": best, "wall_s": 100.0 + seed if seed else 900.0,
           "cpu_s": 150.0}
    if seed is not None:
        doc["seed"] = seed
    if teacher_after is not None:
        doc["teacher_before"] = {"dev_accuracy": 0.60, "selection": 0.60}
        doc["teacher_after"] = {"accuracy": teacher_after, "selection": teacher_after}
    return doc


@pytest.fixture
def results(tmp_path) -> Path:
    """RTE: a teacher, KD seeds 1-2, ReptileDistil seeds 1-3 (seed 3 has no KD partner), no MetaDistil."""
    root = tmp_path / "results" / "minilm"
    docs = {"teacher": run("rte", "teacher", None, 0.60), "kd-seed1": run("rte", "kd", 1, 0.50),
            "kd-seed2": run("rte", "kd", 2, 0.54), "reptile-seed1": run("rte", "reptile", 1, 0.53, 0.58),
            "reptile-seed2": run("rte", "reptile", 2, 0.55, 0.54), "reptile-seed3": run("rte", "reptile", 3, 0.70, 0.56)}
    (root / "rte").mkdir(parents=True)
    for name, doc in docs.items():
        (root / "rte" / f"{name}.json").write_text(json.dumps(doc))
    return root


def test_differences_are_paired_by_seed_and_drift_is_measured(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    (row,) = summarise(load_runs(results))
    assert row["reptile_minus_kd"] == pytest.approx([3.0, 1.0])  # seed 3 has no KD run: left out, not paired
    assert row["reptile_teacher_drift"] == pytest.approx([-2.0, -6.0, -4.0])
    assert row["reptile"]["selection"] == pytest.approx([53.0, 55.0, 70.0])
    assert row["majority"] is None  # no GLUE data: no floor, and no error


def test_table_has_the_majority_floor_and_no_metadistil_column_without_its_runs(results, tmp_path, monkeypatch):
    # 13 dev examples, labels alternating from the first class: 7 of 13 are the majority
    monkeypatch.setenv("GLUE_DIR", str(write_glue(tmp_path / "glue", n_dev=13)))
    text = write_report(results, "minilm")
    head, rte = [l for l in text.splitlines() if l.startswith("| ")][:2]
    assert "MetaDistil" not in head
    cells = [c.strip() for c in rte.strip("|").split("|")]
    assert cells == ["RTE (accuracy)", f"{100 * 7 / 13:.1f}", "60.0", "-", "52.0 ± 2.8", "59.3 ± 9.3", "2.0 ± 1.4",
                     "3 (vanilla KD 2)"]
    assert (results / "methods.png").stat().st_size > 0 and not list(results.glob("*.tmp.png"))


def test_a_task_with_only_its_teacher_is_reported(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    (results / "stsb").mkdir()
    best = {"epoch": 4, "step": 720, "dev_pearson": 0.86, "dev_spearman": 0.84, "selection": 0.85}
    (results / "stsb" / "teacher.json").write_text(json.dumps({**run("stsb", "teacher", None, 0.0), "best": best}))
    stsb = [l for l in write_report(results, "minilm").splitlines() if l.startswith("| STS-B (pearson/spearman)")]
    assert stsb == ["| STS-B (pearson/spearman) | - | 86.0 / 84.0 | - / - | - / - | - / - | - | - |"]


def test_report_lists_what_the_grid_still_lacks(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    every = ("finetune", "kd", "reptile")
    text = write_report(results, "minilm", {"rte": dict.fromkeys(every, [1, 2, 3]), "mrpc": dict.fromkeys(every, [1])})
    assert ("\n- RTE: student alone (seeds 1, 2, 3), vanilla KD (seed 3)\n"
            "- MRPC: teacher, student alone (seed 1), vanilla KD (seed 1), ReptileDistil (seed 1)\n") in text
    assert still_to_run(load_runs(results), {"rte": {"kd": [1, 2], "reptile": [1, 2]}}) == \
        "Every run the grid was asked for is here.\n"
    # a plan that asks for seeds 2-3 of one method only lists those
    assert "- RTE: vanilla KD (seed 3)\n" in still_to_run(load_runs(results), {"rte": {"kd": [1, 2, 3]}})


def test_hand_written_findings_follow_the_tables_and_survive_regeneration(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    plain = write_report(results, "minilm")
    assert "FINDINGS.md" not in (results / "README.md").read_text()  # none written: no pointer to one
    findings = "## What the runs show\n\n- RTE: hand-written, with a [chart](methods.png).\n"
    (results / "FINDINGS.md").write_text(findings)
    write_report(results, "minilm", {"rte": dict.fromkeys(("kd", "reptile"), [1, 2, 3])})
    page = (results / "README.md").read_text()
    assert page.endswith("\n![methods per task](methods.png)\n\n" + findings)  # tables, chart, then the findings
    assert "hand-written in [FINDINGS.md](FINDINGS.md)" in page and "- RTE: vanilla KD (seed 3)" in page
    write_report(results, "minilm", {"rte": dict.fromkeys(("kd", "reptile"), [1, 2, 3])})
    assert (results / "README.md").read_text() == page  # regenerating changes nothing
    assert "| RTE (accuracy) |" in plain and not list(results.glob("*.tmp"))


def test_majority_class_scores_on_synthetic_data(tmp_path):
    glue = str(write_glue(tmp_path / "glue", n_dev=13))
    mrpc = majority_class_scores(get_task("mrpc"), glue)  # 7 of 13 pairs are label 0: F1 of class 1 is 0
    assert mrpc == pytest.approx({"accuracy": 7 / 13, "f1": 0.0})
    assert majority_class_scores(get_task("cola"), glue)["mcc"] == 0.0  # GLUE's MCC of a constant prediction
    assert majority_class_scores(get_task("stsb"), glue) is None


@pytest.mark.skipif(not (SHARED_GLUE / "MRPC" / "dev.tsv").is_file(), reason="real GLUE data not found")
def test_majority_class_scores_on_real_glue():
    # the floors quoted on the results page: RTE 146/277 not_entailment; MRPC 279/408 paraphrases, F1 = 2*279/(279+408)
    assert majority_class_scores(get_task("rte"), str(SHARED_GLUE))["accuracy"] == pytest.approx(146 / 277)
    mrpc = majority_class_scores(get_task("mrpc"), str(SHARED_GLUE))
    assert mrpc == pytest.approx({"accuracy": 279 / 408, "f1": 2 * 279 / (279 + 408)})


def test_a_resumed_runs_time_is_left_out_of_the_mean(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    doc = json.loads((results / "rte" / "reptile-seed3.json").read_text())
    (results / "rte" / "reptile-seed3.json").write_text(json.dumps({**doc, "resumed": True, "wall_s": 5.0}))
    (row,) = summarise(load_runs(results))
    assert row["reptile"]["wall_s"] == [101.0, 102.0] and row["reptile"]["resumed"] == 1
    assert row["reptile"]["selection"] == pytest.approx([53.0, 55.0, 70.0])  # its scores still count
    assert "102 / 150 (1 resumed, left out)" in write_report(results, "minilm")
    # a record that adds its earlier attempts' cost (bench/reproduce.py cost) counts like an uninterrupted one
    (results / "rte" / "reptile-seed3.json").write_text(json.dumps({**doc, "resumed": True, "cost_complete": True,
                                                                     "wall_s": 105.0}))
    (row,) = summarise(load_runs(results))
    assert row["reptile"]["wall_s"] == [101.0, 102.0, 105.0] and row["reptile"]["resumed"] == 0



def test_the_page_states_the_grids_precision_and_names_runs_that_differ(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "nowhere"))
    for path in results.glob("rte/*.json"):
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({**doc, "config": {"trainer": {"precision": "bf16-mixed"}}}))
    assert "Training precision: `bf16-mixed` in every run." in write_report(results, "minilm")
    odd = results / "rte" / "kd-seed2.json"
    odd.write_text(json.dumps({**json.loads(odd.read_text()), "config": {"trainer": {"precision": "32-true"}}}))
    text = write_report(results, "minilm")
    assert "**Training precisions differ between runs**" in text and "`32-true`: rte vanilla KD seed 2" in text
    # a record that says what `auto` became is reported by that
    odd.write_text(json.dumps({**json.loads(odd.read_text()), "config": {"trainer": {"precision": "auto"}},
                               "hardware": {"accelerator": "cpu", "precision": "bf16-mixed"}}))
    assert "Training precision: `bf16-mixed` in every run." in write_report(results, "minilm")
