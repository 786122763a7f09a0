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
    """The method conf/method/<name>.yaml names (`_target_`): its fields read from that class and checked by the
    config's checker (core/rules.check_fields), then built with hydra.utils.instantiate, then its own checks of the
    whole config run. Light (no torch): the scripts call it while checking the config, before any library."""
    import hydra.utils
    from hydra.errors import InstantiationException
    from omegaconf import DictConfig

    from ..core.errors import ConfigError
    from ..core.rules import check_fields

    if not isinstance(cfg.get("method"), DictConfig) or "_target_" not in cfg.method:
        raise ConfigError("The config has no method to build: pass method=<name> (a conf/method/<name>.yaml with a "
                          "_target_ naming its class).")
    try:
        cls = hydra.utils.get_class(cfg.method._target_)
    except Exception as e:  # Hydra's own error types for a name it cannot import
        raise ConfigError(f"method._target_={cfg.method._target_} cannot be imported ({e}). Check "
                          f"conf/method/{cfg.method.get('name')}.yaml.") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"method._target_={cfg.method._target_} is not a reptiledistil.methods.Method.")
    values = check_fields(cfg.method, cls, "method.", typed=False)  # words normalised: share_forward=true
    try:
        method = hydra.utils.instantiate(cfg.method, **values)
    except InstantiationException as e:
        raise ConfigError(f"method={cfg.method.get('name')} cannot be built from conf/method ({e.__cause__ or e}). "
                          "Check the method.* keys against that file.") from None
    method.check(cfg)
    return method


def method_class(key: str) -> type[Method] | None:
    """The shipped class whose runs' records carry `key` as their method; None for any other."""
    return next((cls for cls in METHODS if cls.key == key), None)


__all__ = ["METHODS", "Method", "build_method", "TeacherStep", "StudentAlone", "KD", "Reptile", "MetaDistil", "method_class"]
