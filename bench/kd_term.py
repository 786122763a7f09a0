"""How hard the teacher is to follow: the student's KD term per epoch, vanilla KD against ReptileDistil.

The two methods' student steps are the same but for the teacher: vanilla KD's is fixed, ReptileDistil's moves
every batch (its mapped layers are pulled towards the fast student). If the moving teacher came closer to what
the student can produce, as "learning to teach" intends, ReptileDistil's student would face a smaller KD term
(soft cross-entropy to the teacher, the training logs' `train/kd_term`) than vanilla KD's on the same batches;
this prints that term's mean per epoch for each run and the ratio ReptileDistil / KD paired by seed (MetaDistil /
KD too, where it ran: its teacher learns as well, second order).

  python bench/kd_term.py model/grid/mpnet_base model/grid/minilm-grouped     # grid model folders (git-ignored)
  python bench/kd_term.py model/grid/mpnet_base --tasks stsb mrpc

Reads `<grid>/<task>/logs/<method>-seed<N>/csv/version_*/metrics.csv` (bench/reproduce.py writes them; a run
still training is left out, a resumed run's later version replaces the steps it redid) and writes
bench/results/kd_term-*.json.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from reptiledistil.methods import KD, METHODS  # noqa: E402

TERM = "train/kd_term"


def epoch_means(run_logs: Path) -> list[float]:
    """The mean logged KD term of each epoch (1-based order), over every version of the run's CSV log."""
    by_step: dict[int, tuple[int, float]] = {}
    for path in sorted(run_logs.glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get(TERM):  # a later version (a resumed run) replaces the steps it logged again
                    by_step[int(row["step"])] = (int(float(row["epoch"])), float(row[TERM]))
    epochs: dict[int, list[float]] = {}
    for epoch, value in by_step.values():
        epochs.setdefault(epoch, []).append(value)
    return [statistics.mean(epochs[e]) for e in sorted(epochs)]


def runs(grid: Path, tasks: list[str] | None) -> dict[str, dict[str, list[float]]]:
    """{task: {"<method>-seed<N>": per-epoch mean KD term}} for the runs that log one."""
    out: dict[str, dict[str, list[float]]] = {}
    for logs in sorted(grid.glob("*/logs/*-seed*")):
        task = logs.parent.parent.name
        if (tasks and task not in tasks) or not (grid / task / logs.name / "metrics.json").is_file():
            continue  # a run still training (its metrics.json is written at the end) is left out
        if means := epoch_means(logs):
            out.setdefault(task, {})[logs.name] = means
    return out


MOVING = {cls.key: cls.title for cls in METHODS if cls.teacher_learns}  # run prefix -> title, teacher learns


def ratios(by_run: dict[str, list[float]], last: bool = False, method: str = "reptile") -> list[float]:
    """<method> / KD, paired by seed: the first epoch, or with `last` the last epoch both reached."""
    out = []
    for name, moving in by_run.items():
        if name.startswith(f"{method}-") and (kd := by_run.get(name.replace(f"{method}-", f"{KD.key}-", 1))):
            n = min(len(kd), len(moving))
            out.append(moving[n - 1] / kd[n - 1] if last else moving[0] / kd[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grids", nargs="+", type=Path, help="grid model folders: model/grid/<preset>[-<tag>]")
    ap.add_argument("--tasks", nargs="+")
    args = ap.parse_args()
    missing = [str(g) for g in args.grids if not list(g.glob("*/logs"))]
    if missing:
        sys.exit(f"no run logs under {', '.join(missing)}: pass grid model folders such as model/grid/mpnet_base "
                 "(bench/reproduce.py writes them; they are not in the repository).")
    figures: dict[str, dict] = {}
    for grid in args.grids:
        for task, by_run in runs(grid, args.tasks).items():
            label = f"{grid.name}/{task}"
            epochs = max(len(v) for v in by_run.values())
            print(f"{label}: mean KD term per epoch")
            print(f"{'run':<16}" + "".join(f"{e:>8}" for e in range(1, epochs + 1)))
            for name, means in sorted(by_run.items()):
                print(f"{name:<16}" + "".join(f"{m:8.3f}" for m in means))
            figures[label] = {"per_epoch": by_run}
            for method, title in MOVING.items():
                first, last = ratios(by_run, method=method), ratios(by_run, last=True, method=method)
                if first:
                    print(f"{title} / KD, paired by seed: first epoch {', '.join(f'{r:.2f}' for r in first)}; "
                          f"last epoch both trained {', '.join(f'{r:.2f}' for r in last)}")
                    figures[label] |= {f"{method}_over_kd_first": first, f"{method}_over_kd_last": last}
            print()
    print(f"wrote {write_results('kd_term', {'runs': figures})}")


if __name__ == "__main__":
    main()
