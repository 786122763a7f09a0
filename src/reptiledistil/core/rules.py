"""A setting, said once in its field: its type (the annotation), help, range (numbers) or allowed words (strings),
and whether it changes a run's result. The typed config (config/schema.py: every key of the scripts) and every
method's own fields (methods/) are declared with `setting(...)` and checked by `check_fields`, so a value out of
range gets the same message wherever it is set, and run names and a checkpoint's settings read from the same field
which keys make a run what it is. Light on purpose: dataclasses, typing and omegaconf's MISSING only.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

from omegaconf import MISSING  # "???": the value comes from the YAML in conf/

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def __contains__(self, x) -> bool:
        return ((self.low is None or (x > self.low if self.low_open else x >= self.low))
                and (self.high is None or (x < self.high if self.high_open else x <= self.high)))

    def text(self, integer: bool) -> str:
        if self.high is None:
            if integer and not self.low_open:
                return f"at least {show(self.low)}"
            return f"{'>' if self.low_open else '>='} {show(self.low)}"
        return (f"in {'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}"
                f"{')' if self.high_open else ']'}")


def rule(help: str, *, low=None, high=None, low_open=False, high_open=False, choices=None, result: bool = True,
         named: bool | None = None, keys: type | None = None) -> dict:
    """A field's metadata, everything about its setting but the type and the default:
    help; range (low, high) or allowed words (choices), checked by check_value;
    result: whether its value changes what a run computes. False for where things are and how a run is watched,
      saved or resumed: such a key is left out of the run's name and of the settings its checkpoint stores;
    named: whether an override of it goes into the run's name (default: `result`). False where the name says it
      already (task, method, ...) or it says where the run happens (the trainer's devices);
    keys: for an open node (trainer), the dataclass that declares the keys this project knows of it."""
    meta: dict[str, Any] = {"help": help, "result": result, "named": result if named is None else named}
    if low is not None or high is not None:
        meta["range"] = Range(low, high, low_open, high_open)
    if choices is not None:
        meta["choices"] = tuple(choices)
    if keys is not None:
        meta["keys"] = keys
    return meta


def setting(help: str, *, default=MISSING, **rule_kw):
    """A schema field: its rule (see rule) in its metadata; the default is the YAML's unless given."""
    return field(default=default, metadata=rule(help, **rule_kw))


def group(cls: type, help: str, **rule_kw):
    """A field holding a config group (a nested dataclass), with its own rule (result, named)."""
    return field(default_factory=cls, metadata=rule(help, **rule_kw))


def has_check(meta) -> bool:
    return "range" in meta or "choices" in meta


KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def check_fields(node, cls: type, prefix: str, *, typed: bool) -> dict:
    """Every field of the dataclass `cls` with a rule, checked in `node` (a config node or any mapping); a key the
    node lacks is left to whoever needs it. typed=False: the values' types are checked too (a method's keys, which
    nothing has typed yet; the config's are typed by OmegaConf while Hydra composes). Returns {name: value}, a word
    normalised (a command line's true arrives as a bool)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        floats = typed and not has_check(f.metadata) and _holds_floats(hints.get(f.name))
        if not (has_check(f.metadata) or floats or (not typed and "help" in f.metadata)) or f.name not in node:
            continue  # typed and without a range (asked first: its value may need a resolver that loads a library)
        value = node[f.name]
        if value == MISSING and not typed:  # a method's YAML without the field
            raise ConfigError(f"{prefix}{f.name} is not set ({f.metadata['help']}). Set it in the YAML that builds "
                              f"it, or pass {prefix}{f.name}=<value>.")
        if floats:  # no range of its own (an optimizer's lr, betas), but never inf or nan
            for x in value if isinstance(value, Sequence) and not isinstance(value, str) else [value]:
                check_value(prefix + f.name, x, {"help": f.metadata.get("help", "a number")})
            continue
        out[f.name] = check_value(prefix + f.name, value, f.metadata, kind=None if typed else hints.get(f.name))
    return out


def _holds_floats(kind) -> bool:
    """float, Optional[float] or List[float]."""
    return kind is float or float in typing.get_args(kind)


def check_value(key: str, value, meta: dict, kind=None):
    """`value` of `key` checked against its rule (and its type `kind`, if given); returns it, a word normalised.
    A ConfigError names the key, what it is for and the fix."""
    kind, optional = _unwrap(kind)
    if value is None and optional:
        return None
    if kind is not None and not _is_kind(value, kind):
        raise ConfigError(f"{key}={value!r} must be {KINDS[kind]}{', or null' if optional else ''} ({meta['help']}).")
    if value is None:
        return None
    if "choices" in meta:
        word = str(value).lower() if isinstance(value, bool) or str(value) in ("True", "False") else str(value)
        if word not in meta["choices"]:
            raise ConfigError(f"{key}={value} is not one of {', '.join(meta['choices'])} ({meta['help']}). "
                              f"Pass {key}=<{'|'.join(meta['choices'])}>.")
        return word
    if isinstance(value, float) and not math.isfinite(value):  # inf passes any open-ended range, nan none
        raise ConfigError(f"{key}={show(value)} must be a finite number ({meta['help']}).")
    rng = meta.get("range")
    if rng is not None and value not in rng:
        integer = kind is int if kind is not None else isinstance(value, int)
        raise ConfigError(f"{key}={show(value)} must be {rng.text(integer)} ({meta['help']}).")
    return value


def _unwrap(kind) -> tuple[type | None, bool]:
    """(the type, whether None is allowed) of an annotation: Optional[float] is (float, True); Any is (None, True)."""
    if kind is None or kind is Any:
        return None, True
    args = typing.get_args(kind)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return kind, False


def _is_kind(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is str:
        return isinstance(value, (str, bool))  # a word; true/false arrive as bools
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (kind is float or float(value).is_integer())


def show(x) -> str:
    """1.0 as 1, 5e-05 as 5e-05: a number as the user would type it."""
    if isinstance(x, float) and math.isfinite(x) and x.is_integer():
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)
