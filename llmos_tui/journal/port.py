"""One way to read and write the journal, whether a part got a Journal, a JournalWriter (calls
run on the writer's thread, in its next batch) or nothing (no journal: calls return None).
Used by the doctor and the change transaction."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger("llmos_tui.journal")


class JournalPort:
    def __init__(self, journal: Any, who: str = "doctor") -> None:
        self.target = journal
        self.who = who  # named in the warning when a write fails
        self._lock = threading.RLock()

    @property
    def available(self) -> bool:
        return self.target is not None

    def call(self, fn: Callable[[Any], Any], timeout: float = 30.0) -> Any:
        target = self.target
        if target is None:
            return None
        if hasattr(target, "submit"):  # JournalWriter: runs on its thread, in its next batch
            return target.submit(fn).result(timeout)
        with self._lock:
            return fn(target)

    def safe(self, fn: Callable[[Any], Any], default: Any = None) -> Any:
        try:
            return self.call(fn)
        except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the caller
            log.warning("%s could not write the journal: %s", self.who, exc)
            return default
