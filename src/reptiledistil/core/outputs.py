"""Where a run may write: output folders checked before anything slow (never the working directory or a folder
holding the run's inputs; a folder with results only with overwrite=true, and then only if it holds nothing but a
previous run's results), and what in a folder this project wrote (RECORD)."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from .errors import ConfigError


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
        refuse_foreign(path, key)
    return path


def refuse_foreign(path: Path, key: str) -> None:
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
