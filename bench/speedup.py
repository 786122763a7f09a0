"""Inference speed of the fp32 teacher vs the student (fp32 and dynamic int8), and int8's cost in dev metric.

    python bench/speedup.py --quick                      # a few minutes on 2 CPU cores
    python bench/speedup.py --repeats 30 --threads 4
    python bench/speedup.py --quick --task rte --student-dir model/rte/reptile-skip-a0.5-T5/student

Timing: random weights of the real shapes (speed does not depend on the values), inputs of `--seq-len` tokens
(128) with no padding, batch 1 and 32, torch.inference_mode, eval mode. Shapes:
  bert_base  teacher 12 layers vs student 6 (hidden 768, 12 heads, FFN 3072): the paper's BERT-base -> 6 layers
  minilm     teacher 6 layers vs student 3 (the offline preset; all-MiniLM-L6-v2's config: hidden 384, FFN 1536)
Each model runs `--warmup` times, then the models take turns, `--repeats` rounds, so that drift of a noisy
machine hits every model alike. A figure is the median over the rounds; every ratio divides the fp32 teacher's
median by the model's, both from this run. int8 is torch dynamic quantization of every nn.Linear
(reptiledistil.quantize), CPU only. With CUDA, the same models are also timed on the GPU in fp32 and in bf16
autocast, with ratios against the GPU fp32 teacher (int8 skipped there).

With --task/--student-dir: the student's dev metric in fp32 and int8 (GLUE files under --glue-dir, $GLUE_DIR or
../shared/glue_data), and the difference in points.

Prints a table and writes every figure, the command line and the machine to bench/results/speedup-<machine>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reptiledistil.outputs import write_json_atomic  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cpu_clock, machine_info, other_cpu_share  # noqa: E402
from reptiledistil.quantize import quantize_int8  # noqa: E402

GOALS = {  # (preset, batch): minimum speed-up of the int8 student over the fp32 teacher, from the issue
    ("minilm", 1): 4.0, ("minilm", 32): 4.0, ("bert_base", 1): 7.0,
}
MAX_METRIC_DROP = 1.0  # points of dev metric int8 may lose against fp32


def preset_configs(name: str) -> tuple[BertConfig, BertConfig]:
    if name == "bert_base":
        teacher = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        return teacher, BertConfig(**{**teacher.to_dict(), "num_hidden_layers": 6})
    if name == "minilm":
        try:
            from reptiledistil.models import minilm_dir

            teacher = BertConfig.from_pretrained(minilm_dir())
        except Exception:  # the wheel is missing: its published shape
            teacher = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        return teacher, BertConfig(**{**teacher.to_dict(), "num_hidden_layers": 3})
    raise SystemExit(f"unknown preset {name!r}")


def build(config: BertConfig, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(**{**config.to_dict(), "num_labels": 2})
    return BertForSequenceClassification(config).eval()


def inputs(batch: int, seq_len: int, vocab: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1000, vocab, (batch, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return {k: v.to(device) for k, v in x.items()}


def time_models(models: dict, x: dict, device: str, warmup: int, repeats: int, autocast: dict) -> dict[str, list[float]]:
    """Seconds per forward pass for each model; models take turns so that drift hits them alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def once(name):
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast.get(name) else nullcontext()
        sync()
        t0 = time.perf_counter()
        with ctx:
            models[name](**x)
        sync()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {n: [] for n in models}
    with torch.inference_mode():
        for n in models:
            for _ in range(warmup):
                once(n)
        for _ in range(repeats):
            for n in models:
                times[n].append(once(n))
    return times


def summarise(times: list[float], batch: int) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    med = statistics.median(times)
    return {"median_s": med, "p25_s": q[0], "p75_s": q[2], "min_s": min(times), "n": len(times),
            "latency_ms": med * 1e3, "throughput_seq_s": batch / med, "times_s": times}


