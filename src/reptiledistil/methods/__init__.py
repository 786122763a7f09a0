"""The distillation methods, one module each on methods/base.py; conf/method/<name>.yaml builds one."""

from __future__ import annotations

from .base import Method, TeacherStep
from .student_alone import StudentAlone
from .kd import KD
from .metadistil import MetaDistil
from .reptile import Reptile

# The methods this package ships, in the order reports show them (a tests-only or user method need not be here:
# train.py builds whatever class conf/method/<name>.yaml names).
METHODS: tuple[type[Method], ...] = (StudentAlone, KD, Reptile, MetaDistil)


def build_method(cfg) -> Method:
    """The method conf/method/<name>.yaml names (`_target_`), built with hydra.utils.instantiate: its fields are
    checked by the config's checker as it is built (Method.__post_init__), then its own checks of the whole config
    run. Light (no torch): the scripts call it while checking the config, before any library."""
    import hydra.utils
    from hydra.errors import InstantiationException
    from omegaconf import DictConfig

    from ..core.errors import ConfigError

    if not isinstance(cfg.get("method"), DictConfig) or "_target_" not in cfg.method:
        raise ConfigError("The config has no method to build: pass method=<name> (a conf/method/<name>.yaml with a "
                          "_target_ naming its class).")
    try:
        method = hydra.utils.instantiate(cfg.method)
    except InstantiationException as e:  # Hydra wraps the class's own ConfigError: show that one
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"method={cfg.method.get('name')} cannot be built from conf/method ({cause or e}). "
                          "Check the method.* keys against that file.") from None
    if not isinstance(method, Method):
        raise ConfigError(f"method._target_={cfg.method._target_} is not a reptiledistil.methods.Method.")
    method.check(cfg)
    return method


def method_class(key: str) -> type[Method] | None:
    """The shipped class whose runs' records carry `key` as their method; None for any other."""
    return next((cls for cls in METHODS if cls.key == key), None)


__all__ = ["METHODS", "Method", "build_method", "TeacherStep", "StudentAlone", "KD", "Reptile", "MetaDistil", "method_class"]
