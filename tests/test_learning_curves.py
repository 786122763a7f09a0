"""bench/learning_curves.py: per-epoch dev scores of the grid's runs as a table and one chart per task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import learning_curves  # noqa: E402


def _run(results: Path, task: str, method: str, scores: list[float], teacher: list[float] | None = None) -> None:
    hist = [{"epoch": e + 1, "selection": s} for e, s in enumerate(scores)]
    doc = {"task": task, "method": method, "seed": 1, "history": hist}
    if teacher:  # a run that updates its teacher: before, then after each epoch
        doc["teacher_before"] = {"selection": teacher[0]}
        for r, t in zip(hist, teacher[1:]):
            r["teacher_selection"] = t
    (results / task).mkdir(parents=True, exist_ok=True)
    (results / task / f"{method}-seed1.json").write_text(json.dumps(doc))


def test_curves_table_and_chart(tmp_path, monkeypatch, capsys):
    res = tmp_path / "minilm-ep8"
    _run(res, "mrpc", "kd", [0.70, 0.75, 0.78, 0.77, 0.76])
    _run(res, "mrpc", "reptile", [0.71, 0.74, 0.76, 0.79], teacher=[0.85, 0.84, 0.83, 0.83, 0.82])
    (res / "mrpc" / "teacher.json").write_text(json.dumps({"task": "mrpc", "method": "teacher", "seed": 42,
                                                           "history": []}))
    runs = learning_curves.load_histories(res, None)["mrpc"]
    assert set(runs) == {"kd seed 1", "reptile seed 1"}  # the teacher is not a student curve
    assert learning_curves.stalled_for(runs["kd seed 1"]) == (3, 2)  # stopped rising two epochs ago
    assert learning_curves.stalled_for(runs["reptile seed 1"]) == (4, 0)
    monkeypatch.setattr(sys, "argv", ["learning_curves.py", str(res)])
    learning_curves.main()
    out = capsys.readouterr().out
    assert "kd seed 1            70.0   75.0   78.0   77.0   76.0      3      2" in out
    assert "  its teacher        84.0   83.0   83.0   82.0         from 85.0" in out  # under its ReptileDistil run
    assert learning_curves.teacher_curves(res, None) == {"mrpc": {"reptile seed 1": [
        (0, 0.85), (1, 0.84), (2, 0.83), (3, 0.83), (4, 0.82)]}}  # KD leaves its teacher alone: no curve
    assert (res / "curves-mrpc.png").stat().st_size > 1000
