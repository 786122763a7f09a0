"""Where an interrupted run left its checkpoint, and whether that checkpoint belongs to this run."""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from ..config.schema import flags_of
from ..core.errors import ConfigError


def checkpoint_path(output_dir: str | Path) -> Path:
    """The resumable checkpoint of a run: `.<output_dir>.checkpoint/last.ckpt`, beside its staging folder
    (`.<output_dir>.partial/`, which a teacher's best-on-dev save replaces wholesale)."""
    out = Path(output_dir)
    return out.parent / f".{out.name}.checkpoint" / "last.ckpt"


def checkpoint_owner(path: Path) -> Path | None:
    """The output folder of the run whose checkpoint `path` is (`<dir>/.<name>.checkpoint/last.ckpt` -> <dir>/<name>);
    None for a checkpoint file kept anywhere else."""
    folder = Path(path).parent
    if folder.name.startswith(".") and folder.name.endswith(".checkpoint") and len(folder.name) > len("..checkpoint"):
        return folder.parent / folder.name[1:-len(".checkpoint")]
    return None


def resume_request(value) -> bool | Path:
    """resume=false | true | <checkpoint file>."""
    text = str(value).strip()
    if text.lower() in ("false", "none", "null", ""):
        return False
    if text.lower() == "true":
        return True
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"resume={text}: no such checkpoint file. Pass resume=true to continue from the "
                          "output directory's own checkpoint, or the path of a .ckpt file.")
    return path


def describe(path: Path) -> str:
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return f"{path} (saved {when})"


# A checkpoint stores every setting that changes what a run computes, as its field in the schema says
# (config/schema.flags_of): not where things are (a run moved to another machine or folder resumes; what the models
# are is checked by shape, `identity`, after loading), how it is watched, saved or resumed, or speed knobs that leave
# the training steps alone. The accelerator and precision are stored resolved (auto is bf16 on one machine, fp32
# on another; the accelerator also decides method.share_forward=auto). Everything else, keys a later version adds
# included, is stored: a difference refuses the resume rather than train half a run with each value and record
# only the second.


def run_settings(cfg, resolved: dict | None = None) -> dict:
    """The settings that decide a run's result, as {dotted key: value}: stored in its checkpoint, compared on resume.

    A key whose value is an interpolation (epochs: ${model.distil.epochs}, the optimizers' lr) is left out: its
    source key is compared, so a difference is named once, where the user set it. `resolved`: values that replace
    the configured ones, e.g. {"trainer.precision": "32-true"} for trainer.precision=auto.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
            name = f"{prefix}{key}"
            if not flags_of(name)[0] or OmegaConf.is_interpolation(node, key):
                continue
            value = node[key]
            if isinstance(value, DictConfig):
                walk(value, name + ".")
            else:  # a list is one value (betas: [0.9, 0.999])
                out[name] = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
    walk(cfg, "")
    return {**out, **(resolved or {})}


# What to do with a checkpoint that cannot be resumed (the end of one sentence).
START_AGAIN = ("pass resume=<another checkpoint>, or start the run again without resume (adding overwrite=true if "
               "its output folder holds an unfinished run)")
SCRIPTS = {"train": "train.py (a distillation)", "finetune_teacher": "finetune_teacher.py (a teacher's fine-tuning)"}


def saved_state(path: Path) -> dict:
    """ResumableCheckpoint's part of a checkpoint (its identity and settings), read once before any model loads.
    mmap: the tensors (both networks, optimizers) are not read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # cut short (a copy that did not finish), damaged, or not a torch file at all
        why = str(e).split(". ")[0][:100]
        raise ConfigError(f"Checkpoint {path} is truncated or corrupt ({type(e).__name__}: {why}), so it "
                          f"cannot be resumed from: {START_AGAIN}.") from None
    callbacks = ckpt.get("callbacks") if isinstance(ckpt, dict) else None
    state = next((v for v in (callbacks or {}).values() if isinstance(v, dict) and "identity" in v), None)
    if state is None:
        raise ConfigError(f"{path} is a torch file but not a checkpoint of this project's train.py or "
                          f"finetune_teacher.py, so it cannot be resumed from: {START_AGAIN}.")
    return state


def check_settings(path: Path, state: dict, settings: dict, script: str) -> None:
    """Refuse to continue a checkpoint of the other script (`script`: train or finetune_teacher), or one written with
    other settings: the run would train half with each and record only the new ones. `state`: saved_state(path),
    read before any model is loaded."""
    written_by = state.get("identity", {}).get("script")
    if written_by in SCRIPTS and written_by != script:
        raise ConfigError(f"Checkpoint {path} was written by {SCRIPTS[written_by]}, not by {script}.py: continue it "
                          f"with python {written_by}.py <its settings> resume={path}, or drop resume= to start this "
                          "run afresh.")
    saved = state.get("settings")
    if saved is None:  # written before checkpoints stored their settings: nothing to compare
        print(f"warning: checkpoint {path} does not record its settings; resuming it assumes they are unchanged.")
        return
    diffs = [f"{k}: {_show(saved.get(k, _UNSET))} in the checkpoint, {_show(settings.get(k, _UNSET))} now"
             for k in sorted(set(saved) | set(settings)) if saved.get(k, _UNSET) != settings.get(k, _UNSET)]
    if diffs:
        raise ConfigError(f"Checkpoint {path} was written with other settings: {'; '.join(diffs)}. Resume with the "
                          "settings it was written with, or pass overwrite=true (without resume) to start the run "
                          "again with the new ones.")


_UNSET = object()  # a key one side has and the other lacks (method.update: reptile only)


def _show(value) -> str:
    return "not set" if value is _UNSET else "null" if value is None else str(value)


def check_identity(path: Path, state: dict, identity: dict) -> None:
    """Refuse a checkpoint written by another task, method or model shape (`state`: saved_state(path))."""
    saved = state["identity"]
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {v!r}" for k, v in identity.items() if saved.get(k) != v]
    if diffs:
        raise ConfigError(f"Checkpoint {path} belongs to another run ({'; '.join(diffs)}). Resume with the "
                          "settings it was written with, or pass overwrite=true to start over.")
