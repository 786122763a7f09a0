"""A report of every run under some folders: one table of runs, heatmaps of two-parameter sweeps, a GLUE-style table.

  python -m reptiledistil.report DIR [DIR ...] [--out OUT]
  python -m reptiledistil.report multirun/ model/ --out reports/sweep

Run records are found recursively (symlinks and hidden folders such as `.x.partial` staging dirs are skipped):
  metrics.json                                     train.py (a distilled student)
  dev_metrics.json                                 finetune_teacher.py (a teacher)
  <task>/teacher.json, <task>/<method>-seed<n>.json  bench/reproduce.py (results/<preset>/, the results grid)
A run copied to several places (train.py writes one copy beside the model and one in its Hydra log folder) is
counted once. Writes report.md and heatmap-<task>-<method>-<p1>-<p2>.png into OUT (default: the first DIR).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.files import write_atomic
from ..methods import METHODS
from ..data.tasks import TASKS

HPARAMS = ("alpha", "temperature", "student_lr", "teacher_lr")
METHOD_ORDER = ("teacher", *(cls.key for cls in METHODS))  # the teacher first, then as methods/ lists them
GRID_FILE = re.compile(r"(teacher|[a-z]+-seed\d+)\.json")
WHERE = ("metrics.json (train.py), dev_metrics.json (finetune_teacher.py) or "
         "results/<preset>/<task>/*.json (bench/reproduce.py)")


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    strategy: str
    seed: int | None
    params: dict  # HPARAMS -> value (None where the run has no such setting, e.g. a teacher's alpha)
    metrics: tuple[str, ...]  # the task's selection metrics, e.g. ("f1", "accuracy")
    best: dict
    final: dict
    wall_s: float | None
    source: Path  # the JSON file it was read from
    found_in: Path  # which of the given directories
    key: str  # the same for every copy of one run's record (see run_key)


# --- finding runs -------------------------------------------------------------------------------------------

def record_files(root: Path) -> list[Path]:
    """Every file under root that may be a run record, in a stable order."""
    found = []
    for folder, dirs, files in os.walk(root):  # followlinks=False: a symlinked folder is not entered
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # staging dirs hold unfinished runs
        for name in sorted(files):
            path = Path(folder) / name
            if (name in ("metrics.json", "dev_metrics.json") or GRID_FILE.fullmatch(name)) and not path.is_symlink():
                found.append(path)
    return found


def load_run(path: Path, found_in: Path) -> Run | None:
    """The run a record file describes; None (with a warning) if it is not one of ours."""
    try:
        doc = json.loads(path.read_text())
        config = doc.get("config") or {}
        if not isinstance(config, dict):
            raise TypeError("config is not a mapping")
        task = doc.get("task") or _name(config.get("task"))
        best, final = doc["best"], doc.get("final") or doc["best"]
        float(best["selection"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"warning: skipped {path}: not a run record ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    teacher = path.name == "dev_metrics.json" or doc.get("method") == "teacher"
    method = "teacher" if teacher else doc.get("method") or _name(config.get("method")) or "?"
    strategy = "-" if teacher else doc.get("strategy") or _name(config.get("strategy")) or "-"
    # A teacher's config has `lr` (its own fine-tuning), not the distillation settings: those stay empty.
    params = {p: None if teacher else config.get(p) for p in HPARAMS}
    known = TASKS.get(str(task))
    metrics = tuple(doc.get("selection_metric") or (known.selection if known else ("accuracy",)))
    wall = doc.get("train_wall_s", doc.get("wall_s"))  # train.py: fit time; reproduce.py: the whole script
    return Run(task=str(task), method=method, strategy=strategy, seed=doc.get("seed", config.get("seed")),
               params=params, metrics=metrics, best=best, final=final, wall_s=wall, source=path, found_in=found_in,
               key=run_key(doc, path))


def _name(section) -> str | None:
    return section.get("name") if isinstance(section, dict) else None


def run_key(doc: dict, path: Path) -> str:
    """One key per run: its output_dir (shared by all its copies) when known, else the record file itself.

    A results-grid JSON has no output_dir of its own; its config's (absolute in bench/reproduce.py) is the
    same run's, so the grid JSON and the run's metrics.json count once."""
    out = doc.get("output_dir") or (doc.get("config") or {}).get("output_dir")
    if out and os.path.isabs(str(out)):  # a relative config value depends on where the run was started
        return os.path.normpath(str(out))
    return str(path.resolve())


def check_dirs(dirs: list[Path]) -> dict[Path, list[Run]]:
    """The runs of each directory; ConfigError if one is missing or holds none (so nothing gets written)."""
    found = {}
    for d in dirs:
        if not d.is_dir():
            what = "is a file, not a directory" if d.exists() else "does not exist"
            raise ConfigError(f"{d} {what}. Pass the folder that holds the runs (e.g. model/, multirun/ or "
                              "results/<preset>/).")
        runs = [r for f in record_files(d) if (r := load_run(f, d)) is not None]
        if not runs:
            raise ConfigError(f"no run records under {d}: expected {WHERE}. Pass the folder that holds the runs, "
                              "or train one first (python train.py ...).")
        found[d] = runs
    return found


def find_runs(dirs: list[Path]) -> list[Run]:
    """Every run under dirs, each once (the first copy found), sorted by task, method, alpha, temperature, seed."""
    seen, runs = set(), []
    for found in check_dirs(dirs).values():
        for run in found:
            if run.key not in seen:
                seen.add(run.key)
                runs.append(run)
    return sorted(runs, key=_sort_key)


def _order(value) -> tuple:
    """Sorts numbers before strings before missing values, so mixed columns never raise."""
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (2, 0, "") if value is None else (1, 0, str(value))


def _task_rank(task: str) -> tuple:
    return (list(TASKS).index(task), "") if task in TASKS else (len(TASKS), task)  # GLUE's order


def _method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def _sort_key(r: Run) -> tuple:
    p = r.params
    return (_task_rank(r.task), _method_rank(r.method), _order(p["alpha"]), _order(p["temperature"]),
            _order(r.seed), r.strategy, _order(p["student_lr"]), _order(p["teacher_lr"]), str(r.source))


# --- tables -------------------------------------------------------------------------------------------------

def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def dev_keys(record: dict, metrics: tuple[str, ...]) -> list[str]:
    """The record's keys for the task's metrics, matched then mismatched (MNLI): dev_f1, dev_accuracy, ..."""
    return [k for prefix in ("dev_", "dev_mm_") for m in metrics if (k := prefix + m) in record]


def score(record: dict, metrics: tuple[str, ...]) -> str:
    """The task's dev metrics x100, e.g. "86.1/80.4" for f1/accuracy."""
    return "/".join(f"{100 * record[k]:.1f}" for k in dev_keys(record, metrics)) or "-"


