"""The doctor loop: runs detectors on every sample and engine event, keeps findings, and
applies the policy (suggest or repair automatically, with guard rails), journaling everything.

Threads: detection runs on the doctor's own thread (never the sampler's, the supervisor's
or the UI's); each detector runs in a worker thread with a time limit (a hung one is
abandoned and its plugin disabled); a repair runs on an action thread, one at a time.
Subscribers get a :class:`DoctorEvent` for every new finding, update, resolution, action
step and notice — on the doctor's threads, so a UI must hand them over to its own thread.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llmos_tui.observers import Observers
from llmos_tui.doctor import vram
from llmos_tui.doctor.api import SEVERITY_RANK, DetectorSpec, Finding, NotApplicable, RepairSpec
from llmos_tui.doctor.canary import CanaryResult, run_canary, wait_ready
from llmos_tui.doctor.context import DetectorContext, JournalView, RepairContext
from llmos_tui.doctor.plugins import PluginManager, describe_error
from llmos_tui.doctor.policy import Policy
from llmos_tui.errors import LlmosError

log = logging.getLogger("llmos_tui.doctor")

WAKE_KINDS = frozenset({"crashed", "load_failed", "loaded", "request_done", "error", "unloaded"})
OPEN_STATES = ("open", "proposed")


@dataclass
class DoctorEvent:
    """kind: finding, updated, resolved, proposed, action, notice."""

    kind: str
    finding: Finding | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


class _NoSource:
    """A telemetry source that adds nothing: the doctor's own sampler reads only engine stats."""

    def collect(self, sample: Any) -> None:
        return None


class _JournalPort:
    """One way to read and write whether the doctor got a Journal, a JournalWriter or nothing."""

    def __init__(self, journal: Any) -> None:
        self.target = journal
        self._lock = threading.RLock()

    @property
    def available(self) -> bool:
        return self.target is not None

    def call(self, fn: Callable[[Any], Any], timeout: float = 30.0) -> Any:
        target = self.target
        if target is None:
            return None
        if hasattr(target, "submit"):  # JournalWriter: runs on its thread, in its next batch
            return target.submit(fn).result(timeout)
        with self._lock:
            return fn(target)

    def safe(self, fn: Callable[[Any], Any], default: Any = None) -> Any:
        try:
            return self.call(fn)
        except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the doctor
            log.warning("doctor could not write the journal: %s", exc)
            return default


