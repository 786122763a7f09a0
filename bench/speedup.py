"""Inference speed of every engine, the fp32 teacher as the baseline, and each engine's cost in dev metric.

    python bench/speedup.py --quick                      # a few minutes on 2 CPU cores
    python bench/speedup.py --repeats 30 --threads 4
    python bench/speedup.py --quick --eval mrpc=<student dir> sst2=<student dir>

Engines (src/reptiledistil/engines.py): torch fp32, torch bf16 (autocast; only where the CPU has bf16 units),
onnx fp32 and onnx int8 (ONNX Runtime with its BERT fusions, dynamic int8; needs `.[onnx]`). --torch-int8 adds
PyTorch's dynamic int8 (torch.ao, deprecated; no longer an engine of predict.py) for comparison.

Timing: random weights of the real shapes (speed does not depend on the values), inputs of `--seq-len` tokens
(128) with no padding, batch 1 and 32, eval mode, a fixed number of threads for torch and ONNX Runtime alike.
Shapes:
  bert_base  teacher 12 layers vs student 6 (hidden 768, 12 heads, FFN 3072): the paper's BERT-base -> 6 layers
  minilm     teacher 6 layers vs student 3 (the offline preset; all-MiniLM-L6-v2's config: hidden 384, FFN 1536)
Each model runs `--warmup` times, then the models take turns, `--repeats` rounds, so that drift of a noisy
machine hits every model alike. A figure is the median over the rounds; every ratio divides the fp32 teacher's
median by the model's, both from this run. With CUDA, the torch models are also timed on the GPU in fp32 and
bf16 autocast, against the GPU fp32 teacher.

With --eval task=dir: the student's dev metric with every engine (GLUE files under --glue-dir, $GLUE_DIR or
../shared/glue_data), and each engine's difference in points from torch fp32.

Prints a table and writes every figure, the command line, the CPU flags and the machine to
bench/results/speedup-<machine>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reptiledistil.inference.engines import EngineChoice, OnnxRunner, TorchRunner, export_onnx  # noqa: E402
from reptiledistil.core.hardware import cpu_supports_bf16  # noqa: E402
from reptiledistil.core.files import write_json_atomic  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cpu_clock, machine_info, other_cpu_share, portable  # noqa: E402

# (preset, batch): minimum speed-up of the fastest student engine over the fp32 teacher, from the issue.
GOALS = {("minilm", 1): 4.0, ("minilm", 32): 7.0, ("bert_base", 1): 4.0, ("bert_base", 32): 7.0}
MAX_METRIC_DROP = 1.0  # points of dev metric an engine may lose against torch fp32
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def have_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def engines(device: str, torch_int8: bool = False) -> list[str]:
    """The student engines this machine can run (bf16 only with bf16 units: elsewhere it is slower than fp32)."""
    if device == "cuda":
        return ["torch fp32", "torch bf16"]
    names = ["torch fp32"] + (["torch bf16"] if cpu_supports_bf16() else []) + (["torch int8"] if torch_int8 else [])
    return names + (["onnx fp32", "onnx int8"] if have_onnxruntime() else [])


def preset_configs(name: str) -> tuple[BertConfig, BertConfig]:
    if name == "bert_base":
        teacher = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        return teacher, BertConfig(**{**teacher.to_dict(), "num_hidden_layers": 6})
    if name == "minilm":
        try:
            from reptiledistil.models.loading import minilm_dir

            teacher = BertConfig.from_pretrained(minilm_dir())
        except Exception:  # the wheel is missing: its published shape
            teacher = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        return teacher, BertConfig(**{**teacher.to_dict(), "num_hidden_layers": 3})
    raise SystemExit(f"unknown preset {name!r}")


def build(config: BertConfig, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(**{**config.to_dict(), "num_labels": 2})
    return BertForSequenceClassification(config).eval()


def inputs(batch: int, seq_len: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1000, vocab, (batch, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def runner(engine: str, model, device: str, workdir: Path, sample: dict):
    """A callable batch -> logits for `engine` ("torch fp32", "onnx int8", ...) built from the fp32 `model`."""
    kind, precision = engine.split()
    if kind == "onnx":
        quantize = "int8" if precision == "int8" else "none"
        out = export_onnx(model, None, workdir / engine.replace(" ", "-"), quantize=quantize, task="bench",
                          sample=sample, overwrite=True)
        return OnnxRunner(out)
    import copy

    if precision == "int8":  # the deprecated torch.ao path, for comparison only
        import warnings

        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = quantize_dynamic(copy.deepcopy(model).float().eval(), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                 dtype=torch.qint8)
        return TorchRunner(q, EngineChoice("torch", "fp32", device, ""))
    return TorchRunner(copy.deepcopy(model), EngineChoice("torch", precision, device, ""))


def time_models(models: dict, x: dict, device: str, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per forward pass for each model; models take turns so that drift hits them alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def once(name):
        sync()
        t0 = time.perf_counter()
        models[name](x)
        sync()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {n: [] for n in models}
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


def bench_preset(preset: str, device: str, names: list[str], batches: list[int], seq_len: int, warmup: int,
                 repeats: int) -> list[dict]:
    tcfg, scfg = preset_configs(preset)
    teacher, student = build(tcfg, 0), build(scfg, 1)
    sample = inputs(2, 16, tcfg.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        models = {"teacher fp32": runner("torch fp32", teacher, device, Path(tmp), sample)}
        for e in names:
            models[f"student {e}"] = runner(e, student, device, Path(tmp), sample)
        rows = []
        for b in batches:
            times = time_models(models, inputs(b, seq_len, tcfg.vocab_size), device, warmup, repeats)
            base = statistics.median(times["teacher fp32"])
            for name, t in times.items():
                s = summarise(t, b)
                rows.append({"preset": preset, "device": device, "model": name,
                             "layers": (tcfg if name.startswith("teacher") else scfg).num_hidden_layers,
                             "hidden": tcfg.hidden_size, "batch": b, "seq_len": seq_len, **s,
                             "speedup_vs_teacher_fp32": base / s["median_s"]})
            print(f"  {preset} {device} batch {b}: done", file=sys.stderr, flush=True)
    return rows


def evaluate(task_name: str, student_dir: str, names: list[str], glue_dir: str | None, seq_len: int, batch: int,
             max_samples: int | None) -> dict:
    """Dev metric of one fp32 student with every CPU engine, and each engine's drop from torch fp32 in points."""
    from reptiledistil.data.datamodule import subsample
    from reptiledistil.data.glue import load_split
    from reptiledistil.data.metrics import compute_metrics, predictions, selection_score
    from reptiledistil.models.loading import load_finetuned, load_tokenizer
    from reptiledistil.inference.submission import predict_logits, sample_batch
    from reptiledistil.data.tasks import get_task

    task = get_task(task_name)
    student = load_finetuned(student_dir, task, "Student")
    tokenizer = load_tokenizer(student_dir)
    out: dict = {"task": task.name, "student_dir": str(student_dir), "seq_len": seq_len, "batch": batch,
                 "student_layers": student.config.num_hidden_layers, "hidden": student.config.hidden_size, "splits": {}}
    splits = {k: subsample(ds, max_samples) for k, ds in load_split(task, "dev", glue_dir).items()}
    sample = sample_batch(tokenizer, next(iter(splits.values())), seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        runners = {e: runner(e, student, "cpu", Path(tmp), sample) for e in names}
        for split, ds in splits.items():
            labels = torch.tensor(ds["labels"])
            res: dict = {"examples": len(ds)}
            preds = {}
            for e, r in runners.items():
                t0 = time.perf_counter()
                logits = predict_logits(r, tokenizer, ds, seq_len, batch)
                secs = time.perf_counter() - t0
                preds[e] = predictions(task, logits)
                m = compute_metrics(task, preds[e], labels)
                res[e] = {**m, "selection": selection_score(task, m), "seconds": secs}
            base = res["torch fp32"]["selection"]
            for e in runners:
                res[e]["drop_points"] = 100 * (base - res[e]["selection"])
                if not task.is_regression:
                    res[e]["prediction_agreement"] = float((preds["torch fp32"] == preds[e]).float().mean())
                res[e]["goal_met"] = res[e]["drop_points"] <= MAX_METRIC_DROP
            out["splits"][split] = res
    return out


def slug(info: dict) -> str:
    name = info.get("device_name") if info["cuda"] else f"{info['cpu']}-{info['cpu_count']}c"
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", name.lower())).strip("-")[:60]


def cpu_flags() -> dict[str, bool]:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return {}
    return {f: f in flags for f in CPU_FLAGS}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'preset':<10} {'dev':<4} {'model':<19} {'L':>2} {'batch':>5} {'latency ms':>11} {'IQR ms':>15} "
          f"{'seq/s':>9} {'speed-up':>8}")
    for r in rows:
        iqr = f"{r['p25_s'] * 1e3:.1f}-{r['p75_s'] * 1e3:.1f}"
        print(f"{r['preset']:<10} {r['device']:<4} {r['model']:<19} {r['layers']:>2} {r['batch']:>5} "
              f"{r['latency_ms']:>11.1f} {iqr:>15} {r['throughput_seq_s']:>9.1f} {r['speedup_vs_teacher_fp32']:>7.2f}x")


