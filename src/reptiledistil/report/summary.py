"""The closing table of the main command: teacher vs student on dev, size, measured speed-up, where things went.

  python -m reptiledistil.report.summary --task mrpc --teacher model/mrpc/teacher \
      --run model/mrpc/reptile-skip-a0.5-T5 --predictions predictions/mrpc
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ..data.metrics import compute_metrics, format_metrics
from ..data.tasks import get_task


def _as_typed(path: str) -> str:
    """Hydra records the log folder absolute; shown relative to the current folder when under it, like the rest."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) if path else path
    except ValueError:
        return path


def count_parameters(model_dir: Path) -> int:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def measure_speedup(teacher_dir: Path, student_dir: Path, batch: int = 32, seq: int = 128, rounds: int = 5) -> dict:
    """Median fp32 forward time of teacher and student on the same random batch, interleaved rounds."""
    from transformers import AutoModelForSequenceClassification

    models = {k: AutoModelForSequenceClassification.from_pretrained(d).eval()
              for k, d in (("teacher", teacher_dir), ("student", student_dir))}
    g = torch.Generator().manual_seed(0)
    x = {"input_ids": torch.randint(1000, 29000, (batch, seq), generator=g),
         "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m(**x)  # warm-up
        for _ in range(rounds):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(**x)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "seq": seq, "teacher_ms": 1000 * med["teacher"], "student_ms": 1000 * med["student"],
            "speedup": med["teacher"] / med["student"], "threads": torch.get_num_threads()}


def majority_class_scores(task, glue_dir: str | None = None) -> dict[str, float] | None:
    """GLUE metrics, on the first dev split, of always predicting its most frequent label: the floor a model
    must clear (MRPC: F1 81.2, accuracy 68.4; CoLA: MCC 0). None for regression, where a constant has no
    correlation."""
    from ..data.glue import load_split

    if task.is_regression:
        return None
    labels = torch.tensor(next(iter(load_split(task, "dev", glue_dir).values()))["labels"])
    return compute_metrics(task, torch.full_like(labels, int(labels.mode().values)), labels)


def _score(metrics: dict, task, prefix: str = "dev_") -> str:
    return format_metrics({k: metrics[prefix + k] for k in task.metrics if prefix + k in metrics}, percent=True, sep=" ")


def summary_table(task_name: str, teacher: Path, run: Path, predictions: Path) -> str:
    task = get_task(task_name)
    t_metrics = json.loads((teacher / "dev_metrics.json").read_text())["best"]
    run_metrics = json.loads((run / "metrics.json").read_text())
    s_metrics = run_metrics["best"]
    n_t, n_s = count_parameters(teacher), count_parameters(run / "student")
    speed = measure_speedup(teacher, run / "student")
    majority = majority_class_scores(task)
    lines = [
        f"== Summary: {task.name.upper()} dev (best epoch), {run_metrics['method']} / {run_metrics['strategy']}",
        f"{'':<9}{'dev':<34}{'parameters':>12}{'forward ms':>12}{'speed-up':>10}",
        f"{'teacher':<9}{_score(t_metrics, task):<34}{n_t / 1e6:>11.1f}M{speed['teacher_ms']:>12.0f}{1.0:>9.2f}x",
        f"{'student':<9}{_score(s_metrics, task):<34}{n_s / 1e6:>11.1f}M{speed['student_ms']:>12.0f}"
        f"{speed['speedup']:>9.2f}x",
    ]
    if majority:
        lines.append(f"(majority class on dev: {_score(majority, task, prefix='')})")
    lines += [f"speed: fp32 forward, batch {speed['batch']} x {speed['seq']} tokens, {speed['threads']} threads, "
              "median of 5 interleaved rounds",
              "outputs:",
              f"  teacher       {teacher}/ (dev_metrics.json)",
              f"  student       {run}/student/ (metrics.json in {run}/)",
              f"  final teacher {run}/teacher/" if (run / "teacher").is_dir() else "",
              f"  logs          {_as_typed(run_metrics['config'].get('log_dir', ''))}",
              f"  submission    {predictions}/ ({', '.join(sorted(p.name for p in predictions.glob('*.tsv')))}"
              f"{', glue_submission.zip' if (predictions / 'glue_submission.zip').exists() else ''})"]
    return "\n".join(l for l in lines if l)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="train.py's output_dir")
    ap.add_argument("--predictions", type=Path, required=True)
    a = ap.parse_args()
    from ..config.cli import quiet_libraries

    quiet_libraries()  # no weight-loading bars between the pipeline's output and this table
    print(summary_table(a.task, a.teacher, a.run, a.predictions))


if __name__ == "__main__":
    main()
