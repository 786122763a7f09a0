"""report.py: the runs of a sweep found once each, their table, heatmap and GLUE-style average; errors write nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reptiledistil.core.errors import ConfigError
from reptiledistil.report.sweep import find_runs, glue_rows, glue_table, main, runs_table, sweeps, write_report

ALPHAS, TEMPERATURES, SEEDS = (0.1, 0.5), (1.0, 5.0), (1, 2)


def mrpc_record(f1: float, epoch: int) -> dict:
    acc = f1 - 0.04
    return {"epoch": epoch, "step": 115 * epoch, "dev_accuracy": acc, "dev_f1": f1, "selection": (f1 + acc) / 2}


def rte_record(acc: float, epoch: int) -> dict:
    return {"epoch": epoch, "step": 78 * epoch, "dev_accuracy": acc, "selection": acc}


def config(task: str, method: str, seed: int, alpha: float, temperature: float, out: Path) -> dict:
    return {"task": {"name": task}, "method": {"name": method}, "strategy": {"name": "skip"}, "seed": seed,
            "alpha": alpha, "temperature": temperature, "student_lr": 5e-5, "teacher_lr": 5e-5,
            "output_dir": str(out), "log_dir": "/somewhere/logs"}


def student(out: Path, task: str, alpha: float, temperature: float, seed: int, best: dict, final: dict,
            method: str = "reptile") -> dict:
    """What train.py writes to <output_dir>/metrics.json."""
    doc = {"task": task, "method": method, "strategy": "skip", "selection_metric": ["f1", "accuracy"]
           if task == "mrpc" else ["accuracy"], "best": best, "final": final, "history": [best, final],
           "train_wall_s": 61.4, "output_dir": str(out), "log_dir": "/somewhere/logs",
           "config": config(task, method, seed, alpha, temperature, out)}
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(doc))
    return doc


def mrpc_f1(alpha: float, temperature: float, seed: int) -> float:
    return 0.80 + alpha / 10 + temperature / 100 + seed / 100


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """A 2x2 alpha x temperature sweep (2 seeds) on MRPC, its teacher, one RTE run, a copy of one record in a
    Hydra log folder, and a results-grid JSON: 11 runs in 12 records."""
    root = tmp_path / "runs"
    for a in ALPHAS:
        for t in TEMPERATURES:
            for s in SEEDS:
                f1 = mrpc_f1(a, t, s)
                student(root / "model" / "mrpc" / f"reptile-a{a}-T{t}-s{s}", "mrpc", a, t, s,
                        mrpc_record(f1, 2), mrpc_record(f1 - 0.01, 3))
    first = root / "model" / "mrpc" / "reptile-a0.1-T1.0-s1" / "metrics.json"
    (root / "logs" / "multirun-0").mkdir(parents=True)
    shutil.copy(first, root / "logs" / "multirun-0" / "metrics.json")  # train.py's copy beside the Hydra logs
    teacher = root / "model" / "mrpc" / "teacher"
    teacher.mkdir()
    t_config = {"task": {"name": "mrpc"}, "seed": 42, "lr": 1e-4, "output_dir": str(teacher)}
    (teacher / "dev_metrics.json").write_text(json.dumps(
        {"task": "mrpc", "model": "minilm", "selection_metric": ["f1", "accuracy"], "best": mrpc_record(0.90, 4),
         "final": mrpc_record(0.90, 4), "history": [mrpc_record(0.90, 4)], "train_wall_s": None,
         "output_dir": str(teacher), "config": t_config}))
    student(root / "model" / "rte" / "reptile-a0.5-T5.0-s1", "rte", 0.5, 5.0, 1, rte_record(0.703, 1),
            rte_record(0.69, 3))
    grid = root / "results" / "minilm" / "rte"
    grid.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "kd-seed1"
    (grid / "kd-seed1.json").write_text(json.dumps(  # bench/reproduce.py: no output_dir, strategy or metric list
        {"task": "rte", "method": "kd", "seed": 1, "best": rte_record(0.65, 2), "final": rte_record(0.64, 3),
         "history": [], "config": config("rte", "kd", 1, 0.5, 5.0, elsewhere), "wall_s": 95.2}))
    return root


def rows(markdown: str) -> list[list[str]]:
    """The body rows of the first Markdown table in the text, as cells."""
    table = [l for l in markdown.split("\n\n") if l.startswith("| ")][0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]


def test_runs_found_once_and_sorted(runs_dir):
    runs = find_runs([runs_dir])
    assert len(runs) == 11  # 12 records: the log-folder copy has the same output_dir as the model's
    assert [(r.task, r.method) for r in runs][:2] == [("mrpc", "teacher"), ("mrpc", "reptile")]
    sweep = [(r.params["alpha"], r.params["temperature"], r.seed) for r in runs if r.method == "reptile"][:8]
    assert sweep == [(a, t, s) for a in ALPHAS for t in TEMPERATURES for s in SEEDS]
    grid = next(r for r in runs if r.method == "kd")
    assert (grid.task, grid.strategy, grid.seed, grid.metrics, grid.wall_s) == ("rte", "skip", 1, ("accuracy",), 95.2)


def test_runs_table_values(runs_dir):
    table = rows(runs_table(find_runs([runs_dir])))
    assert len(table) == 11
    header = ["task", "method", "strategy", "alpha", "temperature", "seed", "metrics", "best dev", "best epoch",
              "final dev", "wall s"]
    assert runs_table(find_runs([runs_dir])).splitlines()[0] == "| " + " | ".join(header) + " |"
    assert table[0] == ["mrpc", "teacher", "-", "-", "-", "42", "f1/accuracy", "90.0/86.0", "4", "90.0/86.0", "-"]
    # alpha 0.1, T 1, seed 1: f1 = 0.83 at epoch 2, 0.82 at the last epoch; accuracy 4 points lower
    assert table[1] == ["mrpc", "reptile", "skip", "0.1", "1", "1", "f1/accuracy", "83.0/79.0", "2", "82.0/78.0", "61"]
    assert table[-2] == ["rte", "kd", "skip", "0.5", "5", "1", "accuracy", "65.0", "2", "64.0", "95"]
    assert table[-1][:8] == ["rte", "reptile", "skip", "0.5", "5", "1", "accuracy", "70.3"]


def test_mnli_shows_matched_and_mismatched(tmp_path):
    best = {"epoch": 1, "step": 9, "dev_accuracy": 0.801, "dev_mm_accuracy": 0.812, "selection": 0.8065}
    student(tmp_path / "mnli-run", "mnli", 0.5, 5.0, 1, best, best)
    (row,) = rows(runs_table(find_runs([tmp_path])))
    assert row[6:8] == ["accuracy/mm_accuracy", "80.1/81.2"]


def test_report_heatmap_and_glue_table(runs_dir, tmp_path):
    out = tmp_path / "report"
    report = write_report([runs_dir / "model", runs_dir / "logs"], out)
    assert report == out / "report.md"
    text = report.read_text()
    # the log folder holds only a copy of a run already counted under model/
    assert f"10 runs found in `{runs_dir / 'model'}` (10), `{runs_dir / 'logs'}` (0)" in text
    png = out / "heatmap-mrpc-reptile-alpha-temperature.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"]({png.name})" in text
    assert sorted(p.name for p in out.iterdir()) == [png.name, "report.md"]  # no temporary files left behind
    assert "## GLUE-style table" in text


def test_sweep_cells_are_means_over_seeds(runs_dir):
    (sweep,), notes = sweeps(find_runs([runs_dir]))
    assert notes == []
    assert (sweep.task, sweep.method, sweep.rows, sweep.cols) == ("mrpc", "reptile", ("alpha", [0.1, 0.5]),
                                                                  ("temperature", [1.0, 5.0]))
    # selection = f1 - 0.02, so its mean over seeds 1 and 2 is 0.795 + alpha / 10 + T / 100
    assert [pytest.approx(row) for row in sweep.cells] == [[81.5, 85.5], [85.5, 89.5]]


def test_glue_average_is_over_tasks_not_runs(runs_dir):
    runs = find_runs([runs_dir])
    tasks, table = glue_rows(runs)
    assert tasks == ["mrpc", "rte"]
    row = next(r for r in table if r["setting"] == {"method": "reptile", "strategy": "skip", "alpha": 0.5,
                                                       "temperature": 5.0})
    # MRPC: seeds 1 and 2 select 89.0 and 90.0 -> 89.5; RTE: one run, 70.3. GLUE's avg: (89.5 + 70.3) / 2 = 79.9,
    # not the mean of the three runs (83.1).
    assert row["scores"] == pytest.approx({"mrpc": 89.5, "rte": 70.3})
    assert row["avg"] == pytest.approx(79.9) and row["complete"]
    md = rows(glue_table(runs))
    assert ["reptile", "skip", "0.5", "5", "89.5", "70.3", "79.9"] in md
    assert ["teacher", "-", "-", "-", "88.0", "-", "88.0*"] in md  # a row without RTE: flagged, not comparable
    assert ["kd", "skip", "0.5", "5", "-", "65.0", "65.0*"] in md


def test_no_glue_table_for_one_task(runs_dir):
    shutil.rmtree(runs_dir / "model" / "rte")
    shutil.rmtree(runs_dir / "results")
    assert glue_table(find_runs([runs_dir])) == ""
    assert "GLUE-style table" not in write_report([runs_dir], runs_dir).read_text()


def test_grid_json_and_its_runs_metrics_json_count_once(tmp_path):
    out = tmp_path / "model" / "grid" / "minilm" / "rte" / "kd-seed1"
    doc = student(out, "rte", 0.5, 5.0, 1, rte_record(0.65, 2), rte_record(0.64, 3), method="kd")
    grid = tmp_path / "results" / "minilm" / "rte"
    grid.mkdir(parents=True)
    (grid / "kd-seed1.json").write_text(json.dumps({"task": "rte", "method": "kd", "seed": 1, "best": doc["best"],
                                                    "final": doc["final"], "config": doc["config"], "wall_s": 90}))
    assert len(find_runs([tmp_path])) == 1


def test_symlinks_and_staging_dirs_are_not_followed(runs_dir, tmp_path):
    outside = tmp_path / "outside"
    student(outside / "run", "mrpc", 0.9, 9.0, 1, mrpc_record(0.8, 1), mrpc_record(0.8, 1))
    os.symlink(outside, runs_dir / "link")
    student(runs_dir / "model" / ".reptile-x.partial", "mrpc", 0.9, 9.0, 1, mrpc_record(0.8, 1), mrpc_record(0.8, 1))
    assert len(find_runs([runs_dir])) == 11


def test_without_matplotlib_the_tables_are_still_written(runs_dir, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    text = write_report([runs_dir], runs_dir).read_text()
    assert "skipped: matplotlib is not installed" in text
    assert not list(runs_dir.glob("*.png"))
    assert len(rows(text)) == 11


def test_cli_prints_report_and_paths(runs_dir, capsys):
    assert main([str(runs_dir)]) == 0
    stdout = capsys.readouterr().out
    assert "| task | method |" in stdout
    assert f"wrote {runs_dir / 'report.md'}" in stdout
    assert f"wrote {runs_dir / 'heatmap-mrpc-reptile-alpha-temperature.png'}" in stdout


def test_cli_empty_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.json").write_text("{}")
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no run records under {empty}: expected metrics.json")
    assert [p.name for p in empty.iterdir()] == ["notes.json"]  # nothing written


def test_cli_missing_folder_writes_nothing(runs_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(runs_dir), str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing'} does not exist. Pass the folder")
    assert not out.exists()
    assert main([str(runs_dir), str(tmp_path / "missing")]) == 2
    assert not (runs_dir / "report.md").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        write_report([tmp_path / "missing"], out)
    assert not out.exists()


def test_module_entry_point_exit_code(tmp_path):
    res = subprocess.run([sys.executable, "-m", "reptiledistil.report", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "does not exist" in res.stderr
    assert res.stdout == ""