def check_goals(rows: list[dict]) -> list[dict]:
    goals = []
    for (preset, batch), need in GOALS.items():
        cand = [r for r in rows if r["preset"] == preset and r["batch"] == batch and r["model"].startswith("student")]
        if cand:
            best = max(cand, key=lambda r: r["speedup_vs_teacher_fp32"])
            goals.append({"what": f"fastest student >= {need:g}x fp32 teacher ({preset}, batch {batch})", "need": need,
                          "got": best["speedup_vs_teacher_fp32"], "engine": best["model"],
                          "met": best["speedup_vs_teacher_fp32"] >= need})
    return goals


def parse_eval(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise SystemExit(f"--eval takes task=<student dir>, got {item!r}")
        pairs.append((task, path))
    return pairs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per batch size (default 15; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per model first (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="fewer repeats: a few minutes on 2 CPU cores")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and ONNX Runtime (default: torch's)")
    p.add_argument("--presets", nargs="+", default=["minilm", "bert_base"], choices=["minilm", "bert_base"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--no-cuda", action="store_true", help="time on the CPU even where CUDA is available")
    p.add_argument("--eval", nargs="+", default=[], metavar="TASK=DIR",
                   help="dev metric of a fine-tuned fp32 student with every engine, e.g. mrpc=model/mrpc/.../student")
    p.add_argument("--glue-dir", default=None, help="GLUE root (default $GLUE_DIR or ../shared/glue_data)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--skip-timing", action="store_true", help="only the dev-metric comparison")
    p.add_argument("--torch-int8", action="store_true", help="also PyTorch's dynamic int8 (torch.ao), for comparison")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/speedup-<machine>-<date>.json)")
    a = p.parse_args(argv)
    evals = parse_eval(a.eval)
    cpu_engines = engines("cpu", a.torch_int8)
    repeats = a.repeats or (5 if a.quick else 15)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_num_threads(torch.get_num_threads())  # fixed for the whole run (ONNX Runtime takes the same number)
    hf_logging.set_verbosity_error()

    start = cpu_clock()
    info = {**machine_info(), "cpu_flags": cpu_flags()}
    if have_onnxruntime():
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    now = dt.datetime.now().astimezone()
    print(f"threads: {torch.get_num_threads()} (cpu_count {info['cpu_count']}), torch {info['torch']}, "
          f"onnxruntime {info.get('onnxruntime', 'not installed')}, device: {info['device_name']}; "
          f"CPU flags: {', '.join(f for f, on in info['cpu_flags'].items() if on) or 'unknown'}; "
          f"repeats {repeats}, warmup {warmup}")
    skipped = [e for e in ("torch bf16", "onnx fp32") if e not in cpu_engines]
    if skipped:
        print(f"skipped: {', '.join(skipped)} ({'no bf16 units on this CPU' if 'torch bf16' in skipped else ''}"
              f"{'; ' if len(skipped) == 2 else ''}{'onnxruntime not installed: pip install .[onnx]' if 'onnx fp32' in skipped else ''})")
    result: dict = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "date": now.isoformat(timespec="seconds"),
                    "machine": info, "repeats": repeats, "warmup": warmup, "seq_len": a.seq_len,
                    "engines": cpu_engines, "rows": []}
    if not a.skip_timing:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not a.no_cuda else [])
        for device in devices:
            for preset in a.presets:
                names = cpu_engines if device == "cpu" else engines(device)
                result["rows"] += bench_preset(preset, device, names, a.batch_sizes, a.seq_len, warmup=warmup,
                                               repeats=repeats)
        print_table(result["rows"])
        result["goals"] = check_goals([r for r in result["rows"] if r["device"] == "cpu"])
        print("\nGoals (CPU, fp32 teacher vs the fastest student engine, same run):")
        for g in result["goals"]:
            print(f"  {'MET    ' if g['met'] else 'NOT MET'} {g['what']}: {g['got']:.2f}x ({g['engine']})")
    result["eval"] = []
    for task, student_dir in evals:
        ev = evaluate(task, student_dir, cpu_engines, a.glue_dir, a.seq_len, batch=a.eval_batch_size,
                      max_samples=a.max_eval_samples)
        result["eval"].append(ev)
        print(f"\nDev metric, {ev['task']} student ({ev['student_layers']} layers) {ev['student_dir']}:")
        for split, r in ev["splits"].items():
            for e in cpu_engines:
                x = r[e]
                agree = f", agreement {x['prediction_agreement']:.4f}" if "prediction_agreement" in x else ""
                print(f"  {split:<7} {e:<11} {100 * x['selection']:6.2f}  ({-x['drop_points']:+.2f} pts{agree}, "
                      f"{x['seconds']:.1f}s for {r['examples']} examples)"
                      + ("" if x["goal_met"] else f"  NOT MET: loses more than {MAX_METRIC_DROP:g} point"))
    others = other_cpu_share(start)
    if others is not None:
        result["other_processes_cpu_share"] = others
        print(f"\nother processes used {100 * others:.0f}% of the machine's CPU time during this run"
              + (": timings (batch 1 most of all) are inflated and noisy." if others > 0.1 else "."))
    out = a.out or RESULTS / f"speedup-{slug(info)}-{now.strftime('%Y%m%d-%H%M%S')}.json"
    write_json_atomic(out, portable(result))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
