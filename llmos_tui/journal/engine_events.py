"""Writes the engine supervisor's notable events into the journal.

``attach(supervisor, writer)`` subscribes to the supervisor; each event with a kind
worth keeping (a load with its load_ms, an unload, a crash with its exit code or
signal and last log lines, a restart, an error) becomes an ``events`` row. State
changes are too chatty and request metrics travel with chat messages, so those
are skipped. The callback runs on the supervisor's thread: it only queues the write
(``JournalWriter`` never blocks) and never lets an exception reach the supervisor.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Mapping, Protocol

from llmos_tui.journal.records import Json

log = logging.getLogger("llmos_tui.journal")

RECORDED_KINDS = frozenset({"loaded", "unloaded", "crashed", "restarting", "error"})


class _EventSink(Protocol):
    def record_event(self, kind: str, data: Json = None, *, ts: float | None = None,
                     config_id: int | None = None) -> object: ...


class _Event(Protocol):
    """An engine event as the supervisor publishes it (``EngineEvent``)."""

    @property
    def kind(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Json] | None: ...

    @property
    def ts(self) -> float: ...


class _Supervisor(Protocol):
    def subscribe(self, callback: Callable[[_Event], None]) -> Callable[[], None]: ...


def attach(
    supervisor: _Supervisor,
    writer: _EventSink,
    *,
    kinds: Iterable[str] = RECORDED_KINDS,
) -> Callable[[], None]:
    """Journal the supervisor's events through ``writer``; return the unsubscribe function.

    ``writer`` is a ``JournalWriter`` (or anything with ``record_event``, e.g. a
    ``Journal`` in a script). An event's ``data["config_id"]``, when present, links the
    row to that configuration version; otherwise the active version is linked.
    """
    wanted = frozenset(kinds)

    def on_event(event: _Event) -> None:
        try:
            kind = event.kind
            if kind not in wanted:
                return
            data = dict(event.data or {})
            config_id = data.get("config_id")
            writer.record_event(
                kind,
                data,
                ts=event.ts or time.time(),
                config_id=config_id if isinstance(config_id, int) else None,
            )
        except Exception:  # the journal must never take the supervisor down
            log.exception("could not journal engine event %r", getattr(event, "kind", event))

    return supervisor.subscribe(on_event)
