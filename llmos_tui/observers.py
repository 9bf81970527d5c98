"""Subscribers of the core's streams (engine events, telemetry samples, doctor events).

Callbacks run on the publisher's thread; one that raises is logged (the first time, then
every 100th) and skipped, and never stops the publisher or the other subscribers.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("llmos_tui")


class Observers(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._callbacks: list[Callable[[T], object]] = []
        self._failures: dict[int, int] = {}
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[T], object]) -> Callable[[], None]:
        """Call ``callback(item)`` for every item published; returns the unsubscribe function."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
                self._failures.pop(id(callback), None)

        return unsubscribe

    def publish(self, item: T) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(item)
            except Exception:  # one bad subscriber must not stop the others
                failures = self._failures.get(id(callback), 0) + 1
                self._failures[id(callback)] = failures
                if failures == 1 or failures % 100 == 0:
                    log.exception("%s subscriber %r failed (%d times)", self.what, callback, failures)

    def __len__(self) -> int:
        return len(self._callbacks)
