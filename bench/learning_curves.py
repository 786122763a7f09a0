"""Learning curves: the dev selection score of every epoch, per task and method, from the grid's JSON runs.

Answers "how long must a student train?": one chart per task (dev score against epoch, one line per run) and a
table that says, per run, its best epoch and how many epochs it has gone without a new best. Where a run updates
its teacher (ReptileDistil, MetaDistil), the teacher's own dev score after each epoch goes beside it (the table's
"its teacher" row, a dotted line; epoch 0 is the fine-tuned teacher): does the teacher drift while it teaches?

  python bench/learning_curves.py results/minilm-ep8        # -> results/minilm-ep8/curves-<task>.png
  python bench/learning_curves.py results/minilm-ep8 results/minilm-round1 --tasks mrpc stsb
                                                            # several grids on one chart (a line style per grid)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_histories(results: Path, tasks: list[str] | None) -> dict[str, dict[str, list[dict]]]:
    """{task: {"<method> seed <n>": [per-epoch record, ...]}} for the student runs under results/<task>/."""
    out: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(results.glob("*/*.json")):
        doc = json.loads(path.read_text())
        if doc.get("method") == "teacher" or (tasks and doc["task"] not in tasks):
            continue
        out.setdefault(doc["task"], {})[f"{doc['method']} seed {doc['seed']}"] = doc["history"]
    return out


def teacher_curves(results: Path, tasks: list[str] | None) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{task: {"<method> seed <n>": [(epoch, the teacher's dev selection score), ...]}} for the runs that update
    their teacher (ReptileDistil, MetaDistil): epoch 0 is the fine-tuned teacher before it taught."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for path in sorted(results.glob("*/*.json")):
        doc = json.loads(path.read_text())
        hist = doc.get("history") or []
        if not hist or not all("teacher_selection" in r for r in hist) or (tasks and doc["task"] not in tasks):
            continue  # the teachers' own records and KD runs have no teacher curve
        before = [(0, doc["teacher_before"]["selection"])] if "selection" in doc.get("teacher_before", {}) else []
        out.setdefault(doc["task"], {})[f"{doc['method']} seed {doc['seed']}"] = before + [
            (r["epoch"], r["teacher_selection"]) for r in hist]
    return out


def stalled_for(history: list[dict]) -> tuple[int, int]:
    """(best epoch, epochs trained since it): 2 or more means the dev score has stopped rising."""
    best = max(history, key=lambda r: r["selection"])
    return best["epoch"], history[-1]["epoch"] - best["epoch"]


def table(name: str, task: str, runs: dict[str, list[dict]],
          teachers: dict[str, list[tuple[int, float]]] | None = None) -> str:
    epochs = max(len(h) for h in runs.values())
    head = f"{name} {task}: dev selection score x100 per epoch"
    lines = [head, f"{'run':<18}" + "".join(f"{e:>7}" for e in range(1, epochs + 1)) + "   best  since"]
    for label, hist in sorted(runs.items()):
        best, since = stalled_for(hist)
        cells = "".join(f"{100 * r['selection']:7.1f}" for r in hist) + " " * 7 * (epochs - len(hist))
        lines.append(f"{label:<18}{cells}{best:>7}{since:>7}")
        if curve := (teachers or {}).get(label):  # the teacher it updated, after each epoch (before: epoch 0)
            after = [v for e, v in curve if e]
            start = f"  from {100 * curve[0][1]:.1f}" if curve[0][0] == 0 else ""
            lines.append(f"{'  its teacher':<18}" + "".join(f"{100 * v:7.1f}" for v in after)
                         + " " * 7 * (epochs - len(after)) + start)
    return "\n".join(lines)


def chart(task: str, grids: list[tuple[str, dict[str, list[dict]], dict | None]], out: Path) -> None:
    """One line per student run of each (grid name, runs, teacher curves); a dotted line per teacher curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8.4, 4.0))
    labels = sorted({label for _, runs, _ in grids for label in runs})
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # one colour per run, one line style per grid
    for i, (name, runs, teachers) in enumerate(grids):
        of = f" ({name})" if len(grids) > 1 else ""
        for label, hist in sorted(runs.items()):
            ax.plot([r["epoch"] for r in hist], [100 * r["selection"] for r in hist], marker="o", markersize=3,
                    color=colors[label], linestyle=("-", "--", ":", "-.")[i % 4], label=label + of)
            if curve := (teachers or {}).get(label):
                ax.plot([e for e, _ in curve], [100 * v for _, v in curve], marker="x", markersize=3,
                        color=colors[label], linestyle=":", label=f"{label}: its teacher{of}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev selection score (x100)")
    from report_grid import glue_name  # as GLUE spells it: STS-B, CoLA

    ax.set_title(f"{glue_name(task)}: student learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside: a grid of
    # three seeds per method with their teachers has a dozen lines, and a legend inside covers them
    fig.tight_layout()
    from reptiledistil.core.files import atomic_file

    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="results/<preset>[-<tag>] folders; charts go to the first")
    ap.add_argument("--tasks", nargs="+")
    args = ap.parse_args()
    grids = [(r.name, load_histories(r, args.tasks), teacher_curves(r, args.tasks)) for r in args.results]
    for task in sorted({t for _, g, _ in grids for t in g}):
        for name, g, teachers in grids:
            if task in g:
                print(table(name, task, g[task], teachers.get(task)) + "\n")
        # the chart draws the first grid's teachers only: one dotted line per run stays readable
        present = [(name, g[task], teachers.get(task) if k == 0 else None)
                   for k, (name, g, teachers) in enumerate(grids) if task in g]
        out = args.results[0] / f"curves-{task}.png"
        chart(task, present, out)
        print(f"wrote {out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out}\n")


if __name__ == "__main__":
    main()
