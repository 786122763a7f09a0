"""A setting's rule, said once beside its field: its help, and its range (numbers) or allowed words (strings).

The typed config (config.py: every key of the scripts) and the methods (methods/: each method's own fields) both
declare their fields' rules with `rule(...)` in the field's metadata and check values with `check_value`, so a
value out of range gets the same message wherever it is set. Light on purpose: no library beyond the standard one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def rule(help: str, *, low=None, high=None, low_open=False, high_open=False, choices=None) -> dict:
    """A field's metadata: its help, and its range or allowed words (read by check_value)."""
    meta = {"help": help}
    if low is not None or high is not None:
        meta["range"] = Range(low, high, low_open, high_open)
    if choices is not None:
        meta["choices"] = tuple(choices)
    return meta


KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def check_value(key: str, value, meta: dict, kind: type | None = None):
    """`value` of `key` checked against its rule; returns it, a word normalised (a command line's true arrives as a
    bool). `kind`: the type to check first, for values nothing has typed yet (a method's fields; the config's are
    typed by OmegaConf while Hydra composes). A ConfigError names the key, what it is for and the fix."""
    if kind is not None and not _is_kind(value, kind):
        raise ConfigError(f"{key}={value!r} must be {KINDS[kind]} ({meta['help']}).")
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
