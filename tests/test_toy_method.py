"""Adding a method is one module and its YAML: a tests-only method (toy_method.py, conf/method/toy.yaml) trains
end to end through train.py, found with hydra.searchpath, without any change to the package or its configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def test_a_method_from_outside_the_package_trains_and_moves_the_teacher(rte_teacher, tiny_bert, tmp_path):
    tmp, glue = rte_teacher
    out = tmp_path / "toy_run"
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.searchpath=[file://{TESTS / 'conf'}]", "method=toy",
           "task=rte", "epochs=1", "batch_size=8", "eval_batch_size=8", "max_seq_length=32", f"data.glue_dir={glue}",
           f"teacher_dir={tmp / 'teacher'}", "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2",
           "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "~logger", f"output_dir={out}",
           f"hydra.run.dir={tmp_path / 'logs'}"]
    path = os.pathsep.join([str(TESTS), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "toy" and metrics["config"]["method"]["rate"] == 0.5
    assert metrics["final"]["epoch"] == 1 and "dev_accuracy" in metrics["best"]
    # The teacher learnt (the loop asked the method): evaluated, its drift measured, and saved beside the student
    assert "teacher_selection" in metrics["final"]
    assert any(k.startswith("teacher_drift_") and v > 0 for k, v in metrics["final"].items())
    before = AutoModelForSequenceClassification.from_pretrained(tmp / "teacher")
    after = AutoModelForSequenceClassification.from_pretrained(out / "teacher")
    moved = max((a - b).abs().max().item() for a, b in zip(after.parameters(), before.parameters()))
    assert moved > 1e-6  # small: the student starts from the teacher's own pretrained layers (model.student.init)
    # Only the mapped layers moved (strategy=skip, 4 -> 2 layers: teacher layers 1 and 3)
    change = [max((a - b).abs().max().item() for a, b in zip(after.bert.encoder.layer[j].parameters(),
                                                              before.bert.encoder.layer[j].parameters()))
              for j in range(4)]
    assert change[0] == 0.0 and change[2] == 0.0 and min(change[1], change[3]) > 1e-6, change
    assert "a toy method whose teacher drifts towards the student" in (out / "student" / "README.md").read_text()


def test_a_methods_own_field_is_checked_by_its_rule():
    """A method declares its fields with core/rules.setting (methods.base re-exports it); the class its `_target_`
    names checks them with the config's checker as it is built, so method.rate=2 is refused like any key."""
    import pytest

    from conftest import compose_cfg
    from reptiledistil.config.schema import check_config
    from reptiledistil.core.errors import ConfigError

    def check(value):
        overrides = [f"hydra.searchpath=[file://{TESTS / 'conf'}]", "method=toy", f"method.rate={value}"]
        return check_config(compose_cfg("train", overrides), overrides)

    assert check(1).method.rate == 1
    with pytest.raises(ConfigError, match=r"method\.rate=2 must be in \(0, 1\] \(the fraction .*method\.rate=0\.1\)"):
        check(2)
    with pytest.raises(ConfigError, match=r"method\.rate='fast' must be a number"):
        check("fast")