def shown_params(runs: list[Run]) -> list[str]:
    """alpha and temperature always; a learning rate only when runs differ in it (else it is noise). Teachers,
    which have none, do not count as differing."""
    return ["alpha", "temperature"] + [p for p in ("student_lr", "teacher_lr")
                                       if len({r.params[p] for r in runs} - {None}) > 1]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def runs_table(runs: list[Run]) -> str:
    """One row per run: its setting, best dev (with its epoch) and final dev x100, and the wall time."""
    params = shown_params(runs)
    header = ["task", "method", "strategy", *params, "seed", "metrics", "best dev", "best epoch", "final dev",
              "wall s"]
    rows = []
    for r in runs:
        metrics = "/".join(k.removeprefix("dev_") for k in dev_keys(r.best, r.metrics))
        wall = f"{r.wall_s:.0f}" if isinstance(r.wall_s, (int, float)) else "-"
        rows.append([r.task, r.method, r.strategy, *(fmt(r.params[p]) for p in params), fmt(r.seed), metrics,
                     score(r.best, r.metrics), fmt(r.best.get("epoch")), score(r.final, r.metrics), wall])
    return "\n".join(md_table(header, rows))


def _mean_selection(runs: list[Run]) -> float:
    return statistics.mean(100 * float(r.best["selection"]) for r in runs)  # over seeds


