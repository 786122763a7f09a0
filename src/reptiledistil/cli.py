"""Entry-point helper: a user-fixable error ends the run with its message, not a stack trace."""

from __future__ import annotations

import functools
import sys

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
