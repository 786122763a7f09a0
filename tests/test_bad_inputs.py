"""Every rejected input of the three scripts in one place: each gives `error: <problem and fix>` (a ConfigError,
exit code 2 from the scripts), raised before a model is loaded and before anything is written.

The in-process cases run finetune() / distil() / predict() on a config composed as the scripts compose it, with
the model loaders patched to fail the test if called; a few cases run the scripts themselves (exit code 2, no
traceback), including Hydra's own errors (an unknown key or config group option, an unwritable log folder)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import compose_cfg, patch_pipelines, quick, tiny_bert_config, write_glue
from reptiledistil.core import outputs as core_outputs
from reptiledistil.models import loading as models
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.predict import predict
from reptiledistil.pipelines.teacher import finetune
from reptiledistil.config.cli import hydra_error_message
from reptiledistil.config.schema import check_config
from reptiledistil.core.errors import ConfigError
from reptiledistil.models.loading import check_head, label_kwargs
from reptiledistil.data.tasks import TASKS, get_task

ROOT = Path(__file__).resolve().parents[1]
NLI2 = {0: "entailment", 1: "not_entailment"}


def save_classifier(path: Path, tokenizer, task: str | None, id2label: dict | None = None, num_labels: int = 2) -> Path:
    """A tiny untrained classifier saved like a fine-tuned model (its weights are never loaded here)."""
    kw = {"num_labels": num_labels, "finetuning_task": task}
    if id2label is not None:
        kw.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    AutoModelForSequenceClassification.from_config(tiny_bert_config(2, **kw)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("bad_inputs_models")
    return {"teacher_rte": save_classifier(root / "teacher_rte", tokenizer, "rte", NLI2),
            "rte": save_classifier(root / "rte", tokenizer, "rte", NLI2),
            # labels of RTE, no finetuning_task: nothing but the label names says it is not an MRPC model
            "nli_untagged": save_classifier(root / "nli_untagged", tokenizer, None, NLI2)}


# === Typed config (src/reptiledistil/config.py) ================================================================
# A wrong type is refused by OmegaConf while Hydra composes (the scripts print it via cli.hydra_error_message); a
# range, an allowed word or a key this script does not use is refused by config.check_config right after. Both
# come before any library (torch, transformers, Lightning) is imported and before anything is written.


F, T, P = "finetune_teacher", "train", "predict"  # the scripts (here and in CASES below)


def compose_error(name: str, overrides: list[str]) -> str:
    """The `error:` text a script prints for a config Hydra refuses to compose."""
    with pytest.raises(Exception) as e:
        compose_cfg(name, overrides)
    message = hydra_error_message(e.value)
    assert message is not None, f"not reported as a config error: {e.value!r}"
    return message


TYPE_CASES = [  # (script, override, what the error line must say: the key, its type, the fix)
    ("train", "alpha=abc", ["alpha=abc is not a number (alpha: float", "in [0, 1]", "Pass alpha=<a number>."]),
    ("train", "alpha=[1]", ["alpha=[1] is not a number (alpha: float", "Pass alpha=<a number>."]),
    ("train", "temperature=hot", ["temperature=hot is not a number (temperature: float", "> 0",
                                  "Pass temperature=<a number>."]),
    ("train", "seed=abc", ["seed=abc is not a whole number (seed: int", "Pass seed=<a whole number>."]),
    ("finetune_teacher", "max_seq_length=abc", ["max_seq_length=abc is not a whole number (max_seq_length: int",
                                                "at least 8", "Pass max_seq_length=<a whole number>."]),
    ("train", "data.max_eval_samples=abc", ["data.max_eval_samples=abc is not a whole number",
                                            "Pass data.max_eval_samples=<a whole number>, or null for all of them."]),
    ("train", "batch_size=8.0", ["batch_size=8.0 is not a whole number (batch_size: int",
                                 "Pass batch_size=<a whole number>."]),
    ("train", "batch_size=2.5", ["batch_size=2.5 is not a whole number", "Pass batch_size=<a whole number>."]),
    ("finetune_teacher", "batch_size=abc", ["batch_size=abc is not a whole number", "at least 1"]),
    ("finetune_teacher", "overwrite=maybe", ["overwrite=maybe is not true or false (overwrite: bool",
                                             "Pass overwrite=<true or false>."]),
    ("finetune_teacher", "checkpoint_every_n_steps=often", ["checkpoint_every_n_steps=often is not a whole number",
                                                            "or null"]),
    ("predict", "eval_batch_size=1e3", ["eval_batch_size=1e3 is not a whole number"]),
    ("predict", "export_check=perhaps", ["export_check=perhaps is not true or false"]),
    ("train", "model.student.num_layers=two", ["model.student.num_layers=two is not a whole number",
                                               "Pass model.student.num_layers=<a whole number>, or null."]),
]


@pytest.mark.parametrize("name, override, expected", TYPE_CASES, ids=[f"{c[0]} {c[1]}" for c in TYPE_CASES])
def test_typed_wrong_type_refused_while_composing(name, override, expected):
    message = compose_error(name, [override])
    for part in expected:
        assert part in message, (part, message)


RANGE_CASES = {  # (script, overrides, what the error must say); scope: refused for what the command line names
    "T seed=-1": (T, ["seed=-1"], ["seed=-1 must be in [0, 4294967295]", "the random seed"]),
    "T student.num_layers=0": (T, ["model.student.num_layers=0"],
                               ["model.student.num_layers=0 must be at least 1", "null: as many as"]),
    "T max_train_samples=-5": (T, ["data.max_train_samples=-5"],
                               ["data.max_train_samples=-5 must be at least 1", "null: all of them"]),
    "F max_eval_samples=0": (F, ["data.max_eval_samples=0"], ["data.max_eval_samples=0 must be at least 1"]),
    "F finetune.epochs=0": (F, ["model.finetune.epochs=0"], ["model.finetune.epochs=0 must be at least 1"]),
    "T temperature=-1": (T, ["temperature=-1"], ["temperature=-1 must be > 0", "the paper uses 5"]),
    "T alpha=nan": (T, ["alpha=nan"], ["alpha=nan must be a finite number"]),
    "T temperature=inf": (T, ["temperature=inf"], ["temperature=inf must be a finite number", "the paper uses 5"]),
    "T optimizer lr=-inf": (T, ["student_optimizer.lr=-inf"], ["student_optimizer.lr=-inf must be a finite number"]),
    "P max_metric_drop=inf": (P, ["max_metric_drop=inf"], ["max_metric_drop=inf must be a finite number"]),
    "T save_teacher=maybe": (T, ["save_teacher=maybe"], ["save_teacher=maybe is not one of auto, true, false",
                                                         "Pass save_teacher=<auto|true|false>."]),
    "T optimizer eps=0": (T, ["student_optimizer.eps=0"], ["student_optimizer.eps=0 must be > 0"]),
    "T resume=[1]": (T, ["resume=[1]"], ["resume=[1] must be false, true", "the path of a .ckpt file"]),
    "T data.train_file with task=rte": (T, ["data.train_file=x.csv"],
                                        ["data.train_file=x.csv applies to task=custom only",
                                         "Pass task=custom, or drop data.train_file."]),
    "T interpolated teacher_lr": (T, ["method=metadistil", "method.teacher_lr=abc"],
                                  ["teacher_lr=abc (from method.teacher_lr) is not a number",
                                   "Pass method.teacher_lr=<a number>, or null."]),
    "P split=train": (P, ["split=train"], ["split=train is not one of dev, test", "Pass split=<dev|test>."]),
    "P quantize=int4": (P, ["quantize=int4"], ["quantize=int4 is not one of none, int8"]),
    "P max_metric_drop=-1": (P, ["max_metric_drop=-1"], ["max_metric_drop=-1 must be >= 0"]),
    "F student override": (F, ["model.student.num_layers=2"],
                           ["model.student.num_layers=2 does not apply here: finetune_teacher.py fine-tunes the "
                            "teacher", "Drop it"]),
    "F distil override": (F, ["model.distil.epochs=9"], ["model.distil.epochs=9 does not apply here",
                                                          "model.distil.* is train.py's"]),
    "P +trainer.accelerator=gpu": (P, ["+trainer.accelerator=gpu"],
                                   ["+trainer: predict.py trains nothing, so it takes no trainer"]),
    "T +alpah=0.3": (T, ["+alpah=0.3"], ["+alpah: train.py has no key alpah, so nothing would read it. Drop it"]),
    "T source ignored by start=teacher": (T, ["model.student.start=teacher", "model.student.source=some/model"],
                                          ["model.student.source=some/model would not be read: with "
                                           "model.student.start=teacher", "Add model.student.start=pretrained"]),
    "F +data.max_samples=3": (F, ["+data.max_samples=3"], ["+data.max_samples: finetune_teacher.py has no key "
                                                         "data.max_samples"]),
}
# known from the command line only (not from cfg)
SCOPE_CASES = ("F student override", "F distil override", "T source ignored by start=teacher")


@pytest.mark.parametrize("case", list(RANGE_CASES))
def test_typed_out_of_range_refused_before_loading_or_writing(case, tmp_path, env, tiny_bert, no_models):
    name, extra, expected = RANGE_CASES[case]
    glue = write_glue(tmp_path / "glue_data")
    before = files(tmp_path)
    cfg = compose_cfg(name, base_overrides(name, tmp_path, glue, env, tiny_bert) + extra)
    with pytest.raises(ConfigError) as e:
        check_config(cfg, extra)
    for part in expected:
        assert part in str(e.value), (part, str(e.value))
    if case not in SCOPE_CASES:  # the run functions check too (callers that compose a config themselves)
        with pytest.raises(ConfigError, match=re.escape(expected[0])):
            {F: finetune, T: distil, P: predict}[name](cfg)
    assert files(tmp_path) == before


@pytest.mark.parametrize("word, value", [("no", False), ("off", False), ("false", False), ("0", False),
                                         ("yes", True), ("on", True), ("true", True), ("1", True)])
def test_typed_boolean_words(word, value):
    for name in (F, T, P):
        assert compose_cfg(name, [f"overwrite={word}"]).overwrite is value
    assert compose_cfg(P, [f"zip={word}"]).zip is value


ACCEPTED = {  # every preset, group option and value form the configs, docs and tests use
    F: [[f"model={m}"] for m in ("bert_base", "deberta_v3_base", "electra_base", "minilm", "roberta_base",
                                 "xlm_roberta_base")]
       + [[f"trainer={t}"] for t in ("cpu", "ddp", "default", "gpu")] + [["logger=wandb"], ["~logger"]]
       + [["task=custom", "data.train_file=a.csv", "data.text_columns=[q,a]", "data.task_type=regression"],
          ["resume=true"], ["resume=some/last.ckpt"], ["checkpoint_every_n_steps=null"], ["lr=1e-4"],
          ["+trainer.limit_train_batches=2", "trainer.precision=32"], ["trainer.precision=bf16-mixed"],
          ["data.max_train_samples=null", "data.max_eval_samples=8"], ["seed=0"], ["optimizer.fused=false"]],
    T: [[f"method={m}"] for m in ("finetune", "kd", "metadistil", "reptile")]
       + [[f"strategy={s}"] for s in ("both", "first", "last", "skip")]
       + [["model=bert_base", "trainer=ddp"], ["hparams_search=optuna"], ["save_teacher=true"], ["save_teacher=false"],
          ["save_teacher=auto"], ["alpha=0", "temperature=1"], ["alpha=1", "temperature=20"], ["method=kd", "teacher_lr=null"],
          ["+trainer.strategy=ddp", "trainer.devices=2"], ["+student_optimizer.amsgrad=true"], ["task=custom", "data.train_file=a.csv"],
          ["model.student.num_layers=null"], ["model.student.start=pretrained", "model.student.init=pretrained"],
          ["model.student.start=teacher"], ["max_seq_length=64"]],
    P: [["task=custom", "data.test_file=t.csv"], ["task=ax"], ["split=dev", "engine=onnx", "quantize=int8"],
        ["export=onnx", "export_dir=x"], ["precision=bf16"], ["zip=true"]],
}


@pytest.mark.parametrize("name, overrides", [(n, o) for n, cases in ACCEPTED.items() for o in cases],
                         ids=[f"{n} {' '.join(o)}" for n, cases in ACCEPTED.items() for o in cases])
def test_typed_schema_accepts_what_the_project_uses(name, overrides):
    cfg = compose_cfg(name, overrides)
    check_config(cfg, overrides)
    if name != P:  # interpolations still resolve through the typed nodes (log_dir needs a Hydra run)
        assert cfg.trainer.max_epochs == cfg.epochs and cfg.trainer._target_ == "pytorch_lightning.Trainer"


def test_typed_sweep_values_are_typed_per_job():
    cfg = compose_cfg(T, ["alpha=0.1", "temperature=10"])  # what one job of -m alpha=0.1,0.5 temperature=5,10 gets
    assert cfg.alpha == 0.1 and isinstance(cfg.temperature, float) and cfg.temperature == 10.0


def no_library_imported(stderr: str) -> bool:
    """`python -X importtime` lists every imported module: none of the slow libraries may be among them."""
    return not re.search(r"\|\s+(torch|transformers|pytorch_lightning|datasets)$", stderr, re.MULTILINE)


@pytest.mark.parametrize("args, expected", [
    (["train.py", "alpha=abc"], "error: alpha=abc is not a number (alpha: float, the weight of the KD term"),
    (["train.py", "seed=-1"], "error: seed=-1 must be in [0, 4294967295]"),
    (["train.py", "model.student.num_layers=0"], "error: model.student.num_layers=0 must be at least 1"),
    (["train.py", "-m", "batch_size=8.0,16"], "error: batch_size=8.0 is not a whole number (batch_size: int"),
    (["finetune_teacher.py", "model.student.num_layers=2"],
     "error: model.student.num_layers=2 does not apply here: finetune_teacher.py fine-tunes the teacher"),
    (["predict.py", "quantize=int8", "+trainer=gpu"],
     "error: trainer: predict.py trains nothing, so it takes no trainer: it runs on the GPU by itself"),
], ids=["alpha=abc", "seed=-1", "num_layers=0", "sweep batch_size=8.0", "finetune student override",
        "predict +trainer=gpu"])
def test_typed_script_refuses_before_any_library_loads(args, expected, tmp_path):
    res = script(["-X", "importtime", str(ROOT / args[0]), *args[1:], f"hydra.run.dir={tmp_path / 'logs'}",
                  f"hydra.sweep.dir={tmp_path / 'multirun'}"], tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert expected in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert no_library_imported(res.stderr), "the bad value must be refused before torch & co. are imported"
    assert not (tmp_path / "model").exists() and not (tmp_path / "predictions").exists()


def test_typed_overwrite_no_keeps_a_finished_run(tmp_path):
    """overwrite=no is false (it used to be a non-empty string, so true: the results were deleted)."""
    glue = write_glue(tmp_path / "glue_data")
    out = tmp_path / "model" / "rte" / "teacher"
    out.mkdir(parents=True)
    (out / "dev_metrics.json").write_text('{"finished": true}\n')
    (out / "model.safetensors").write_bytes(b"weights")
    before = files(out)
    res = script([str(ROOT / "finetune_teacher.py"), "overwrite=no", f"data.glue_dir={glue}", "~logger",
                  "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'logs'}"], tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "already holds results. Pass overwrite=true to replace them" in res.stderr, res.stderr[-3000:]
    assert files(out) == before and not list(out.parent.glob(".teacher.*"))


# === (end of the typed-config section) =========================================================================


# --- what a case changes before it runs -----------------------------------------------------------------------


def header_only(rel: str):
    def setup(tmp: Path, glue: Path) -> None:
        f = glue / rel
        f.write_text(f.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    return setup


def latin1_line(rel: str, line: int):
    """Line `line` (1-based) of the file gets a Latin-1 byte (é as 0xe9), as a file saved in the wrong encoding."""
    def setup(tmp: Path, glue: Path) -> None:
        f = glue / rel
        lines = f.read_bytes().split(b"\n")
        lines[line - 1] = lines[line - 1].replace(b"the", b"caf\xe9", 1)
        f.write_bytes(b"\n".join(lines))
    return setup


def empty_file(rel: str):
    def setup(tmp: Path, glue: Path) -> None:
        (glue / rel).write_bytes(b"")
    return setup


def read_only_dir(tmp: Path, glue: Path) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


def existing_dev_metrics(tmp: Path, glue: Path) -> None:
    (tmp / "preds").mkdir()
    (tmp / "preds" / "rte_dev_metrics.json").write_text('{"earlier": true}\n')


def a_file(tmp: Path, glue: Path) -> None:
    (tmp / "preds").write_text("not a folder\n")


# --- the cases: (script, overrides, setup, what is wrong, how to fix it) ---------------------------------------

CASES = {
    # data (read before any model)
    "F header-only train.tsv": (F, [], header_only("RTE/train.tsv"),
                                r"RTE/train\.tsv has a header line but no data rows", r"Re-download the file"),
    "F header-only dev.tsv": (F, [], header_only("RTE/dev.tsv"),
                              r"RTE/dev\.tsv has a header line but no data rows", r"Re-download the file"),
    "F non-UTF-8 train.tsv": (F, [], latin1_line("RTE/train.tsv", 3),
                              r"RTE/train\.tsv:3: not UTF-8 \(byte 0xe9 at column \d+\)", r"iconv -f latin1 -t utf-8"),
    "F hub offline": (F, ["data.source=hub"], None,
                      r"data\.source=hub: the Hugging Face hub cannot be reached",
                      r"data\.source=tsv data\.glue_dir=<dir"),
    "F task=ax": (F, ["task=ax"], None, r"Task ax has no training data: it is test only",
                  r"python predict\.py task=ax model_dir=<the MNLI model>"),
    "T header-only dev_mismatched.tsv": (T, ["task=mnli"], header_only("MNLI/dev_mismatched.tsv"),
                                         r"MNLI/dev_mismatched\.tsv has a header line but no data rows",
                                         r"Re-download the file"),
    "T empty train.tsv": (T, [], empty_file("RTE/train.tsv"),
                          r"RTE/train\.tsv is empty: expected a header line", r"download_glue_data\.py"),
    "T non-UTF-8 headerless CoLA dev.tsv": (T, ["task=cola"], latin1_line("CoLA/dev.tsv", 2),
                                            r"CoLA/dev\.tsv:2: not UTF-8", r"re-download the file, or convert it"),
    "T hub offline": (T, ["data.source=hub"], None, r"hub cannot be reached", r"data\.source=tsv"),
    "T task=ax": (T, ["task=ax"], None, r"Task ax has no training data: it is test only.*predicted with a model "
                  r"trained on MNLI", r"python predict\.py task=ax model_dir=<the MNLI model>"),
    # values (checked first)
    "F batch_size=0": (F, ["batch_size=0"], None, r"batch_size=0 must be at least 1", r"training examples per step"),
    "F eval_batch_size=-4": (F, ["eval_batch_size=-4"], None, r"eval_batch_size=-4 must be at least 1",
                             r"examples per (inference )?batch"),
    "F lr=-1": (F, ["lr=-1"], None, r"lr=-1 must be > 0", r"pass e\.g\. lr=1e-4"),
    "F lr=0": (F, ["lr=0"], None, r"lr=0 must be > 0", r"pass e\.g\. lr="),
    "F epochs=0": (F, ["epochs=0"], None, r"epochs=0 must be at least 1", r"dev evaluation that selects the model"),
    "F warmup_ratio=1": (F, ["warmup_ratio=1"], None, r"warmup_ratio=1 must be in \[0, 1\)", r"warming the learning rate up"),
    "F weight_decay=-0.1": (F, ["weight_decay=-0.1"], None, r"weight_decay=-0.1 must be >= 0",
                            r"decoupled weight decay"),
    "F max_grad_norm=-1": (F, ["max_grad_norm=-1"], None, r"max_grad_norm=-1 must be >= 0", r"0 turns clipping off"),
    "F data.num_workers=-1": (F, ["data.num_workers=-1"], None, r"data\.num_workers=-1 must be at least 0",
                              r"0 loads batches in the main process"),
    "F checkpoint_every_n_steps=0": (F, ["checkpoint_every_n_steps=0"], None,
                                     r"checkpoint_every_n_steps=0 must be at least 1", r"or null"),
    "T batch_size=-1": (T, ["batch_size=-1"], None, r"batch_size=-1 must be at least 1", r"training examples per step"),
    "T eval_batch_size=0": (T, ["eval_batch_size=0"], None, r"eval_batch_size=0 must be at least 1",
                            r"examples per (inference )?batch"),
    "T student_lr=-1": (T, ["student_lr=-1"], None, r"student_lr=-1 must be > 0", r"pass e\.g\. student_lr=5e-5"),
    "T teacher_lr=-1": (T, ["teacher_lr=-1"], None, r"teacher_lr=-1 must be > 0", r"pass e\.g\. teacher_lr=5e-5"),
    # method=metadistil's own settings (the synthetic RTE has 24 training examples)
    "T metadistil quiz_size too large": (T, ["method=metadistil"], None,
                                         r"method\.quiz_size=256 leaves no training data: there are 24 training "
                                         r"examples", r"smaller method\.quiz_size \(e\.g\. 2\)"),
    "T metadistil quiz_size=0": (T, ["method=metadistil", "method.quiz_size=0"], None,
                                 r"method\.quiz_size=0 must be at least 1", r"held out for the teacher's quiz"),
    "T metadistil quiz_size=0.5": (T, ["method=metadistil", "method.quiz_size=0.5"], None,
                                   r"method\.quiz_size=0\.5 must be a whole number", r"held out for the teacher's quiz"),
    "T metadistil pilot_lr=-1": (T, ["method=metadistil", "method.pilot_lr=-1", "method.quiz_size=4"], None,
                                 r"method\.pilot_lr=-1 must be >= 0", r"0 leaves only the teacher's own"),
    "T metadistil teacher_task_weight=x": (T, ["method=metadistil", "method.teacher_task_weight=x"], None,
                                           r"method\.teacher_task_weight='x' must be a number",
                                           r"0 is the reference code"),
    "T metadistil teacher_lr=0": (T, ["method=metadistil", "method.teacher_lr=0", "method.quiz_size=4"], None,
                                  r"teacher_lr=0 must be > 0", r"pass e\.g\. teacher_lr=5e-5"),
    "T metadistil under fp16": (T, ["method=metadistil", "trainer.precision=16-mixed", "method.quiz_size=4"], None,
                                r"method=metadistil does not run under fp16",
                                r"Use trainer\.precision=bf16-mixed or 32-true"),
    "T epochs=0": (T, ["epochs=0"], None, r"epochs=0 must be at least 1", r"dev evaluation that selects the model"),
    "T warmup_ratio=-0.1": (T, ["warmup_ratio=-0.1"], None, r"warmup_ratio=-0.1 must be in \[0, 1\)",
                            r"warming the learning rate up"),
    "T checkpoint_every_n_steps=-5": (T, ["checkpoint_every_n_steps=-5"], None,
                                      r"checkpoint_every_n_steps=-5 must be at least 1", r"or null"),
    # hardware, output location, models
    "T trainer=gpu without a GPU": (T, ["trainer=gpu"], None, r"no GPU found", r"use trainer=cpu or trainer=default"),
    "F read-only output folder": (F, ["output_dir={tmp}/ro/teacher"], read_only_dir,
                                  r"output_dir=.*/ro/teacher cannot be written: .*/ro is not writable",
                                  r"Choose a writable output_dir=<dir>"),
    "T read-only output folder": (T, ["output_dir={tmp}/ro/sub/run"], read_only_dir,
                                  r"cannot be written: .*/ro is not writable", r"Choose a writable output_dir=<dir>"),
    "T teacher of another task": (T, ["task=mrpc"], None,
                                  r"was fine-tuned on task 'rte', not 'mrpc'",
                                  r"python finetune_teacher\.py task=mrpc \(it writes model/mrpc/teacher\); then pass "
                                  r"teacher_dir=model/mrpc/teacher"),
    "P split=dev would overwrite dev metrics": (P, ["split=dev"], existing_dev_metrics,
                                                r"preds/rte_dev_metrics\.json already exist",
                                                r"Pass overwrite=true to replace, or choose another output_dir"),
    "P eval_batch_size=0": (P, ["eval_batch_size=0"], None, r"eval_batch_size=0 must be at least 1",
                            r"examples per (inference )?batch"),
    "P labels of another task": (P, ["task=mrpc", "model_dir={nli_untagged}"], None,
                                 r"predicts the labels \['entailment', 'not_entailment'\], but task mrpc's labels are "
                                 r"\['0', '1'\]", r"Pass model_dir=<a model fine-tuned or distilled on mrpc>"),
    "P read-only output folder": (P, ["output_dir={tmp}/ro/preds"], read_only_dir,
                                  r"output_dir=.*/ro/preds cannot be written", r"Choose a writable output_dir=<dir>"),
    "P output_dir is a file": (P, [], a_file, r"output_dir=.*preds cannot be created: .*preds is a file",
                               r"Choose another output_dir=<dir>"),
    "P header-only test.tsv": (P, [], header_only("RTE/test.tsv"),
                               r"RTE/test\.tsv has a header line but no data rows", r"Re-download the file"),
    "P non-UTF-8 test.tsv": (P, [], latin1_line("RTE/test.tsv", 4), r"RTE/test\.tsv:4: not UTF-8", r"iconv"),
    "P hub offline": (P, ["data.source=hub"], None, r"hub cannot be reached", r"data\.source=tsv"),
    "P task=ax split=dev": (P, ["task=ax", "split=dev"], None, r"Task ax has no labelled dev set",
                            r"use split=test"),
}


def base_overrides(script: str, tmp: Path, glue: Path, env: dict, tiny_bert: Path) -> list[str]:
    if script == F:
        return quick(tmp, glue) + ["task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={tmp / 'out'}"]
    if script == T:
        return quick(tmp, glue) + ["task=rte", f"teacher_dir={env['teacher_rte']}", "model.student.start=pretrained",
                                   f"model.student.source={tiny_bert}", "model.student.num_layers=2",
                                   f"output_dir={tmp / 'out'}"]
    return ["task=rte", f"model_dir={env['rte']}", f"output_dir={tmp / 'preds'}", f"data.glue_dir={glue}"]


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if any model weights (or a tokenizer) are loaded; config.json may be read."""
    def fail(*a, **k):
        pytest.fail("a model was loaded before the bad input was refused")

    for name in ("load_for_finetuning", "build_student", "load_tokenizer"):
        patch_pipelines(monkeypatch, name, fail)
    monkeypatch.setattr(models.AutoModelForSequenceClassification, "from_pretrained", fail)


