"""The doctor's actions: the policy's decision per open finding (propose, act automatically
under the guard rails), applying a repair, verifying it, and trying the next one at once
when it fails.

A part of :class:`~llmos_tui.doctor.loop.Doctor` (a mixin). Every repair that reconfigures
the engine, and its rollback, goes through the one change transaction
(:meth:`llmos_tui.core.changes.Changes.propose`): vetting (bad-list, VRAM fit), journaling,
reload, the canary, the metric check, mark good or bad and roll back. Repairs that act
themselves (a restart, a context reset) are verified the same way here.

Rails: one action in flight, backoff per finding, the start limit on restarts, the kill
switch, dry run, hysteresis — checked before the first repair and before each next one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from llmos_tui.doctor.api import SEVERITY_RANK, Finding, NotApplicable, RepairSpec
from llmos_tui.doctor.context import EngineHandle, RepairContext
from llmos_tui.doctor.findings import OPEN_STATES
from llmos_tui.doctor.plugins import describe_error
from llmos_tui.doctor.verify import metric_check
from llmos_tui.engine.probe import CanaryResult, run_canary, verify_live
from llmos_tui.errors import LlmosError

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.doctor.loop import Doctor

log = logging.getLogger("llmos_tui.doctor")


class ActionsMixin:
    # ---- the policy -----------------------------------------------------------------------
    def _decide(self: "Doctor") -> None:
        with self._lock:
            candidates = sorted(
                (f for f in self._open.values() if f.state in OPEN_STATES),
                key=lambda f: (-SEVERITY_RANK[f.severity], f.id),
            )
        for finding in candidates:
            mode = self.policy.mode_for(finding.detector, finding.severity)
            if mode == "off":
                continue
            if finding.proposed is None and not finding.history_flag("no_repair"):
                self._propose(finding)
            if finding.proposed is None:
                continue
            if mode == "auto":
                self._maybe_auto(finding)

    def _repair_context(self: "Doctor", finding: Finding) -> RepairContext:
        sup = self.supervisor
        return RepairContext(
            engine=EngineHandle(sup, self.changes), params=sup.params, model_info=sup.model_info, journal=self.journal_view,
            finding=finding, settings=self.policy.settings_for(finding.detector), services=self.services,
            operator_idle_s=self.operator_idle_s, stopped=lambda: self._kill_switch or self._stop.is_set(),
        )

    def plan(self: "Doctor", finding: Finding) -> tuple[RepairSpec | None, Any, list[str]]:
        """The repair the doctor would apply (smallest change first), its new params, and why others were skipped."""
        skipped: list[str] = []
        if self.supervisor is None:
            return None, None, ["no engine attached"]
        specs = [self.registry.repairs.get(rid) for rid in finding.repairs]
        skipped += [f"{rid}: no such repair" for rid, s in zip(finding.repairs, specs) if s is None]
        tried = {h.get("repair") for h in finding.history if h.get("what") in ("failed", "refused")}
        for spec in sorted((s for s in specs if s is not None), key=lambda s: s.cost):
            if not spec.enabled:
                skipped.append(f"{spec.id}: disabled ({spec.error})")
                continue
            if spec.id in tried:
                skipped.append(f"{spec.id}: already tried for this finding")
                continue
            reason, params = self._preview(spec, self._repair_context(finding), finding)
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

    def _propose(self: "Doctor", finding: Finding) -> RepairSpec | None:
        spec, params, skipped = self.plan(finding)
        if spec is None:
            if finding.repairs:
                finding.note("no_repair", skipped=skipped)
                self._emit("updated", finding, "no applicable repair: " + "; ".join(skipped))
            else:
                finding.note("no_repair", skipped=["the detector suggests no repair"])
            return None
        changes = _diff(self.supervisor.params, params) if params is not None else {}
        finding.proposed = spec.id
        if finding.state in OPEN_STATES:
            finding.state = "proposed"
        note = f"{spec.id}: {spec.changes}" + (f" ({_fmt_changes(changes)})" if changes else "")
        finding.action_id = self.journal.safe(lambda j: j.propose_action(
            spec.id, changes or {"changes": spec.changes}, proposed_by="auto", finding_id=finding.journal_id,
            note=note))
        finding.note("proposed", repair=spec.id, changes=changes, skipped=skipped)
        self._emit("proposed", finding, note, repair=spec.id, changes=changes)
        return spec

    def _rails_block(self: "Doctor", finding: Finding, spec: RepairSpec, now: float) -> bool:
        """True when the kill switch or the start limit forbid ``spec`` now (the latter is said once)."""
        if self._kill_switch:
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
        with self._lock:
            if self._open.get(finding.fingerprint) is finding:
                del self._open[finding.fingerprint]
        self._reject_action(finding, "start limit reached")
        self._notice(
            f"start limit reached: {len(self._restarts)} automatic restarts within {window:g} s; "
            f"automatic repair stopped. Fix the cause, then reset the start limit.",
            finding_id=finding.id, restarts=len(self._restarts))
        self._emit("updated", finding, "gave up: start limit reached")
        self._settled(finding)
        return True

    def _maybe_auto(self: "Doctor", finding: Finding) -> None:
        now = time.time()
        spec = self.registry.repairs.get(finding.proposed or "")
        if spec is None or self._inflight is not None:
            return
        if self._kill_switch or self.start_limit_hit and spec.restarts_engine:
            return
        need = self.registry.detectors.get(finding.detector)
        hold = need.hysteresis if need is not None and need.hysteresis is not None else self.policy.hysteresis
        if finding.streak < hold:
            return
        count, next_ok = self._backoff.get(finding.fingerprint, (0, 0.0))
        if now < next_ok:
            return
        if self._rails_block(finding, spec, now):
            return
        self._backoff[finding.fingerprint] = (count + 1, now + self._backoff_delay(count + 1))
        if self.dry_run:
            finding.note("dry_run", repair=spec.id)
            action_id = finding.action_id
            self.journal.safe(lambda j: j.record_event(
                "doctor", {"dry_run": True, "would_apply": spec.id, "finding": finding.journal_id,
                           "action": action_id}))
            self._emit("action", finding, f"dry run: would apply {spec.id}", state="dry_run", repair=spec.id)
            return
        if spec.restarts_engine:
            self._restarts.append(now)
        self._launch(finding, spec, proposed_by="auto")

    def _backoff_delay(self: "Doctor", attempts: int) -> float:
        """The wait after the ``attempts``-th automatic attempt on a finding: backoff_s, doubling."""
        # the exponent is capped: 0.2 * 2 ** 1024 no longer fits a float (about 85 h of 300 s waits)
        return min(self.policy.backoff_max_s, self.policy.backoff_s * 2.0 ** min(attempts - 1, 60))

    # ---- operator decisions (any thread) ----------------------------------------------------
    def accept(self: "Doctor", finding_id: int) -> str | None:
        """Apply the proposed repair now (suggest mode). Returns None, or why it cannot."""
        finding = self.get(finding_id)
        if finding.state not in OPEN_STATES or finding.proposed is None:
            return f"finding #{finding_id} has no repair waiting ({finding.state})"
        spec = self.registry.repairs.get(finding.proposed)
        if spec is None or not spec.enabled:
            return f"repair {finding.proposed} is not available"
        with self._lock:
            if self._inflight is not None:
                return f"another repair is in progress (finding #{self._inflight.id})"
            self._launch(finding, spec, proposed_by="operator")
        return None

    # ---- applying a repair, then the next one ------------------------------------------------
    def _launch(self: "Doctor", finding: Finding, spec: RepairSpec, *, proposed_by: str) -> None:
        with self._lock:
            self._inflight = finding
            finding.state = "acting"
        self._action_thread = threading.Thread(
            target=self._act_guarded, args=(finding, spec, proposed_by), name="llmos-doctor-repair", daemon=True)
        self._action_thread.start()

    def _act_guarded(self: "Doctor", finding: Finding, spec: RepairSpec, proposed_by: str) -> None:
        started = time.time()
        healthy = False
        try:
            while True:
                healthy = self._act(finding, spec, proposed_by)
                if healthy or self._stop.is_set() or finding.state in OPEN_STATES:
                    break
                spec = self._next_repair(finding)
                if spec is None:
                    break
                proposed_by = "auto"
        except Exception as exc:  # noqa: BLE001
            log.exception("repair %s failed", spec.id)
            finding.state = "failed"
            finding.note("failed", repair=spec.id, reason=describe_error(exc))
            self._emit("action", finding, f"{spec.id} failed: {exc}", state="failed", repair=spec.id)
        finally:
            with self._lock:
                if self._open.get(finding.fingerprint) is finding and finding.state not in OPEN_STATES:
                    del self._open[finding.fingerprint]
                # crashes while the repair restarted and verified belong to it when it ended healthy
                if healthy:
                    for fp, other in list(self._open.items()):
                        if other.ts >= started and other.detector in ("engine.crashed", "engine.oom", "engine.canary"):
                            del self._open[fp]
                            other.state = "resolved"
                            other.note("resolved", why=f"handled by the repair of #{finding.id}")
                self._inflight = None
                # the wait before the next attempt counts from the end of this one (a repair that takes
                # longer than the backoff is not repeated the moment it ends); _maybe_auto counted it
                if not healthy and finding.fingerprint in self._backoff:
                    count, _ = self._backoff[finding.fingerprint]
                    self._backoff[finding.fingerprint] = (count, time.time() + self._backoff_delay(count))
            if finding.state not in OPEN_STATES:
                self._settled(finding)
            self._wake.put("event")

    def _next_repair(self: "Doctor", finding: Finding) -> RepairSpec | None:
        """After a failed repair: the next one for the same finding, at once, within the rails.

        In auto mode it runs now; otherwise (the operator accepted the first) it is proposed and
        waits for the operator. None: nothing left to try, or a rail forbids it."""
        if not self.changes_allowed:
            return None
        spec = self._propose(finding)
        if spec is None:
            finding.state = "failed"
            return None
        mode = self.policy.mode_for(finding.detector, finding.severity)
        if mode != "auto":
            with self._lock:
                finding.state = "proposed"
                self._open[finding.fingerprint] = finding
            return None
        if self._rails_block(finding, spec, time.time()):
            return None
        if spec.restarts_engine:
            self._restarts.append(time.time())
        finding.state = "acting"
        self._emit("action", finding, f"trying the next repair at once: {spec.id}", state="next", repair=spec.id)
        return spec

    @property
    def changes_allowed(self: "Doctor") -> bool:
        return not (self._kill_switch or self.dry_run)

    def _settled(self: "Doctor", finding: Finding) -> None:
        """The last word on a finding's repairs: its end state and what the engine runs now."""
        sup = self.supervisor
        self._emit("settled", finding, f"#{finding.id} {finding.state}", outcome=finding.state,
                   engine=sup.state.value if sup is not None else None, action_id=finding.action_id)

    def _preview(self: "Doctor", spec: RepairSpec, ctx: Any, finding: Finding) -> tuple[str | None, Any]:
        """(why the repair does not fit, or None; the parameters a reconfiguring one proposes)."""
        try:
            reason = self._guard(spec, spec.precondition, ctx, finding) if spec.precondition else None
            params = self._guard(spec, spec.fn, ctx, finding) if spec.reconfigures else None
        except NotApplicable as exc:
            return str(exc), None
        except Exception as exc:  # noqa: BLE001 - a broken repair plugin is disabled, not fatal
            reason = f"raised {describe_error(exc)}"
            if spec.origin != "builtin":
                self.plugins.disable(spec.origin, f"repair {spec.id} {reason}")
            return reason, None
        return reason, params

    def _guard(self: "Doctor", spec: RepairSpec, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run a plugin's repair code with a time limit (built-ins run as they are). One that
        hangs is abandoned and its plugin disabled, so the doctor's own thread goes on."""
        if spec.origin == "builtin":
            return fn(*args)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                box["error"] = exc

        thread = threading.Thread(target=run, name=f"repair-{spec.id}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.plugins.disable(spec.origin, f"repair {spec.id} ran past its {timeout:.0f} s limit")
            raise NotApplicable(f"timed out after {timeout:.0f} s; its plugin is disabled")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _act(self: "Doctor", finding: Finding, spec: RepairSpec, proposed_by: str) -> bool:
        action_id = finding.action_id
        if action_id is None:
            action_id = finding.action_id = self.journal.safe(lambda j: j.propose_action(
                spec.id, {"changes": spec.changes}, proposed_by=proposed_by, finding_id=finding.journal_id,
                note=spec.changes))
        self._ensure_config()
        ctx = self._repair_context(finding)
        reason, new_params = self._preview(spec, ctx, finding)
        if reason:
            return self._fail(finding, spec, action_id, f"not applicable: {reason}", refused=True)
        record = {"ts": time.time(), "finding": finding.id, "repair": spec.id, "by": proposed_by}
        self.actions.append(record)
        del self.actions[:-200]
        check = self._metric_check(finding, spec)
        if spec.reconfigures:
            return self._reconfigure(finding, spec, action_id, new_params, proposed_by, check, record)
        before_cfg = self._active_config_id()
        if action_id is not None:
            self.journal.safe(lambda j: j.set_action_state(action_id, "applied", note=spec.changes,
                                                           config_before=before_cfg))
        self._emit("action", finding, f"applying {spec.id}", state="applied", repair=spec.id)
        finding.note("applied", repair=spec.id, action_id=action_id)
        try:
            self._guard(spec, spec.fn, ctx, finding, timeout=self.supervisor.load_timeout + 30)
            verdict = self._verify(check)
        except NotApplicable as exc:
            return self._fail(finding, spec, action_id, f"not applicable: {exc}", refused=True)
        except LlmosError as exc:
            verdict = str(exc)
        record["verdict"] = verdict or "verified"
        if verdict is None:
            if action_id is not None:
                self.journal.safe(lambda j: j.set_action_state(action_id, "verified", note=_verified_note(check)))
            return self._succeeded(finding, spec, check)
        self._fail(finding, spec, action_id, f"verification failed: {verdict}")
        return False

    def _reconfigure(self: "Doctor", finding: Finding, spec: RepairSpec, action_id: int | None, new_params: Any,
                     proposed_by: str, check: Any, record: dict[str, Any]) -> bool:
        """A reconfiguring repair through the change transaction (vet, journal, reload, verify, roll back)."""
        changes = _diff(self.supervisor.params, new_params)
        self._emit("action", finding, f"applying {spec.id}: {_fmt_changes(changes)}", state="applied", repair=spec.id)
        finding.note("applied", repair=spec.id, changes=changes, action_id=action_id)
        result = self.changes.propose(
            new_params, source="repair", reason=f"doctor: {finding.title}", kind=spec.id, proposed_by=proposed_by,
            finding_id=finding.journal_id, action_id=action_id, verify=check)
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
            self._emit("action", finding, f"{spec.id} waits: {result.message}", state="waiting", repair=spec.id)
            return False
        if result.state == "refused":
            return self._fail(finding, spec, None, result.message, refused=True)
        verdict = result.details.get("verdict") or result.message
        self._fail(finding, spec, None, f"verification failed: {verdict}")
        if result.state == "rolled_back":
            finding.note("rolled_back", repair=spec.id, to=f"cfg:{result.config_id}")
            self._emit("action", finding, f"rolled back {spec.id}: back to cfg:{result.config_id}",
                       state="rolled_back", repair=spec.id)
            self._emit("action", finding, "rollback verified", state="verified", repair="rollback")
        else:
            self._notice(f"{spec.id} failed and its rollback failed too: {result.message}", finding_id=finding.id)
            self._emit("action", finding, f"rollback failed: {result.details.get('rollback')}", state="failed",
                       repair="rollback")
        return False

    def _succeeded(self: "Doctor", finding: Finding, spec: RepairSpec, check: Any, config_id: int | None = None) -> bool:
        self._backoff.pop(finding.fingerprint, None)
        finding.state = "repaired"
        finding.note("verified", repair=spec.id, canary=self.last_canary.to_dict() if self.last_canary else None,
                     **({"metric": check.describe()} if hasattr(check, "describe") else {}),
                     **({"config": f"cfg:{config_id}"} if config_id is not None else {}))
        what = "the engine answers again" + (f" and {check.metric} is back" if hasattr(check, "metric") else "")
        self._emit("action", finding, f"{spec.id} verified: {what}", state="verified", repair=spec.id)
        return True

    def _fail(self: "Doctor", finding: Finding, spec: RepairSpec, action_id: int | None, why: str, *,
              refused: bool = False) -> bool:
        if action_id is not None:
            self.journal.safe(lambda j: j.set_action_state(action_id, "failed", note=why))
        finding.state = "failed"
        finding.note("refused" if refused else "failed", repair=spec.id, reason=why)
        self._emit("action", finding, f"{spec.id} {why}", state="failed", repair=spec.id)
        return False

    # ---- verification --------------------------------------------------------------------------
    def _metric_check(self: "Doctor", finding: Finding, spec: RepairSpec) -> Any:
        metric = spec.verify_metric or finding.evidence.get("verify_metric")
        settings = {"verify_requests": self.policy.verify_requests, **self.policy.settings_for(finding.detector)}
        return metric_check(self.supervisor, finding.evidence, settings,
                            self._workload_for.get(finding.id), metric, probe_flag=self._canary_running)

    def _capture_workload(self: "Doctor", finding: Finding) -> None:
        if not finding.evidence.get("verify_metric"):
            return
        workload = self._workloads.typical()
        if workload is not None:
            self._workload_for[finding.id] = workload
            while len(self._workload_for) > 50:
                self._workload_for.pop(next(iter(self._workload_for)))
            finding.evidence["workload"] = workload.summary()

    def _verify(self: "Doctor", check: Callable[[], str | None] | None) -> str | None:
        """None when the engine is healthy after a repair that acted itself: ready, the canary
        (liveness), then the metric that raised the finding on a workload of its shape."""
        return verify_live(self.supervisor, self.policy.ready_timeout_s, self.run_canary, check)

    # ---- the canary and configuration checks ---------------------------------------------------
    def run_canary(self: "Doctor", **overrides: Any) -> CanaryResult:
        """Run the canary probe now (blocking, any thread but the UI's): the liveness check."""
        options = {"timeout": self.policy.canary_timeout_s, "max_tokens": self.policy.canary_max_tokens}
        options.update(overrides)
        self._canary_running.set()
        try:
            result = run_canary(self.supervisor, **options)
        finally:
            self._canary_running.clear()
        self.last_canary = result
        if result.ok and self.journal.available:
            # a configuration that answers the canary is known good
            config_id = self._active_config_id()
            if config_id is not None:
                cfg = self.journal.safe(lambda j: j.get_config(config_id))
                if cfg is not None and cfg.standing == "unverified":
                    self.journal.safe(lambda j: j.mark_good(config_id))
        return result

    def check_config(self: "Doctor", params: Any) -> str | None:
        """Why ``params`` must not be applied (the change transaction's vetting), or None."""
        return None if params is None else self.changes.vet(params)

    def _active_config_id(self: "Doctor") -> int | None:
        active = self.journal.safe(lambda j: j.active_config())
        return active.id if active is not None else None

    def _ensure_config(self: "Doctor") -> None:
        """The journal's active configuration must be what the engine runs (repairs and undo build on it)."""
        if not self.journal.available or self.supervisor is None:
            return
        params = self.supervisor.params

        def ensure(j: Any) -> None:
            active = j.active_config()
            if active is not None and {**active.params, "model_path": active.model_path} == params.to_dict():
                return
            j.record_config(params, source="operator", note="the configuration the doctor found running")

        self.journal.safe(ensure)


def _verified_note(check: Any) -> str:
    if hasattr(check, "describe"):
        d = check.describe()
        return f"canary passed; {d['metric']} {d['measured']} vs {d['target']} on {d['workload']}"
    return "canary passed"


def _diff(before: Any, after: Any) -> dict[str, Any]:
    if after is None:
        return {}
    a, b = before.to_dict(), after.to_dict()
    return {k: b[k] for k in b if a.get(k) != b[k]}


def _fmt_changes(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "no parameter change"
