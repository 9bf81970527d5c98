"""The doctor's findings: merging what detectors report into open findings (one per
fingerprint), resolving them, silencing and rejecting them, and the doctor's notices.

A part of :class:`~llmos_tui.doctor.loop.Doctor` (a mixin): it owns ``_findings`` (the last
500, by id), ``_open`` (fingerprint -> the open finding) and ``_silenced``; it journals each
new finding once and tells the subscribers of every change.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmos_tui.doctor.api import SEVERITY_RANK, DetectorSpec, Finding
from llmos_tui.errors import LlmosError

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.doctor.loop import Doctor

OPEN_STATES = ("open", "proposed")
KEEP_FINDINGS = 500


class FindingsMixin:
    # ---- reading ------------------------------------------------------------------------
    def findings(self: "Doctor", *, open_only: bool = False) -> list[Finding]:
        with self._lock:
            items = list(self._findings.values())
        if open_only:
            items = [f for f in items if f.state in OPEN_STATES]
        return items

    def get(self: "Doctor", finding_id: int) -> Finding:
        with self._lock:
            finding = self._findings.get(finding_id)
        if finding is None:
            raise LlmosError(f"no finding #{finding_id}")
        return finding

    # ---- merging detector results ---------------------------------------------------------
    def _merge(self: "Doctor", specs: list[DetectorSpec], results: dict[str, Any], now: float) -> list[Finding]:
        touched: list[Finding] = []
        for spec in specs:
            if spec.id not in results:
                continue
            raw = results[spec.id]
            items = [raw] if isinstance(raw, Finding) else list(raw or [])
            reported: set[str] = set()
            for item in items:
                if not isinstance(item, Finding):
                    self._disable(spec, f"detector {spec.id} returned {type(item).__name__}, not a Finding")
                    break
                item.detector = item.detector or spec.id
                item.severity = item.severity or spec.severity_default
                item.fingerprint = item.fingerprint or f"{spec.id}:{item.title}"
                reported.add(item.fingerprint)
                if self._silenced.get(item.fingerprint, 0) > now:
                    continue
                touched.append(self._add(item))
            sticky = bool(set(spec.needs) & {"events", "logs"})
            if not sticky:
                for fp, finding in list(self._open.items()):
                    if finding.detector == spec.id and fp not in reported and finding is not self._inflight:
                        self._resolve(finding, "condition cleared")
        return touched

    def _add(self: "Doctor", item: Finding) -> Finding:
        with self._lock:
            current = self._open.get(item.fingerprint)
            if current is not None and current.state in OPEN_STATES:
                current.count += 1
                current.streak += 1
                current.last_ts = item.ts
                current.evidence = {**item.evidence, **({"workload": current.evidence["workload"]}
                                                        if "workload" in current.evidence else {})}
                current.title = item.title
                if SEVERITY_RANK[item.severity] > SEVERITY_RANK[current.severity]:
                    current.severity = item.severity
                update = current
            else:
                update = None
                item.id = next(self._ids)
                item.state = "open"
                self._findings[item.id] = item
                self._open[item.fingerprint] = item
                while len(self._findings) > KEEP_FINDINGS:
                    self._findings.popitem(last=False)
        if update is not None:
            self._emit("updated", update)
            return update
        self._capture_workload(item)  # a finding judged by a metric keeps the workload that raised it
        item.journal_id = self.journal.safe(lambda j: j.record_finding(
            item.detector, item.severity, item.title, item.evidence, fingerprint=item.fingerprint, ts=item.ts))
        self._emit("finding", item, item.title)
        return item

    def _resolve(self: "Doctor", finding: Finding, why: str, state: str = "resolved") -> None:
        with self._lock:
            if self._open.get(finding.fingerprint) is finding:
                del self._open[finding.fingerprint]
            finding.state = state
            finding.note(state, why=why)
        if finding.action_id is not None and finding.proposed:
            self._reject_action(finding, f"not applied: {why}")
        self._emit("resolved", finding, why)

    def _expire_silences(self: "Doctor", now: float) -> None:
        for fp in [fp for fp, until in self._silenced.items() if until <= now]:
            del self._silenced[fp]

    def _notice(self: "Doctor", text: str, **data: Any) -> None:
        self.notices.append(text)
        del self.notices[:-200]
        self.journal.safe(lambda j: j.record_event("doctor", {"notice": text, **data}))
        self._emit("notice", None, text, **data)

    # ---- operator decisions (any thread) --------------------------------------------------
    def reject(self: "Doctor", finding_id: int) -> str | None:
        finding = self.get(finding_id)
        if finding.state not in OPEN_STATES:
            return f"finding #{finding_id} is {finding.state}"
        self._reject_action(finding, "rejected by the operator")
        finding.note("rejected")
        self._resolve(finding, "rejected by the operator", state="rejected")
        self._emit("action", finding, "rejected", state="rejected", repair=finding.proposed)
        return None

    def silence(self: "Doctor", finding_id: int, seconds: float | None = None) -> str | None:
        finding = self.get(finding_id)
        seconds = float(seconds if seconds is not None else self.policy.silence_s)
        self._silenced[finding.fingerprint] = time.time() + seconds
        self._reject_action(finding, f"silenced for {seconds:.0f} s")
        finding.note("silenced", seconds=seconds)
        if finding.state in OPEN_STATES:
            self._resolve(finding, f"silenced for {seconds:.0f} s", state="silenced")
        return None

    def _reject_action(self: "Doctor", finding: Finding, why: str) -> None:
        action_id = finding.action_id
        if action_id is None:
            return
        self.journal.safe(lambda j: j.set_action_state(action_id, "rejected", note=why)
                          if j.get_action(action_id).state == "proposed" else None)