@pytest.fixture
def offline_hub(monkeypatch):
    """The hub as an offline machine sees it (HF_HUB_OFFLINE=1 raises exactly this), whatever the local cache holds."""
    import datasets

    def load_dataset(*a, **k):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def emulate_permissions_for_root(monkeypatch) -> None:
    """root may write anywhere, so a 0o555 folder is only read-only for others: judge it by its mode bits."""
    if os.geteuid() == 0:
        monkeypatch.setattr(core_outputs, "is_writable", lambda d: bool(os.stat(d).st_mode & 0o200))


@pytest.mark.parametrize("case", list(CASES))
def test_rejected_before_loading_or_writing(case, tmp_path, env, tiny_bert, no_models, offline_hub, monkeypatch):
    script, extra, setup, problem, fix = CASES[case]
    glue = write_glue(tmp_path / "glue_data")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    emulate_permissions_for_root(monkeypatch)
    if setup is not None:
        setup(tmp_path, glue)
    before = files(tmp_path)
    fmt = {"tmp": tmp_path, **env}
    base = base_overrides(script, tmp_path, glue, env, tiny_bert)
    if any(e.startswith("trainer=") for e in extra):  # the trainer preset then decides the accelerator
        base = [o for o in base if not o.startswith("trainer.accelerator=")]
    cfg = compose_cfg(script, base + [e.format(**fmt) for e in extra])
    fn = {F: finetune, T: distil, P: predict}[script]
    try:
        with pytest.raises(ConfigError) as e:
            fn(cfg)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    message = str(e.value)
    assert re.search(problem, message), f"the problem is not named: {message}"
    assert re.search(fix, message), f"the fix is not named: {message}"
    assert files(tmp_path) == before, "nothing may be written (or changed) by a refused run"
    assert not list(tmp_path.glob("**/.*.partial")) and not list(tmp_path.glob("**/.*.checkpoint"))


