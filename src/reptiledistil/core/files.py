"""Writing results so that an interrupted run never leaves a half-written file or model: every file the package and
bench/ write goes through atomic_file (atomic_dir for a folder), a temporary beside the target renamed into place; a
run's output folder is staged and published whole (publish), replacing only what this project wrote. The only
module that renames files into place. Where a run may write: outputs.py; who owns a folder: lock.py; a failed
write: faults.py."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ConfigError
from .faults import saving
from .outputs import RECORD, refuse_foreign


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask




def staging_dir(path: str | Path) -> Path:
    """Where a run writes before its results are complete: a sibling of `path`, so the final move is a rename."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def publish(staging: Path, final: Path, overwrite: bool) -> None:
    """Move a complete staging folder into place as a run's output folder, recording what it holds (RECORD).

    A folder at `final` (which may have appeared after the run's checks) is replaced only with overwrite=true, and
    only if it holds nothing but a previous run's results; else it stays as it is, and so does `staging`."""
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    write_json_atomic(staging / RECORD, {"written_by": "reptiledistil", "files": files})
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        if not overwrite:
            raise ConfigError(f"{final.resolve()} appeared while this run was working, and was left as it is; the "
                              f"run's results are kept in {staging.resolve()}. Move {final} away, then rerun the "
                              "same command plus resume=true to publish them.")
        refuse_foreign(final, "output_dir")
    replace_dir(staging, final)


def replace_dir(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`; an older `final` is removed only after the move."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(folder: Path) -> None:
    """Delete what a killed write left in a run's own folder, or beside it in its name: the atomic helpers'
    temporary files and folders."""
    found = list(folder.parent.glob(f".{folder.name}.tmp-*"))
    if folder.is_dir():
        found += list(folder.rglob(".*.tmp-*")) + list(folder.rglob("*.tmp"))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | Path, overwrite: bool | None = None):
    """Yield a fresh temporary directory; on success it replaces `final`, on error it is deleted.

    overwrite=None: `final` is the run's own (a model inside its staging folder) and is replaced as it is;
    true/false: `final` is an output folder, published with `publish`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        with saving(final):
            yield tmp
            for f in tmp.rglob("*"):  # some writers (safetensors) create private files
                os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~_umask())
            if overwrite is None:
                replace_dir(tmp, final)
            else:
                publish(tmp, final, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its suffix kept, for writers that read the format from it); it replaces
    `path` when the block ends, and is deleted if the block fails: a reader never sees half a file, and a failed
    write raises WriteFailed naming `path`. The one way the package and bench/ write a file (atomic_dir: a folder)."""
    path = Path(path)
    with saving(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
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
