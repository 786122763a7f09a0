"""Where an interrupted run left its checkpoint, and whether that checkpoint belongs to this run."""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from .errors import ConfigError


def checkpoint_path(output_dir: str | Path) -> Path:
    """The resumable checkpoint of a run: `.<output_dir>.checkpoint/last.ckpt`, beside its staging folder
    (`.<output_dir>.partial/`, which a teacher's best-on-dev save replaces wholesale)."""
    out = Path(output_dir)
    return out.parent / f".{out.name}.checkpoint" / "last.ckpt"


def resume_request(value) -> bool | Path:
    """resume=false | true | <checkpoint file>."""
    text = str(value).strip()
    if text.lower() in ("false", "none", "null", ""):
        return False
    if text.lower() == "true":
        return True
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"resume={text}: no such checkpoint file. Pass resume=true to continue from the "
                          "output directory's own checkpoint, or the path of a .ckpt file.")
    return path


def describe(path: Path) -> str:
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return f"{path} (saved {when})"


def check_checkpoint(path: Path, identity: dict) -> None:
    """Refuse a checkpoint that cannot be read, or that was written by another task, method or model shape."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = next(v["identity"] for v in ckpt["callbacks"].values() if isinstance(v, dict) and "identity" in v)
    except Exception as e:  # truncated file, not a checkpoint, or not one of ours
        raise ConfigError(f"Checkpoint {path} cannot be resumed from ({type(e).__name__}: {str(e)[:120]}): it is "
                          "truncated, corrupt or not written by this project. Pass overwrite=true to start the "
                          "run over, or resume=<another checkpoint>.") from None
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {v!r}" for k, v in identity.items() if saved.get(k) != v]
    if diffs:
        raise ConfigError(f"Checkpoint {path} belongs to another run ({'; '.join(diffs)}). Resume with the "
                          "settings it was written with, or pass overwrite=true to start over.")
