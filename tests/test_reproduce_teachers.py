"""bench/reproduce.py's teachers: made once, reused by probes (--reuse-teachers), remade where only the JSON is left."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import reproduce  # noqa: E402


@pytest.fixture
def fake_finetune(tmp_path, monkeypatch):
    """Run finetune_teacher.py as a stub that writes what the real one writes; records each call's overrides."""
    calls = []

    def run_script(script, overrides, log):
        assert script == "finetune_teacher.py"
        calls.append(overrides)
        out = reproduce.ROOT / next(o.split("=", 1)[1] for o in overrides if o.startswith("output_dir="))
        assert not Path(out.relative_to(reproduce.ROOT)).is_absolute()  # records hold repository-relative paths
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        best = {"dev_accuracy": 0.7, "selection": 0.7}
        (out / "dev_metrics.json").write_text(json.dumps(
            {"best": best, "final": best, "history": [best], "config": {"seed": 42}}))
        return 1.0, 1.0

    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    monkeypatch.setattr(reproduce, "run_script", run_script)
    return calls


def test_probe_reuses_the_untagged_grids_teacher(tmp_path, fake_finetune):
    base = reproduce.Grid("minilm", [], None)
    probe = reproduce.Grid("minilm", ["student_lr=2e-4"], "slr2e-4", teachers_from=base)
    out = probe.teacher("cola")
    assert out == tmp_path / "model/grid/minilm/cola/teacher"
    assert len(fake_finetune) == 1 and "student_lr=2e-4" not in fake_finetune[0]  # finetune_teacher.py would refuse it
    recorded = json.loads((tmp_path / "results/minilm/cola/teacher.json").read_text())
    assert json.loads((tmp_path / "results/minilm-slr2e-4/cola/teacher.json").read_text()) == recorded
    assert probe.teacher("cola") == out and len(fake_finetune) == 1  # made once


def test_teacher_json_without_its_model_is_fine_tuned_again_and_the_record_kept(tmp_path, fake_finetune):
    grid = reproduce.Grid("minilm", [], None)
    record = tmp_path / "results/minilm/rte/teacher.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"method": "teacher", "from": "an earlier sitting"}')
    out = grid.teacher("rte")
    assert (out / "config.json").is_file() and len(fake_finetune) == 1
    assert json.loads(record.read_text())["from"] == "an earlier sitting"
    grid.teacher("rte")
    assert len(fake_finetune) == 1


def test_grid_runs_pin_fp32_unless_a_precision_is_asked_for():
    assert reproduce.pinned([]) == ["trainer.precision=32-true"]  # the same numbers on bf16 and AVX2 CPUs
    assert reproduce.pinned(["trainer=gpu", "trainer.precision=bf16-mixed"]) == []  # Hydra refuses a key twice


def test_an_interrupted_run_is_resumed_not_discarded(tmp_path, fake_finetune):
    grid = reproduce.Grid("minilm", [], None)
    ckpt = tmp_path / "model/grid/minilm/rte/.teacher.checkpoint/last.ckpt"  # what a killed grid leaves behind
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    grid.teacher("rte")
    assert "resume=true" in fake_finetune[0] and "overwrite=true" not in fake_finetune[0]
    assert json.loads((tmp_path / "results/minilm/rte/teacher.json").read_text())["resumed"] is True
    ckpt.unlink()
    grid.teacher("mrpc")  # nothing to continue: a fresh run replaces whatever the folder holds
    assert "overwrite=true" in fake_finetune[1] and "resume=true" not in fake_finetune[1]


def test_teachers_take_their_own_overrides_and_a_tagged_grid_lends_its_teachers(tmp_path, fake_finetune):
    gpu = reproduce.Grid("minilm", ["trainer=gpu", "model.distil.epochs=8"], "gpu-ep8",
                         teacher_extra=["trainer=gpu", "trainer.precision=bf16-mixed"])
    gpu.teacher("mrpc")
    assert "trainer=gpu" in fake_finetune[0] and "model.distil.epochs=8" not in fake_finetune[0]
    assert "trainer.precision=32-true" not in fake_finetune[0]  # a named precision is not pinned to fp32
    probe = reproduce.Grid("minilm", ["model.student.start=teacher"], "gpu-ep8-tinit", teachers_from=gpu)
    assert probe.teacher("mrpc") == tmp_path / "model/grid/minilm-gpu-ep8/mrpc/teacher" and len(fake_finetune) == 1
    assert (tmp_path / "results/minilm-gpu-ep8-tinit/mrpc/teacher.json").is_file()
