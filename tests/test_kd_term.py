"""bench/kd_term.py: the student's KD term per epoch from the runs' CSV logs, ReptileDistil (and MetaDistil) against
vanilla KD."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import kd_term  # noqa: E402


def _log(grid: Path, run: str, version: int, rows: list[tuple[int, int, float | None]]) -> None:
    path = grid / "stsb" / "logs" / run / "csv" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,step,train/kd_term,val/selection"]  # dev rows have no KD term
    lines += [f"{e}.0,{s},{v}," if v is not None else f"{e}.0,{s},,0.8" for e, s, v in rows]
    path.write_text("\n".join(lines) + "\n")
    (grid / "stsb" / run).mkdir(parents=True, exist_ok=True)
    (grid / "stsb" / run / "metrics.json").write_text("{}")  # the run finished


def test_epoch_means_ratios_and_a_resumed_runs_later_log_wins(tmp_path, monkeypatch, capsys):
    grid = tmp_path / "model/grid/mpnet_base"
    _log(grid, "kd-seed1", 0, [(1, 9, 1.0), (1, 19, 3.0), (1, 19, None), (2, 29, 1.0)])
    # killed after step 29 and resumed from the epoch-1 checkpoint: version_1 logs step 29 again, differently
    _log(grid, "reptile-seed1", 0, [(1, 9, 2.0), (1, 19, 2.0), (2, 29, 9.0)])
    _log(grid, "reptile-seed1", 1, [(2, 29, 3.0), (2, 39, 5.0)])
    _log(grid, "finetune-seed1", 0, [(1, 9, None)])  # no teacher, no KD term: not listed
    _log(grid, "metadistil-seed1", 0, [(1, 9, 0.5), (2, 19, 0.25)])
    _log(grid, "kd-seed2", 0, [(1, 9, 1.0)])
    (grid / "stsb" / "kd-seed2" / "metrics.json").unlink()  # still training: not listed
    by_run = kd_term.runs(grid, None)["stsb"]
    assert by_run == {"kd-seed1": [2.0, 1.0], "reptile-seed1": [2.0, 4.0], "metadistil-seed1": [0.5, 0.25]}
    assert kd_term.ratios(by_run) == [1.0] and kd_term.ratios(by_run, last=True) == [4.0]
    assert kd_term.ratios(by_run, method="metadistil") == [0.25]
    assert kd_term.ratios(by_run, last=True, method="metadistil") == [0.25]
    monkeypatch.setattr(kd_term, "write_results", lambda name, figures: tmp_path / f"{name}.json")
    monkeypatch.setattr(sys, "argv", ["kd_term.py", str(grid)])
    kd_term.main()
    out = capsys.readouterr().out
    assert "reptile-seed1      2.000   4.000" in out
    assert "ReptileDistil / KD, paired by seed: first epoch 1.00; last epoch both trained 4.00" in out
    assert "MetaDistil / KD, paired by seed: first epoch 0.25; last epoch both trained 0.25" in out


def test_a_folder_without_logs_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["kd_term.py", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no run logs under .*model/grid/mpnet_base"):
        kd_term.main()
