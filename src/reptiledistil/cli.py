"""Entry-point helpers: what the scripts set up before Hydra runs, and user-fixable errors as messages."""

from __future__ import annotations

import functools
import logging
import sys
import warnings

from .errors import ConfigError


def report_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
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


def setup_entry_point() -> None:
    """What train.py, finetune_teacher.py and predict.py do before Hydra composes their config."""
    from .run import register_resolvers

    register_resolvers()
    quiet_libraries()
