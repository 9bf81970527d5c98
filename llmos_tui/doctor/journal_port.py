"""One way for the doctor to read and write the journal, whether it got a Journal, a
JournalWriter (calls run on the writer's thread, in its next batch) or nothing."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger("llmos_tui.doctor")


class JournalPort:
    def __init__(self, journal: Any) -> None:
        self.target = journal
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
        except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the doctor
            log.warning("doctor could not write the journal: %s", exc)
            return default
