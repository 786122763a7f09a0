"""Grids side by side, per task: vanilla KD, ReptileDistil, their paired difference, and ReptileDistil's teacher.

Answers "which setting gives the better student, and does ReptileDistil beat KD under it?" across grids that
differ in one setting (a start, a schedule): one markdown row per task and grid, from the JSON runs.

  python bench/compare_grids.py results/minilm-round1 results/minilm-ep8 results/minilm-ep8-tinit
  python bench/compare_grids.py results/minilm-ep8 results/minilm-ep8-tinit --tasks mrpc stsb
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report_grid import _fmt, glue_name, load_runs  # noqa: E402

from reptiledistil.methods import KD, Reptile  # noqa: E402


def _setting(run: dict) -> str:
    """How the grid's students were trained: start, schedule, where they stopped."""
    cfg = run.get("config", {})
    student = cfg.get("model", {}).get("student", {})
    # before model.student.start existed, the teacher start was model.student.source=<the teacher's folder>
    teacher_start = student.get("start") == "teacher" or student.get("source") == cfg.get("teacher_dir")
    start = "teacher" if teacher_start else "pretrained"
    patience = cfg.get("patience")
    return f"{start} start, {cfg.get('epochs', '?')}-epoch schedule" + (f", patience {patience}" if patience else "")


def _epochs(runs: list[dict]) -> str:
    """best epoch / epochs trained, per seed."""
    return ", ".join(f"{r['best']['epoch']}/{r['history'][-1]['epoch']}" for r in runs) or "-"


def rows(grids: list[Path], tasks: list[str] | None) -> list[dict]:
    out = []
    for grid in grids:
        for task, by in load_runs(grid).items():
            if tasks and task not in tasks:
                continue
            kd, rep = by.get(KD.key, []), by.get(Reptile.key, [])
            if not kd and not rep:
                continue
            kd_by_seed = {r["seed"]: 100 * r["best"]["selection"] for r in kd}
            diff = [100 * r["best"]["selection"] - kd_by_seed[r["seed"]] for r in rep if r["seed"] in kd_by_seed]
            teacher = [(100 * r["teacher_before"]["selection"], 100 * r["teacher_after"]["selection"])
                       for r in rep if "teacher_after" in r]
            out.append({"task": task, "grid": grid.name, "setting": _setting((kd or rep)[0]),
                        "kd": [100 * r["best"]["selection"] for r in kd],
                        "reptile": [100 * r["best"]["selection"] for r in rep], "diff": diff,
                        "teacher": teacher, "epochs": (_epochs(kd), _epochs(rep)),
                        "cpu": [r.get("cpu_s") for r in kd + rep]})
    order = {t: i for i, t in enumerate(("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"))}
    return sorted(out, key=lambda r: (order.get(r["task"], len(order)), grids.index(next(
        g for g in grids if g.name == r["grid"]))))


def markdown(table: list[dict]) -> str:
    lines = ["Dev selection score x100 (the task's metrics averaged), best epoch, mean ± sd over seeds; "
             "ReptileDistil - KD paired by seed; teacher: ReptileDistil's teacher before -> after it taught; "
             "epochs: best / trained, KD then ReptileDistil.", "",
             "| task | grid | students | vanilla KD | ReptileDistil | ReptileDistil - KD | teacher | epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        t = (f"{statistics.mean(b for b, _ in r['teacher']):.1f} -> {statistics.mean(a for _, a in r['teacher']):.1f}"
             if r["teacher"] else "-")
        lines.append(f"| {glue_name(r['task'])} | {r['grid']} | {r['setting']} | {_fmt(r['kd'])} | "
                     f"{_fmt(r['reptile'])} | {_fmt(r['diff'])} | {t} | {r['epochs'][0]}; {r['epochs'][1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grids", nargs="+", type=Path, help="results/<preset>[-<tag>] folders, in the table's order")
    ap.add_argument("--tasks", nargs="+")
    args = ap.parse_args()
    missing = [str(g) for g in args.grids if not g.is_dir()]
    if missing:
        ap.error(f"no such results folder: {', '.join(missing)} (ls results/ lists the grids)")
    table = rows(args.grids, args.tasks)
    print(markdown(table) if table else "no KD or ReptileDistil runs in these grids yet")


if __name__ == "__main__":
    main()
