"""Helpers shared by the benches: machine description, results JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {"host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def write_results(name: str, figures: dict) -> Path:
    """bench/results/<name>-<device>-<date>.json with the command, machine and date."""
    now = datetime.datetime.now(datetime.timezone.utc)
    m = machine()
    dev = "cpu" if m["device"] == "cpu" else m["device"].replace(" ", "_")
    path = RESULTS / f"{name}-{dev}-{now:%Y-%m-%d}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join([Path(sys.executable).name] + sys.argv), "date": now.isoformat(timespec="seconds"),
           "machine": m, **figures}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path
