"""Times as operators type them (``10m``, ``2h``, ``1d``, an ISO date) and as the journal shows them."""

from __future__ import annotations

import re
import time
from datetime import datetime

from llmos_tui.errors import JournalError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds for ``10m`` / ``2h`` / ``1d`` / ``1w`` ago, or for an ISO date or datetime.

    An ISO time without a zone is local time, as the operator reads the clock.
    """
    now = time.time() if now is None else now
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2).lower()]
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise JournalError(
            f"cannot read time {text!r}: use 30s, 10m, 2h, 1d, 1w or an ISO time like 2025-01-31T14:00"
        ) from None
    return parsed.timestamp()  # naive datetimes are taken as local time


def format_ts(ts: float | None, *, date: bool = True) -> str:
    """Local time, to the second: what the timeline and `journal show` print."""
    if ts is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S"
    return time.strftime(fmt, time.localtime(ts))
