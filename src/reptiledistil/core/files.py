"""Writing results so that an interrupted run never leaves a half-written model, and nothing is overwritten by accident."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Refuse an output directory that already holds results, unless overwrite=true."""
    path = Path(path)
    if path.exists() and not path.is_dir():  # even overwrite=true must not delete a file
        raise ConfigError(f"Output directory {path.resolve()} is a file, not a directory. Choose another output_dir=<dir>.")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"Output directory {path.resolve()} already holds results. Pass overwrite=true to replace "
                          "them, or choose another output_dir=<dir>.")
    return path


def staging_dir(path: str | Path) -> Path:
    """Where a run writes before its results are complete: a sibling of `path`, so the final move is a rename."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def publish(staging: Path, final: Path) -> None:
    """Move a complete staging directory into place; an older result there is removed only after the move."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | Path):
    """Yield a fresh temporary directory; on success it replaces `final`, on error it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield tmp
        for f in tmp.rglob("*"):  # some writers (safetensors) create private files
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~_umask())
        publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
