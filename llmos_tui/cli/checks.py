"""Checks of option values, before any work starts: one clear line and exit code 2 (bad usage).

argparse's own ``type=int`` prints the whole usage on a bad value; options checked here take
text and are read with these helpers instead, so the operator sees one line naming the option,
the value and what it must be."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

USAGE = 2  # the exit code of a bad option value


class BadOption(ValueError):
    """An option value that cannot be used; the message is the one line the operator sees."""


def bad_usage(command: str, problem: BadOption) -> int:
    print(f"llmos-tui {command}: error: {problem}", file=sys.stderr)
    return USAGE


def integer(text: str | int | None, option: str, *, minimum: int, default: int | None = None) -> int | None:
    """``text`` as a whole number >= ``minimum`` (None: ``default``)."""
    if text is None:
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        raise BadOption(f"{option} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise BadOption(f"{option} must be at least {minimum}, got {value}")
    return value


def number(text: str | float | None, option: str, *, minimum: float, above: bool = False,
           default: float | None = None) -> float | None:
    """``text`` as a finite number >= ``minimum`` (> with ``above``); None: ``default``."""
    if text is None:
        return default
    try:
        value = float(str(text).strip())
    except ValueError:
        raise BadOption(f"{option} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise BadOption(f"{option} must be a finite number, got {text!r}")
    if value < minimum or (above and value == minimum):
        raise BadOption(f"{option} must be {'above' if above else 'at least'} {minimum:g}, got {value:g}")
    return value


def readable_file(text: str | os.PathLike[str] | None, option: str) -> Path | None:
    """``text`` as a file that exists and can be read (None stays None)."""
    if text is None:
        return None
    path = Path(text).expanduser()
    if not path.exists():
        raise BadOption(f"{option}: no such file: {path}")
    if not path.is_file():
        raise BadOption(f"{option}: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise BadOption(f"{option}: {path} cannot be read (permission denied)")
    return path
