"""Cost of one distillation step on the offline preset (MiniLM-L6 teacher, 3-layer student).

Times the same batches through
  kd          plain KD step (frozen teacher)                                   the baseline of every ratio
  reference   Reptile as the reference code does it: deepcopy the student, build a fresh AdamW,
              step it, gc.collect() (kept here only as the thing to beat)
  ours        ReptileDistil's step (closed-form fast student, in-place pseudo-gradients), separate forwards
              (method.share_forward=false; the `auto` default on GPU)
  ours-shared the same with one student forward shared by the fast and the real step (share_forward=true;
              the `auto` default on CPU)
  metadistil  MetaDistil's step (method=metadistil): pilot update with create_graph, the teacher's
              second-order gradient through it on a quiz batch, then the real student step
Seconds per step are medians over interleaved rounds after warm-up; peak memory is measured in a fresh
process per method (CPU: peak RSS while stepping; GPU: peak allocated CUDA memory). Precision: --precision,
default what train.py's `auto` picks (bf16-mixed on a bf16-capable GPU or CPU, else 32-true). Usage:
  python bench/step_cost.py                       # 64 and 128 tokens, batch 32
  python bench/step_cost.py --seq 64 --steps 3    # quicker
  python bench/step_cost.py --seq 128 --steps 10 --rounds 5   # on a GPU: steps are short, take more
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_clock, machine_info, other_cpu_share, write_results  # noqa: E402

from reptiledistil.config.cli import quiet_libraries  # noqa: E402
from reptiledistil.core.hardware import resolve_hardware  # noqa: E402
from reptiledistil.models.layer_map import layer_mapping, parameter_pairs  # noqa: E402
from reptiledistil.methods import Reptile  # noqa: E402
from reptiledistil.methods.reptile import trained_parameters  # noqa: E402
from reptiledistil.models.loading import build_student, load_for_finetuning, minilm_dir  # noqa: E402
from reptiledistil.training.modules import DistilModule, DistilSettings, param_groups  # noqa: E402
from reptiledistil.data.tasks import get_task  # noqa: E402

warnings.filterwarnings("ignore")
METHODS = ("kd", "reference", "ours", "ours-shared", "metadistil")
TASK = get_task("rte")
GPU = torch.cuda.is_available()


@dataclasses.dataclass(frozen=True)
class ReferenceStyle(Reptile):
    """Step (a) as the reference implementation writes it: a deep copy, a fresh AdamW, gc every batch."""

    def fast_student(self, loop, inputs, labels, s_logits):
        fast = copy.deepcopy(loop.student)
        opt = torch.optim.AdamW(param_groups(fast, 0.01), lr=trained_parameters(loop)[1][0][0], eps=1e-8)
        loss = loop.loss(fast(**inputs).logits, loop.teacher_logits(inputs), labels)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(fast.parameters(), loop.max_grad_norm)
        opt.step()
        out = [p.detach() for p in fast.parameters()]
        del fast, opt
        gc.collect()
        return out, norm


class StepTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, *a):
        if GPU:
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, *a):
        if GPU:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.t0)


def make_module(method: str, seq: int = 128, batch: int = 32) -> DistilModule:
    teacher = load_for_finetuning(minilm_dir(), TASK)
    student = build_student("teacher_layers", minilm_dir(), TASK, 3, "skip")
    pairs = parameter_pairs(teacher, student, layer_mapping("skip", 6, 3))
    opt = lambda lr: functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01, eps=1e-8, fused=True)  # as conf/train.yaml
    name = method if method in ("kd", "metadistil") else "reptile"
    conf = OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml")  # the method's defaults, as train.py reads them
    if name == "reptile":  # this benchmark's variants of the step, not a choice of the method's
        conf.share_forward = method == "ours-shared"
    built = hydra.utils.instantiate(conf)
    if method == "reference":
        built = ReferenceStyle(**dataclasses.asdict(built))
    settings = DistilSettings(method=built, alpha=0.5, temperature=5.0, warmup_ratio=0.1, max_grad_norm=1.0)
    quiz = batches(1, batch, seq, seed=1)[0]  # MetaDistil's quiz batch: as large as a training batch
    return DistilModule(teacher, student, TASK, ["dev"], settings=settings, student_optimizer=opt(5e-5),
                        teacher_optimizer=opt(built.teacher_lr or 5e-5), pairs=pairs,
                        quiz_batch=lambda step, rank: quiz)


def batches(n: int, batch: int, seq: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, 29000, (batch, seq), generator=g),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long),
             "token_type_ids": torch.zeros(batch, seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch,), generator=g)} for _ in range(n)]


PRECISION = resolve_hardware("auto", "auto").precision  # replaced by --precision


def run_steps(module: DistilModule, data: list[dict]) -> list[float]:
    """Steps through Lightning exactly as train.py does."""
    timer = StepTimer()
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if GPU else "cpu", devices=1,
                         precision=PRECISION, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=None))
    return timer.times


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, seq: int, batch: int, steps: int) -> None:
    """One method in a fresh process: prints its peak RSS during training (MiB) as JSON.

    Loading the models has a higher transient peak than training, so the peak is reset (Linux clear_refs)
    once the models are built: what is reported is the peak while stepping.
    """
    torch.manual_seed(0)
    module = make_module(method, seq, batch)
    data = batches(steps, batch, seq)
    gc.collect()
    loaded = _rss_mib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak then includes loading
    if GPU:
        torch.cuda.reset_peak_memory_stats()
    run_steps(module, data)
    peak = torch.cuda.max_memory_allocated() / 2**20 if GPU else _rss_mib("VmHWM")
    print(json.dumps({"peak_rss_mib": peak, "rss_after_load_mib": loaded}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per method per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--precision", default="auto", help="auto (as train.py), 32-true, bf16-mixed or 16-mixed")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    quiet_libraries()  # the table, not Lightning's banners and transformers' load reports, per timed run
    torch.set_num_threads(args.threads)
    global PRECISION
    PRECISION = resolve_hardware("auto", args.precision).precision
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]), int(args.child[3]))

    info = machine_info()
    print(f"threads={torch.get_num_threads()} batch={args.batch} precision={PRECISION} device={info['device_name']} "
          f"machine={info['platform']}")
    start = cpu_clock()
    torch.manual_seed(0)
    results = {}
    for seq in args.seq:
        torch.manual_seed(0)
        modules = {m: make_module(m, seq, args.batch) for m in METHODS}  # MetaDistil's quiz batch has this shape
        data = batches(args.steps, args.batch, seq)
        for m in METHODS:  # warm-up (allocator, first-call costs)
            run_steps(modules[m], data[:1])
        times = {m: [] for m in METHODS}
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits every method alike
            for m in METHODS:
                times[m] += run_steps(modules[m], data)
        mem = {}
        for m in METHODS:
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--precision", PRECISION,
                                  "--child", m, str(seq),
                                  str(args.batch), "3"], capture_output=True, text=True, check=True)
            mem[m] = json.loads(out.stdout.strip().splitlines()[-1])
        kd_t, kd_mem = statistics.median(times["kd"]), mem["kd"]["peak_rss_mib"]
        results[str(seq)] = {m: {"median_s": statistics.median(times[m]), "all_s": times[m],
                                 "ratio_to_kd": statistics.median(times[m]) / kd_t,
                                 "peak_rss_mib": mem[m]["peak_rss_mib"],
                                 "peak_rss_ratio_to_kd": mem[m]["peak_rss_mib"] / kd_mem} for m in METHODS}
        print(f"\nseq {seq}, batch {args.batch}")
        print(f"{'method':<12} {'s/step':>8} {'x KD':>6} {'peak RSS MiB':>13} {'x KD':>6}")
        for m, r in results[str(seq)].items():
            print(f"{m:<12} {r['median_s']:>8.3f} {r['ratio_to_kd']:>6.2f} {r['peak_rss_mib']:>13.0f} "
                  f"{r['peak_rss_ratio_to_kd']:>6.2f}")
    others = other_cpu_share(start)  # how noisy the machine was: other processes' share of its CPU time
    if others is not None:
        print(f"\nother processes used {100 * others:.0f}% of the machine's CPU time during this run")
    goal = ("GPU, bf16, seq 128: ours <= 1.6x KD step and >= 5x faster than reference; peak memory <= 1.3x KD"
            if GPU else "CPU: ours <= 1.8x KD step, peak RSS <= 1.3x KD")
    path = write_results("step_cost", {"batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                                       "precision": PRECISION, "goal": goal, "results": results,
                                       "other_processes_cpu_share": others})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