def test_the_cases_cover_all_three_scripts():
    scripts = [c[0] for c in CASES.values()]
    assert len(CASES) >= 30 and all(scripts.count(s) >= 8 for s in (F, T, P))


# --- model label names (check_head) ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in TASKS if n != "ax"] + ["ax"])
def test_label_names_this_project_saves_are_accepted(name):
    task = get_task(name)
    saved = get_task("mnli") if name == "ax" else task  # AX is predicted with an MNLI model
    config = tiny_bert_config(2, **label_kwargs(saved))
    check_head(config, task, "Model m", "")
    check_head(tiny_bert_config(2, num_labels=task.num_labels), task, "Model m", "")  # LABEL_0, LABEL_1, ...


@pytest.mark.parametrize("name, labels", [("sst2", {0: "NEGATIVE", 1: "POSITIVE"}),
                                          ("mrpc", {0: "not_equivalent", 1: "equivalent"}),
                                          ("cola", {0: "unacceptable", 1: "acceptable"})])
def test_hub_label_names_are_accepted(name, labels):
    """Models fine-tuned on the hub's GLUE (transformers' run_glue.py) carry the hub's class names."""
    check_head(tiny_bert_config(2, num_labels=2, id2label=labels), get_task(name), "Model m", "")


def test_hub_label_names_of_another_task_are_refused():
    # WNLI: 0 = not_entailment; an RTE-style model (0 = entailment) would invert every prediction.
    with pytest.raises(ConfigError, match=r"orders its labels \['entailment', 'not_entailment'\], but task wnli "
                                          r"uses \['0', '1'\]; its predictions would be mislabelled"):
        check_head(tiny_bert_config(2, num_labels=2, id2label=NLI2), get_task("wnli"), "Model m", "")


