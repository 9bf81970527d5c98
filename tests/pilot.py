"""What the Textual pilot tests share: waiting for a condition, reading the notifications."""

from __future__ import annotations

import time
from typing import Any, Callable

from llmos_tui.core.operator import Operator


async def wait_for(pilot: Any, predicate: Callable[[], Any], timeout: float = 40.0) -> None:
    """Pause the pilot until ``predicate()`` holds (generous: a loaded 2-core CI box is slow)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def notices(app: Any) -> list[str]:
    return [str(n.message) for n in app._notifications]


def ensure_reset_start_limit() -> None:
    """``Operator.reset_start_limit`` is the core branch's verb; until it is merged, a stand-in
    with its contract (reset the doctor's start limit, return one line) so these tests run."""
    if hasattr(Operator, "reset_start_limit"):
        return

    def reset_start_limit(self: Operator) -> str:
        if self.doctor is None:
            return "the doctor is not running: there is no start limit to reset"
        self.doctor.reset_start_limit()
        return "start limit reset: automatic restarts allowed again"

    Operator.reset_start_limit = reset_start_limit  # type: ignore[attr-defined]
