"""Writing results so that an interrupted run never leaves a half-written file or model, and nothing is overwritten by
accident: every file the package and bench/ write goes through atomic_file (or atomic_dir for a folder); an output
location is checked before anything slow."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (with its suffix, for writers that read the format from it); it replaces
    `path` when the block ends, and is deleted if the block fails. A reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a result should not be
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """`data` (text as UTF-8) into `path`, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def write_json_atomic(path: str | Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def is_writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_writable(path, key: str, beside: bool = False) -> None:
    """Refuse an output location that cannot be written, before anything slow: the nearest existing folder of
    `path` (itself or a parent) must be writable. beside=True: results are staged in a sibling folder and
    renamed into place, so it is the parent of `path` that must be writable."""
    target = Path(path).expanduser().absolute()
    folder = target.parent if beside else target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{key}={path} cannot be created: {folder} is a file, not a folder. "
                          f"Choose another {key}=<dir>.")
    if not is_writable(folder):
        raise ConfigError(f"{key}={path} cannot be written: {folder} is not writable (read-only folder or file "
                          f"system). Choose a writable {key}=<dir>, or make {folder} writable.")
