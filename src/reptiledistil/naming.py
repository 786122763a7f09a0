"""Run names: one spelling per setting, and every swept value in the name, so no two sweep jobs share a folder.

conf/train.yaml names a run  model/<task>/<method>-<strategy>-a<alpha>-T<temperature><extra>  where <extra>
lists every other command-line override that changes the result (`-seed2-student_lr0.0001`), sorted;
paths are left out (they say where things are, and would make unusable folder names).
Numbers are written one way (`5`, `5.0` and `5.00` are all `5`), so the same setting is never trained twice
under two names and predict.py's default path finds it.
"""

from __future__ import annotations

# Overrides that say where things go or how they are shown, not what is trained: never part of a name.
NOT_IN_NAME = ("task", "method", "strategy", "alpha", "temperature", "output_dir", "teacher_dir", "log_dir",
               "overwrite", "resume", "save_teacher", "data.glue_dir", "data.num_workers", "logger", "hydra",
               "trainer.enable_progress_bar", "trainer.devices", "trainer.accelerator", "trainer.num_nodes",
               "trainer.strategy", "trainer", "trainer.log_every_n_steps", "checkpoint_every_n_steps", "eval_batch_size",
               # task=custom: which data (like task=), so finetune_teacher.py, train.py and predict.py agree on paths
               "data.train_file", "data.validation_file", "data.test_file", "data.text_columns", "data.label_column",
               "data.id_column", "data.task_type")


def format_number(value) -> str:
    """`5.0` -> `5`, `0.50` -> `0.5`, `1e-4` -> `0.0001`; anything that is not a number is returned as is."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.10f}".rstrip("0") if abs(f) >= 1e-4 else f"{f:g}"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def name_suffix(overrides: list[str]) -> str:
    """`-<key><value>` for every override that changes the run (values as format_number writes them)."""
    parts = []
    for o in sorted(overrides, key=_key):
        key = _key(o)
        raw = o.split("=", 1)[1] if "=" in o else ""
        if "=" not in o or "/" in raw or key in NOT_IN_NAME or key.startswith(("hydra.", "logger.")):
            continue  # paths (and hub ids) say where a model comes from, and would make unusable folder names
        value = format_number(raw).replace(" ", "")
        parts.append(f"-{key}{value}")  # no "=": a path holding one could not be passed back as key=value
    return "".join(parts)


def current_overrides() -> list[str]:
    """The command line's overrides of the running Hydra job (empty outside a Hydra run, e.g. in tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def preset_override() -> str | None:
    """The command line's `model=<preset>`, if any: finetune_teacher.py names the teacher's folder after it."""
    return next((o for o in current_overrides() if _key(o) == "model"), None)


def teacher_suffix() -> str:
    """The end of train.py's default teacher_dir: `-model<preset>` when model=<preset> is given, so that train.py
    finds the teacher finetune_teacher.py wrote with the same preset (conf/finetune_teacher.yaml names it so).
    Only the preset: the teacher's own settings (lr, seed, ...) are not train.py's, so such a teacher is passed
    as teacher_dir=..."""
    preset = preset_override()
    return name_suffix([preset]) if preset else ""


def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


def run_suffix() -> str:
    return name_suffix(current_overrides())


def sweep_group(default: str) -> str:
    """W&B group: the sweep's folder (`multirun/<date>/<time>` -> `<date>/<time>`) in a multirun, else `default`."""
    if not is_multirun():
        return default
    from hydra.core.hydra_config import HydraConfig

    parts = str(HydraConfig.get().sweep.dir).rstrip("/").split("/")
    return "/".join(parts[-2:])


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]
