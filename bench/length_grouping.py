"""What length-grouped batches (data.group_by_length) save: padding and the time of an epoch.

Per preset and task:
  padding   the share of padded tokens in a whole training epoch (all of the task's training examples, batches of
            32, the preset's tokenizer, 128 tokens at most) and in the dev evaluation (batches of 64): random batches
            and dev in file order (before) against length-grouped batches and dev sorted by length (now)
  epoch     the wall time of one vanilla-KD epoch, training + dev, at the preset (its teacher, a random task head:
            the cost does not depend on the weights), on a seeded random subset of the training and dev examples
            (--train-samples, --eval-samples): grouping off (dev in file order, as before) and on, interleaved
            off/on for --rounds rounds, so machine load hits both alike; the ratio is off/on of the medians.

  python bench/length_grouping.py                                  # both presets (mpnet_base: its install first)
  python bench/length_grouping.py --presets minilm --tasks rte --rounds 1 --train-samples 256   # quick
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, other_cpu_share, cpu_clock, write_results  # noqa: E402

from reptiledistil.config.cli import quiet_libraries, register_resolvers  # noqa: E402
from reptiledistil.data.datamodule import DataSettings, GlueDataModule, ResumableSampler, length_order, token_lengths, tokenize  # noqa: E402
from reptiledistil.data.glue import load_training_splits  # noqa: E402
from reptiledistil.core.hardware import resolve_hardware  # noqa: E402
from reptiledistil.models.layer_map import layer_mapping, parameter_pairs  # noqa: E402
from reptiledistil.models.loading import build_student, load_for_finetuning, load_tokenizer  # noqa: E402
from reptiledistil.training.modules import DistilModule, DistilSettings  # noqa: E402
from reptiledistil.data.tasks import get_task  # noqa: E402

warnings.filterwarnings("ignore")
TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")


def preset(name: str):
    """conf/model/<name>.yaml as train.py composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"model={name}", "log_dir=."]).model


def padded_share(lengths: list[int], batches: list[list[int]]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[s:s + size] for s in range(0, len(order), size)]


def padding(tokenizer, splits: dict, batch: int = 32, eval_batch: int = 64) -> dict:
    """Padded shares of a whole training epoch (seed 1, epoch 0) and of the dev evaluation, before and now."""
    train = tokenize(splits["train"]["train"], tokenizer, 128)
    lengths = token_lengths(train)
    off, on = (list(ResumableSampler(len(lengths), batch, seed=1, lengths=ls)) for ls in (None, lengths))
    dev = tokenize(next(iter(splits["dev"].values())), tokenizer, 128)
    dev_lengths = token_lengths(dev)
    return {"train_examples": len(lengths), "mean_tokens": sum(lengths) / len(lengths),
            "train_off": padded_share(lengths, chunks(off, batch)), "train_on": padded_share(lengths, chunks(on, batch)),
            "mean_batch_tokens_off": statistics.mean(max(lengths[i] for i in b) for b in chunks(off, batch)),
            "dev_off": padded_share(dev_lengths, chunks(list(range(len(dev_lengths))), eval_batch)),
            "dev_on": padded_share(dev_lengths, chunks(length_order(dev), eval_batch))}


class EpochTimer(pl.Callback):
    def on_train_epoch_start(self, *a):
        self.t0 = time.perf_counter()

    def on_validation_start(self, *a):
        self.t1 = time.perf_counter()

    def on_validation_end(self, *a):
        self.t2 = time.perf_counter()


def subset(ds, n: int | None, seed: int):
    if not n or n >= len(ds):
        return ds
    return ds.select(sorted(torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()))


def epoch(model_cfg, task, tokenizer, splits: dict, *, grouped: bool, precision: str) -> tuple[float, float]:
    """(training s, dev s) of one vanilla-KD epoch at the preset, as train.py runs it."""
    teacher = load_for_finetuning(str(model_cfg.teacher_init), task)
    student = build_student("teacher_layers", str(model_cfg.teacher_init), task, model_cfg.student.num_layers, "skip")
    pairs = parameter_pairs(teacher, student, layer_mapping("skip", teacher.config.num_hidden_layers,
                                                            student.config.num_hidden_layers))
    method = hydra.utils.instantiate(OmegaConf.load(ROOT / "conf/method/kd.yaml"))
    opt = functools.partial(torch.optim.AdamW, lr=5e-5, weight_decay=0.01, eps=1e-8, fused=True)
    module = DistilModule(teacher, student, task, [s.name for s in task.eval_splits],
                          settings=DistilSettings(method=method, alpha=0.5, temperature=5.0, warmup_ratio=0.1,
                                                  max_grad_norm=1.0),
                          student_optimizer=opt, teacher_optimizer=opt, pairs=pairs)
    dm = GlueDataModule(task, tokenizer, settings=DataSettings(group_by_length=grouped, seed=1), splits=splits)
    dm.setup()
    if not grouped:  # before: dev in file order too
        dm.eval_ds = {n: ds.sort("idx") for n, ds in dm.eval_ds.items()}
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu" if not torch.cuda.is_available() else "gpu", devices=1,
                         precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
                         callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.t1 - timer.t0, timer.t2 - timer.t1


