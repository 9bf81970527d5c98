"""What the Textual pilot tests share: waiting for a condition, reading the notifications."""

from __future__ import annotations

import time
from typing import Any, Callable



async def wait_for(pilot: Any, predicate: Callable[[], Any], timeout: float = 40.0) -> None:
    """Pause the pilot until ``predicate()`` holds (generous: a loaded 2-core CI box is slow)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def notices(app: Any) -> list[str]:
    return [str(n.message) for n in app._notifications]


