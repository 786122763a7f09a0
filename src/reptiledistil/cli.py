"""Entry-point helpers: what the scripts set up before Hydra runs, and user-fixable errors as messages.

Light on purpose (no torch, transformers or Lightning): the scripts import reptiledistil.run inside their task
function, so a mistyped key or option is answered in a second, not after the libraries have loaded.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from pathlib import Path

from .errors import ConfigError

# Set while a script runs under run_entry_point: whether the task function has started (Hydra's own errors come
# before), and whether HYDRA_FULL_ERROR was set here rather than by the user.
_state = {"task_started": False, "full_error_set_here": False}


def report_errors(fn):
    """The scripts' task function: a ConfigError becomes `error: ...` and exit code 2. The composed config is checked
    (config.check_config), then the libraries are quietened, when the task starts (after Hydra has composed it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _state["task_started"] = True
        if _state["full_error_set_here"]:  # from here on, Hydra reports a crash its usual way (exit code 1)
            os.environ.pop("HYDRA_FULL_ERROR", None)
            _state["full_error_set_here"] = False
        try:
            if args:  # ranges, allowed words and keys this script does not use: before any library loads
                from .config import check_config

                check_config(args[0])
            quiet_libraries()
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def quiet_libraries() -> None:
    """Keep the console to what the user acts on: training progress, results, warnings about their run.

    Silenced: library deprecation notices, transformers' load report (the task head is new by design) and
    its weight-loading bars, datasets' tokenisation bars, Lightning's device/seed/tip banners.
    """
    import datasets
    import lightning_fabric  # noqa: F401  (their imports set their loggers to INFO: import first, then set)
    import pytorch_lightning  # noqa: F401
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # Dev sets are small: keeping STS-B's predictions for Spearman is by design.
    warnings.filterwarnings("ignore", message=r"Metric `SpearmanCorrcoef` will save all targets")


def _minilm_dir() -> str:
    from .models import minilm_dir  # torch and transformers: imported only when a config uses the preset

    return minilm_dir()


def _mpnet_dir() -> str:
    from .models import mpnet_dir

    return mpnet_dir()


def register_resolvers() -> None:
    """`${minilm_dir:}` and `${mpnet_dir:}` (conf/model/), `${num:x}`, `${run_suffix:}` and `${teacher_suffix:}`
    (run names, naming.py), `${sweep_group:}` and `${basename:}` (logger names), and the scripts' schemas
    (config.py, `<script>_schema`).
    Called by the entry scripts (and tests) before Hydra composes a config."""
    from omegaconf import OmegaConf

    from .config import register_schemas

    register_schemas()

    from .naming import basename, format_number, run_suffix, sweep_group, teacher_suffix

    for name, fn in (("minilm_dir", _minilm_dir), ("mpnet_dir", _mpnet_dir), ("num", format_number),
                     ("run_suffix", run_suffix), ("teacher_suffix", teacher_suffix), ("sweep_group", sweep_group),
                     ("basename", basename)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def setup_entry_point() -> None:
    """What train.py, finetune_teacher.py and predict.py do before Hydra composes their config."""
    register_resolvers()


def run_entry_point(hydra_main) -> None:
    """Run a script's @hydra.main function (itself wrapped in report_errors) with Hydra's own errors as
    `error: ...` and exit code 2, like every other bad input: an unknown key (alpah=0.3), an unknown config group
    option (task=foo), an override that does not parse, a Hydra log folder that cannot be created.

    Hydra prints those itself and exits 1; with HYDRA_FULL_ERROR=1 it raises them instead, so that is set until the
    task function starts (report_errors unsets it: a crash during the run is reported by Hydra as usual). A user's
    own HYDRA_FULL_ERROR=1 is left alone: then every error is raised with its full stack trace.
    """
    setup_entry_point()
    if os.environ.get("HYDRA_FULL_ERROR") is None:
        os.environ["HYDRA_FULL_ERROR"] = "1"
        _state["full_error_set_here"] = True
    _state["task_started"] = False
    try:
        hydra_main()
    except Exception as e:
        message = None if _state["task_started"] or not _state["full_error_set_here"] else hydra_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        if _state["full_error_set_here"]:
            os.environ.pop("HYDRA_FULL_ERROR", None)
            _state["full_error_set_here"] = False


def hydra_error_message(e: Exception) -> str | None:
    """What Hydra failed on before the run started, and how to fix it; None: not a configuration problem."""
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    script = Path(sys.argv[0]).name or "train.py"
    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, OSError) and not isinstance(e, HydraException):  # MissingConfigException is an OSError too
        # creating the run folder (outputs/<date>/<time>) or its .hydra/ and log files
        where = e.filename or "Hydra's log folder"
        return (f"cannot write Hydra's log folder {where} ({e.strerror or e}). Run from a writable folder, or pass "
                "hydra.run.dir=<a writable dir> (hydra.sweep.dir=<a writable dir> with -m).")
    if not isinstance(e, (HydraException, OmegaConfBaseException)):
        return None
    typed = _typed_config_message(e, script)
    if typed is not None:
        return typed
    key = re.match(r"Could not override '([^']+)'", str(e))
    if key and isinstance(e.__cause__, (ConfigAttributeError, ConfigKeyError)):
        return (f"Could not override {key.group(1)!r}: the config has no such key. Check its spelling; "
                f"python {script} --cfg job prints every key and its value.")
    text = _one_paragraph(str(e).split("Config search path:")[0])
    group = re.search(r"Could not find '([^'/]+)/", text)
    if group:
        return f"{text}. Pick one of them: {group.group(1)}=<option>."
    return f"{text}. Check the override (python {script} --help lists the config groups, --cfg job every key)."


def _typed_config_message(e: Exception, script: str) -> str | None:
    """A value the schema (config.py) refuses while Hydra composes: a wrong type (alpha=abc, batch_size=8.0), or a
    key predict.py does not have (+trainer=gpu)."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    from .config import NOT_IN_PREDICT, type_error_message

    cause = e if isinstance(e, (ValidationError, ConfigKeyError)) else e.__cause__
    override = re.match(r"Error merging override (\S+?)=(.*)$", str(e).splitlines()[0]) if cause is not e else None
    if isinstance(cause, ValidationError) and "${hydra:" in str(cause):  # --cfg job --resolve: no run folder yet
        key = getattr(cause, "full_key", None) or "a key"
        return (f"{key} comes from Hydra's run folder, which --cfg does not create, so --resolve cannot show it. "
                f"Drop --resolve, or pass {key}=<a folder> as well.")
    if isinstance(cause, ValidationError) and not str(cause).startswith("Merge error"):
        return type_error_message(cause, override.group(2) if override else None,
                                  override.group(1).lstrip("+~") if override else None)
    missing = re.search(r"Key '([^']+)' not in 'PredictConfig'", str(e))
    if missing and missing.group(1) in NOT_IN_PREDICT:
        return f"{missing.group(1)}: {NOT_IN_PREDICT[missing.group(1)]}."
    return None


def _one_paragraph(text: str) -> str:
    """Hydra's multi-line message on one line; an indented list ('Available options in ...') joined by commas."""
    parts: list[str] = []
    for line in text.splitlines():
        item = line.strip()
        if not item:
            continue
        if line[:1] in ("\t", " ") and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + item
        else:
            parts.append(item.rstrip("."))
    return ". ".join(parts)
