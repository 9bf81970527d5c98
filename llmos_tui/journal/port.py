"""The one journal port every part takes: a Journal, a JournalWriter (calls run on the writer's
thread, in its next batch) or nothing (no journal: calls return None), behind one interface.

Used by the doctor, the change transaction, the tuner and the quantizer; a part is given a
``JournalPort`` (or anything ``JournalPort.of`` accepts) and never asks what is behind it."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar, Union

from llmos_tui.journal.store import Journal
from llmos_tui.journal.writer import JournalWriter

log = logging.getLogger("llmos_tui.journal")
T = TypeVar("T")
D = TypeVar("D")

JournalTarget = Union[Journal, JournalWriter]


class JournalPort:
    """``submit`` / ``call`` / ``safe`` over a Journal, a JournalWriter or no journal at all."""

    def __init__(self, journal: "JournalTarget | JournalPort | None", who: str = "doctor") -> None:
        self.target: JournalTarget | None = journal.target if isinstance(journal, JournalPort) else journal
        self.who = who  # named in the warning when a write fails
        self._lock = threading.RLock()

    @classmethod
    def of(cls, journal: "JournalTarget | JournalPort | None", who: str = "doctor") -> "JournalPort":
        """The port itself when given one, else a new port over ``journal``."""
        return journal if isinstance(journal, JournalPort) else cls(journal, who)

    @property
    def available(self) -> bool:
        return self.target is not None

    def submit(self, fn: Callable[[Journal], T]) -> "Future[T | None]":
        """Run ``fn(journal)``: on the writer's thread in its next batch, or here and now for a
        Journal; the future holds None when there is no journal."""
        target = self.target
        if isinstance(target, JournalWriter):
            return target.submit(fn)  # type: ignore[return-value]  # Future[T] is a Future[T | None]
        future: Future[T | None] = Future()
        try:
            if target is None:
                future.set_result(None)
            else:
                with self._lock:
                    future.set_result(fn(target))
        except Exception as exc:  # noqa: BLE001 - handed to whoever reads the future
            future.set_exception(exc)
        return future

    def call(self, fn: Callable[[Journal], T], timeout: float = 30.0) -> T | None:
        """``submit`` and wait for the answer (raises what ``fn`` raised)."""
        target = self.target
        if target is None:
            return None
        if isinstance(target, JournalWriter):
            return target.submit(fn).result(timeout)
        with self._lock:
            return fn(target)

    def safe(self, fn: Callable[[Journal], T], default: D = None) -> T | D:  # type: ignore[assignment]
        """``call``, but a journal problem is a warning in the log and ``default``, never an error."""
        try:
            return self.call(fn)  # type: ignore[return-value]  # None without a journal, as always
        except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the caller
            log.warning("%s could not write the journal: %s", self.who, exc)
            return default