class Doctor:
    """Watches the engine and telemetry through detectors and repairs what the policy allows.

    ``supervisor``: the engine Supervisor (None: telemetry-only, e.g. a replayed trace).
    ``sampler``: a telemetry Sampler (None: the doctor samples engine stats itself).
    ``journal``: a Journal, a JournalWriter, or None.
    ``policy``: a Policy or the ``[doctor]`` config table.
    ``plugins``: a loaded PluginManager (None: built-ins plus the default plugin folders).
    """

    def __init__(
        self,
        supervisor: Any = None,
        sampler: Any = None,
        journal: Any = None,
        policy: Policy | dict[str, Any] | None = None,
        plugins: PluginManager | None = None,
        *,
        chat: Any = None,
    ) -> None:
        self.supervisor = supervisor
        self.policy = policy if isinstance(policy, Policy) else Policy.from_config(policy or {})
        if plugins is None:
            plugins = PluginManager()
            plugins.load_all()
        self.plugins = plugins
        self.registry = plugins.registry
        self.journal = _JournalPort(journal)
        self.journal_view = JournalView(self.journal.call if journal is not None else None)
        self._own_sampler = sampler is None
        if sampler is None:
            from llmos_tui.telemetry.sampler import Sampler

            stats = supervisor.stats if supervisor is not None else None
            sampler = Sampler(_NoSource(), interval=self.policy.interval, engine_stats=stats, history=900)
        self.sampler = sampler
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._pass_lock = threading.Lock()
        self._observers: Observers[DoctorEvent] = Observers("doctor")
        self._findings: collections.OrderedDict[int, Finding] = collections.OrderedDict()
        self._open: dict[str, Finding] = {}
        self._events: collections.deque[tuple[int, Any]] = collections.deque(maxlen=500)
        self._event_seq = 0
        self._seen_event: dict[str, int] = {}
        self._seen_log_ts: dict[str, float] = {}
        self._memory: dict[str, dict[str, Any]] = collections.defaultdict(dict)
        self._silenced: dict[str, float] = {}
        self._backoff: dict[str, tuple[int, float]] = {}
        self._restarts: collections.deque[float] = collections.deque()
        self._inflight: Finding | None = None
        self._action_thread: threading.Thread | None = None
        self._wake: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._canary_running = threading.Event()
        self._last_operator_ts = 0.0
        self._last_reply: dict[str, Any] | None = None
        self._kill_switch = self.policy.kill_switch
        self.dry_run = self.policy.dry_run
        self.started_ts = time.time()
        self.last_load_ts: float | None = time.time() if supervisor is not None and supervisor.is_ready else None
        self.start_limit_hit = False
        self.last_canary: CanaryResult | None = None
        self.passes = 0
        self.actions: list[dict[str, Any]] = []  # what the doctor did, newest last (the UI's history)
        self.notices: list[str] = []
        self._plugins_reported = False
        self._pass_extra: list[Finding] = []

    # ---- wiring -----------------------------------------------------------------------
    def start(self) -> "Doctor":
        """Subscribe to the supervisor and the sampler and start the doctor thread."""
        if self._thread is not None:
            return self
        self._stop.clear()
        if self.supervisor is not None:
            self._unsubscribe.append(self.supervisor.subscribe(self._on_engine_event))
        self._unsubscribe.append(self.sampler.subscribe(self._on_sample))
        if self._own_sampler:
            self.sampler.start()
        self._ensure_config()
        self._thread = threading.Thread(target=self._run, name="llmos-doctor", daemon=True)
        self._thread.start()
        return self

    def attach_events(self) -> None:
        """Subscribe to engine events without starting the thread (headless run_once use)."""
        if self.supervisor is not None and not self._unsubscribe:
            self._unsubscribe.append(self.supervisor.subscribe(self._on_engine_event))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.put(None)
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:  # noqa: BLE001
                pass
        self._unsubscribe.clear()
        if self._own_sampler:
            self.sampler.stop()
        for thread in (self._thread, self._action_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        self._thread = None

    close = stop

    def subscribe(self, callback: Callable[[DoctorEvent], Any]) -> Callable[[], None]:
        return self._observers.subscribe(callback)

    def _emit(self, kind: str, finding: Finding | None = None, message: str = "", **data: Any) -> None:
        self._observers.publish(DoctorEvent(kind, finding, message, data))

    def watch_chat(self, chat: Any) -> None:
        """Read the replies of a ChatSession (for the repetition detector)."""

        def on_message(_session: Any, message: Any) -> None:
            if getattr(message, "role", "") == "assistant":
                self.observe_reply(message.content, getattr(message, "metrics", None))

        chat.add_listener(on_message)

    def observe_reply(self, text: str, metrics: dict[str, Any] | None = None) -> None:
        self._last_reply = {"text": text or "", "metrics": dict(metrics or {}), "ts": time.time()}
        self._wake.put("reply")

    # ---- inputs (other threads) -----------------------------------------------------------
    def _on_engine_event(self, event: Any) -> None:
        with self._lock:
            self._event_seq += 1
            self._events.append((self._event_seq, event))
        if event.kind == "loaded":
            self.last_load_ts = event.ts
        elif event.kind == "request_done" and not self._canary_running.is_set():
            self._last_operator_ts = event.ts
        if event.kind in WAKE_KINDS:
            self._wake.put("event")

    def _on_sample(self, sample: Any) -> None:
        self._wake.put("sample")

    # ---- properties -------------------------------------------------------------------------
    @property
    def kill_switch(self) -> bool:
        return self._kill_switch

    @kill_switch.setter
    def kill_switch(self, on: bool) -> None:
        on = bool(on)
        if on == self._kill_switch:
            return
        self._kill_switch = on
        text = "kill switch ON: no automatic action" if on else "kill switch off: automatic actions allowed"
        self._notice(text, kill_switch=on)

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    def findings(self, *, open_only: bool = False) -> list[Finding]:
        with self._lock:
            items = list(self._findings.values())
        if open_only:
            items = [f for f in items if f.state in OPEN_STATES]
        return items

    def get(self, finding_id: int) -> Finding:
        with self._lock:
            finding = self._findings.get(finding_id)
        if finding is None:
            raise LlmosError(f"no finding #{finding_id}")
        return finding

    def reset_start_limit(self) -> None:
        self._restarts.clear()
        if self.start_limit_hit:
            self.start_limit_hit = False
            self._notice("start limit reset: automatic restarts allowed again")

    # ---- the doctor thread ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._wake.get(timeout=max(0.05, self.policy.interval))
            except queue.Empty:
                item = "tick"
            if item is None:
                break
            # coalesce whatever else queued meanwhile into this one pass
            commands = [item] if callable(item) else []
            while True:
                try:
                    more = self._wake.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return
                if callable(more):
                    commands.append(more)
            for command in commands:
                try:
                    command()
                except Exception:  # noqa: BLE001
                    log.exception("doctor command failed")
            try:
                self._pass(force=False)
            except Exception:  # noqa: BLE001 - the last net: the doctor must keep watching
                log.exception("doctor pass failed")

    def run_once(self, *, force: bool = True, decide: bool = True) -> list[Finding]:
        """One detection pass now, on the caller's thread; the findings it produced or updated.

        ``force``: every detector runs, whatever its interval (the canary included).
        """
        return self._pass(force=force, decide=decide)

    def _pass(self, *, force: bool, decide: bool = True) -> list[Finding]:
        with self._pass_lock:
            now = time.time()
            self._expire_silences(now)
            self._pass_extra: list[Finding] = []
            if not self._plugins_reported:
                self._plugins_reported = True
                self._report_plugin_problems()
            specs = self._due(now, force)
            results = self._run_detectors(specs, now)
            touched = self._pass_extra + self._merge(specs, results, now)
            self.passes += 1
        if decide:
            self._decide()
        return touched

    def _due(self, now: float, force: bool) -> list[DetectorSpec]:
        sample = self.sampler.latest if self.sampler is not None else None
        in_grace = self.last_load_ts is not None and now - self.last_load_ts < self.policy.grace_s
        due = []
        for spec in list(self.registry.detectors.values()):
            if not spec.enabled or self.policy.modes.get(spec.id) == "off":
                continue
            interval = spec.interval
            if spec.id == "engine.canary":
                if not force and self.policy.canary_period_s <= 0:
                    continue
                interval = self.policy.canary_period_s
                if spec.last_run == 0.0:
                    spec.last_run = now  # the first periodic canary comes one period after start
                    if not force:
                        continue
            if not force and interval and now - spec.last_run < interval:
                continue
            if spec.grace and in_grace and not force:
                continue
            needs = set(spec.needs)
            if "sample" in needs and sample is None:
                continue
            if needs & {"engine", "events", "logs"} and self.supervisor is None:
                continue
            if "reply" in needs and self._last_reply is None:
                continue
            due.append(spec)
        return due

    def _context(self, spec: DetectorSpec, now: float, shared: dict[str, Any]) -> DetectorContext:
        with self._lock:
            events = [e for _, e in self._events]
            last_seq = self._seen_event.get(spec.id, 0)
            new_events = [e for seq, e in self._events if seq > last_seq]
            self._seen_event[spec.id] = self._event_seq
        new_logs: list[Any] = []
        if "logs" in spec.needs and self.supervisor is not None:
            since = self._seen_log_ts.get(spec.id, self.started_ts)
            new_logs = [line for line in shared["logs"] if line.ts > since]
            if new_logs:
                self._seen_log_ts[spec.id] = new_logs[-1].ts
        sup = self.supervisor
        return DetectorContext(
            detector_id=spec.id,
            severity_default=spec.severity_default,
            now=now,
            sample=shared["sample"],
            series=self.sampler.series if self.sampler is not None else None,
            params=sup.params if sup is not None else None,
            model_info=sup.model_info if sup is not None else None,
            engine_state=sup.state.value if sup is not None else None,
            engine_stats=shared["stats"],
            events=events,
            new_events=new_events,
            new_logs=new_logs,
            last_reply=self._last_reply,
            journal=self.journal_view,
            memory=self._memory[spec.id],
            settings=self.policy.settings_for(spec.id),
            interval=getattr(self.sampler, "interval", 1.0),
            last_load_ts=self.last_load_ts,
            operator_active=self._operator_active(now),
            _logs=(lambda n: sup.logs(n)) if sup is not None else None,
            _canary=self.run_canary if sup is not None else None,
        )

    def _operator_active(self, now: float) -> bool:
        if self.supervisor is not None and self.supervisor.state.value == "generating" \
                and not self._canary_running.is_set():
            return True
        return now - self._last_operator_ts < self.policy.operator_quiet_s

    def _run_detectors(self, specs: list[DetectorSpec], now: float) -> dict[str, Any]:
        """Run each detector in its own worker thread, all at once; wait up to each one's limit."""
        sup = self.supervisor
        shared = {
            "sample": self.sampler.latest if self.sampler is not None else None,
            "stats": sup.stats() if sup is not None else None,
            "logs": sup.logs(400) if sup is not None and any("logs" in s.needs for s in specs) else [],
        }
        boxes: dict[str, dict[str, Any]] = {}
        threads: list[tuple[DetectorSpec, threading.Thread, float]] = []
        for spec in specs:
            ctx = self._context(spec, now, shared)
            box: dict[str, Any] = {}
            boxes[spec.id] = box

            def work(spec: DetectorSpec = spec, ctx: DetectorContext = ctx, box: dict[str, Any] = box) -> None:
                try:
                    box["result"] = spec.fn(ctx)
                except BaseException as exc:  # noqa: BLE001 - isolate the plugin, whatever it raised
                    box["error"] = exc

            spec.last_run = now
            spec.runs += 1
            thread = threading.Thread(target=work, name=f"detector-{spec.id}", daemon=True)
            thread.start()
            threads.append((spec, thread, time.monotonic() + spec.timeout))
        results: dict[str, Any] = {}
        for spec, thread, deadline in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            box = boxes[spec.id]
            if thread.is_alive():
                self._disable(spec, f"detector {spec.id} ran past its {spec.timeout:g} s limit and was abandoned")
            elif "error" in box:
                self._disable(spec, f"detector {spec.id} raised {describe_error(box['error'])}")
            else:
                results[spec.id] = box.get("result")
        return results

    def _disable(self, spec: DetectorSpec, reason: str) -> None:
        if spec.origin == "builtin":
            spec.enabled, spec.error = False, reason
        else:
            self.plugins.disable(spec.origin, reason)
        where = "built-in" if spec.origin == "builtin" else f"plugin {spec.origin}"
        log.warning("%s disabled: %s", where, reason)
        finding = Finding(
            title=f"{where} disabled: {reason}", severity="warning", detector="doctor.plugins",
            fingerprint=f"doctor.plugins.{spec.origin}.{spec.id}",
            evidence={"detector": spec.id, "origin": spec.origin, "error": reason},
        )
        self._pass_extra.append(self._add(finding))

    def _report_plugin_problems(self) -> None:
        """Plugins that failed to import or were refused become findings: shown, never silent."""
        for info in self.plugins.list():
            if info.state in ("failed", "refused"):
                self._pass_extra.append(self._add(Finding(
                    title=f"plugin {info.name} {info.state}: {info.reason}", severity="warning",
                    detector="doctor.plugins", fingerprint=f"doctor.plugins.{info.key}",
                    evidence=info.to_dict())))

    # ---- findings -----------------------------------------------------------------------------
    def _merge(self, specs: list[DetectorSpec], results: dict[str, Any], now: float) -> list[Finding]:
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

    def _add(self, item: Finding) -> Finding:
        with self._lock:
            current = self._open.get(item.fingerprint)
            if current is not None and current.state in OPEN_STATES:
                current.count += 1
                current.streak += 1
                current.last_ts = item.ts
                current.evidence = item.evidence
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
                while len(self._findings) > 500:
                    self._findings.popitem(last=False)
        if update is not None:
            self._emit("updated", update)
            return update
        item.journal_id = self.journal.safe(lambda j: j.record_finding(
            item.detector, item.severity, item.title, item.evidence, fingerprint=item.fingerprint, ts=item.ts))
        self._emit("finding", item, item.title)
        return item

    def _resolve(self, finding: Finding, why: str, state: str = "resolved") -> None:
        with self._lock:
            if self._open.get(finding.fingerprint) is finding:
                del self._open[finding.fingerprint]
            finding.state = state
            finding.note(state, why=why)
        if finding.action_id is not None and finding.proposed:
            action_id = finding.action_id
            self.journal.safe(lambda j: j.set_action_state(action_id, "rejected", note=f"not applied: {why}")
                              if j.get_action(action_id).state == "proposed" else None)
        self._emit("resolved", finding, why)

    def _expire_silences(self, now: float) -> None:
        for fp in [fp for fp, until in self._silenced.items() if until <= now]:
            del self._silenced[fp]

    def _notice(self, text: str, **data: Any) -> None:
        self.notices.append(text)
        self.journal.safe(lambda j: j.record_event("doctor", {"notice": text, **data}))
        self._emit("notice", None, text, **data)

    # ---- the policy -------------------------------------------------------------------------------
    def _decide(self) -> None:
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

    def _repair_context(self, finding: Finding) -> RepairContext:
        sup = self.supervisor
        return RepairContext(
            supervisor=sup, params=sup.params, model_info=sup.model_info, journal=self.journal_view,
            finding=finding, settings=self.policy.settings_for(finding.detector),
        )

    def plan(self, finding: Finding) -> tuple[RepairSpec | None, Any, list[str]]:
        """The repair the doctor would apply (smallest change first), its new params, and why others were skipped."""
        skipped: list[str] = []
        if self.supervisor is None:
            return None, None, ["no engine attached"]
        specs = [self.registry.repairs.get(rid) for rid in finding.repairs]
        missing = [rid for rid, s in zip(finding.repairs, specs) if s is None]
        skipped += [f"{rid}: no such repair" for rid in missing]
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

    def _propose(self, finding: Finding) -> None:
        spec, params, skipped = self.plan(finding)
        if spec is None:
            if finding.repairs:
                finding.note("no_repair", skipped=skipped)
                self._emit("updated", finding, "no applicable repair: " + "; ".join(skipped))
            else:
                finding.note("no_repair", skipped=["the detector suggests no repair"])
            return
        changes = _diff(self.supervisor.params, params) if params is not None else {}
        finding.proposed = spec.id
        finding.state = "proposed"
        note = f"{spec.id}: {spec.changes}" + (f" ({_fmt_changes(changes)})" if changes else "")
        finding.action_id = self.journal.safe(lambda j: j.propose_action(
            spec.id, changes or {"changes": spec.changes}, proposed_by="auto", finding_id=finding.journal_id,
            note=note))
        finding.note("proposed", repair=spec.id, changes=changes, skipped=skipped)
        self._emit("proposed", finding, note, repair=spec.id, changes=changes)

    def _maybe_auto(self, finding: Finding) -> None:
        now = time.time()
        spec = self.registry.repairs.get(finding.proposed or "")
        if spec is None:
            return
        if self._kill_switch or self.start_limit_hit and spec.restarts_engine:
            return
        if self._inflight is not None:
            return
        need = self.registry.detectors.get(finding.detector)
        hold = need.hysteresis if need is not None and need.hysteresis is not None else self.policy.hysteresis
        if finding.streak < hold:
            return
        count, next_ok = self._backoff.get(finding.fingerprint, (0, 0.0))
        if now < next_ok:
            return
        if spec.restarts_engine:
            window = self.policy.start_limit_interval_s
            while self._restarts and now - self._restarts[0] > window:
                self._restarts.popleft()
            if len(self._restarts) >= self.policy.start_limit_burst:
                self.start_limit_hit = True
                finding.state = "gave_up"
                finding.note("gave_up", restarts=len(self._restarts))
                with self._lock:
                    self._open.pop(finding.fingerprint, None)
                self._reject_action(finding, "start limit reached")
                self._notice(
                    f"start limit reached: {len(self._restarts)} automatic restarts within {window:g} s; "
                    f"automatic repair stopped. Fix the cause, then reset the start limit.",
                    finding_id=finding.id, restarts=len(self._restarts))
                self._emit("updated", finding, "gave up: start limit reached")
                return
        delay = min(self.policy.backoff_max_s, self.policy.backoff_s * (2 ** count))
        self._backoff[finding.fingerprint] = (count + 1, now + delay)
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

    def _reject_action(self, finding: Finding, why: str) -> None:
        action_id = finding.action_id
        if action_id is None:
            return
        self.journal.safe(lambda j: j.set_action_state(action_id, "rejected", note=why)
                          if j.get_action(action_id).state == "proposed" else None)

    # ---- operator decisions (any thread) --------------------------------------------------------
    def accept(self, finding_id: int) -> str | None:
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

    def reject(self, finding_id: int) -> str | None:
        finding = self.get(finding_id)
        if finding.state not in OPEN_STATES:
            return f"finding #{finding_id} is {finding.state}"
        self._reject_action(finding, "rejected by the operator")
        finding.note("rejected")
        self._resolve(finding, "rejected by the operator", state="rejected")
        self._emit("action", finding, "rejected", state="rejected", repair=finding.proposed)
        return None

    def silence(self, finding_id: int, seconds: float | None = None) -> str | None:
        finding = self.get(finding_id)
        seconds = float(seconds if seconds is not None else self.policy.silence_s)
        self._silenced[finding.fingerprint] = time.time() + seconds
        self._reject_action(finding, f"silenced for {seconds:.0f} s")
        finding.note("silenced", seconds=seconds)
        if finding.state in OPEN_STATES:
            self._resolve(finding, f"silenced for {seconds:.0f} s", state="silenced")
        return None

    # ---- applying a repair ------------------------------------------------------------------------
    def _launch(self, finding: Finding, spec: RepairSpec, *, proposed_by: str) -> None:
        with self._lock:
            self._inflight = finding
            finding.state = "acting"
        self._action_thread = threading.Thread(
            target=self._act_guarded, args=(finding, spec, proposed_by), name="llmos-doctor-repair", daemon=True)
        self._action_thread.start()

    def _act_guarded(self, finding: Finding, spec: RepairSpec, proposed_by: str) -> None:
        started = time.time()
        healthy = False
        try:
            healthy = self._act(finding, spec, proposed_by)
        except Exception as exc:  # noqa: BLE001
            log.exception("repair %s failed", spec.id)
            finding.state = "failed"
            finding.note("failed", repair=spec.id, reason=describe_error(exc))
            self._emit("action", finding, f"{spec.id} failed: {exc}", state="failed", repair=spec.id)
        finally:
            with self._lock:
                if self._open.get(finding.fingerprint) is finding:
                    del self._open[finding.fingerprint]
                # crashes while the repair restarted and verified belong to it when it ended healthy
                if healthy:
                    for fp, other in list(self._open.items()):
                        if other.ts >= started and other.detector in ("engine.crashed", "engine.oom"):
                            del self._open[fp]
                            other.state = "resolved"
                            other.note("resolved", why=f"handled by the repair of #{finding.id}")
                self._inflight = None
            self._wake.put("event")

    def _preview(self, spec: RepairSpec, ctx: Any, finding: Finding) -> tuple[str | None, Any]:
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

    def _guard(self, spec: RepairSpec, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
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

    def _act(self, finding: Finding, spec: RepairSpec, proposed_by: str) -> bool:
        sup = self.supervisor
        action_id = finding.action_id
        if action_id is None:
            action_id = finding.action_id = self.journal.safe(lambda j: j.propose_action(
                spec.id, {"changes": spec.changes}, proposed_by=proposed_by if proposed_by != "operator"
                else "operator", finding_id=finding.journal_id, note=spec.changes))
        self._ensure_config()
        ctx = self._repair_context(finding)
        reason, new_params = self._preview(spec, ctx, finding)
        if reason:
            return self._fail(finding, spec, action_id, f"not applicable: {reason}", refused=True)
        record = {"ts": time.time(), "finding": finding.id, "repair": spec.id, "by": proposed_by}
        self.actions.append(record)
        before_cfg = self._active_config_id()
        if spec.reconfigures:
            refusal = self.check_config(new_params)
            if refusal:
                return self._fail(finding, spec, action_id, f"refused: {refusal}", refused=True)
            result = self.journal.safe(lambda j: j.change_config(
                new_params, source="repair", kind=spec.id, action_id=action_id,
                note=f"doctor: {finding.title}") if action_id is not None else None)
            self._emit("action", finding, f"applying {spec.id}: {_fmt_changes(_diff(sup.params, new_params))}",
                       state="applied", repair=spec.id)
            finding.note("applied", repair=spec.id, changes=_diff(sup.params, new_params))
            try:
                sup.restart(new_params, reason=f"doctor {spec.id}: {finding.title}")
                load_error = None
            except LlmosError as exc:
                load_error = str(exc)
            after_cfg = result[1].id if result else None
        else:
            if action_id is not None:
                self.journal.safe(lambda j: j.set_action_state(action_id, "applied", note=spec.changes,
                                                               config_before=before_cfg))
            self._emit("action", finding, f"applying {spec.id}", state="applied", repair=spec.id)
            finding.note("applied", repair=spec.id)
            try:
                self._guard(spec, spec.fn, ctx, finding, timeout=self.supervisor.load_timeout + 30)
                load_error = None
            except NotApplicable as exc:
                return self._fail(finding, spec, action_id, f"not applicable: {exc}", refused=True)
            except LlmosError as exc:
                load_error = str(exc)
            after_cfg = before_cfg
        verdict = load_error or self._verify(finding, spec)
        record["verdict"] = verdict or "verified"
        if verdict is None:
            if action_id is not None:
                self.journal.safe(lambda j: j.set_action_state(action_id, "verified", note="canary passed"))
            if after_cfg is not None:
                self.journal.safe(lambda j: j.mark_good(after_cfg))
            self._backoff.pop(finding.fingerprint, None)
            finding.state = "repaired"
            finding.note("verified", repair=spec.id, canary=self.last_canary.to_dict() if self.last_canary else None)
            self._emit("action", finding, f"{spec.id} verified: the engine answers again", state="verified",
                       repair=spec.id)
            return True
        self._fail(finding, spec, action_id, f"verification failed: {verdict}")
        if after_cfg is not None:
            self.journal.safe(lambda j: j.mark_bad(after_cfg, f"{spec.id}: {verdict}"))
        if spec.reconfigures and action_id is not None and self.journal.available:
            return self._rollback(finding, spec, action_id, verdict)
        return False

    def _fail(self, finding: Finding, spec: RepairSpec, action_id: int | None, why: str, *, refused: bool = False) -> bool:
        if action_id is not None:
            self.journal.safe(lambda j: j.set_action_state(action_id, "failed", note=why))
        finding.state = "failed"
        finding.note("refused" if refused else "failed", repair=spec.id, reason=why)
        self._emit("action", finding, f"{spec.id} {why}", state="failed", repair=spec.id)
        return False

    def _rollback(self, finding: Finding, spec: RepairSpec, action_id: int, verdict: str) -> bool:
        try:
            restore = self.journal.call(lambda j: j.undo(f"act:{action_id}", proposed_by="auto",
                                                         note=f"rollback: {spec.id} failed verification"))
            params = restore.engine_params()
        except Exception as exc:  # noqa: BLE001
            self._notice(f"rollback of {spec.id} impossible: {exc}")
            return False
        finding.note("rolled_back", repair=spec.id, to=f"cfg:{restore.id}")
        self._emit("action", finding, f"rolling back {spec.id}: back to cfg:{restore.id}", state="rolled_back",
                   repair=spec.id)
        try:
            self.supervisor.restart(params, reason=f"doctor rollback of {spec.id}")
        except LlmosError as exc:
            self._notice(f"rollback of {spec.id} could not start the engine: {exc}")
            return False
        result = self.run_canary()
        ok = result.ok
        undo_id = self.journal.safe(lambda j: j.action_for_config(restore.id))
        if undo_id is not None:
            self.journal.safe(lambda j: j.set_action_state(undo_id.id, "verified" if ok else "failed",
                                                           note="canary " + ("passed" if ok else result.reason)))
        if ok:
            self.journal.safe(lambda j: j.mark_good(restore.id))
        self._emit("action", finding, "rollback " + ("verified" if ok else f"failed: {result.reason}"),
                   state="verified" if ok else "failed", repair="rollback")
        return ok

    def _verify(self, finding: Finding, spec: RepairSpec) -> str | None:
        """None when the engine is healthy after the repair (canary + the triggering metric)."""
        why = wait_ready(self.supervisor, self.policy.ready_timeout_s)
        if why:
            return why
        result = self.run_canary()
        if not result.ok:
            return f"canary: {result.reason}"
        metric = spec.verify_metric or finding.evidence.get("verify_metric")
        if metric:
            result = self.run_canary()  # the first answer after a load includes warm-up
            value = getattr(result, metric, None)
            bad = finding.evidence.get("recent_median")
            if not result.ok:
                return f"canary: {result.reason}"
            if value is not None and bad is not None and metric.endswith("tps") and value < bad:
                return f"{metric} {value:.1f} is still below the value that raised the finding ({bad:.1f})"
        return None

    # ---- the canary and configuration checks -------------------------------------------------------
    def run_canary(self, **overrides: Any) -> CanaryResult:
        """Run the canary probe now (blocking, any thread but the UI's)."""
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

    def check_config(self, params: Any) -> str | None:
        """Why ``params`` must not be applied automatically (marked bad, or does not fit), or None."""
        if params is None:
            return None
        bad = self._bad_reason(params)
        if bad:
            return bad
        info = self.supervisor.model_info if self.supervisor is not None else None
        if info is None or (self.supervisor is not None and params.model_path != self.supervisor.params.model_path):
            try:
                from llmos_tui.engine.gguf_info import read_model_info

                info = read_model_info(params.model_path)
            except LlmosError:
                info = None
        sample = self.sampler.latest if self.sampler is not None else None
        pid = self.supervisor.pid if self.supervisor is not None else None
        return vram.refusal(params, info, vram.free_gpu_memory(sample, pid))

    def _bad_reason(self, params: Any) -> str | None:
        if not self.journal.available:
            return None
        wanted = params.to_dict()

        def find(j: Any) -> str | None:
            for cfg in j.configs(500):
                if cfg.standing != "bad":
                    continue
                if {**cfg.params, "model_path": cfg.model_path} == wanted:
                    return f"cfg:{cfg.id} with these settings is marked bad ({cfg.reason})"
            return None

        return self.journal.safe(find)

    def _active_config_id(self) -> int | None:
        active = self.journal.safe(lambda j: j.active_config())
        return active.id if active is not None else None

    def _ensure_config(self) -> None:
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


def _diff(before: Any, after: Any) -> dict[str, Any]:
    if after is None:
        return {}
    a, b = before.to_dict(), after.to_dict()
    return {k: b[k] for k in b if a.get(k) != b[k]}


def _fmt_changes(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "no parameter change"
