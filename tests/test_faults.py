"""Faults lose nothing: two runs on one folder, a file-size limit while saving, a kill during a save, overwrite=true
on the wrong folder, a checkpoint of the other script, values that are not finite. The scripts run as users run them:
in their own processes, `error: ...` and exit code 2, no traceback, and nothing lost or half-written."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import compose_cfg, quick, write_glue
from reptiledistil.core.errors import ConfigError
from reptiledistil.core.files import publish
from reptiledistil.core.lock import lock_path, owned
from reptiledistil.core.outputs import RECORD, check_output_dir, foreign_entries
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.predict import predict
from reptiledistil.pipelines.teacher import finetune
from reptiledistil.training.resume import checkpoint_path

ROOT = Path(__file__).resolve().parents[1]

# `python <script> <overrides>` in a fresh process (runpy: the real entry script, its error handling included), with
# faults patched in from the environment:
#   HOLD=<step>:<dir>    before training step <step>, write <dir>/held and wait for <dir>/go (a run still working)
#   SLOW_CKPT=<n>:<dir>  the n-th checkpoint write stops half-way: writes <dir>/saving and sleeps (to be killed)
#   SLOW_TEACHER=<dir>   the final teacher's save stops half-way (its weights cut short) likewise
DRIVER = """
import os, runpy, sys, time
from pathlib import Path

def stall(where, name):
    (Path(where) / name).touch()
    while not (Path(where) / "go").exists():
        time.sleep(0.1)

if os.environ.get("HOLD"):
    import reptiledistil.training.modules as m
    at, where = os.environ["HOLD"].split(":", 1)
    for cls in (m.DistilModule, m.TeacherModule):
        def step(self, batch, batch_idx, _orig=cls.training_step):
            if getattr(self, "outer_step", self.trainer.global_step) == int(at):
                stall(where, "held")
            return _orig(self, batch, batch_idx)
        cls.training_step = step
if os.environ.get("SLOW_CKPT"):
    import io, torch
    import reptiledistil.training.callbacks as cb
    n, where = os.environ["SLOW_CKPT"].split(":", 1)
    calls, orig = [], cb._DirectCheckpointIO.save_checkpoint
    def save(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) == int(n):
            buf = io.BytesIO()
            torch.save(checkpoint, buf)
            with open(path, "wb") as f:
                f.write(buf.getvalue()[: buf.tell() // 2])
                f.flush()
                stall(where, "saving")
        return orig(self, checkpoint, path, storage_options)
    cb._DirectCheckpointIO.save_checkpoint = save
if os.environ.get("SLOW_TEACHER"):
    from transformers import PreTrainedModel
    orig_save = PreTrainedModel.save_pretrained
    def save_pretrained(self, path, *a, **k):
        orig_save(self, path, *a, **k)
        if Path(path).name.startswith(".teacher.tmp-"):
            weights = Path(path) / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            stall(os.environ["SLOW_TEACHER"], "saving")
    PreTrainedModel.save_pretrained = save_pretrained
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env(**faults) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline", **faults}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def start(script: str, args: list[str], cwd: Path, file_size_limit: int | None = None, **faults) -> subprocess.Popen:
    def limit():  # in the child only: RLIMIT_FSIZE makes a longer write fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.Popen([sys.executable, "-c", DRIVER, str(ROOT / script), *args,
                             f"hydra.run.dir={cwd / 'hydra'}"], cwd=cwd, env=_env(**faults), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if file_size_limit else None)


