"""core/files.py: nothing overwritten by accident, and no half-written result ever in place."""

from __future__ import annotations

import os
import stat

import pytest

from reptiledistil.core.errors import ConfigError
from reptiledistil.core.files import atomic_dir, atomic_file, publish, staging_dir, write_atomic, write_json_atomic
from reptiledistil.core.outputs import check_output_dir


def listing(d):
    return sorted(p.name for p in d.iterdir())


def test_check_output_dir_accepts_missing_and_empty(tmp_path):
    assert check_output_dir(tmp_path / "new", False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", False) == tmp_path / "empty"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_check_output_dir_refuses_non_empty(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("weights")
    (out / "dev_metrics.json").write_text("{}")  # a teacher published before folders recorded their files
    with pytest.raises(ConfigError, match="already holds results. Pass overwrite=true .* output_dir=<dir>") as e:
        check_output_dir(out, False)
    assert str(out.resolve()) in str(e.value)
    assert (out / "model.safetensors").read_text() == "weights"
    assert check_output_dir(out, True) == out
    assert (out / "model.safetensors").read_text() == "weights"  # checking never deletes


def test_check_output_dir_refuses_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("not a dir")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="is a file, not a directory. Choose another output_dir"):
            check_output_dir(f, overwrite)
    assert f.read_text() == "not a dir"


def test_atomic_dir_success_creates(tmp_path):
    final = tmp_path / "sub" / "model"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp != final and not final.exists()
        (tmp / "a.txt").write_text("A")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("B")
    assert (final / "a.txt").read_text() == "A" and (final / "nested" / "b.txt").read_text() == "B"
    assert listing(final.parent) == ["model"]  # no temp dirs left


def test_atomic_dir_success_replaces_old(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert listing(final) == ["new.txt"] and (final / "new.txt").read_text() == "new"
    assert listing(tmp_path) == ["model"]


def test_atomic_dir_error_leaves_final_untouched(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert listing(final) == ["old.txt"] and (final / "old.txt").read_text() == "old"
    assert listing(tmp_path) == ["model"]  # temp dir removed


def test_atomic_dir_error_without_old(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "x").write_text("x")
            raise KeyboardInterrupt
    assert not final.exists() and listing(tmp_path) == []


def test_atomic_dir_result_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "f").write_text("x")
            os.chmod(tmp / "f", 0o600)  # as safetensors does
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "m" / "f").stat().st_mode) == 0o644


def test_publish_and_staging_dir(tmp_path):
    final = tmp_path / "out"
    stage = staging_dir(final)
    assert stage == tmp_path / ".out.partial"
    stage.mkdir()
    (stage / "m").write_text("1")
    final.mkdir()
    (final / "stale").write_text("0")
    with pytest.raises(ConfigError, match="appeared while this run was working"):
        publish(stage, final, False)  # a folder that was not there when the run checked: left alone
    assert listing(final) == ["stale"] and listing(stage) == [".reptiledistil.json", "m"]
    with pytest.raises(ConfigError, match=r"holds files this project did not write \(stale\)"):
        publish(stage, final, True)
    (final / "stale").unlink()
    publish(stage, final, True)
    assert listing(final) == [".reptiledistil.json", "m"] and not stage.exists() and listing(tmp_path) == ["out"]


def test_atomic_file_keeps_the_suffix_and_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "chart.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_file(path) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path  # savefig reads the format from the suffix
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["chart.png"]
    with atomic_file(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and listing(tmp_path) == ["chart.png"]


def test_write_atomic(tmp_path):
    path = tmp_path / "deep" / "f.tsv"
    write_atomic(path, "one\n")
    assert path.read_text() == "one\n"
    write_atomic(path, "two\n")
    assert path.read_text() == "two\n"
    assert listing(path.parent) == ["f.tsv"]  # no temp files left


def test_write_atomic_failure_keeps_old(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "bad \udc80 surrogate")
    assert path.read_text() == "old" and listing(tmp_path) == ["f.txt"]


def test_write_atomic_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_write_json_atomic(tmp_path):
    import json

    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": [0.5]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"b": 1, "a": [0.5]} and text.endswith("\n") and text.index('"b"') < text.index('"a"')
