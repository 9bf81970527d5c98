"""The online learner wired from its parts (not from the operator): the serving engine, the change
transaction's bad-list, the journal (summaries), the doctor's open findings and kill switch, the
read-only switch. ``core.Operator.set_adapt_mode`` calls :func:`build_learner`; a replayed core
never does (its findings are a trace's, not this engine's).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from llmos_tui.tuning.adapt import JsonDict, OnlineAdapter

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import Supervisor
    from llmos_tui.tuning.ports import ChangesPort


class OpenFinding(Protocol):
    detector: str
    title: str


# the doctor's reasons for a slower engine: then it is not drift, and re-tuning would learn the fault
EXPLAINING = ("engine.memory_growth", "telemetry.anomaly")


class EventSink(Protocol):
    """The journal's event writer (a Journal, or a JournalWriter that queues the write)."""

    def record_event(self, kind: str, data: JsonDict) -> object: ...


def build_learner(supervisor: "Supervisor", *, changes: "ChangesPort | None", journal: EventSink | None,
                  findings: Callable[[], Iterable[OpenFinding]] | None, kill_switch: Callable[[], bool],
                  readonly: bool, mode: str = "shadow", **options: object) -> OnlineAdapter:
    """An adapter over ``supervisor``: ``changes`` for the bad-list, ``journal`` (a Journal or a
    JournalWriter: a summary is queued, never waited for on the request path) for its summaries, ``findings`` the doctor's open
    findings (None: no doctor, or a replayed one), ``kill_switch`` the doctor's. It learns from the
    supervisor's replies (:meth:`OnlineAdapter.attach`); the chat path calls ``before_request``."""
    from llmos_tui.engine.params import EngineParams

    cache: dict[tuple[object, ...], tuple[float, str | None]] = {}

    def is_bad(n: int, nb: int) -> str | None:
        """The journal's bad-list, read at most once a minute per choice (not on every request)."""
        if changes is None:
            return None
        key = (n, nb, tuple(sorted(supervisor.params.to_dict().items())))
        hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < 60:
            return hit[1]
        try:
            why = changes.bad_reason(EngineParams.from_mapping({"n_threads": n, "n_threads_batch": nb},
                                                               supervisor.params))
        except Exception:  # noqa: BLE001
            why = None
        cache[key] = (time.monotonic(), why)
        return why

    def record(kind: str, data: JsonDict) -> object:
        return journal.record_event(kind, data) if journal is not None else None

    def explained() -> str | None:
        """A reason the doctor already knows for a slower engine (GPU throttling, thermal or power
        limits, memory pressure)."""
        if findings is None:
            return None
        try:
            for f in findings():
                if f.detector.startswith("gpu.") or f.detector in EXPLAINING:
                    return f"{f.detector}: {f.title}"
        except Exception:  # noqa: BLE001
            return None
        return None

    def on_drift(drift: JsonDict) -> None:
        supervisor.publish("adapt_drift", **drift)  # the doctor's tuning.drift finding; its policy decides

    adapter = OnlineAdapter(supervisor, mode=mode, readonly=readonly, stopped=kill_switch, is_bad=is_bad,
                            record_event=record, explained=explained, on_drift=on_drift,
                            **options)  # type: ignore[arg-type]
    adapter.attach()
    return adapter


__all__ = ["build_learner"]