def glue_rows(runs: list[Run]) -> tuple[list[str], list[dict]]:
    """Tasks (GLUE order) and one row per setting: per task the best selection x100 averaged over seeds, and
    "avg", the unweighted mean of those per-task scores (GLUE's average; `selection` already averages a task's
    metrics). "complete" says whether the row has every task, since an average over fewer tasks is not comparable."""
    tasks = sorted({r.task for r in runs}, key=_task_rank)
    params = shown_params(runs)
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.method, r.strategy, *(r.params[p] for p in params)), []).append(r)
    rows = []
    for setting, members in groups.items():
        per_task = {t: _mean_selection([r for r in members if r.task == t]) for t in tasks
                    if any(r.task == t for r in members)}
        rows.append({"setting": dict(zip(["method", "strategy", *params], setting)), "scores": per_task,
                     "avg": statistics.mean(per_task.values()), "complete": len(per_task) == len(tasks)})
    rows.sort(key=lambda row: (_method_rank(row["setting"]["method"]), row["setting"]["strategy"],
                               *(_order(row["setting"][p]) for p in params)))
    return tasks, rows


def glue_table(runs: list[Run]) -> str:
    """The GLUE-style table as Markdown; "" when fewer than two tasks are present."""
    tasks, rows = glue_rows(runs)
    if len(tasks) < 2:
        return ""
    params = shown_params(runs)
    header = ["method", "strategy", *params, *(t.upper() for t in tasks), "avg"]
    cells = [[fmt(row["setting"][k]) for k in ("method", "strategy", *params)]
             + [f"{row['scores'][t]:.1f}" if t in row["scores"] else "-" for t in tasks]
             + [f"{row['avg']:.1f}" + ("" if row["complete"] else "*")] for row in rows]
    lines = md_table(header, cells)
    if not all(row["complete"] for row in rows):
        lines.append("\n\\* mean over the tasks this setting has, not all of the table's: not comparable.")
    return "\n".join(lines)


# --- sweeps and heatmaps ------------------------------------------------------------------------------------

@dataclass
class Sweep:
    task: str
    method: str
    rows: tuple[str, list]  # (parameter, its values): the y axis
    cols: tuple[str, list]  # the x axis
    cells: list[list[float | None]]  # mean best selection x100 over seeds; None where no run has that pair

    @property
    def filename(self) -> str:
        return f"heatmap-{self.task}-{self.method}-{self.rows[0]}-{self.cols[0]}.png"


