"""What detectors and repairs see: a read-mostly view of telemetry, engine events, logs,
the configuration and the journal. Plugins get nothing else, so the API stays small.

A repair acts on the engine only through :class:`EngineHandle`, whose life-cycle verbs go
through the change transaction (the narrow face :class:`ChangeGate`); it never gets the
supervisor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, TypeVar

from llmos_tui.doctor.api import Finding, SEVERITY_RANK
from llmos_tui.errors import LlmosError

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.gguf_info import ModelInfo
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.probe import CanaryResult
    from llmos_tui.engine.supervisor import EngineEvent, LogLine, Supervisor
    from llmos_tui.journal import ConfigVersion, Journal
    from llmos_tui.telemetry.sample import Sample
    from llmos_tui.telemetry.series import SeriesStore

T = TypeVar("T")


class JournalView:
    """Read access to the journal for plugins (whatever the doctor writes through)."""

    def __init__(self, call: "Callable[[Callable[[Journal], object]], object] | None") -> None:
        self._call = call

    @property
    def available(self) -> bool:
        return self._call is not None

    def _run(self, fn: "Callable[[Journal], T]", default: T) -> T:
        if self._call is None:
            return default
        try:
            return self._call(fn)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - a read that fails is "unknown", never a crash
            return default

    def active_config(self) -> "ConfigVersion | None":
        return self._run(lambda j: j.active_config(), None)

    def last_known_good(self, *, exclude_active: bool = False) -> "ConfigVersion | None":
        return self._run(lambda j: j.last_known_good(exclude_active=exclude_active), None)

    def configs(self, limit: int = 100) -> "list[ConfigVersion]":
        return self._run(lambda j: j.configs(limit), [])

    def events(self, kind: str | None = None, *, since: float | None = None,
               limit: int = 200) -> list[dict[str, object]]:
        return self._run(lambda j: j.events(kind, since=since, limit=limit), [])

    def disk(self) -> tuple[str, float] | None:
        """The journal file's path and its size as SQLite counts it (pages, the write-ahead log's
        included: what the file holds once checkpointed); None without a journal. The disk-full
        trend watches this and the free space of the path's filesystem."""
        def read(j: "Journal") -> tuple[str, float]:
            row = j.connection.one("PRAGMA page_count")
            size = j.connection.one("PRAGMA page_size")
            pages = int(next(iter(row.values()))) if row else 0
            return str(j.path), float(pages * (int(next(iter(size.values()))) if size else 0))

        return self._run(read, None)


@dataclass
class DetectorContext:
    """Handed to every detector run. ``memory`` persists between runs of the same detector."""

    detector_id: str
    severity_default: str
    now: float
    sample: "Sample | None"
    series: "SeriesStore | None"
    params: "EngineParams | None"
    model_info: "ModelInfo | None"
    engine_state: str | None
    engine_stats: dict[str, object] | None
    events: "list[EngineEvent]"  # recent engine events, oldest first (the doctor's own repairs' loads left out)
    new_events: "list[EngineEvent]"  # events since this detector last ran
    new_logs: "list[LogLine]"  # log lines since this detector last ran
    last_reply: dict[str, object] | None
    journal: JournalView
    memory: dict[str, object]
    settings: Mapping[str, object] = field(default_factory=dict)
    interval: float = 1.0  # the sampling interval, seconds
    last_load_ts: float | None = None
    operator_active: bool = False  # the operator chatted recently (canary stays off)
    _logs: "Callable[[int | None], list[LogLine]] | None" = None
    _canary: "Callable[[], CanaryResult] | None" = None

    # ---- telemetry ------------------------------------------------------------------
    def window(self, name: str, n: int | None = None) -> list[float]:
        """The last ``n`` values of a series (missing values dropped), oldest first."""
        return self.series.window(name, n) if self.series is not None else []

    def window_raw(self, name: str, n: int | None = None) -> list[float]:
        """Like window, but NaN where a sample lacked the value (aligned across series)."""
        return self.series.window(name, n, keep_missing=True) if self.series is not None else []

    def latest(self, name: str) -> float | None:
        return self.series.latest(name) if self.series is not None else None

    def logs(self, n: int | None = 50) -> "list[LogLine]":
        return self._logs(n) if self._logs is not None else []

    def setting(self, key: str, default: T) -> T:
        return self.settings.get(key, default)  # type: ignore[return-value]

    def canary(self) -> "CanaryResult | None":
        """Run the canary probe now (blocking); None when no engine is attached."""
        return self._canary() if self._canary is not None else None

    # ---- building findings ----------------------------------------------------------
    def finding(
        self,
        title: str,
        *,
        severity: str | None = None,
        evidence: Mapping[str, object] | None = None,
        fingerprint: str = "",
        repairs: list[str] | None = None,
        fact: str = "",
        likely: str = "",
    ) -> Finding:
        """A finding of this detector. ``fact``: one sentence of what was measured; ``likely``:
        one sentence of what it probably means (the evidence it rests on goes in ``evidence``)."""
        if fact and likely:
            raise ValueError("a finding is narrated as a fact or as likely, not both")
        severity = severity or self.severity_default
        if severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {severity!r}")
        return Finding(
            title=title, severity=severity, evidence=dict(evidence or {}),
            fingerprint=fingerprint or f"{self.detector_id}", repairs=list(repairs or []),
            detector=self.detector_id, ts=self.now,
            narration=likely or fact, narration_kind="likely" if likely else ("fact" if fact else ""),
        )


