"""The repair runner: the policy's decision per open finding (propose, act automatically under
the rails), applying a repair, verifying it, and trying the next one at once when it fails.

Every repair that reconfigures the engine, and its rollback, goes through the one change
transaction (``ChangeGate.propose``: vetting, journaling, reload, the canary, the metric check,
mark good or bad and roll back). Repairs that act themselves get an :class:`EngineHandle`
whose restart goes through the same transaction's lock; they are verified here.

Rails, checked before the first repair and before each next one: one repair in flight, the
kill switch, dry run, hysteresis, backoff per finding (counted from the end of the last
attempt), the start limit on automatic restarts.

A repair's own loads are its own: a crash or failed load while a reconfiguring repair's change
is in flight is that change's failure (rolled back, marked bad), and the scheduler keeps it out
of what detectors see (:meth:`RepairRunner.caused`), so it never counts as a crash.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping, TypeVar

from llmos_tui.doctor.api import SEVERITY_RANK, Finding, NotApplicable, RepairSpec
from llmos_tui.doctor.book import OPEN_STATES, FindingBook
from llmos_tui.doctor.canary import Canary, active_config_id, ensure_config
from llmos_tui.doctor.context import ChangeGate, EngineHandle, JournalView, RepairContext
from llmos_tui.doctor.plugins import PluginManager, describe_error
from llmos_tui.doctor.policy import Policy
from llmos_tui.doctor.workload import MetricCheck, Verifier, WorkloadLog, Workload, metric_check
from llmos_tui.engine.probe import verify_live
from llmos_tui.errors import LlmosError
from llmos_tui.journal.port import JournalPort

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.supervisor import Supervisor

log = logging.getLogger("llmos_tui.doctor")
T = TypeVar("T")

# what a reconfiguring repair's own change causes when its new configuration fails: engine
# events of these kinds, and llama.cpp's log lines ("log")
OWN_KINDS = frozenset({"crashed", "load_failed", "log"})
START_LIMIT_HOW = "press l on the doctor screen, or :reset-limit, or /reset-limit in the console"


# findings about a dead or hung engine that a verified restart also ends
_HEALED_BY_A_RESTART = ("engine.crashed", "engine.oom", "engine.canary", "engine.stalled")

class RepairRunner:
    """Decides and runs repairs for the findings in ``book``.

    ``supervisor``: read for the engine's parameters and state (None: nothing is repaired);
    ``changes``: the change transaction every reconfiguration and restart goes through (None: a
    repair that needs it is refused); ``services``: parts of the core a repair may use
    (``"tuner"`` -> a callable returning the core's Tuner, for the drift re-tune)."""

    def __init__(self, supervisor: "Supervisor | None", changes: ChangeGate | None, book: FindingBook,
                 journal: JournalPort, policy: Policy, plugins: PluginManager, canary: Canary,
                 workloads: WorkloadLog, *, services: Mapping[str, Callable[[], object]] | None = None,
                 dry_run: bool = False, operator_idle_s: Callable[[], float] = lambda: float("inf"),
                 stopping: threading.Event | None = None, wake: Callable[[], None] = lambda: None) -> None:
        self.supervisor = supervisor
        self.changes = changes
        self.book = book
        self.journal = journal
        self.journal_view = JournalView(journal.call if journal.available else None)
        self.policy = policy
        self.plugins = plugins
        self.canary = canary
        self.workloads = workloads
        self.services: dict[str, Callable[[], object]] = dict(services or {})
        self.dry_run = bool(dry_run or policy.dry_run)
        self.operator_idle_s = operator_idle_s
        self.stopping = stopping or threading.Event()
        self.wake = wake  # tells the scheduler a repair ended (its next pass decides again)
        self.kill_switch_on = policy.kill_switch
        self.start_limit_hit = False
        self.actions: list[dict[str, object]] = []  # what the doctor did, newest last (the UI's history)
        self._lock = threading.RLock()
        self._backoff: dict[str, tuple[int, float]] = {}
        self._restarts: collections.deque[float] = collections.deque()
        self._inflight: Finding | None = None
        self._thread: threading.Thread | None = None
        self._workload_for: dict[int, Workload] = {}
        self._own_windows: collections.deque[list[float]] = collections.deque(maxlen=20)

    # ---- state the faces read ---------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._inflight is not None

    @property
    def inflight(self) -> Finding | None:
        return self._inflight

    @property
    def changes_allowed(self) -> bool:
        return not (self.kill_switch_on or self.dry_run)

    def set_kill_switch(self, on: bool) -> None:
        if on == self.kill_switch_on:
            return
        self.kill_switch_on = on
        text = "kill switch ON: no automatic action" if on else "kill switch off: automatic actions allowed"
        self.book.notice(text, kill_switch=on)

    def reset_start_limit(self) -> str:
        """Allow automatic restarts again (the operator fixed the cause); journaled as a doctor event."""
        was_hit, count = self.start_limit_hit, len(self._restarts)
        self._restarts.clear()
        self.start_limit_hit = False
        text = ("start limit reset: automatic restarts allowed again" if was_hit
                else f"start limit reset ({count} recent automatic restart(s) forgotten); it was not reached")
        self.book.notice(text, start_limit_reset=True, was_hit=was_hit)
        return text

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---- a repair's own engine events ------------------------------------------------------
    def caused(self, kind: str, ts: float) -> bool:
        """True when an engine event of ``kind`` (or a log line: kind ``"log"``) at ``ts`` came from a
        reconfiguring repair's own change (its new configuration failing to load or crashing
        before it was rolled back)."""
        if kind not in OWN_KINDS:
            return False
        return any(start <= ts <= end for start, end in list(self._own_windows))

    # ---- the policy -------------------------------------------------------------------------
    def decide(self, hysteresis: Callable[[str], int | None]) -> None:
        """Propose a repair for each open finding the policy does not turn off, and act on those
        in auto mode (``hysteresis(detector_id)``: the detector's own hold, None for the policy's)."""
        candidates = sorted((f for f in self.book.open_findings() if f.state in OPEN_STATES),
                            key=lambda f: (-SEVERITY_RANK[f.severity], f.id))
        for finding in candidates:
            mode = self.policy.mode_for(finding.detector, finding.severity)
            if mode == "off":
                continue
            if finding.proposed is None and not finding.history_flag("no_repair"):
                self.propose(finding)
            if finding.proposed is not None and mode == "auto":
                hold = hysteresis(finding.detector)
                self._maybe_auto(finding, self.policy.hysteresis if hold is None else hold)

    def repair_context(self, finding: Finding) -> RepairContext:
        sup = self._engine()
        return RepairContext(
            engine=EngineHandle(sup, self.changes), params=sup.params, model_info=sup.model_info,
            journal=self.journal_view, finding=finding, settings=self.policy.settings_for(finding.detector),
            services=self.services, operator_idle_s=self.operator_idle_s,
            stopped=lambda: self.kill_switch_on or self.stopping.is_set())

    def _engine(self) -> "Supervisor":
        if self.supervisor is None:
            raise LlmosError("no engine attached")
        return self.supervisor

    def plan(self, finding: Finding) -> "tuple[RepairSpec | None, EngineParams | None, list[str]]":
        """The repair the doctor would apply (smallest change first), its new params, and why others were skipped."""
        if self.supervisor is None:
            return None, None, ["no engine attached"]
        skipped: list[str] = []
        registry = self.plugins.registry
        specs = [registry.repairs.get(rid) for rid in finding.repairs]
        skipped += [f"{rid}: no such repair" for rid, s in zip(finding.repairs, specs) if s is None]
        tried = {h.get("repair") for h in finding.history if h.get("what") in ("failed", "refused")}
        for spec in sorted((s for s in specs if s is not None), key=lambda s: s.cost):
            if not spec.enabled:
                skipped.append(f"{spec.id}: disabled ({spec.error})")
                continue
            if spec.id in tried:
                skipped.append(f"{spec.id}: already tried for this finding")
                continue
            reason, params = self._preview(spec, self.repair_context(finding), finding)
            if reason:
                skipped.append(f"{spec.id}: {reason}")
                continue
            if spec.reconfigures:
                refusal = self.check_config(params)
                if refusal is None and params == self.supervisor.params:
                    refusal = "changes nothing"
                if refusal:
                    skipped.append(f"{spec.id}: {refusal}")
                    continue
            return spec, params, skipped
        return None, None, skipped

    def check_config(self, params: "EngineParams | None") -> str | None:
        """Why ``params`` must not be applied (the change transaction's vetting), or None."""
        if params is None:
            return None
        if self.changes is None:
            return "no change transaction in this core"
        return self.changes.vet(params)

    def propose(self, finding: Finding) -> RepairSpec | None:
        spec, params, skipped = self.plan(finding)
        if spec is None:
            if finding.repairs:
                finding.note("no_repair", skipped=skipped)
                self.book.emit("updated", finding, "no applicable repair: " + "; ".join(skipped))
            else:
                finding.note("no_repair", skipped=["the detector suggests no repair"])
            return None
        changes = _diff(self._engine().params, params)
        finding.proposed = spec.id
        if finding.state in OPEN_STATES:
            finding.state = "proposed"
        note = f"{spec.id}: {spec.changes}" + (f" ({_fmt_changes(changes)})" if changes else "")
        finding.action_id = self.journal.safe(lambda j: j.propose_action(
            spec.id, changes or {"changes": spec.changes}, proposed_by="auto", finding_id=finding.journal_id,
            note=note))
        finding.note("proposed", repair=spec.id, changes=changes, skipped=skipped)
        self.book.emit("proposed", finding, note, repair=spec.id, changes=changes)
        return spec

    def _rails_block(self, finding: Finding, spec: RepairSpec, now: float) -> bool:
        """True when the kill switch or the start limit forbid ``spec`` now (the latter is said once)."""
        if self.kill_switch_on:
            return True
        if self.start_limit_hit and spec.restarts_engine:
            return True
        if not spec.restarts_engine:
            return False
        window = self.policy.start_limit_interval_s
        while self._restarts and now - self._restarts[0] > window:
            self._restarts.popleft()
        if len(self._restarts) < self.policy.start_limit_burst:
            return False
        self.start_limit_hit = True
        finding.state = "gave_up"
        finding.note("gave_up", restarts=len(self._restarts))
        self.book.close(finding)
        self.book.reject_action(finding, "start limit reached")
        self.book.notice(
            f"start limit reached: {len(self._restarts)} automatic restarts within {window:g} s; "
            f"automatic repair stopped. Fix the cause, then reset the start limit ({START_LIMIT_HOW}).",
            finding_id=finding.id, restarts=len(self._restarts))
        self.book.emit("updated", finding, "gave up: start limit reached")
        self._settled(finding)
        return True

    def _maybe_auto(self, finding: Finding, hold: int) -> None:
        now = time.time()
        spec = self.plugins.registry.repairs.get(finding.proposed or "")
        if spec is None or self._inflight is not None:
            return
        if self.kill_switch_on or self.start_limit_hit and spec.restarts_engine:
            return
        if finding.streak < hold:
            return
        count, next_ok = self._backoff.get(finding.fingerprint, (0, 0.0))
        if now < next_ok:
            return
        if self._rails_block(finding, spec, now):
            return
        self._backoff[finding.fingerprint] = (count + 1, now + self.backoff_delay(count + 1))
        if self.dry_run:
            finding.note("dry_run", repair=spec.id)
            action_id = finding.action_id
            self.journal.safe(lambda j: j.record_event(
                "doctor", {"dry_run": True, "would_apply": spec.id, "finding": finding.journal_id,
                           "action": action_id}))
            self.book.emit("action", finding, f"dry run: would apply {spec.id}", state="dry_run", repair=spec.id)
            return
        if spec.restarts_engine:
            self._restarts.append(now)
        self._launch(finding, spec, proposed_by="auto")

    def backoff_delay(self, attempts: int) -> float:
        """The wait after the ``attempts``-th automatic attempt on a finding: backoff_s, doubling."""
        # the exponent is capped: 0.2 * 2 ** 1024 no longer fits a float (about 85 h of 300 s waits)
        return min(self.policy.backoff_max_s, self.policy.backoff_s * 2.0 ** min(attempts - 1, 60))

    # ---- operator decisions (any thread) -----------------------------------------------------
    def accept(self, finding: Finding) -> str | None:
        """Apply the proposed repair now (suggest mode). Returns None, or why it cannot."""
        if finding.state not in OPEN_STATES or finding.proposed is None:
            return f"finding #{finding.id} has no repair waiting ({finding.state})"
        spec = self.plugins.registry.repairs.get(finding.proposed)
        if spec is None or not spec.enabled:
            return f"repair {finding.proposed} is not available"
        with self._lock:
            if self._inflight is not None:
                return f"another repair is in progress (finding #{self._inflight.id})"
            self._launch(finding, spec, proposed_by="operator")
        return None

    # ---- applying a repair, then the next one -------------------------------------------------
    def _launch(self, finding: Finding, spec: RepairSpec, *, proposed_by: str) -> None:
        with self._lock:
            self._inflight = finding
            finding.state = "acting"
        self._thread = threading.Thread(target=self._run, args=(finding, spec, proposed_by),
                                        name="llmos-doctor-repair", daemon=True)
        self._thread.start()

    def _run(self, finding: Finding, spec: RepairSpec, proposed_by: str) -> None:
        started = time.time()
        healthy = False
        try:
            while True:
                healthy = self._act(finding, spec, proposed_by)
                if healthy or self.stopping.is_set() or finding.state in OPEN_STATES:
                    break
                next_spec = self._next_repair(finding)
                if next_spec is None:
                    break
                spec, proposed_by = next_spec, "auto"
        except Exception as exc:  # noqa: BLE001
            log.exception("repair %s failed", spec.id)
            finding.state = "failed"
            finding.note("failed", repair=spec.id, reason=describe_error(exc))
            self.book.emit("action", finding, f"{spec.id} failed: {exc}", state="failed", repair=spec.id)
        finally:
            with self._lock:
                if finding.state not in OPEN_STATES:
                    self.book.close(finding)
                # crashes while the repair restarted and verified belong to it when it ended healthy
                if healthy:
                    for other in self.book.open_findings():
                        if other.ts >= started and other.detector in _HEALED_BY_A_RESTART:
                            self.book.close(other)
                            other.state = "resolved"
                            other.note("resolved", why=f"handled by the repair of #{finding.id}")
                self._inflight = None
                # the wait before the next attempt counts from the end of this one (a repair that takes
                # longer than the backoff is not repeated the moment it ends)
                if not healthy and finding.fingerprint in self._backoff:
                    count, _ = self._backoff[finding.fingerprint]
                    self._backoff[finding.fingerprint] = (count, time.time() + self.backoff_delay(count))
            if finding.state not in OPEN_STATES:
                self._settled(finding)
            self.wake()

    def _next_repair(self, finding: Finding) -> RepairSpec | None:
        """After a failed repair: the next one for the same finding, at once, within the rails.

        In auto mode it runs now; otherwise (the operator accepted the first) it is proposed and
        waits for the operator. None: nothing left to try, or a rail forbids it."""
        if not self.changes_allowed:
            return None
        spec = self.propose(finding)
        if spec is None:
            finding.state = "failed"
            return None
        if self.policy.mode_for(finding.detector, finding.severity) != "auto":
            finding.state = "proposed"
            self.book.hold_open(finding)
            return None
        if self._rails_block(finding, spec, time.time()):
            return None
        if spec.restarts_engine:
            self._restarts.append(time.time())
        finding.state = "acting"
        self.book.emit("action", finding, f"trying the next repair at once: {spec.id}", state="next",
                       repair=spec.id)
        return spec

    def _settled(self, finding: Finding) -> None:
        """The last word on a finding's repairs: its end state and what the engine runs now."""
        sup = self.supervisor
        self.book.emit("settled", finding, f"#{finding.id} {finding.state}", outcome=finding.state,
                       engine=sup.state.value if sup is not None else None, action_id=finding.action_id)

    def _preview(self, spec: RepairSpec, ctx: RepairContext,
                 finding: Finding) -> "tuple[str | None, EngineParams | None]":
        """(why the repair does not fit, or None; the parameters a reconfiguring one proposes)."""
        try:
            reason = self._guard(spec, lambda: spec.precondition(ctx, finding)) if spec.precondition else None
            params = self._guard(spec, lambda: spec.fn(ctx, finding)) if spec.reconfigures else None
        except NotApplicable as exc:
            return str(exc), None
        except Exception as exc:  # noqa: BLE001 - a broken repair plugin is disabled, not fatal
            reason = f"raised {describe_error(exc)}"
            if spec.origin != "builtin":
                self.plugins.disable(spec.origin, f"repair {spec.id} {reason}")
            return reason, None
        return reason, params

    def _guard(self, spec: RepairSpec, call: Callable[[], T], *, timeout: float = 5.0) -> T:
        """Run a plugin's repair code with a time limit (built-ins run as they are). One that
        hangs is abandoned and its plugin disabled, so the doctor's own thread goes on."""
        if spec.origin == "builtin":
            return call()
        box: dict[str, T | BaseException] = {}

        def run() -> None:
            try:
                box["result"] = call()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                box["error"] = exc

        thread = threading.Thread(target=run, name=f"repair-{spec.id}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.plugins.disable(spec.origin, f"repair {spec.id} ran past its {timeout:.0f} s limit")
            raise NotApplicable(f"timed out after {timeout:.0f} s; its plugin is disabled")
        error = box.get("error")
        if isinstance(error, BaseException):
            raise error
        return box.get("result")  # type: ignore[return-value]

    def _act(self, finding: Finding, spec: RepairSpec, proposed_by: str) -> bool:
        action_id = finding.action_id
        if action_id is None:
            action_id = finding.action_id = self.journal.safe(lambda j: j.propose_action(
                spec.id, {"changes": spec.changes}, proposed_by=proposed_by, finding_id=finding.journal_id,
                note=spec.changes))
        sup = self._engine()
        ensure_config(self.journal, sup)
        ctx = self.repair_context(finding)
        reason, new_params = self._preview(spec, ctx, finding)
        if reason:
            return self._fail(finding, spec, action_id, f"not applicable: {reason}", refused=True)
        record: dict[str, object] = {"ts": time.time(), "finding": finding.id, "repair": spec.id, "by": proposed_by}
        self.actions.append(record)
        del self.actions[:-200]
        check = self._metric_check(finding, spec)
        if spec.reconfigures:
            if new_params is None:
                return self._fail(finding, spec, action_id, "not applicable: it proposed no parameters", refused=True)
            return self._reconfigure(finding, spec, action_id, new_params, proposed_by, check, record)
        before_cfg = active_config_id(self.journal)
        if action_id is not None:
            self.journal.safe(lambda j: j.set_action_state(action_id, "applied", note=spec.changes,
                                                           config_before=before_cfg))
        self.book.emit("action", finding, f"applying {spec.id}", state="applied", repair=spec.id)
        finding.note("applied", repair=spec.id, action_id=action_id)
        try:
            self._guard(spec, lambda: spec.fn(ctx, finding), timeout=sup.load_timeout + 30)
            verdict = verify_live(sup, self.policy.ready_timeout_s, self.canary.run, check)
        except NotApplicable as exc:
            return self._fail(finding, spec, action_id, f"not applicable: {exc}", refused=True)
        except LlmosError as exc:
            verdict = str(exc)
        record["verdict"] = verdict or "verified"
        if verdict is not None:
            return self._fail(finding, spec, action_id, f"verification failed: {verdict}")
        if action_id is not None:
            self.journal.safe(lambda j: j.set_action_state(action_id, "verified", note=_verified_note(check)))
        return self._succeeded(finding, spec, check)

    def _reconfigure(self, finding: Finding, spec: RepairSpec, action_id: int | None, new_params: "EngineParams",
                     proposed_by: str, check: Verifier | None, record: dict[str, object]) -> bool:
        """A reconfiguring repair through the change transaction (vet, journal, reload, verify, roll back)."""
        if self.changes is None:
            return self._fail(finding, spec, action_id, "refused: no change transaction in this core", refused=True)
        changes = _diff(self._engine().params, new_params)
        self.book.emit("action", finding, f"applying {spec.id}: {_fmt_changes(changes)}", state="applied",
                       repair=spec.id)
        finding.note("applied", repair=spec.id, changes=changes, action_id=action_id)
        window = [time.time(), float("inf")]  # the loads in here are this repair's own
        self._own_windows.append(window)
        try:
            result = self.changes.propose(
                new_params, source="repair", reason=f"doctor: {finding.title}", kind=spec.id,
                proposed_by=proposed_by, finding_id=finding.journal_id, action_id=action_id, verify=check)
        finally:
            window[1] = time.time()
        record["verdict"] = result.state if result.ok else result.message
        if result.state == "applied":
            return self._succeeded(finding, spec, check, config_id=result.config_id)
        if result.state == "unchanged":
            return self._fail(finding, spec, None, "changes nothing", refused=True)
        if result.state == "refused" and result.details.get("busy"):
            # not this repair's fault: it waits for its turn (backoff), and is not counted as tried
            finding.note("busy", repair=spec.id, reason=result.message)
            if action_id is not None:
                self.journal.safe(lambda j: j.set_action_state(action_id, "rejected", note=result.message))
            finding.action_id = None
            finding.proposed = None
            finding.state = "open"
            self.book.emit("action", finding, f"{spec.id} waits: {result.message}", state="waiting", repair=spec.id)
            return False
        if result.state == "refused":
            return self._fail(finding, spec, None, result.message, refused=True)
        verdict = result.details.get("verdict") or result.message
        self._fail(finding, spec, None, f"verification failed: {verdict}")
        if result.state == "rolled_back":
            finding.note("rolled_back", repair=spec.id, to=f"cfg:{result.config_id}")
            self.book.emit("action", finding, f"rolled back {spec.id}: back to cfg:{result.config_id}",
                           state="rolled_back", repair=spec.id)
            self.book.emit("action", finding, "rollback verified", state="verified", repair="rollback")
        else:
            window[0] = float("inf")  # a rollback that failed leaves a dead engine: that one is seen
            self.book.notice(f"{spec.id} failed and its rollback failed too: {result.message}", finding_id=finding.id)
            self.book.emit("action", finding, f"rollback failed: {result.details.get('rollback')}", state="failed",
                           repair="rollback")
        return False

    def _succeeded(self, finding: Finding, spec: RepairSpec, check: Verifier | None,
                   config_id: int | None = None) -> bool:
        self._backoff.pop(finding.fingerprint, None)
        finding.state = "repaired"
        last = self.canary.last
        finding.note("verified", repair=spec.id, canary=last.to_dict() if last else None,
                     **({"metric": check.describe()} if isinstance(check, MetricCheck) else {}),
                     **({"config": f"cfg:{config_id}"} if config_id is not None else {}))
        what = "the engine answers again" + (f" and {check.metric} is back" if isinstance(check, MetricCheck) else "")
        self.book.emit("action", finding, f"{spec.id} verified: {what}", state="verified", repair=spec.id)
        return True

    def _fail(self, finding: Finding, spec: RepairSpec, action_id: int | None, why: str, *,
              refused: bool = False) -> bool:
        if action_id is not None:
            self.journal.safe(lambda j: j.set_action_state(action_id, "failed", note=why))
        finding.state = "failed"
        finding.note("refused" if refused else "failed", repair=spec.id, reason=why)
        self.book.emit("action", finding, f"{spec.id} {why}", state="failed", repair=spec.id)
        return False

    # ---- verification ---------------------------------------------------------------------------
    def _metric_check(self, finding: Finding, spec: RepairSpec) -> Verifier | None:
        metric = spec.verify_metric or finding.evidence.get("verify_metric")
        settings = {"verify_requests": self.policy.verify_requests, **self.policy.settings_for(finding.detector)}
        return metric_check(self.supervisor, finding.evidence, settings, self._workload_for.get(finding.id),
                            str(metric) if metric else None, probe_flag=self.canary.probing)

    def capture_workload(self, finding: Finding) -> None:
        """A finding judged by a metric keeps the workload that raised it (before it is journaled)."""
        if not finding.evidence.get("verify_metric"):
            return
        workload = self.workloads.typical()
        if workload is not None:
            self._workload_for[finding.id] = workload
            while len(self._workload_for) > 50:
                self._workload_for.pop(next(iter(self._workload_for)))
            finding.evidence["workload"] = workload.summary()


def _verified_note(check: Verifier | None) -> str:
    if isinstance(check, MetricCheck):
        d = check.describe()
        return f"canary passed; {d['metric']} {d['measured']} vs {d['target']} on {d['workload']}"
    return "canary passed"


def _diff(before: "EngineParams", after: "EngineParams | None") -> dict[str, object]:
    if after is None:
        return {}
    a, b = before.to_dict(), after.to_dict()
    return {k: b[k] for k in b if a.get(k) != b[k]}


def _fmt_changes(changes: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "no parameter change"