# --- the scripts themselves: exit code 2, `error: ...`, no traceback -------------------------------------------


def script(args: list[str], cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*prefix, sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.parametrize("args, problem, fix", [
    (["train.py", "alpah=0.3"], "error: Could not override 'alpah': the config has no such key",
     "Check its spelling; python train.py --cfg job prints every key"),
    (["predict.py", "task=foo"], "error: In 'predict': Could not find 'task/foo'. Available options in 'task': ax, cola",
     "Pick one of them: task=<option>."),
    (["finetune_teacher.py", "model=nope"], "Could not find 'model/nope'. Available options in 'model': bert_base, "
     "deberta_v3_base, electra_base, minilm, mpnet_base, roberta_base, xlm_roberta_base", "model=<option>"),
    (["train.py", "batch_size=0"], "error: batch_size=0 must be at least 1", "training examples per step"),
    (["finetune_teacher.py", "--cfg", "job", "--resolve"], "error: log_dir comes from Hydra's run folder, which --cfg "
     "does not create", "Drop --resolve, or pass log_dir=<a folder> as well."),
], ids=["train.py alpah=0.3", "predict.py task=foo", "finetune_teacher.py model=nope", "train.py batch_size=0",
        "--cfg job --resolve"])
def test_script_exits_2_without_traceback(args, problem, fix, tmp_path):
    res = script([str(ROOT / args[0]), *args[1:], f"hydra.run.dir={tmp_path / 'logs'}"], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert problem in res.stderr and fix in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr
    assert not (tmp_path / "model").exists()


def unprivileged() -> tuple[str, ...]:
    """A prefix under which file permissions apply: root without CAP_DAC_OVERRIDE (setpriv), or nothing."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def test_read_only_working_directory(tmp_path):
    """Hydra cannot create its log folder (outputs/<date>/<time>) in the working directory: say how to move it."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = script([str(ROOT / "predict.py"), "task=rte"], ro, unprivileged())
    finally:
        ro.chmod(0o755)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: cannot write Hydra's log folder outputs (Permission denied)" in res.stderr
    assert "Run from a writable folder, or pass hydra.run.dir=<a writable dir>" in res.stderr
    assert "Traceback" not in res.stderr and list(ro.iterdir()) == []


# === A run's checkpoint, model folders and labels: what a user types or copies cannot crash, mislabel or destroy a
# run. The scripts run as a user runs them: `error: ...`, exit code 2, and nothing on disk changed. ================


def user_files(tmp: Path) -> dict[str, bytes]:
    """Every file under tmp but Hydra's own log folder (hydra.run.dir=<tmp>/logs), which each script run writes."""
    return {k: v for k, v in files(tmp).items() if not k.startswith("logs/")}


def refused(args: list[str], tmp: Path) -> str:
    """Run a script that must refuse its input; returns its `error:` line (asserting exit code 2, no traceback and
    no file under tmp changed)."""
    before = user_files(tmp)
    res = script([str(ROOT / args[0]), *args[1:], f"hydra.run.dir={tmp / 'logs'}"], tmp)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [l for l in res.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-3000:]
    assert user_files(tmp) == before, "a refused run may not write or change anything"
    return lines[0]


def script_overrides(script_name: str, tmp: Path, glue: Path, env: dict, tiny_bert: Path) -> list[str]:
    """base_overrides without log_dir (a script takes it from hydra.run.dir) and with a fixed precision."""
    return [o for o in base_overrides(script_name, tmp, glue, env, tiny_bert) if not o.startswith("log_dir=")] + \
        (["trainer.precision=32-true"] if script_name != P else [])


# --- resume: a checkpoint knows the settings it was written with ------------------------------------------------


def fake_checkpoint(path: Path, settings: dict) -> None:
    """What resume= reads first: ResumableCheckpoint's state in a Lightning checkpoint (no tensors needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"callbacks": {"ResumableCheckpoint": {"batches_done": 2, "identity": {}, "settings": settings}}}, path)


def test_train_py_resume_with_another_alpha_is_refused(tmp_path, env, tiny_bert):
    from reptiledistil.training.resume import checkpoint_path, run_settings

    glue = write_glue(tmp_path / "glue_data")
    overrides = script_overrides(T, tmp_path, glue, env, tiny_bert)
    written = run_settings(compose_cfg(T, overrides + [f"log_dir={tmp_path / 'logs'}"]),
                           {"trainer.accelerator": "cpu", "trainer.precision": "32-true"})
    assert written["alpha"] == 0.5 and "output_dir" not in written and "data.glue_dir" not in written
    fake_checkpoint(checkpoint_path(tmp_path / "out"), written)
    error = refused(["train.py", *overrides, "alpha=0.9", "resume=true", "data.num_workers=1"], tmp_path)
    assert re.search(r"error: Checkpoint .*last\.ckpt was written with other settings: alpha: 0\.5 in the "
                     r"checkpoint, 0\.9 now\. Resume with the settings it was written with, or pass overwrite=true "
                     r"\(without resume\) to start the run again", error), error


# --- model folders: a half-finished copy, a corrupt config.json, no weights ---------------------------------------


def damaged_copy(src: Path, dst: Path, damage: str) -> Path:
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    if damage == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])  # a copy interrupted half way
    elif damage == "header":
        weights.write_bytes(weights.read_bytes()[:20])  # cut inside the header
    elif damage == "config":
        (dst / "config.json").write_text('{"architectures": ["BertForSequenceClassification"], "hidden_', "utf-8")
    elif damage == "no weights":
        weights.unlink()
    return dst


MODEL_CASES = {
    "P truncated model.safetensors": (P, "model_dir", "truncated",
                                      r"model\.safetensors is cut short: \d+ bytes, but its header describes \d+"),
    "P corrupt config.json": (P, "model_dir", "config", r"config\.json cannot be read as JSON"),
    "T teacher cut inside its header": (T, "teacher_dir", "header", r"model\.safetensors is cut short \(20 bytes"),
    "T teacher without weights": (T, "teacher_dir", "no weights",
                                  r"holds no weights \(no model\.safetensors or pytorch_model\.bin"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_damaged_model_folder_is_refused_naming_the_file(case, tmp_path, env, tiny_bert):
    script_name, key, damage, problem = MODEL_CASES[case]
    glue = write_glue(tmp_path / "glue_data")
    model = damaged_copy(env["rte"] if script_name == P else env["teacher_rte"], tmp_path / "model", damage)
    args = [o for o in script_overrides(script_name, tmp_path, glue, env, tiny_bert) if not o.startswith(key + "=")]
    error = refused([f"{'predict' if script_name == P else 'train'}.py", *args, f"{key}={model}"], tmp_path)
    assert str(model) in error and re.search(problem, error), error
    assert "copy the model folder again, or train (fine-tune) it again" in error.lower(), error
    assert "network" not in error and "hub" not in error, error


def test_pretrained_folder_without_weights_is_refused_before_training(tmp_path, tiny_bert):
    from reptiledistil.models.loading import load_for_finetuning

    model = damaged_copy(tiny_bert, tmp_path / "pretrained", "no weights")
    with pytest.raises(ConfigError, match=r"Pretrained model .*pretrained holds no weights") as e:
        load_for_finetuning(str(model), get_task("rte"))
    assert "network" not in str(e.value)


def test_a_load_error_in_a_local_folder_never_blames_the_network(tmp_path, tiny_bert):
    """A file the checks cannot judge (here: a weight file that passes the header check but fails to load)."""
    from safetensors import SafetensorError

    def broken(name, **kw):
        raise SafetensorError("Error while deserializing header: invalid dtype")

    with pytest.raises(ConfigError) as e:
        models._from_pretrained(broken, str(tiny_bert), "model")
    message = str(e.value)
    assert f"Could not load model from {tiny_bert}" in message and "SafetensorError" in message
    assert "Copy the model folder again" in message and "network" not in message


# --- labels: empty, NaN, null and None cells are refused in the file where they are -------------------------------


def custom_files(tmp: Path, train: str, train_ext: str = "csv") -> list[str]:
    (tmp / f"train.{train_ext}").write_text(train, encoding="utf-8")
    (tmp / "dev.csv").write_text("text,label\na cat sat,0\nthe dog ran,1\n", encoding="utf-8")
    return ["task=custom", f"data.train_file={tmp / f'train.{train_ext}'}", f"data.validation_file={tmp / 'dev.csv'}"]


def test_finetune_py_nan_label_in_the_training_file_is_refused_there(tmp_path, tiny_bert):
    data = custom_files(tmp_path, "text,label\na cat sat,0\nthe dog ran,1\na red house,NaN\nthe mat,1\n")
    error = refused(["finetune_teacher.py", *data, f"model.teacher_init={tiny_bert}", f"output_dir={tmp_path / 'out'}",
                     "trainer.accelerator=cpu"], tmp_path)
    assert f"error: {tmp_path / 'train.csv'}:4: missing label in column 'label' ('NaN'" in error, error
    assert "dev.csv" not in error


@pytest.mark.parametrize("cell, shown, line", [("NaN", "nan", 3), ("null", "null", 3), ('"None"', "'None'", 3),
                                               ('""', "an empty cell", 3)])
def test_missing_json_lines_label_is_refused_there(tmp_path, cell, shown, line):
    from reptiledistil.data.custom import custom_settings, load_for_training

    data = custom_files(tmp_path, '{"text": "a cat", "label": 0}\n\n{"text": "a dog", "label": %s}\n'
                        '{"text": "the mat", "label": 1}\n' % cell, "jsonl")
    s = custom_settings({"train_file": data[1].split("=", 1)[1], "validation_file": data[2].split("=", 1)[1],
                         "text_columns": ["text"], "label_column": "label"})
    with pytest.raises(ConfigError, match=re.escape(f"train.jsonl:{line}: missing label in column 'label' ({shown};")):
        load_for_training(s)


def test_integer_json_lines_labels_stay_integers(tmp_path):
    from reptiledistil.data.custom import custom_settings, load_for_training

    data = custom_files(tmp_path, '{"text": "a cat", "label": 0}\n{"text": "a dog", "label": 1}\n', "jsonl")
    task, _ = load_for_training(custom_settings({"train_file": data[1].split("=", 1)[1], "text_columns": ["text"],
                                                 "validation_file": data[2].split("=", 1)[1],
                                                 "label_column": "label"}))
    assert task.labels == ("0", "1")  # as the CSV dev file writes them: never 0.0 and 1.0


@pytest.mark.parametrize("cell", ["", "nan", "NaN"])
def test_missing_glue_score_is_refused_with_its_line(tmp_path, cell):
    from reptiledistil.data.glue import load_split

    glue = write_glue(tmp_path / "glue_data")
    f = glue / "STS-B" / "train.tsv"
    lines = f.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t" + cell
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"STS-B/train.tsv:3: the label is missing ({cell!r})")):
        load_split(get_task("stsb"), "train", str(glue))


def test_damaged_onnx_export_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    from reptiledistil.inference import engines

    export = tmp_path / "export"
    export.mkdir()
    (export / engines.MARKER).write_text(json.dumps({"format": engines.FORMAT, "version": engines.VERSION}))
    (export / engines.MODEL_FILE).write_bytes(b"\x08\x07half a copy")
    with pytest.raises(ConfigError, match=r"model\.onnx cannot be loaded by ONNX Runtime .* truncated or damaged.*"
                                          r"Copy the export folder again, or export the model again"):
        engines.OnnxRunner(export)
