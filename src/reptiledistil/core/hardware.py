"""What the machine decides: the accelerator, the training precision, and defaults that depend on the device.

Resolved once, before any model is loaded, so a wrong choice fails in a second with a message that says
what to use instead (Lightning would only fail at the first step, or silently change the precision).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError

# fp32 master weights are kept in all three: the closed-form fast step and the teacher's pseudo-gradients
# (theta_t - theta_fast) need them. "*-true" precisions cast the weights themselves and are refused.
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
ALIASES = {"32": "32-true", 32: "32-true", "bf16": "bf16-mixed", "16": "16-mixed", 16: "16-mixed"}
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


@dataclass(frozen=True)
class Hardware:
    accelerator: str  # "cpu" or "gpu"
    precision: str  # one of PRECISIONS
    note: str  # why this precision, printed once

    @property
    def device_type(self) -> str:
        return "cuda" if self.accelerator == "gpu" else "cpu"


def cpu_supports_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX): only then does bf16 autocast pay."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if flags:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    try:  # not Linux: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_hardware(accelerator: str, precision) -> Hardware:
    """Check trainer.accelerator / trainer.precision and turn `auto` into a concrete choice."""
    accelerator = str(accelerator).lower()
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={accelerator!r} is not supported; use one of {', '.join(ACCELERATORS)} "
                          "(or trainer=cpu / trainer=gpu / trainer=default).")
    has_gpu = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not has_gpu:
        raise ConfigError("no GPU found; use trainer=cpu or trainer=default.")
    acc = "gpu" if accelerator in ("gpu", "cuda") or (accelerator == "auto" and has_gpu) else "cpu"

    precision = ALIASES.get(precision, str(precision))
    opt_out = "trainer.precision=32-true to opt out"
    if precision == "auto":
        if acc == "gpu":
            bf16 = torch.cuda.is_bf16_supported()
            why = "this GPU supports bf16" if bf16 else "this GPU has no bf16 (pass trainer.precision=16-mixed for fp16)"
        else:
            bf16 = cpu_supports_bf16()
            why = "this CPU has bf16 units (AVX512-BF16/AMX)" if bf16 else "this CPU has no bf16 units"
        precision = "bf16-mixed" if bf16 else "32-true"
        return Hardware(acc, precision, f"precision {precision} (auto: {why}; {opt_out})" if bf16 else
                        f"precision 32-true (auto: {why})")
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not supported; use one of auto, {', '.join(PRECISIONS)}. "
                          "Weights stay fp32 in all of them (the Reptile step needs fp32 master weights).")
    if precision == "16-mixed" and acc == "cpu":
        raise ConfigError("trainer.precision=16-mixed (fp16 with loss scaling) is for GPUs; on a CPU use "
                          "trainer.precision=bf16-mixed (fast with AVX512-BF16/AMX) or 32-true.")
    return Hardware(acc, precision, f"precision {precision}")


def is_rank_zero() -> bool:
    """Whether this process is rank 0: under DDP, Lightning re-runs the script for ranks 1.. with LOCAL_RANK/RANK
    set; only rank 0 checks and writes a run's outputs."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