def bench_preset(preset: str, device: str, batches: list[int], seq_len: int, warmup: int, repeats: int) -> list[dict]:
    tcfg, scfg = preset_configs(preset)
    teacher, student = build(tcfg, 0), build(scfg, 1)
    if device == "cuda":
        models = {"teacher fp32": teacher.cuda(), "teacher bf16": teacher, "student fp32": student.cuda(),
                  "student bf16": student}
        autocast = {"teacher bf16": True, "student bf16": True}
    else:
        models = {"teacher fp32": teacher, "student fp32": student, "student int8": quantize_int8(student)}
        autocast = {}
    layers = {"teacher": tcfg.num_hidden_layers, "student": scfg.num_hidden_layers}
    rows = []
    for b in batches:
        times = time_models(models, inputs(b, seq_len, tcfg.vocab_size, device), device, warmup, repeats, autocast)
        base = statistics.median(times["teacher fp32"])
        for name, t in times.items():
            s = summarise(t, b)
            rows.append({"preset": preset, "device": device, "model": name, "layers": layers[name.split()[0]],
                         "hidden": tcfg.hidden_size, "batch": b, "seq_len": seq_len, **s,
                         "speedup_vs_teacher_fp32": base / s["median_s"],
                         "attn_implementation": getattr(teacher.config, "_attn_implementation", None)})
        print(f"  {preset} {device} batch {b}: done", file=sys.stderr, flush=True)
    return rows


def evaluate(task_name: str, student_dir: str, glue_dir: str | None, seq_len: int, batch: int,
             max_samples: int | None) -> dict:
    from reptiledistil.data import load_split, subsample
    from reptiledistil.metrics import compute_metrics, predictions, selection_score
    from reptiledistil.models import load_finetuned, load_tokenizer
    from reptiledistil.quantize import is_quantized
    from reptiledistil.submission import predict_logits
    from reptiledistil.tasks import get_task

    task = get_task(task_name)
    student = load_finetuned(student_dir, task, "Student")
    if is_quantized(student):
        raise SystemExit(f"{student_dir} is already int8: pass the fp32 student directory.")
    tokenizer = load_tokenizer(student_dir)
    variants = {"fp32": student, "int8": quantize_int8(student)}
    out: dict = {"task": task.name, "student_dir": str(student_dir), "seq_len": seq_len, "batch": batch,
                 "student_layers": student.config.num_hidden_layers, "hidden": student.config.hidden_size, "splits": {}}
    for split, ds in load_split(task, "dev", glue_dir).items():
        ds = subsample(ds, max_samples)
        labels = torch.tensor(ds["labels"])
        res: dict = {"examples": len(ds)}
        preds = {}
        for v, model in variants.items():
            t0 = time.perf_counter()
            logits = predict_logits(model, tokenizer, ds, seq_len, batch, "cpu")
            secs = time.perf_counter() - t0
            preds[v] = predictions(task, logits)
            m = compute_metrics(task, preds[v], labels)
            res[v] = {**m, "selection": selection_score(task, m), "seconds": secs}
        res["drop_points"] = {k: 100 * (res["fp32"][k] - res["int8"][k]) for k in res["fp32"] if k != "seconds"}
        if not task.is_regression:
            res["prediction_agreement"] = float((preds["fp32"] == preds["int8"]).float().mean())
        res["goal_met"] = res["drop_points"]["selection"] <= MAX_METRIC_DROP
        out["splits"][split] = res
    return out


def slug(info: dict) -> str:
    name = info.get("device_name") if info["cuda"] else f"{info['cpu']}-{info['cpu_count']}c"
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", name.lower())).strip("-")[:60]


def print_table(rows: list[dict]) -> None:
    print(f"\n{'preset':<10} {'dev':<4} {'model':<13} {'L':>2} {'batch':>5} {'latency ms':>11} {'IQR ms':>15} "
          f"{'seq/s':>9} {'speed-up':>8}")
    for r in rows:
        iqr = f"{r['p25_s'] * 1e3:.1f}-{r['p75_s'] * 1e3:.1f}"
        print(f"{r['preset']:<10} {r['device']:<4} {r['model']:<13} {r['layers']:>2} {r['batch']:>5} "
              f"{r['latency_ms']:>11.1f} {iqr:>15} {r['throughput_seq_s']:>9.1f} {r['speedup_vs_teacher_fp32']:>7.2f}x")


