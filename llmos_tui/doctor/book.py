"""The finding book: what the doctor has found, and who is told.

It keeps the last 500 findings by id (the history), the open one per fingerprint, the
silenced fingerprints and the doctor's notices; it journals each new finding once and
publishes a :class:`DoctorEvent` for every change to its subscribers. It decides nothing:
the scheduler (``loop.py``) adds what detectors report, the repair runner (``runner.py``)
moves findings through their repairs.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from llmos_tui.doctor.api import SEVERITY_RANK, Finding, ensure_narration
from llmos_tui.errors import LlmosError
from llmos_tui.journal.port import JournalPort
from llmos_tui.observers import Observers

OPEN_STATES = ("open", "proposed")
KEEP_FINDINGS = 500
KEEP_NOTICES = 200


@dataclass
class DoctorEvent:
    """kind: finding, updated, resolved, proposed, action, notice, settled (a finding's repairs
    ended: ``data["outcome"]`` is its end state, ``data["engine"]`` the engine's)."""

    kind: str
    finding: Finding | None = None
    message: str = ""
    data: dict[str, object] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


class FindingBook:
    """Open findings (one per fingerprint), silenced fingerprints, the history, the notices."""

    def __init__(self, journal: JournalPort) -> None:
        self.journal = journal
        self.notices: list[str] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._history: collections.OrderedDict[int, Finding] = collections.OrderedDict()
        self._open: dict[str, Finding] = {}
        self._silenced: dict[str, float] = {}
        self._observers: Observers[DoctorEvent] = Observers("doctor")

    # ---- subscribers ------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[DoctorEvent], object]) -> Callable[[], None]:
        return self._observers.subscribe(callback)

    def emit(self, kind: str, finding: Finding | None = None, message: str = "", **data: object) -> None:
        self._observers.publish(DoctorEvent(kind, finding, message, data))

    def notice(self, text: str, **data: object) -> None:
        """A line for the operator (journaled as a doctor event, kept, published)."""
        self.notices.append(text)
        del self.notices[:-KEEP_NOTICES]
        self.journal.safe(lambda j: j.record_event("doctor", {"notice": text, **data}))
        self.emit("notice", None, text, **data)

    # ---- reading ----------------------------------------------------------------------------
    def findings(self, *, open_only: bool = False) -> list[Finding]:
        with self._lock:
            items = list(self._history.values())
        return [f for f in items if f.state in OPEN_STATES] if open_only else items

    def get(self, finding_id: int) -> Finding:
        with self._lock:
            finding = self._history.get(finding_id)
        if finding is None:
            raise LlmosError(f"no finding #{finding_id}")
        return finding

    def open_findings(self) -> list[Finding]:
        """Every finding held open (acting ones too), oldest first."""
        with self._lock:
            return list(self._open.values())

    def is_open(self, finding: Finding) -> bool:
        with self._lock:
            return self._open.get(finding.fingerprint) is finding

    # ---- adding -----------------------------------------------------------------------------
    def update_open(self, item: Finding) -> Finding | None:
        """The open finding with ``item``'s fingerprint, updated by it (count, streak, evidence,
        severity up only) and published; None when there is none open."""
        with self._lock:
            current = self._open.get(item.fingerprint)
            if current is None or current.state not in OPEN_STATES:
                return None
            current.count += 1
            current.streak += 1
            current.last_ts = item.ts
            kept = {"workload": current.evidence["workload"]} if "workload" in current.evidence else {}
            current.evidence = {**item.evidence, **kept}
            current.title = item.title
            ensure_narration(item)
            current.narration, current.narration_kind = item.narration, item.narration_kind
            if SEVERITY_RANK[item.severity] > SEVERITY_RANK[current.severity]:
                current.severity = item.severity
        self.emit("updated", current)
        return current

    def open(self, item: Finding, prepare: Callable[[Finding], None] | None = None) -> Finding:
        """Open ``item`` as a new finding: numbered, kept, ``prepare``d (numbered, not yet
        journaled), journaled once, published."""
        with self._lock:
            item.id = next(self._ids)
            item.state = "open"
            self._history[item.id] = item
            self._open[item.fingerprint] = item
            while len(self._history) > KEEP_FINDINGS:
                self._history.popitem(last=False)
        ensure_narration(item)
        if prepare is not None:
            prepare(item)
        # the narration travels in the journal record's evidence (no schema change)
        record = {**item.evidence, "narration": item.narration, "narration_kind": item.narration_kind}
        item.journal_id = self.journal.safe(lambda j: j.record_finding(
            item.detector, item.severity, item.title, record, fingerprint=item.fingerprint, ts=item.ts))
        self.emit("finding", item, item.title)
        return item

    # ---- closing ----------------------------------------------------------------------------
    def close(self, finding: Finding) -> None:
        """No longer held open (its state says why); the next report of its trouble opens another."""
        with self._lock:
            if self._open.get(finding.fingerprint) is finding:
                del self._open[finding.fingerprint]

    def hold_open(self, finding: Finding) -> None:
        with self._lock:
            self._open[finding.fingerprint] = finding

    def resolve(self, finding: Finding, why: str, state: str = "resolved") -> None:
        with self._lock:
            self.close(finding)
            finding.state = state
            finding.note(state, why=why)
        if finding.action_id is not None and finding.proposed:
            self.reject_action(finding, f"not applied: {why}")
        self.emit("resolved", finding, why)

    def reject_action(self, finding: Finding, why: str) -> None:
        """Mark the finding's journaled action rejected, if it is still only proposed."""
        action_id = finding.action_id
        if action_id is None:
            return
        self.journal.safe(lambda j: j.set_action_state(action_id, "rejected", note=why)
                          if j.get_action(action_id).state == "proposed" else None)

    # ---- silences ---------------------------------------------------------------------------
    def silence(self, finding: Finding, seconds: float) -> None:
        with self._lock:
            self._silenced[finding.fingerprint] = time.time() + seconds
        self.reject_action(finding, f"silenced for {seconds:.0f} s")
        finding.note("silenced", seconds=seconds)
        if finding.state in OPEN_STATES:
            self.resolve(finding, f"silenced for {seconds:.0f} s", state="silenced")

    def is_silenced(self, fingerprint: str, now: float) -> bool:
        with self._lock:
            return self._silenced.get(fingerprint, 0.0) > now

    def expire_silences(self, now: float) -> None:
        with self._lock:
            for fp in [fp for fp, until in self._silenced.items() if until <= now]:
                del self._silenced[fp]
