"""Grids side by side, per task: the student alone, vanilla KD, ReptileDistil, their paired difference,
ReptileDistil's teacher, and how far the best student is from its teacher.

Answers "which setting gives the better student, and does ReptileDistil beat KD under it?" across grids that
differ in one setting (a start, a schedule, a scale): one markdown row per task and grid, from the JSON runs.

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

from reptiledistil.methods import KD, Reptile, StudentAlone  # noqa: E402


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
            kd, rep, alone = by.get(KD.key, []), by.get(Reptile.key, []), by.get(StudentAlone.key, [])
            if not kd and not rep:
                continue
            scores = {name: [100 * r["best"]["selection"] for r in runs]
                      for name, runs in (("alone", alone), ("kd", kd), ("reptile", rep))}
            kd_by_seed = {r["seed"]: 100 * r["best"]["selection"] for r in kd}
            diff = [100 * r["best"]["selection"] - kd_by_seed[r["seed"]] for r in rep if r["seed"] in kd_by_seed]
            teacher = [(100 * r["teacher_before"]["selection"], 100 * r["teacher_after"]["selection"])
                       for r in rep if "teacher_after" in r]
            # the fine-tuned teacher as the students' runs evaluated it (their precision), else its own record
            before = [b for b, _ in teacher] or [100 * r["best"]["selection"] for r in by.get("teacher", [])]
            means = [statistics.mean(v) for v in scores.values() if v]
            gap = max(means) - statistics.mean(before) if before else None
            out.append({"task": task, "grid": grid.name, "setting": _setting((kd or rep)[0]), **scores,
                        "diff": diff, "teacher": teacher, "best_minus_teacher": gap,
                        "epochs": (_epochs(kd), _epochs(rep)),
                        "cpu": [r.get("cpu_s") for r in kd + rep]})
    order = {t: i for i, t in enumerate(("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"))}
    return sorted(out, key=lambda r: (order.get(r["task"], len(order)), grids.index(next(
        g for g in grids if g.name == r["grid"]))))


def markdown(table: list[dict]) -> str:
    lines = ["Dev selection score x100 (the task's metrics averaged), best epoch, mean ± sd over seeds; "
             "ReptileDistil - KD paired by seed; teacher: ReptileDistil's teacher before -> after it taught; "
             "best - teacher: the best of the three students' means against the fine-tuned teacher; "
             "epochs: best / trained, KD then ReptileDistil.", "",
             "| task | grid | students | student alone | vanilla KD | ReptileDistil | ReptileDistil - KD | teacher "
             "| best - teacher | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        t = (f"{statistics.mean(b for b, _ in r['teacher']):.1f} -> {statistics.mean(a for _, a in r['teacher']):.1f}"
             if r["teacher"] else "-")
        gap = "-" if r["best_minus_teacher"] is None else f"{r['best_minus_teacher']:+.1f}"
        lines.append(f"| {glue_name(r['task'])} | {r['grid']} | {r['setting']} | {_fmt(r['alone'])} | "
                     f"{_fmt(r['kd'])} | {_fmt(r['reptile'])} | {_fmt(r['diff'])} | {t} | {gap} | "
                     f"{r['epochs'][0]}; {r['epochs'][1]} |")
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