def check_goals(rows: list[dict]) -> list[dict]:
    goals = []
    for (preset, batch), need in GOALS.items():
        r = next((r for r in rows if r["preset"] == preset and r["batch"] == batch and r["model"] == "student int8"),
                 None)
        if r is not None:
            goals.append({"what": f"int8 student >= {need:g}x fp32 teacher ({preset}, batch {batch})", "need": need,
                          "got": r["speedup_vs_teacher_fp32"], "met": r["speedup_vs_teacher_fp32"] >= need})
    return goals


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per batch size (default 15; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per model first (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="fewer repeats: a few minutes on 2 CPU cores")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--presets", nargs="+", default=["minilm", "bert_base"], choices=["minilm", "bert_base"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--no-cuda", action="store_true", help="time on the CPU even where CUDA is available")
    p.add_argument("--task", help="with --student-dir: dev metric of the fp32 vs int8 student on this task")
    p.add_argument("--student-dir", help="a fine-tuned/distilled fp32 student directory")
    p.add_argument("--glue-dir", default=None, help="GLUE root (default $GLUE_DIR or ../shared/glue_data)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--skip-timing", action="store_true", help="only the dev-metric comparison")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/speedup-<machine>-<date>.json)")
    a = p.parse_args(argv)
    if bool(a.task) != bool(a.student_dir):
        p.error("--task and --student-dir go together")
    repeats = a.repeats or (5 if a.quick else 15)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_num_threads(torch.get_num_threads())  # fixed for the whole run, whatever the default was
    hf_logging.set_verbosity_error()

    start = cpu_clock()
    info = machine_info()
    now = dt.datetime.now().astimezone()
    print(f"threads: {torch.get_num_threads()} (cpu_count {info['cpu_count']}), torch {info['torch']}, "
          f"engine {info['quantized_engine']}, device: {info['device_name']}; repeats {repeats}, warmup {warmup}")
    result: dict = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "date": now.isoformat(timespec="seconds"),
                    "machine": info, "repeats": repeats, "warmup": warmup, "seq_len": a.seq_len, "rows": []}
    if not a.skip_timing:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not a.no_cuda else [])
        for device in devices:
            for preset in a.presets:
                result["rows"] += bench_preset(preset, device, a.batch_sizes, a.seq_len, warmup, repeats)
        print_table(result["rows"])
        cpu_rows = [r for r in result["rows"] if r["device"] == "cpu"]
        for preset in a.presets:
            for b in a.batch_sizes:
                rr = {r["model"]: r for r in cpu_rows if r["preset"] == preset and r["batch"] == b}
                print(f"  {preset} batch {b}: int8 vs fp32 student {rr['student fp32']['median_s'] / rr['student int8']['median_s']:.2f}x, "
                      f"fp32 student vs teacher {rr['student fp32']['speedup_vs_teacher_fp32']:.2f}x")
        result["goals"] = check_goals(cpu_rows)
        print("\nGoals (CPU, fp32 teacher vs int8 student, same run):")
        for g in result["goals"]:
            print(f"  {'MET    ' if g['met'] else 'NOT MET'} {g['what']}: {g['got']:.2f}x")
    if a.task:
        ev = evaluate(a.task, a.student_dir, a.glue_dir, a.seq_len, a.eval_batch_size, a.max_eval_samples)
        result["eval"] = ev
        print(f"\nDev metric, {ev['task']} student ({ev['student_layers']} layers) {ev['student_dir']}:")
        for split, r in ev["splits"].items():
            for k in r["fp32"]:
                if k == "seconds":
                    continue
                print(f"  {split:<7} {k:<10} fp32 {100 * r['fp32'][k]:6.2f}  int8 {100 * r['int8'][k]:6.2f}  "
                      f"drop {r['drop_points'][k]:+.2f} pts")
            print(f"  {split:<7} time: fp32 {r['fp32']['seconds']:.1f}s, int8 {r['int8']['seconds']:.1f}s "
                  f"({r['examples']} examples); prediction agreement {r.get('prediction_agreement', float('nan')):.4f}")
            print(f"  {'MET    ' if r['goal_met'] else 'NOT MET'} int8 dev metric at most {MAX_METRIC_DROP:g} point below "
                  f"fp32 ({split}, selection metric): drop {r['drop_points']['selection']:+.2f}")
    others = other_cpu_share(start)
    if others is not None:
        result["other_processes_cpu_share"] = others
        print(f"\nother processes used {100 * others:.0f}% of the machine's CPU time during this run"
              + (": timings (batch 1 most of all) are inflated and noisy." if others > 0.1 else "."))
    out = a.out or RESULTS / f"speedup-{slug(info)}-{now.strftime('%Y%m%d-%H%M%S')}.json"
    write_json_atomic(out, result)
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
