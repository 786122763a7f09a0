"""Writing results so that an interrupted run never leaves a half-written file or model, and nothing is overwritten by
accident: a run owns its output folder while it works (a lock), publishes it whole (temp dir + rename), replaces
only what this project wrote, and a failed write is an answer that names the file and the cause. Every file the
package and bench/ write goes through atomic_file (atomic_dir for a folder); an output location is checked before
anything slow."""

from __future__ import annotations

import datetime
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- where a run may write ------------------------------------------------------------------------------------

# In every folder a run publishes: the files it wrote there. overwrite=true replaces a folder only if it holds
# nothing else (a user's notes dropped into a model folder are not a result to delete).
RECORD = ".reptiledistil.json"
# Folders published before the record existed are recognised by name: a folder holding one of MARKS (a script's
# metrics file, an ONNX export's marker) is a result, and entries matching KNOWN are what the scripts wrote there.
MARKS = ("metrics.json", "dev_metrics.json", "onnx_export.json")
KNOWN = ("student", "teacher", "config.json", "generation_config.json", "*.safetensors", "*.index.json", "*.bin",
         "*.onnx", "*.onnx.data", "tokenizer*.json", "vocab.*", "special_tokens_map.json", "added_tokens.json",
         "merges.txt", "*.model", "README.md")


def check_output_target(path, key: str = "output_dir", protected: dict | None = None) -> Path:
    """Refuse outright a folder a run must never replace, overwrite=true or not: none given (an empty value means
    the working directory), the working directory or a folder holding it, or a folder holding one of the run's
    inputs (`protected`: {"teacher_dir": path, ...}). Nothing is written."""
    if str(path).strip() == "":
        raise ConfigError(f"{key} is empty, which would mean the working directory. Pass {key}=<a folder for this "
                          "run's results>.")
    path = Path(path).expanduser()
    target, cwd = path.resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        what = "the working directory" if target == cwd else "a folder holding the working directory"
        raise ConfigError(f"{key}={path} is {what} ({target}): a run replaces its output folder when it finishes. "
                          f"Pass {key}=<a folder of its own>, e.g. a new subfolder.")
    for name, held in (protected or {}).items():
        held = Path(held).expanduser().resolve()
        if target == held or target in held.parents:
            raise ConfigError(f"{key}={path} holds {name}={held}: a run replaces its output folder when it finishes, "
                              f"which would delete it. Pass {key}=<a folder outside it>.")
    return path


def check_output_dir(path: str | Path, overwrite: bool, key: str = "output_dir") -> Path:
    """Refuse an output directory that already holds results, unless overwrite=true; and even then one that holds
    anything this project did not write (named). Checked while the run owns the folder (`owned`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():  # even overwrite=true must not delete a file
        raise ConfigError(f"Output directory {path.resolve()} is a file, not a directory. Choose another {key}=<dir>.")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ConfigError(f"Output directory {path.resolve()} already holds results. Pass overwrite=true to "
                              f"replace them, or choose another {key}=<dir>.")
        _refuse_foreign(path, key)
    return path


def _refuse_foreign(path: Path, key: str) -> None:
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"{key}={path} holds files this project did not write ({shown}); overwrite=true replaces "
                          f"only a previous run's results. Move them away, or choose another {key}=<dir>.")


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` no run of this project wrote: paths relative to it, a folder as `name/` when nothing in it
    was written by a run. Judged by the folder's RECORD, or by name (MARKS, KNOWN) for a folder without one."""
    try:
        ours = set(json.loads((folder / RECORD).read_text(encoding="utf-8"))["files"]) | {RECORD}
    except (OSError, ValueError, KeyError, TypeError):  # no record (an older result, or not a result at all)
        names = sorted(os.listdir(folder))
        if not any(n in MARKS for n in names):
            return [n + "/" if (folder / n).is_dir() else n for n in names]
        return [n for n in names if n not in MARKS and not any(fnmatch.fnmatch(n, k) for k in KNOWN)]
    holding = {p.as_posix() for f in ours for p in Path(f).parents}  # folders with a recorded file in them
    foreign = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for d in list(dirs):
            if (rel / d).as_posix() not in holding:
                foreign.append((rel / d).as_posix() + "/")
                dirs.remove(d)
        foreign += [(rel / f).as_posix() for f in files if (rel / f).as_posix() not in ours]
    return sorted(foreign)


# --- a run owns its output folder ----------------------------------------------------------------------------


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


# --- a failed write is an answer -----------------------------------------------------------------------------

# errno -> (what happened, what to do about it)
WRITE_FAULTS = {
    errno.ENOSPC: ("no space is left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space"),
    errno.EFBIG: ("the file would be larger than this process may write (ulimit -f) or the file system allows",
                  "raise the file-size limit"),
    errno.EROFS: ("the file system is read-only", "make it writable"),
    errno.EACCES: ("permission denied", "make the folder writable"),
    errno.EPERM: ("operation not permitted", "make the folder writable"),
}


class WriteFailed(ConfigError):
    """A result that could not be written (disk full, file-size limit, read-only, no permission): `fix` says what
    to do; the caller adds what was kept."""

    def __init__(self, path, code: int):
        self.path, (self.cause, self.fix) = Path(path), WRITE_FAULTS[code]
        super().__init__(f"could not write {self.path}: {self.cause}.")


def write_fault(e: BaseException, path=None) -> WriteFailed | None:
    """`e` as a WriteFailed when it is a failed write: an OSError with one of WRITE_FAULTS' codes, a library's error
    carrying one (safetensors: '... File too large (os error 27)'), or raised while handling one (torch.save's
    'unexpected pos'). `path`: the result being written (default: the file the OSError names; then a denied
    permission is not taken for a write, as it may be a read). None for any other error."""
    if isinstance(e, ConfigError) and not isinstance(e, WriteFailed):
        return None  # already an answer
    seen = 0
    while e is not None and seen < 5:  # the error and those it was raised from or while handling
        if isinstance(e, WriteFailed):
            return e
        code = e.errno if isinstance(e, OSError) else None
        found = re.search(r"\(os error (\d+)\)", str(e)) if code is None else None
        code = int(found.group(1)) if found else code
        if code in WRITE_FAULTS and not (path is None and code in (errno.EACCES, errno.EPERM)):
            return WriteFailed(path or getattr(e, "filename", None) or "a file", code)
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


@contextmanager
def saving(path):
    """Writes of the result `path`: a failed write raises WriteFailed naming it."""
    try:
        yield
    except Exception as e:
        fault = write_fault(e, path)
        if fault is None:
            raise
        raise fault from None


# --- publishing ------------------------------------------------------------------------------------------------


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
        _refuse_foreign(final, "output_dir")
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
