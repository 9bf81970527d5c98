"""What the doctor takes in from other threads: engine events (numbered, the last 500), the time
of the operator's last request, the last reply, the shapes of recent requests (the workload a
metric repair is verified on), and how far each detector has read the events and the log.

The supervisor's and the chat's threads write here; the doctor thread reads.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping

from llmos_tui.doctor.workload import WorkloadLog

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import EngineEvent, LogLine

# What wakes the doctor at once: the engine's life changing. A finished request (``request_done``,
# a daemon's ``serve_request``) is only recorded: the next pass reads it on the doctor's own tick
# (a telemetry sample, or ``[doctor] interval``). A pass per request (a thread per detector, the
# GIL taken from the loop that hands the engine to the next request) cost the daemon ~10-25 ms of
# CPU per request on a 2-core box, right when the next request should start.
WAKE_KINDS = frozenset({"crashed", "load_failed", "loaded", "error", "unloaded", "adapt_drift"})

# whether an event or log line of (kind, ts) is the doctor's own repair's doing (kept from detectors)
Hidden = Callable[[str, float], bool]


class Intake:
    """``probing``: set while the doctor's own probes run (their requests are not the operator's);
    ``wake``: tells the doctor thread something arrived."""

    def __init__(self, probing: threading.Event, wake: Callable[[], None], *,
                 last_load_ts: float | None = None) -> None:
        self.probing = probing
        self.wake = wake
        self.workloads = WorkloadLog()
        self.last_load_ts = last_load_ts
        self.last_operator_ts = 0.0
        self.last_reply: dict[str, object] | None = None
        self._lock = threading.Lock()
        self._events: collections.deque[tuple[int, EngineEvent]] = collections.deque(maxlen=500)
        self._seq = 0
        self._seen_event: dict[str, int] = {}
        self._seen_log_ts: dict[str, float] = {}

    # ---- writers (other threads) ---------------------------------------------------------
    def on_engine_event(self, event: "EngineEvent") -> None:
        with self._lock:
            self._seq += 1
            self._events.append((self._seq, event))
        if event.kind == "loaded":
            self.last_load_ts = event.ts
        elif event.kind == "request_done" and not self.probing.is_set():
            self.last_operator_ts = event.ts
            if event.data.get("status") == "done":
                self.workloads.on_request(event.data.get("metrics") or {})
        if event.kind in WAKE_KINDS:
            self.wake()

    def on_reply(self, text: str, metrics: Mapping[str, object] | None = None) -> None:
        self.last_reply = {"text": text or "", "metrics": dict(metrics or {}), "ts": time.time()}
        self.wake()

    # ---- readers (the doctor thread) -------------------------------------------------------
    def events_for(self, detector_id: str, hidden: Hidden) -> "tuple[list[EngineEvent], list[EngineEvent]]":
        """(the recent events, those since this detector last read), without the hidden ones."""
        with self._lock:
            last = self._seen_event.get(detector_id, 0)
            self._seen_event[detector_id] = self._seq
            kept = [(seq, e) for seq, e in self._events if not hidden(e.kind, e.ts)]
        return [e for _, e in kept], [e for seq, e in kept if seq > last]

    def logs_for(self, detector_id: str, lines: "list[LogLine]", since: float,
                 hidden: Hidden) -> "list[LogLine]":
        """The log lines this detector has not read yet (after ``since`` the first time), without the hidden ones."""
        fresh = [line for line in lines if line.ts > self._seen_log_ts.get(detector_id, since)]
        if fresh:
            self._seen_log_ts[detector_id] = fresh[-1].ts
        return [line for line in fresh if not hidden("log", line.ts)]
