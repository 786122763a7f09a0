"""What a distillation step costs per padded length: the fixed part, and whether the rest follows the tokens.

A bare vanilla-KD step at the preset (its teacher forward without gradients, the student's forward and backward,
fused AdamW; bf16 autocast where `precision=auto` picks it), batch 32, on random token ids of each length, outside
Lightning and the data pipeline. Lengths are interleaved over --rounds rounds after one warm-up step each; medians.
The step at 1 token is the fixed per-step cost (optimizer, per-layer overheads); the rest says whether the time of
a step follows its padded tokens, which is what length-grouped batches save (bench/length_grouping.py).

  python bench/step_by_length.py --preset mpnet_base                       # after the preset's install
  python bench/step_by_length.py --preset minilm --lengths 1 32 64 128 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, other_cpu_share, cpu_clock, write_results  # noqa: E402
from length_grouping import preset  # noqa: E402

from reptiledistil.config.cli import quiet_libraries, register_resolvers  # noqa: E402
from reptiledistil.core.hardware import resolve_hardware  # noqa: E402
from reptiledistil.data.tasks import get_task  # noqa: E402
from reptiledistil.models.loading import build_student, load_for_finetuning  # noqa: E402

LENGTHS = (1, 8, 16, 32, 48, 56, 64, 72, 80, 96, 128)


def kd_step(teacher, student, opt, length: int, bf16: bool) -> float:
    ids = torch.randint(1000, 20000, (32, length))
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with torch.no_grad():
            target = teacher(input_ids=ids, attention_mask=mask).logits.float()
        loss = torch.nn.functional.mse_loss(student(input_ids=ids, attention_mask=mask).logits.float(), target)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mpnet_base", help="conf/model/<preset>.yaml")
    ap.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto", help="auto (as train.py), 32-true or bf16-mixed")
    args = ap.parse_args()
    register_resolvers()
    quiet_libraries()
    precision = resolve_hardware("auto", args.precision).precision
    cfg, task = preset(args.preset), get_task("stsb")  # one output: the cost does not depend on the task
    teacher = load_for_finetuning(str(cfg.teacher_init), task).eval()
    student = build_student("teacher_layers", str(cfg.teacher_init), task, cfg.student.num_layers, "skip").train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)
    bf16 = precision.startswith("bf16")
    start = cpu_clock()
    for n in args.lengths:
        kd_step(teacher, student, opt, n, bf16)
    times: dict[int, list[float]] = {n: [] for n in args.lengths}
    for _ in range(args.rounds):
        for n in args.lengths:
            times[n].append(kd_step(teacher, student, opt, n, bf16))
    others = other_cpu_share(start)
    med = {n: statistics.median(v) for n, v in times.items()}
    fixed = med[min(med)]
    print(f"{args.preset}, batch 32, {precision}, threads={torch.get_num_threads()}, "
          f"{machine_info()['device_name']}\n\n| padded length | s / step | s / step above the fixed part, per token |")
    print("|---|---|---|")
    for n, s in med.items():
        print(f"| {n} | {s:.3f} | {'-' if n == min(med) else f'{1000 * (s - fixed) / n:.1f} ms'} |")
    if others is not None:
        print(f"\nother processes used {100 * others:.0f}% of the machine's CPU time during this run")
    path = write_results("step_by_length", {"preset": args.preset, "precision": precision, "batch": 32,
                                             "rounds": args.rounds, "seconds": times, "median_s": med,
                                             "fixed_s": fixed, "other_processes_cpu_share": others})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
