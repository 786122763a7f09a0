"""bench/compare_grids.py: grids side by side per task (KD, ReptileDistil, paired difference, the teacher)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare_grids  # noqa: E402


def _run(grid: Path, method: str, seed: int, best: float, epochs: int, start: str | None = None, **extra):
    hist = [{"epoch": e + 1, "selection": best - 0.01 * abs(e - 1)} for e in range(epochs)]
    student = {"source": "pretrained-model"} if start is None else {"start": start, "source": "pretrained-model"}
    doc = {"task": "mrpc", "method": method, "seed": seed, "best": {"epoch": 2, "selection": best},
           "history": hist, "config": {"epochs": epochs, "teacher_dir": "t", "model": {"student": student}},
           "cpu_s": 10.0, **extra}
    (grid / "mrpc").mkdir(parents=True, exist_ok=True)
    (grid / "mrpc" / f"{method}-seed{seed}.json").write_text(json.dumps(doc))


def test_rows_pair_seeds_and_name_the_setting(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "minilm", tmp_path / "minilm-tinit"
    teacher = {"teacher_before": {"selection": 0.8}, "teacher_after": {"selection": 0.7}}
    for seed, (kd, rep) in enumerate([(0.70, 0.72), (0.74, 0.73)], start=1):
        _run(a, "kd", seed, kd, 3)
        _run(a, "reptile", seed, rep, 3, **teacher)
    _run(a, "finetune", 1, 0.75, 3)  # the student alone: the best student of grid a
    _run(b, "kd", 1, 0.78, 8, start="teacher")
    _run(b, "reptile", 1, 0.80, 8, start="teacher", **teacher)
    _run(b, "reptile", 2, 0.79, 8, start="teacher", **teacher)  # no KD seed 2: left out of the difference
    table = compare_grids.rows([a, b], None)
    assert [r["grid"] for r in table] == ["minilm", "minilm-tinit"]
    assert table[0]["setting"] == "pretrained start, 3-epoch schedule"
    assert table[1]["setting"] == "teacher start, 8-epoch schedule"
    assert table[0]["diff"] == pytest.approx([2.0, -1.0]) and table[1]["diff"] == pytest.approx([2.0])
    monkeypatch.setattr(sys, "argv", ["compare_grids.py", str(a), str(b)])
    compare_grids.main()
    out = capsys.readouterr().out
    assert ("| MRPC | minilm | pretrained start, 3-epoch schedule | 75.0 | 72.0 ± 2.8 | 72.5 ± 0.7 | 0.5 ± 2.1 | "
            "80.0 -> 70.0 | -5.0 |") in out  # best student (alone, 75.0) 5 below the teacher's 80.0
    assert ("| MRPC | minilm-tinit | teacher start, 8-epoch schedule | - | 78.0 | 79.5 ± 0.7 | 2.0 | 80.0 -> 70.0 | "
            "-0.5 |") in out


def test_a_missing_grid_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["compare_grids.py", str(tmp_path / "nope")])
    with pytest.raises(SystemExit):
        compare_grids.main()
    assert "no such results folder" in capsys.readouterr().err
