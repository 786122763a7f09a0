"""The model card (README.md, Hugging Face format) saved with every distilled student."""

from __future__ import annotations

from pathlib import Path

from ..methods import method_class
from ..core.files import write_atomic
from .summary import count_parameters, measure_speedup


def model_card(summary: dict, n_student: int, n_teacher: int | None, speed: dict | None,
               description: str | None = None) -> str:
    """`description`: how the student was trained (Method.description); by default the shipped method's whose
    name the summary records, else its name."""
    c, best = summary["config"], summary["best"]
    method, task = summary["method"], summary["task"]
    metrics = {k[4:]: v for k, v in best.items() if k.startswith("dev_")}
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification",
             f"tags: [knowledge-distillation, reptiledistil, {method}, glue-{task}]", "model-index:",
             f"- name: {Path(summary.get('output_dir', 'student')).name}", "  results:",
             f"  - task: {{type: text-classification, name: {task}}}", "    metrics:"]
    front += [f"    - {{type: {k}, value: {v:.4f}, name: dev {k}}}" for k, v in metrics.items()]
    front.append("---")
    cls = method_class(method)
    how = description or (cls.description if cls is not None else f"method {method}")
    body = [f"# {task.upper()} student distilled with {method}", "",
            f"Trained with ReptileDistil by {how}.", "",
            "| | |", "|---|---|",
            f"| task | {task} |",
            f"| teacher | {summary.get('teacher') or '-'} |",
            f"| method / strategy | {method} / {summary.get('strategy')} |",
            f"| student layers | {summary.get('student_layers')} |",
            f"| parameters | {n_student / 1e6:.1f}M" + (f" (teacher {n_teacher / 1e6:.1f}M)" if n_teacher else "") + " |",
            f"| alpha, temperature | {c.get('alpha')}, {c.get('temperature')} |",
            f"| learning rates (student, teacher) | {c.get('student_lr')}, {c.get('teacher_lr')} |",
            f"| epochs, batch size, max length, seed | {c.get('epochs')}, {c.get('batch_size')}, "
            f"{c.get('max_seq_length')}, {c.get('seed')} |",
            f"| dev (best epoch {best['epoch']}) | " + ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()) + " |"]
    if speed:
        body.append(f"| measured speed-up | {speed['speedup']:.2f}x over the teacher (fp32 forward, batch "
                    f"{speed['batch']} x {speed['seq']} tokens, {speed['threads']} threads: "
                    f"{speed['teacher_ms']:.0f} ms -> {speed['student_ms']:.0f} ms) |")
    body += ["", "Reproduce: the `config` in `metrics.json` beside this folder holds every setting."]
    return "\n".join(front + [""] + body) + "\n"


def write_model_card(summary: dict, student_dir: Path, teacher_dir: Path | None, description: str | None = None) -> Path:
    n_student = count_parameters(student_dir)
    n_teacher = count_parameters(teacher_dir) if teacher_dir else None
    speed = measure_speedup(teacher_dir, student_dir, batch=8, rounds=3) if teacher_dir else None
    path = student_dir / "README.md"
    write_atomic(path, model_card(summary, n_student, n_teacher, speed, description))
    return path