def timing(times: dict) -> dict:
    """Medians of the timed epochs, and the speed-up off/on of training + dev (nothing when none was timed)."""
    if not times["on"]:
        return {}
    med = {c: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for c, v in times.items()}
    return {"epoch_s": times, "train_s_median": {c: m[0] for c, m in med.items()},
            "dev_s_median": {c: m[1] for c, m in med.items()}, "epoch_s_median": {c: sum(m) for c, m in med.items()},
            "speedup": sum(med["off"]) / sum(med["on"])}


def epochs(r: dict) -> str:
    if "speedup" not in r:
        return "(not timed)"
    off, on = r["epoch_s_median"]["off"], r["epoch_s_median"]["on"]
    return f"epoch (train+dev) {off:6.1f} s -> {on:6.1f} s  {r['speedup']:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["minilm", "mpnet_base"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--train-samples", type=int, default=640, help="training examples per timed epoch (seeded subset)")
    ap.add_argument("--eval-samples", type=int, default=256, help="dev examples per timed epoch (seeded subset)")
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs per task; 0: the padding only")
    ap.add_argument("--precision", default="auto", help="auto (as train.py), 32-true or bf16-mixed")
    ap.add_argument("--glue-dir", default=None)
    args = ap.parse_args()
    register_resolvers()
    quiet_libraries()
    precision = resolve_hardware("auto", args.precision).precision
    info = machine_info()
    print(f"threads={torch.get_num_threads()} precision={precision} device={info['device_name']}")
    start = cpu_clock()
    results: dict = {}
    for name in args.presets:
        model_cfg = preset(name)
        tokenizer = load_tokenizer(str(model_cfg.teacher_init))
        for t in args.tasks:
            task = get_task(t)
            splits = load_training_splits(task, args.glue_dir)
            pad = padding(tokenizer, splits)
            timed = {"train": {"train": subset(splits["train"]["train"], args.train_samples, 1)},
                     "dev": {n: subset(ds, args.eval_samples, 2) for n, ds in splits["dev"].items()}}
            times = {"off": [], "on": []}
            for _ in range(args.rounds):
                for cond in ("off", "on"):
                    torch.manual_seed(0)
                    times[cond].append(epoch(model_cfg, task, tokenizer, timed, grouped=cond == "on",
                                             precision=precision))
            results.setdefault(name, {})[t] = {**pad, **timing(times)}
            print(f"{name:<10} {t:<5} padded train {100 * pad['train_off']:4.0f}% -> {100 * pad['train_on']:3.0f}%  "
                  f"dev {100 * pad['dev_off']:3.0f}% -> {100 * pad['dev_on']:3.0f}%  {epochs(results[name][t])}",
                  flush=True)
    others = other_cpu_share(start)
    print("\n| preset | task | mean tokens | random batch pads to | padded train: off -> on | padded dev: off -> on "
          "| epoch s (train+dev): off -> on | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, per in results.items():
        for t, r in per.items():
            timed = (f"{r['epoch_s_median']['off']:.1f} -> {r['epoch_s_median']['on']:.1f} | {r['speedup']:.2f}x"
                     if "speedup" in r else "- | -")
            print(f"| {name} | {t} | {r['mean_tokens']:.0f} | {r['mean_batch_tokens_off']:.0f} | "
                  f"{100 * r['train_off']:.0f}% -> {100 * r['train_on']:.1f}% | {100 * r['dev_off']:.0f}% -> "
                  f"{100 * r['dev_on']:.1f}% | {timed} |")
    if others is not None:
        print(f"\nother processes used {100 * others:.0f}% of the machine's CPU time during this run")
    path = write_results("length_grouping", {
        "precision": precision, "train_samples": args.train_samples, "eval_samples": args.eval_samples,
        "rounds": args.rounds, "batch": 32, "eval_batch": 64, "max_seq_length": 128, "results": results,
        "goal": "padded <= 10% of training tokens on every task; epoch >= 1.4x faster on STS-B and SST-2, "
                ">= 1.3x on MRPC and RTE (CPU, both presets)", "other_processes_cpu_share": others})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
