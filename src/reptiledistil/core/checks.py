"""Up-front checks of a run's output location: a ConfigError that names the key and the fix, raised before any data
or model is loaded. (A setting's type and range are the schema's: config.py.)"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


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