def sweeps(runs: list[Run]) -> tuple[list[Sweep], list[str]]:
    """A Sweep per (task, method) whose runs differ in exactly two of HPARAMS (same strategy); notes for those
    that differ in more, which a heatmap cannot show."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.task, r.method), []).append(r)
    found, notes = [], []
    for (task, method), members in groups.items():
        varying = [p for p in HPARAMS if len({r.params[p] for r in members}) > 1]
        differ = varying + (["strategy"] if len({r.strategy for r in members}) > 1 else [])
        if len(differ) == 2 and differ == varying:
            found.append(_sweep(task, method, members, *varying))
        elif len(differ) >= 2:
            notes.append(f"No heatmap for {task}/{method}: its runs differ in {', '.join(differ)}; a heatmap needs "
                         f"exactly two of {', '.join(HPARAMS)} to vary (and one strategy).")
    return found, notes


def _sweep(task: str, method: str, runs: list[Run], p1: str, p2: str) -> Sweep:
    values = {p: sorted({r.params[p] for r in runs}, key=_order) for p in (p1, p2)}
    cells = [[None] * len(values[p2]) for _ in values[p1]]
    for i, v1 in enumerate(values[p1]):
        for j, v2 in enumerate(values[p2]):
            same = [r for r in runs if r.params[p1] == v1 and r.params[p2] == v2]
            cells[i][j] = _mean_selection(same) if same else None
    return Sweep(task, method, (p1, values[p1]), (p2, values[p2]), cells)


def heatmap_png(sweep: Sweep) -> bytes:
    """The sweep as an annotated heatmap (PNG bytes). ImportError without matplotlib."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # a Figure with its own Agg canvas: no pyplot, no global backend switch

    (p1, v1), (p2, v2) = sweep.rows, sweep.cols
    grid = np.ma.masked_invalid(np.array([[np.nan if c is None else c for c in row] for row in sweep.cells]))
    fig = Figure(figsize=(2.5 + 1.0 * len(v2), 1.8 + 0.6 * len(v1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(v2)), [fmt(v) for v in v2])
    ax.set_yticks(range(len(v1)), [fmt(v) for v in v1])
    ax.set_xlabel(p2)
    ax.set_ylabel(p1)
    middle = (grid.min() + grid.max()) / 2
    for i, row in enumerate(sweep.cells):
        for j, cell in enumerate(row):
            if cell is not None:  # dark text on the bright end of viridis, white on the dark end
                ax.text(j, i, f"{cell:.1f}", ha="center", va="center", color="black" if cell > middle else "white")
    fig.colorbar(image, ax=ax, label="dev x100")
    ax.set_title(f"{sweep.task.upper()} {sweep.method}: best dev selection, mean over seeds", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# --- writing ------------------------------------------------------------------------------------------------

def render(runs: list[Run], dirs: list[Path], charts: list[str]) -> str:
    """report.md: where the runs came from, the runs table, the sweeps, the GLUE-style table."""
    counts = ", ".join(f"`{d}` ({sum(r.found_in == d for r in runs)})" for d in dirs)
    lines = ["# Run report", "", f"{len(runs)} run{'s' if len(runs) != 1 else ''} found in {counts} "
             "(each run once, however many copies of its record there are).", "",
             "## Runs", "", "Dev scores x100 (the task's GLUE metrics; MNLI: matched/mismatched); best = the epoch "
             "with the best selection score. Wall time: training (train.py) or the whole script (results grid).", "",
             runs_table(runs)]
    if charts:
        lines += ["", "## Sweeps", "", *charts]
    glue = glue_table(runs)
    if glue:
        lines += ["", "## GLUE-style table", "", "Best dev selection score x100 (mean of the task's metrics), "
                  "averaged over seeds; avg = unweighted mean over tasks.", "", glue]
    return "\n".join(lines) + "\n"


def write_all(dirs: list[Path], out: Path) -> list[Path]:
    """Write report.md (first in the list) and the heatmaps into out; ConfigError before writing anything."""
    runs = find_runs(dirs)  # raises on a missing or empty directory
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory. Choose another folder.")
    out.mkdir(parents=True, exist_ok=True)
    found, charts = sweeps(runs)
    written = []
    for sweep in found:
        (p1, _), (p2, _) = sweep.rows, sweep.cols
        try:
            png = heatmap_png(sweep)
        except ImportError:  # e.g. a bare GPU machine: the tables still get written
            charts.append(f"Heatmap of {sweep.task}/{sweep.method} ({p1} x {p2}) skipped: matplotlib is not "
                          "installed (pip install matplotlib).")
            continue
        write_atomic(out / sweep.filename, png)
        written.append(out / sweep.filename)
        charts.append(f"![{sweep.task} {sweep.method}: {p1} x {p2}]({sweep.filename})")
    report = out / "report.md"
    write_atomic(report, render(runs, dirs, charts))  # last, so the images it links to exist
    return [report, *written]


def write_report(dirs: list[Path], out: Path) -> Path:
    """Write the report of the runs under dirs into out; returns report.md's path."""
    return write_all([Path(d) for d in dirs], Path(out))[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reptiledistil.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="folders to search for run records")
    ap.add_argument("--out", type=Path, help="where report.md and the heatmaps go (default: the first folder)")
    a = ap.parse_args(argv)
    try:
        paths = write_all(a.dirs, a.out or a.dirs[0])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(paths[0].read_text())
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
