"""Tables and chart of the results grid, from results/<preset>/<task>/*.json (written by bench/reproduce.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from reptiledistil.core.errors import ConfigError
from reptiledistil.core.files import atomic_file, write_atomic
from reptiledistil.data.metrics import selection_score
from reptiledistil.data.tasks import get_task
from reptiledistil.methods import KD, METHODS, Reptile, StudentAlone
from reptiledistil.report.summary import majority_class_scores

COLUMNS = ("teacher", *(cls.key for cls in METHODS))
TITLES = {"teacher": "teacher", **{cls.key: cls.title for cls in METHODS}}
LEARNERS = tuple(cls.key for cls in METHODS if cls.teacher_learns)  # the teacher changes while it teaches
ALWAYS_SHOWN = ("teacher", *(cls.key for cls in (StudentAlone, KD, Reptile)))  # the paper's comparison; others once run
# What GLUE reports per task (x100); the mean of the selection metrics decides the chart and the differences.
SHOWN = {"cola": ("mcc",), "sst2": ("accuracy",), "mrpc": ("f1", "accuracy"), "stsb": ("pearson", "spearman"),
         "qqp": ("f1", "accuracy"), "qnli": ("accuracy",), "rte": ("accuracy",), "wnli": ("accuracy",),
         "mnli": ("matched_accuracy", "mismatched_accuracy")}
FINDINGS = "FINDINGS.md"  # hand-written, beside the JSON runs: included verbatim at the end of the page
ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


def load_runs(results: Path) -> dict[str, dict[str, list[dict]]]:
    """{task: {method: [run, ...]}} for every JSON under results/<task>/."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(results.glob("*/*.json")):
        doc = json.loads(path.read_text())
        runs.setdefault(doc["task"], {}).setdefault(doc["method"], []).append(doc)
    return runs


def _value(record: dict, task: str, metric: str) -> float:
    key = next(k for k in (f"dev_{metric}", metric) if k in record)
    return 100 * record[key]


def glue_name(task: str) -> str:
    """As GLUE spells it: STS-B, CoLA, SST-2 (the task's data folder)."""
    try:
        return get_task(task).dir
    except ConfigError:  # a task this version does not know: its key
        return task.upper()


def majority_class(task: str) -> dict[str, float] | None:
    """The shown metrics and selection score (x100) of always predicting the majority dev label; None for
    regression or when the GLUE data is not found (the report is then written without this floor)."""
    try:
        spec = get_task(task)
        scores = majority_class_scores(spec)
    except ConfigError:
        return None
    if scores is None:
        return None
    return {**{k: 100 * v for k, v in scores.items()}, "selection": 100 * selection_score(spec, scores)}


def _mean_sd(xs: list[float]) -> tuple[float, float | None]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    m, sd = _mean_sd(xs)
    return f"{m:.1f}" if sd is None else f"{m:.1f} ± {sd:.1f}"


def shown_columns(runs: dict) -> tuple[str, ...]:
    return tuple(m for m in COLUMNS if m in ALWAYS_SHOWN or any(m in by for by in runs.values()))


def summarise(runs: dict) -> list[dict]:
    """One row per task: per method the shown metrics and selection scores over seeds, the differences to KD,
    the teachers' drift, time."""
    rows = []
    for task in sorted(runs, key=lambda t: ORDER.index(t) if t in ORDER else len(ORDER)):
        by = runs[task]
        row = {"task": task, "metrics": SHOWN.get(task, ("accuracy",)), "n": {m: len(by.get(m, [])) for m in COLUMNS},
               "majority": majority_class(task)}
        for m in COLUMNS:
            recs = [r["best"] for r in by.get(m, [])]
            row[m] = {met: [_value(r, task, met) for r in recs] for met in row["metrics"]}
            row[m]["selection"] = [100 * r["selection"] for r in recs]
            # a resumed run whose earlier attempts' cost is not known counts only its last part: left out
            whole = [r for r in by.get(m, []) if r.get("cost_complete", not r.get("resumed"))]
            row[m]["wall_s"] = [r["wall_s"] for r in whole]
            row[m]["cpu_s"] = [r["cpu_s"] for r in whole if "cpu_s" in r]
            row[m]["resumed"] = len(by.get(m, [])) - len(whole)
        kd = {r["seed"]: 100 * r["best"]["selection"] for r in by.get(KD.key, [])}
        for m in LEARNERS:
            row[f"{m}_minus_kd"] = [100 * r["best"]["selection"] - kd[r["seed"]] for r in by.get(m, [])
                                    if r["seed"] in kd]  # paired by seed: same data order, same student init
            row[f"{m}_teacher_drift"] = [100 * (r["teacher_after"]["selection"] - r["teacher_before"]["selection"])
                                         for r in by.get(m, []) if "teacher_after" in r]
        rows.append(row)
    return rows


def _seeds_cell(r: dict, columns: tuple[str, ...]) -> str:
    """The seeds per student method: one number when they agree, else the exceptions named (a method with no run
    shows "-" in its own column)."""
    counts = {m: r["n"][m] for m in columns if m != "teacher" and r["n"][m]}
    if not counts:  # only the teacher has run
        return "-"
    most = max(counts.values())
    others = [f"{TITLES[m]} {n}" for m, n in counts.items() if n != most]
    return f"{most}" + (f" ({', '.join(others)})" if others else "")


def tables(rows: list[dict], columns: tuple[str, ...]) -> str:
    """The scores table and the teacher-drift and time table, each with what its numbers mean."""
    learners = [m for m in LEARNERS if m in columns]
    head = ("| task (metric) | majority class | " + " | ".join(TITLES[m] for m in columns) + " | " +
            " | ".join(f"{TITLES[m]} - KD" for m in learners) + " | seeds |")
    lines = ["GLUE dev, best epoch, x100, mean ± standard deviation over seeds (teacher: one run). Majority class: "
             "always predicting the most frequent dev label, the floor a model must clear (none for regression). "
             "The differences to KD are paired by seed (mean of the selection metrics).", "",
             head, "|" + "---|" * (len(columns) + len(learners) + 3)]
    for r in rows:
        cells = [" / ".join(_fmt(r[m][met]) for met in r["metrics"]) for m in columns]
        diffs = " | ".join(_fmt(r[f"{m}_minus_kd"]) for m in learners)
        floor = " / ".join(f"{r['majority'][met]:.1f}" for met in r["metrics"]) if r["majority"] else "-"
        lines.append(f"| {glue_name(r['task'])} ({'/'.join(r['metrics'])}) | {floor} | " + " | ".join(cells) +
                     f" | {diffs} | {_seeds_cell(r, columns)} |")
    lines += ["", "What the teacher itself scores on dev after it has been updated while teaching (selection metric, "
              "x100, change from the fine-tuned teacher), and the time per run, mean, start-up and dev evaluation "
              "included: wall seconds / CPU seconds (user + system, all cores; unlike wall time it does not grow when "
              "the machine is shared or the grid is paused; a resumed run adds what it spent up to the checkpoint it "
              "resumed from, or, where its record does not know that, counts only its last part and is left out):",
              "",
              "| task | " + " | ".join(f"teacher drift ({TITLES[m]})" for m in learners) + " | " +
              " | ".join(f"{TITLES[m]} wall / CPU s" for m in columns) + " |",
              "|" + "---|" * (len(columns) + len(learners) + 1)]

    def time_cell(x: dict) -> str:
        left_out = f" ({x['resumed']} resumed, left out)" if x["resumed"] else ""
        if not x["wall_s"]:
            return "-" + left_out
        cpu = f"{statistics.mean(x['cpu_s']):.0f}" if len(x["cpu_s"]) == len(x["wall_s"]) else "?"
        return f"{statistics.mean(x['wall_s']):.0f} / {cpu}{left_out}"

    for r in rows:
        times = " | ".join(time_cell(r[m]) for m in columns)
        drifts = " | ".join(_fmt(r[f"{m}_teacher_drift"]) for m in learners)
        lines.append(f"| {glue_name(r['task'])} | {drifts} | {times} |")
    return "\n".join(lines) + "\n"


def precision_line(runs: dict) -> str:
    """The training precision the grid's runs recorded: one for the whole grid, or each named where they differ."""
    used: dict[str, list[str]] = {}
    for task, per in runs.items():
        for method, records in per.items():
            for r in records:
                value = str((r.get("hardware") or {}).get("precision")  # what ran; older records: the setting
                            or r.get("config", {}).get("trainer", {}).get("precision", "not recorded"))
                used.setdefault(value, []).append(f"{task} {TITLES.get(method, method)} seed {r.get('seed')}")
    def shown(p: str) -> str:  # `auto` is resolved on the machine that ran the run, and only the setting is kept
        return f"`{p}`" + (" (as the machine that ran it chose; the choice is not recorded)" if p == "auto" else "")

    if len(used) == 1:
        return f"Training precision: {shown(next(iter(used)))} in every run.\n\n"
    listed = "; ".join(f"{shown(p)}: {', '.join(names)}" for p, names in sorted(used.items()))
    return f"**Training precisions differ between runs** (a grid should use one): {listed}.\n\n"


def markdown(rows: list[dict], preset: str, columns: tuple[str, ...], *, findings: bool = False,
             command: str = "python bench/reproduce.py", precision: str = "") -> str:
    note = (f" The tables and the chart are generated from the JSON runs; the text after them is hand-written in "
            f"[{FINDINGS}]({FINDINGS}): edit that file, not this page." if findings else "")
    return (f"# Results grid: preset `{preset}`\n\nRegenerate: `{command}` (skips runs that exist; "
            f"`--report` only rebuilds this page).{note}\n\n" + precision + tables(rows, columns))


def chart(rows: list[dict], path: Path, preset: str, columns: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.4 + 1.6 * len(rows), 4.2))
    width = 0.8 / len(columns)
    for i, m in enumerate(columns):
        stats = [_mean_sd(r[m]["selection"]) if r[m]["selection"] else (0.0, None) for r in rows]
        xs = [k + (i - (len(columns) - 1) / 2) * width for k in range(len(rows))]
        sds = [float("nan") if s[1] is None else s[1] for s in stats]  # one seed: no error bar, not a flat one
        ax.bar(xs, [s[0] for s in stats], width, yerr=sds, capsize=3, label=TITLES[m])
    label = "majority class"  # in the legend once
    for k, r in enumerate(rows):
        if r["majority"]:
            ax.hlines(r["majority"]["selection"], k - 0.45, k + 0.45, colors="black", linestyles="dashed", label=label)
            label = None
    ax.set_xticks(range(len(rows)), [f"{glue_name(r['task'])}\n({'/'.join(r['metrics'])})" for r in rows])
    lo = min((min(r[m]["selection"]) for r in rows for m in columns if r[m]["selection"]), default=0)
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_ylabel("dev score x100 (mean of GLUE metrics)")
    ax.set_title(f"Preset {preset}: mean ± sd over seeds")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))  # below: never over a bar
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def still_to_run(runs: dict, plan: dict[str, dict[str, list[int]]]) -> str:
    """What the grid was asked for ({task: {method: seeds}}, plus each task's teacher) and has not recorded yet, a
    line per task."""
    lines = []
    for task, methods in plan.items():
        done = runs.get(task, {})
        todo = ["teacher"] if "teacher" not in done else []
        for m in (m for m in TITLES if m in methods):  # the report's order
            have = {r["seed"] for r in done.get(m, [])}
            if lack := [s for s in methods[m] if s not in have]:
                todo.append(f"{TITLES[m]} (seed{'s' if len(lack) > 1 else ''} {', '.join(map(str, lack))})")
        if todo:
            lines.append(f"- {glue_name(task)}: {', '.join(todo)}")
    if not lines:
        return "Every run the grid was asked for is here.\n"
    return ("Still to run, of what the grid was asked for (the call that asked for them resumes them):\n\n"
            + "\n".join(lines) + "\n")


def write_report(results: Path, preset: str, plan: dict[str, dict[str, list[int]]] | None = None,
                 command: str = "python bench/reproduce.py") -> str:
    """results/README.md from the JSON files (the tables, with `plan` what is still to run, the chart methods.png)
    followed by the hand-written results/FINDINGS.md where it exists. The page is only ever written whole, from
    those two sources, so regenerating it is idempotent and never loses the findings."""
    runs = load_runs(results)
    rows, columns = summarise(runs), shown_columns(runs)
    if not rows:
        return f"no results under {results} yet"
    md = results / "README.md"
    todo = f"\n{still_to_run(runs, plan)}" if plan else ""
    try:
        chart(rows, results / "methods.png", preset, columns)
        image = "\n![methods per task](methods.png)\n"
    except ImportError:  # e.g. a bare GPU machine: the tables still get written
        image = ""
    findings = results / FINDINGS
    notes = f"\n{findings.read_text().strip()}\n" if findings.is_file() else ""
    write_atomic(md, markdown(rows, preset, columns, findings=findings.is_file(), command=command,
                              precision=precision_line(runs)) + todo + image + notes)
    return md.read_text() + f"\nwrote {md}" + (f" and {results / 'methods.png'}" if image else
                                                " (no chart: pip install matplotlib)")