class ChangeOutcome(Protocol):
    """What a change-transaction verb returns (core.changes.ChangeResult)."""

    state: str
    message: str
    config_id: int | None
    details: dict[str, object]

    @property
    def ok(self) -> bool: ...


class ChangeGate(Protocol):
    """The narrow face of the change transaction the doctor acts through (core.changes.Changes):
    vetting, reconfiguring (vet, journal, reload, verify, roll back), restarting through its lock,
    and its liveness probe (the doctor's canary)."""

    def vet(self, params: "EngineParams", *, check_bad: bool = True) -> str | None: ...

    def propose(self, params: "EngineParams", *, source: str = ..., reason: str = ..., kind: str = ...,
                proposed_by: str = ..., finding_id: int | None = ..., action_id: int | None = ...,
                verify: "Callable[[], str | None] | None" = ...) -> ChangeOutcome: ...

    def restart(self, *, source: str = ..., reason: str = ..., wait_s: float = ...) -> ChangeOutcome: ...

    def set_canary(self, canary: "Callable[[], CanaryResult]") -> None: ...


class EngineHandle:
    """What a repair (built-in or plugin) may do to the engine: read its state, clear its KV
    cache, restart it through the change transaction's lock. Never the supervisor itself: a
    restart here waits for, or is refused by, whoever holds the engine, and reloads what runs
    now (the journal's active version), not parameters captured earlier."""

    def __init__(self, supervisor: "Supervisor", gate: ChangeGate | None, *, source: str = "doctor") -> None:
        self._sup = supervisor
        self._gate = gate
        self._source = source

    @property
    def params(self) -> "EngineParams":
        return self._sup.params

    @property
    def model_info(self) -> "ModelInfo | None":
        return self._sup.model_info

    @property
    def is_ready(self) -> bool:
        return bool(self._sup.is_ready)

    @property
    def state(self) -> str:
        return self._sup.state.value

    @property
    def gpu_offload(self) -> bool | None:
        """Whether the engine's llama.cpp build can offload layers to a GPU (None: not loaded yet)."""
        value = self._sup.runtime.get("gpu_offload")
        return None if value is None else bool(value)

    def stats(self) -> dict[str, object]:
        return self._sup.stats()

    def reset_context(self) -> None:
        """Clear the KV cache (not a life-cycle change: the process and its settings stay)."""
        self._sup.reset_context()

    def restart(self, *, reason: str = "", wait_s: float = 30.0) -> ChangeOutcome:
        """Restart on what runs now, through the change transaction's lock; a ChangeResult."""
        if self._gate is None:
            raise LlmosError("no change transaction in this core: the engine cannot be restarted from here")
        return self._gate.restart(source=self._source, reason=reason, wait_s=wait_s)


@dataclass
class RepairContext:
    """Handed to a repair: the engine handle to act through, and what it needs to decide."""

    engine: EngineHandle
    params: "EngineParams"
    model_info: "ModelInfo | None"
    journal: JournalView
    finding: Finding
    settings: Mapping[str, object] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    services: Mapping[str, Callable[[], object]] = field(default_factory=dict)  # the core's parts (``tuner``)
    operator_idle_s: Callable[[], float] = lambda: float("inf")  # seconds since the operator's last request
    stopped: Callable[[], bool] = lambda: False  # the kill switch or the doctor stopping: give up now

    def log(self, text: str) -> None:
        self.messages.append(text)


def now() -> float:
    return time.time()
