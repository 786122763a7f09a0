"""A run owns its output folder while it works: an exclusive lock beside the folder, recording who holds it, that dies
with the process; a second run on the same folder is refused, naming the first."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError
from .faults import saving



def lock_path(folder: str | Path) -> Path:
    """The lock of a run's output folder: `.<name>.lock` beside it (and beside its staging folder)."""
    folder = Path(folder).expanduser().resolve()
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def owned(folder: str | Path, lock: Path | None = None, fix: str = "choose another output_dir=<dir>"):
    """Own `folder` while the body runs: an exclusive fcntl.flock on `lock` (default: lock_path(folder)), which
    records who holds it (pid, host, start time) and dies with the process however it ends. A folder another
    live run owns is refused, naming that run (and `fix`); a lock file left by a run that died is taken over,
    saying so. Folders made to hold the lock file are removed again if nothing else was written in them."""
    lock = Path(lock or lock_path(folder))
    made = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with saving(lock):  # a full disk: even the lock file cannot be written
            fd = _lock(lock, folder, fix)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before unlocking: a run waiting on this file retries on a fresh one
        os.close(fd)
        _remove_empty(made)


def _lock(lock: Path, folder, fix: str) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # a run that failed removed the empty folder it had made for its own lock
            lock.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd) or "its owner not yet recorded"
            os.close(fd)
            raise ConfigError(f"another run ({owner}) is writing {Path(folder).resolve()}. Wait for it to finish or "
                              f"stop it, or {fix}.") from None
        try:  # the holder may have removed the file between our open and our lock: lock the file now there
            here = os.stat(lock)
            if (here.st_dev, here.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _owner(fd)
    if previous:  # a live owner would hold the lock: this one ended without releasing it (killed, crashed)
        print(f"taking over {Path(folder).resolve()}: the run that held it ({previous}) is no longer running")
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    return fd


def _owner(fd: int) -> str:
    """'pid N on host H, started T' from a lock file; '' when it records no owner."""
    try:
        o = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return f"pid {o['pid']} on host {o['host']}, started {o['started']}"
    except (ValueError, TypeError, KeyError, OSError):
        return ""


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        try:
            d.rmdir()
        except OSError:
            return
