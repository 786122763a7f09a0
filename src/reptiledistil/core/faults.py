"""A failed write is an answer: a full disk, a file-size limit, a read-only file system or a denied permission while
saving a result becomes a WriteFailed that names the file, the cause and the fix."""

from __future__ import annotations

import errno
import re
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError


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