def run(script: str, args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    p = start(script, args, cwd, **kw)
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {path.name}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() - t0 < timeout, f"no {path.name} after {timeout} s"
        time.sleep(0.1)


def answered(res: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a run that must stop with an answer: exit 2, no traceback."""
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


def train_args(env, tiny_bert: Path, tmp: Path, out: Path | str, *extra: str, glue: Path | None = None) -> list[str]:
    teacher_tmp, teacher_glue = env
    return quick(tmp, glue or teacher_glue) + ["task=rte", "batch_size=4", "epochs=2", "trainer.precision=32-true",
                               f"teacher_dir={teacher_tmp / 'teacher'}", "model.student.start=pretrained",
                               f"model.student.source={tiny_bert}", "model.student.num_layers=2", f"output_dir={out}",
                               *extra]


def leftovers(*folders: Path) -> list[str]:
    return [str(p) for d in folders if d.is_dir() for p in d.rglob("*") if ".tmp" in p.name]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def history(out: Path) -> list:
    return json.loads((out / "metrics.json").read_text())["history"]


# --- a run owns its output folder ----------------------------------------------------------------------------------


def test_a_second_run_is_refused_while_the_first_works_and_a_folder_that_appears_is_not_replaced(rte_teacher,
                                                                                               tiny_bert, tmp_path):
    out = tmp_path / "run"
    first = start("train.py", train_args(rte_teacher, tiny_bert, tmp_path, out, "alpha=0.3"), tmp_path,
                  HOLD=f"3:{tmp_path}")
    try:
        wait_for(tmp_path / "held", first)
        second = run("train.py", train_args(rte_teacher, tiny_bert, tmp_path, out, "method=kd", "alpha=0.9"), tmp_path)
        error = answered(second)
        assert error.startswith(f"error: another run (pid {first.pid} on host {socket.gethostname()}, started "), error
        assert f") is writing {out.resolve()}. " in error
        assert "layer mapping" not in second.stdout  # refused before any model was loaded
        (out / "thesis").mkdir(parents=True)  # the folder appears while the first run trains
        (out / "thesis" / "notes.txt").write_text("mine")
        (tmp_path / "go").touch()
        stdout, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    error = answered(subprocess.CompletedProcess(first.args, first.returncode, stdout, stderr))
    assert f"error: {out.resolve()} appeared while this run was working, and was left as it is" in error
    assert "resume=true" in error
    assert (out / "thesis" / "notes.txt").read_text() == "mine" and sorted(os.listdir(out)) == ["thesis"]
    assert (tmp_path / ".run.partial" / "student" / "model.safetensors").is_file()  # its results are kept
    assert not lock_path(out).exists()


HOLDER = """
import sys, time
from pathlib import Path
from reptiledistil.core.lock import owned
with owned(sys.argv[1], Path(sys.argv[2]) if sys.argv[2] else None):
    print("held", flush=True)
    time.sleep(300)
"""


def hold(folder: Path, lock: Path | None = None) -> subprocess.Popen:
    """Another process that owns `folder` (as a run does) until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(lock or "")], stdout=subprocess.PIPE,
                         text=True, env=_env())
    assert p.stdout.readline() == "held\n"
    return p


