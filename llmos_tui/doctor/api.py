"""The doctor's plugin API: ``@detector`` and ``@repair``, and the values they exchange.

A detector is a function ``fn(ctx: DetectorContext) -> list[Finding] | Finding | None``.
A repair is a function ``fn(ctx: RepairContext, finding: Finding) -> EngineParams | None``:
returning new EngineParams asks the doctor to apply them (journaled as a configuration
change, VRAM-checked, refused when the journal marks them bad); returning None means the
repair did its work itself through ``ctx.engine`` (a restart, a context reset).
Built-in detectors and repairs use exactly this API (see ``builtin.py``, ``repairs.py``).

The loader (``plugins.py``) sets the target registry and the origin (``builtin``, a
file path, an entry point) while a plugin module is being imported, so every detector
and repair knows which plugin it belongs to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

SEVERITIES = ("info", "warning", "error", "critical")
SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITIES)}

# what a detector can ask for; the loop skips it while an input it needs is missing
NEEDS = ("sample", "engine", "events", "logs", "reply")


class NotApplicable(Exception):
    """Raised by a repair (or its precondition) when it cannot help here; the message says why."""


def check_severity(severity: str) -> str:
    if severity not in SEVERITY_RANK:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    return severity


def worst(severities: Iterable[str]) -> str | None:
    ranked = [s for s in severities if s in SEVERITY_RANK]
    return max(ranked, key=SEVERITY_RANK.__getitem__) if ranked else None


@dataclass
class Finding:
    """Something a detector found. ``evidence`` holds the numbers and log lines that prove it.

    ``fingerprint`` names "the same trouble": a finding with a fingerprint that is already
    open updates that one (count, last_ts) instead of opening another. Defaults to the
    detector id plus the title.
    ``repairs``: repair ids to try, smallest change first.
    The doctor fills id, detector, state, journal ids and the action history.
    """

    title: str
    severity: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    repairs: list[str] = field(default_factory=list)
    detector: str = ""
    id: int = 0
    ts: float = field(default_factory=time.time)
    last_ts: float = 0.0
    count: int = 1
    streak: int = 1  # consecutive passes in which the detector reported it (hysteresis)
    state: str = "open"  # open, acting, repaired, failed, rejected, silenced, resolved, gave_up
    journal_id: int | None = None
    proposed: str | None = None  # the repair the doctor would apply
    action_id: int | None = None  # the journal action for `proposed`
    history: list[dict[str, Any]] = field(default_factory=list)
    # one sentence in words: ``fact`` (what was measured) or ``likely`` (an inference; the
    # evidence it rests on is in ``evidence``). Empty: the doctor writes a fact line from the
    # title and the evidence (``ensure_narration``).
    narration: str = ""
    narration_kind: str = ""  # fact | likely

    def __post_init__(self) -> None:
        if self.severity:
            check_severity(self.severity)
        if self.narration_kind and self.narration_kind not in NARRATION_KINDS:
            raise ValueError(f"narration_kind must be one of {', '.join(NARRATION_KINDS)}, got {self.narration_kind!r}")
        self.last_ts = self.last_ts or self.ts

    @property
    def narrated(self) -> str:
        """The narration as the faces print it: ``fact: ...`` or ``likely: ...``."""
        ensure_narration(self)
        return f"{self.narration_kind}: {self.narration}"

    def history_flag(self, what: str) -> bool:
        return any(h.get("what") == what for h in self.history)

    def note(self, what: str, **data: Any) -> None:
        self.history.append({"ts": time.time(), "what": what, **data})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "detector": self.detector, "severity": self.severity, "title": self.title,
            "evidence": self.evidence, "fingerprint": self.fingerprint, "repairs": list(self.repairs),
            "ts": self.ts, "last_ts": self.last_ts, "count": self.count, "state": self.state,
            "journal_id": self.journal_id, "proposed": self.proposed, "action_id": self.action_id,
            "history": list(self.history), "narration": self.narration, "narration_kind": self.narration_kind,
        }


NARRATION_KINDS = ("fact", "likely")
_SKIP_IN_NARRATION = ("advice", "tail", "history", "baseline", "recent", "window_pct", "temps", "power_window",
                      "vector", "workload", "ladder", "narration", "narration_kind")


def _short(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (int, str)):
        text = str(value)
        return text if len(text) <= 40 else None
    return None


def generic_narration(title: str, evidence: Mapping[str, object]) -> str:
    """A fact line for a finding that gave no narration (a plugin's): its title and up to four
    of its plain evidence values."""
    parts = []
    for key, value in evidence.items():
        if key in _SKIP_IN_NARRATION:
            continue
        text = _short(value)
        if text is not None:
            parts.append(f"{key} {text}")
        if len(parts) == 4:
            break
    title = title.rstrip(". ")
    return f"{title[:1].upper()}{title[1:]}" + (f" ({', '.join(parts)})." if parts else ".")


def ensure_narration(finding: "Finding") -> "Finding":
    """Fill a finding's narration with the generic fact line when its detector gave none."""
    if not finding.narration:
        finding.narration = generic_narration(finding.title, finding.evidence)
        finding.narration_kind = "fact"
    elif not finding.narration_kind:
        finding.narration_kind = "fact"
    return finding


@dataclass
class DetectorSpec:
    id: str
    fn: Callable[..., Any]
    severity_default: str = "warning"
    interval: float = 0.0  # seconds between runs; 0: every pass
    timeout: float = 2.0  # seconds; a detector running longer is abandoned and disabled
    needs: tuple[str, ...] = ("sample",)
    grace: bool = True  # skipped during the grace period after a (re)load
    hysteresis: int | None = None  # passes a finding must hold before auto action (None: policy's)
    description: str = ""
    origin: str = "builtin"
    enabled: bool = True
    error: str | None = None
    last_run: float = 0.0
    runs: int = 0


@dataclass
class RepairSpec:
    id: str
    fn: Callable[..., Any]
    changes: str = ""  # what it changes, in words ("n_ctx halved")
    precondition: Callable[..., Any] | None = None  # (ctx, finding) -> None, or a reason it cannot apply
    verify_metric: str | None = None  # canary result key checked after apply (gen_tps, ttft_ms)
    reconfigures: bool = False  # fn returns new EngineParams and must not act itself (it is previewed)
    restarts_engine: bool = True
    cost: int = 5  # smaller is preferred: the smallest change first
    description: str = ""
    origin: str = "builtin"
    enabled: bool = True
    error: str | None = None


_LOADING = threading.local()  # (registry, origin) while a plugin module is being imported


class Registry:
    """Detectors and repairs by id. The process-wide ``REGISTRY`` holds what Python modules
    registered at import (built-ins, entry points); each doctor's plugin manager keeps its
    own registry with copies of those plus its plugin files, so state never leaks between
    two doctors (or two tests)."""

    def __init__(self) -> None:
        self.detectors: dict[str, DetectorSpec] = {}
        self.repairs: dict[str, RepairSpec] = {}
        self._lock = threading.RLock()

    def loading(self, origin: str) -> "_Loading":
        """Within this block (in this thread) the decorators register here, under ``origin``."""
        return _Loading(self, origin)

    def add_detector(self, spec: DetectorSpec) -> None:
        with self._lock:
            old = self.detectors.get(spec.id)
            if old is not None and old.origin != spec.origin:
                raise ValueError(f"detector {spec.id!r} is already registered by {old.origin}")
            self.detectors[spec.id] = spec

    def add_repair(self, spec: RepairSpec) -> None:
        with self._lock:
            old = self.repairs.get(spec.id)
            if old is not None and old.origin != spec.origin:
                raise ValueError(f"repair {spec.id!r} is already registered by {old.origin}")
            self.repairs[spec.id] = spec

    def by_origin(self, origin: str) -> tuple[list[DetectorSpec], list[RepairSpec]]:
        with self._lock:
            return ([d for d in self.detectors.values() if d.origin == origin],
                    [r for r in self.repairs.values() if r.origin == origin])

    def drop_origin(self, origin: str) -> None:
        with self._lock:
            for table in (self.detectors, self.repairs):
                for key in [k for k, v in table.items() if v.origin == origin]:
                    del table[key]

    def copy_origin(self, other: "Registry", origin: str) -> int:
        """Copy (fresh state) every spec ``other`` holds for ``origin`` into this registry."""
        detectors, repairs = other.by_origin(origin)
        for d in detectors:
            self.add_detector(dataclasses.replace(d, enabled=True, error=None, last_run=0.0, runs=0))
        for r in repairs:
            self.add_repair(dataclasses.replace(r, enabled=True, error=None))
        return len(detectors) + len(repairs)


class _Loading:
    def __init__(self, registry: Registry, origin: str) -> None:
        self.registry, self.origin, self.prev = registry, origin, None

    def __enter__(self) -> None:
        self.prev = getattr(_LOADING, "value", None)
        _LOADING.value = (self.registry, self.origin)

    def __exit__(self, *exc: object) -> None:
        _LOADING.value = self.prev


def _target(registry: "Registry | None") -> tuple["Registry", str]:
    loading = getattr(_LOADING, "value", None)
    if registry is not None:
        return registry, loading[1] if loading else "builtin"
    if loading is not None:
        return loading
    return REGISTRY, "builtin"


REGISTRY = Registry()


def detector(
    id: str,
    severity_default: str = "warning",
    *,
    interval: float = 0.0,
    timeout: float = 2.0,
    needs: Iterable[str] = ("sample",),
    grace: bool = True,
    hysteresis: int | None = None,
    description: str = "",
    registry: Registry | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(ctx) -> list[Finding]`` as a detector named ``id``."""
    check_severity(severity_default)
    needs = tuple(needs)
    for need in needs:
        if need not in NEEDS:
            raise ValueError(f"detector {id!r}: unknown input {need!r} (known: {', '.join(NEEDS)})")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        reg, origin = _target(registry)
        doc = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        reg.add_detector(DetectorSpec(
            id=id, fn=fn, severity_default=severity_default, interval=float(interval), timeout=float(timeout),
            needs=needs, grace=grace, hysteresis=hysteresis, description=doc, origin=origin,
        ))
        fn.detector_id = id  # type: ignore[attr-defined]
        return fn

    return wrap


def repair(
    id: str,
    *,
    changes: str = "",
    precondition: Callable[..., Any] | None = None,
    verify_metric: str | None = None,
    reconfigures: bool = False,
    restarts_engine: bool = True,
    cost: int = 5,
    description: str = "",
    registry: Registry | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a repair named ``id``.

    ``reconfigures=True``: ``fn(ctx, finding)`` returns the new EngineParams and must not act
    itself (the doctor previews it, checks it against the journal's bad configurations and the
    VRAM estimate, journals it and reloads the engine). Otherwise ``fn`` acts through
    ``ctx.engine`` and returns None. ``precondition(ctx, finding)`` returns a reason it
    cannot apply, or None.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        reg, origin = _target(registry)
        doc = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        reg.add_repair(RepairSpec(
            id=id, fn=fn, changes=changes, precondition=precondition, verify_metric=verify_metric,
            reconfigures=reconfigures, restarts_engine=restarts_engine, cost=cost, description=doc, origin=origin,
        ))
        fn.repair_id = id  # type: ignore[attr-defined]
        return fn

    return wrap


def fingerprint_of(*parts: Any) -> str:
    text = "|".join(str(p) for p in parts)
    return text if len(text) <= 80 else text[:60] + "#" + hashlib.sha1(text.encode()).hexdigest()[:12]
