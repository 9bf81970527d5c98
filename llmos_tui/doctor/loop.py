"""The doctor loop: scheduling and detection. It runs the detectors on every sample and engine
event and hands their results to the findings (``findings.py``) and the policy's actions
(``actions.py``), which together make the :class:`Doctor`.

Threads: detection runs on the doctor's own thread (never the sampler's, the supervisor's
or the UI's); each detector runs in a worker thread with a time limit (a hung one is
abandoned and its plugin disabled); a repair runs on an action thread, one at a time.
Subscribers get a :class:`DoctorEvent` for every new finding, update, resolution, action
step, notice and settled finding — on the doctor's threads, so a UI must hand them over to
its own thread.
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

from llmos_tui.doctor.actions import ActionsMixin
from llmos_tui.doctor.api import DetectorSpec, Finding
from llmos_tui.doctor.context import DetectorContext, JournalView
from llmos_tui.doctor.findings import OPEN_STATES, FindingsMixin
from llmos_tui.doctor.plugins import PluginManager, describe_error
from llmos_tui.doctor.policy import Policy
from llmos_tui.doctor.verify import WorkloadLog
from llmos_tui.engine.probe import CanaryResult
from llmos_tui.journal.port import JournalPort
from llmos_tui.observers import Observers

log = logging.getLogger("llmos_tui.doctor")

WAKE_KINDS = frozenset({"crashed", "load_failed", "loaded", "request_done", "error", "unloaded", "adapt_drift"})
__all__ = ["Doctor", "DoctorEvent", "OPEN_STATES", "WAKE_KINDS"]


@dataclass
class DoctorEvent:
    """kind: finding, updated, resolved, proposed, action, notice, settled (a finding's repairs
    ended: ``data["outcome"]`` is its end state, ``data["engine"]`` the engine's)."""

    kind: str
    finding: Finding | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


class _NoSource:
    """A telemetry source that adds nothing: the doctor's own sampler reads only engine stats."""

    def collect(self, sample: Any) -> None:
        return None




class Doctor(FindingsMixin, ActionsMixin):
    """Watches the engine and telemetry through detectors and repairs what the policy allows.

    ``supervisor``: the engine Supervisor (None: telemetry-only, e.g. a replayed trace).
    ``sampler``: a telemetry Sampler (None: the doctor samples engine stats itself).
    ``journal``: a Journal, a JournalWriter, or None.
    ``policy``: a Policy or the ``[doctor]`` config table.
    ``plugins``: a loaded PluginManager (None: built-ins plus the default plugin folders).
    ``changes``: the change transaction (``llmos_tui.core.changes.Changes``) every reconfiguring
    repair goes through; None: one over this supervisor and journal.
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
        changes: Any = None,
    ) -> None:
        self.supervisor = supervisor
        self.policy = policy if isinstance(policy, Policy) else Policy.from_config(policy or {})
        if plugins is None:
            plugins = PluginManager()
            plugins.load_all()
        self.plugins = plugins
        self.registry = plugins.registry
        self.journal = JournalPort(journal)
        self.journal_view = JournalView(self.journal.call if journal is not None else None)
        self._own_sampler = sampler is None
        if sampler is None:
            from llmos_tui.telemetry.sampler import Sampler

            stats = supervisor.stats if supervisor is not None else None
            sampler = Sampler(_NoSource(), interval=self.policy.interval, engine_stats=stats, history=900)
        self.sampler = sampler
        if changes is None:
            from llmos_tui.core.changes import Changes

            changes = Changes(supervisor, journal, sampler=sampler, ready_timeout_s=self.policy.ready_timeout_s)
        self.changes = changes
        if supervisor is not None and hasattr(changes, "set_canary"):
            changes.set_canary(self.run_canary)  # the doctor's canary is the transaction's liveness probe
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
        self._canary_running = threading.Event()  # set while the doctor's own probes run
        self._last_operator_ts = 0.0
        self._last_reply: dict[str, Any] | None = None
        self._workloads = WorkloadLog()
        self._workload_for: dict[int, Any] = {}
        self._kill_switch = self.policy.kill_switch
        self.dry_run = self.policy.dry_run
        self.replayed = False  # the composition root sets it for a doctor over a replayed trace
        self.started_ts = time.time()
        self.last_load_ts: float | None = time.time() if supervisor is not None and supervisor.is_ready else None
        self.start_limit_hit = False
        self.last_canary: CanaryResult | None = None
        self.passes = 0
        self.actions: list[dict[str, Any]] = []  # what the doctor did, newest last (the UI's history)
        self.notices: list[str] = []
        self._plugins_reported = False
        self._pass_extra: list[Finding] = []
        # parts of the wider core a repair may use (the composition root fills it): "tuner" -> a
        # callable returning the core's Tuner (the drift re-tune)
        self.services: dict[str, Any] = {}
        if chat is not None:
            self.watch_chat(chat)

    # ---- wiring -----------------------------------------------------------------------
    def start(self) -> "Doctor":
        """Subscribe to the supervisor and the sampler and start the doctor thread (never blocks
        on the journal: the first thing the thread does is record the running configuration)."""
        if self._thread is not None:
            return self
        self._stop.clear()
        if self.supervisor is not None:
            self._unsubscribe.append(self.supervisor.subscribe(self._on_engine_event))
        self._unsubscribe.append(self.sampler.subscribe(self._on_sample))
        if self._own_sampler:
            self.sampler.start()
        self._wake.put(self._ensure_config)
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
        """Read the replies of a ChatSession (the repetition detector; the workload a metric repair is
        verified on)."""

        def on_message(session: Any, message: Any) -> None:
            if getattr(message, "role", "") != "assistant":
                return
            metrics = getattr(message, "metrics", None) or {}
            self.observe_reply(message.content, metrics)
            try:
                wire = session.wire_messages()
                prompt = wire[:-1] if wire and wire[-1].get("role") == "assistant" else wire
                max_tokens = session.settings.sampling().get("max_tokens")
                if metrics and getattr(message, "status", "done") == "done":
                    self._workloads.on_chat(prompt, max_tokens, metrics)
            except Exception:  # noqa: BLE001 - a session without these is only less informative
                log.debug("chat workload not recorded", exc_info=True)

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
            if event.data.get("status") == "done":
                self._workloads.on_request(event.data.get("metrics") or {})
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

    def operator_idle_s(self) -> float:
        """Seconds since the operator's last request (0 while a reply streams)."""
        now = time.time()
        if self.supervisor is not None and self.supervisor.state.value == "generating" \
                and not self._canary_running.is_set():
            return 0.0
        return now - self._last_operator_ts if self._last_operator_ts else now - self.started_ts

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