@pytest.mark.parametrize("script", ["finetune_teacher", "train", "predict", "train resume=<another run's>"])
def test_a_folder_another_process_owns_is_refused_before_loading(script, rte_teacher, tiny_bert, tmp_path, capsys):
    teacher_tmp, glue = rte_teacher
    out = tmp_path / "out"
    if script == "predict":
        args = ["task=rte", f"model_dir={teacher_tmp / 'teacher'}", f"output_dir={out}", f"data.glue_dir={glue}"]
        lock, owner = out / ".predict.lock", out
    else:
        args, lock, owner = train_args(rte_teacher, tiny_bert, tmp_path, out), None, out
        if script == "finetune_teacher":
            args = quick(tmp_path, glue) + ["task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={out}"]
        if script.startswith("train resume"):  # the runs share only the checkpoint: the other run's
            owner = tmp_path / "other"
            checkpoint_path(owner).parent.mkdir(parents=True)
            torch.save({}, checkpoint_path(owner))
            args += [f"resume={checkpoint_path(owner)}"]
    holder = hold(owner, lock)
    run_fn = {"finetune_teacher": finetune, "predict": predict}.get(script, distil)
    cfg = compose_cfg(script.split()[0], args)
    try:
        with pytest.raises(ConfigError, match=rf"another run \(pid {holder.pid} on host .*, started .*\) is writing "
                                              rf"{owner.resolve()}\. Wait for it to finish or stop it"):
            run_fn(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out" / "student").exists() and not (out / "RTE.tsv").exists()
    with owned(owner, lock):  # the owner died: its lock is taken over, saying so
        pass
    assert f"taking over {owner.resolve()}: the run that held it (pid {holder.pid} on host " in capsys.readouterr().out


# --- a failed write is an answer -------------------------------------------------------------------------------


def test_a_file_size_limit_while_saving_the_model_is_an_answer(rte_teacher, tiny_bert, tmp_path):
    _, glue = rte_teacher
    out = tmp_path / "teacher"
    args = quick(tmp_path, glue) + ["task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={out}"]
    res = run("finetune_teacher.py", args, tmp_path, file_size_limit=1_000_000)  # the weights are 4 MB
    error = answered(res)
    assert error.startswith(f"error: could not write {tmp_path / '.teacher.partial'}: the file would be larger than "
                            "this process may write (ulimit -f)"), error
    assert "Nothing half-written is left, but no checkpoint had been completed yet: raise the file-size limit" in error
    assert not out.exists() and not (tmp_path / ".teacher.partial").exists()
    assert not (tmp_path / ".teacher.checkpoint").exists() and not lock_path(out).exists()


# --- a killed save: the previous checkpoint stays, and the resume is exact -----------------------------------------


@pytest.fixture(scope="module")
def reference(rte_teacher, tiny_bert, tmp_path_factory):
    """An uninterrupted run, to compare resumed runs with."""
    tmp = tmp_path_factory.mktemp("reference")
    res = run("train.py", train_args(rte_teacher, tiny_bert, tmp, tmp / "run", "checkpoint_every_n_steps=2"), tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "run"


def kill_while_saving(proc: subprocess.Popen, where: Path) -> None:
    try:
        wait_for(where / "saving", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()


def test_a_kill_during_a_checkpoint_save_keeps_the_last_one_then_a_full_file_system_then_an_exact_resume(
        rte_teacher, tiny_bert, tmp_path, reference):
    out = tmp_path / "run"
    args = train_args(rte_teacher, tiny_bert, tmp_path, out, "checkpoint_every_n_steps=2")
    ckpt = checkpoint_path(out)
    # Checkpoints at steps 2, 4, 6 (the end of epoch 1), 8: killed half-way through writing the one of step 8.
    proc = start("train.py", args, tmp_path, SLOW_CKPT=f"4:{tmp_path}")
    kill_while_saving(proc, tmp_path)
    before = ckpt.read_bytes()
    assert torch.load(ckpt, weights_only=True, mmap=True)["global_step"] > 0  # the last one is whole
    assert leftovers(ckpt.parent)  # the half-written file the kill left

    # Resumed where no file over 1 MB can be written: its first checkpoint fails, and says what it kept.
    res = run("train.py", [*args, "resume=true"], tmp_path, file_size_limit=1_000_000)
    assert "taking over" in res.stdout and "is no longer running" in res.stdout
    error = answered(res)
    assert error.startswith(f"error: could not write {ckpt}: the file would be larger than this process may write")
    assert (f"Nothing half-written is left; the last complete checkpoint is kept, {ckpt.resolve()} (saved " in error
            and "raise the file-size limit, then run the same command plus resume=true to continue from it." in error)
    assert ckpt.read_bytes() == before and not leftovers(ckpt.parent, tmp_path / ".run.partial")

    res = run("train.py", [*args, "resume=true"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for model in ("student", "teacher"):
        same_weights(reference / model, out / model)
    assert history(reference) == history(out)
    assert not leftovers(out) and not ckpt.parent.exists()


def test_a_kill_during_the_final_teacher_save_resumes_exactly(rte_teacher, tiny_bert, tmp_path, reference):
    out = tmp_path / "run"
    args = train_args(rte_teacher, tiny_bert, tmp_path, out, "checkpoint_every_n_steps=2")
    proc = start("train.py", args, tmp_path, SLOW_TEACHER=str(tmp_path))
    kill_while_saving(proc, tmp_path)
    assert leftovers(tmp_path / ".run.partial") and not out.exists()  # the half-written teacher, never published
    res = run("train.py", [*args, "resume=true"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for model in ("student", "teacher"):
        same_weights(reference / model, out / model)
    assert history(reference) == history(out) and not leftovers(out)


# --- overwrite=true replaces only a previous run's results ----------------------------------------------------------


def test_overwrite_true_over_a_folder_of_foreign_files_is_refused(rte_teacher, tiny_bert, tmp_path):
    out = tmp_path / "mine"
    (out / "thesis").mkdir(parents=True)
    (out / "thesis" / "notes.txt").write_text("notes")
    (out / "data.csv").write_text("a,b\n")
    res = run("train.py", train_args(rte_teacher, tiny_bert, tmp_path, out, "overwrite=true"), tmp_path)
    error = answered(res)
    assert (f"error: output_dir={out} holds files this project did not write (data.csv, thesis/); overwrite=true "
            "replaces only a previous run's results. Move them away, or choose another output_dir=<dir>.") == error
    assert "layer mapping" not in res.stdout
    assert (out / "thesis" / "notes.txt").read_text() == "notes" and (out / "data.csv").read_text() == "a,b\n"
    assert sorted(os.listdir(tmp_path)) == ["hydra", "mine"]


def test_overwrite_true_replaces_a_previous_result_but_not_a_file_added_to_it(tmp_path):
    stage, out = tmp_path / ".out.partial", tmp_path / "out"
    (stage / "student").mkdir(parents=True)
    (stage / "student" / "model.safetensors").write_text("w")
    (stage / "metrics.json").write_text("{}")
    publish(stage, out, False)
    assert json.loads((out / RECORD).read_text())["files"] == ["metrics.json", "student/model.safetensors"]
    assert foreign_entries(out) == [] and check_output_dir(out, True) == out
    (out / "student" / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    assert foreign_entries(out) == ["plots/", "student/notes.txt"]
    with pytest.raises(ConfigError, match=r"holds files this project did not write \(plots/, student/notes.txt\)"):
        check_output_dir(out, True)
    legacy = tmp_path / "legacy"  # published before folders recorded their files: recognised by name
    legacy.mkdir()
    for name in ("dev_metrics.json", "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        (legacy / name).write_text("x")
    assert foreign_entries(legacy) == []
    (legacy / "notes.txt").write_text("mine")
    assert foreign_entries(legacy) == ["notes.txt"]


@pytest.mark.parametrize("case", ["empty", "working directory", "its parent", "teacher's parent", "data's parent"])
def test_a_folder_a_run_must_never_replace_is_refused_outright(case, rte_teacher, tiny_bert, tmp_path, monkeypatch):
    teacher_tmp, _ = rte_teacher
    glue = write_glue(tmp_path / "data" / "glue_data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    output_dir, says = {"empty": ("", "output_dir is empty, which would mean the working directory"),
                        "working directory": (".", "is the working directory"),
                        "its parent": ("..", "is a folder holding the working directory"),
                        "teacher's parent": (str(teacher_tmp), f"holds teacher_dir={(teacher_tmp / 'teacher')}"),
                        "data's parent": (str(glue.parent), f"holds data.glue_dir={glue}")}[case]
    for overwrite in ("false", "true"):
        cfg = compose_cfg("train", train_args(rte_teacher, tiny_bert, tmp_path, output_dir, f"overwrite={overwrite}",
                                              glue=glue))
        with pytest.raises(ConfigError, match=r"Pass output_dir=<a folder") as e:
            distil(cfg)
        assert says in str(e.value)
    assert os.listdir(work) == [] and (teacher_tmp / "teacher" / "model.safetensors").is_file()


# --- a checkpoint of the other script, or not a checkpoint ----------------------------------------------------------


@pytest.mark.parametrize("written_by, script", [("train", "finetune_teacher"), ("finetune_teacher", "train")])
def test_a_checkpoint_of_the_other_script_is_named_as_such(written_by, script, rte_teacher, tiny_bert, tmp_path):
    _, glue = rte_teacher
    ckpt = tmp_path / "other.ckpt"
    torch.save({"callbacks": {"ResumableCheckpoint": {"identity": {"script": written_by}, "settings": {"alpha": 0.5}}}},
               ckpt)
    args = (train_args(rte_teacher, tiny_bert, tmp_path, tmp_path / "out") if script == "train" else
            quick(tmp_path, glue) + ["task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError) as e:
        (distil if script == "train" else finetune)(compose_cfg(script, [*args, f"resume={ckpt}"]))
    what = "a distillation" if written_by == "train" else "a teacher's fine-tuning"
    assert str(e.value) == (f"Checkpoint {ckpt} was written by {written_by}.py ({what}), not by {script}.py: continue "
                            f"it with python {written_by}.py <its settings> resume={ckpt}, or drop resume= to start "
                            "this run afresh.")
    torch.save({"state_dict": {}}, ckpt)
    with pytest.raises(ConfigError, match=r"is a torch file but not a checkpoint of this project's train.py or "
                                          r"finetune_teacher.py, so it cannot be resumed from: pass resume="):
        (distil if script == "train" else finetune)(compose_cfg(script, [*args, f"resume={ckpt}"]))


# --- the typed config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, says", [
    ("hparams_search=foo", "error: In 'train': Could not find 'hparams_search/foo'. Available options in "
                           "'hparams_search': optuna. Pick one of them: hparams_search=<option>."),
    ("temperature=inf", "error: temperature=inf must be a finite number (the softmax temperature of the KD term"),
])
def test_an_unknown_search_or_a_value_that_is_not_finite_is_refused(override, says, tmp_path):
    res = run("train.py", [override], tmp_path)
    assert answered(res).startswith(says)


def test_what_counts_as_a_failed_write(tmp_path, monkeypatch):
    import errno

    from reptiledistil.core.faults import WriteFailed, saving, write_fault

    from reptiledistil.core.files import write_atomic

    assert str(write_fault(OSError(errno.ENOSPC, "No space left on device", "/x/m.bin"))) == (
        "could not write /x/m.bin: no space is left on the device.")
    safetensors_error = Exception("Error while serializing: I/O error: File too large (os error 27)")
    assert write_fault(safetensors_error, tmp_path / "m").cause.startswith("the file would be larger than")
    try:  # torch.save into a file that cannot grow: a RuntimeError raised while handling the OSError
        try:
            raise OSError(errno.EROFS, "Read-only file system")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 704 vs 598")
    except RuntimeError as e:
        assert write_fault(e, tmp_path / "ckpt").cause == "the file system is read-only"
    assert write_fault(PermissionError(errno.EACCES, "denied", "/x")) is None  # unnamed: may be a read
    assert write_fault(ConfigError("bad alpha")) is None and write_fault(ValueError("x")) is None
    with pytest.raises(WriteFailed, match=r"could not write .*notes.txt: no space is left"):
        with saving(tmp_path / "notes.txt"):
            raise OSError(errno.ENOSPC, "No space left on device")
    write_atomic(tmp_path / "f.txt", "old")

    def read_only(*a):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(WriteFailed, match=r"could not write .*f.txt: the file system is read-only"):
        write_atomic(tmp_path / "f.txt", "new")
    assert os.listdir(tmp_path) == ["f.txt"] and (tmp_path / "f.txt").read_text() == "old"
