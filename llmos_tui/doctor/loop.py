"""The doctor: a scheduler over a finding book and a repair runner.

:class:`Doctor` owns the doctor thread. It takes in engine events, telemetry samples and chat
replies (the :class:`~llmos_tui.doctor.intake.Intake` holds them), runs the detectors that are
due (each in a worker thread with a time limit: a hung or raising one is abandoned and its
plugin disabled), adds what they report to the :class:`~llmos_tui.doctor.book.FindingBook`
(open, silenced, history, subscribers) and hands the open findings to the
:class:`~llmos_tui.doctor.runner.RepairRunner` (policy rails, backoff, the start limit, the one
repair in flight, the kill switch, verification through the change transaction). The
:class:`~llmos_tui.doctor.canary.Canary` is the liveness probe all of them use.

Every collaborator is given to the constructor; the doctor builds no sampler or change
transaction of its own. Subscribers get a :class:`DoctorEvent` on the doctor's threads, so a UI
must hand them over to its own thread.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Union

from llmos_tui.doctor.api import DetectorSpec, Finding, RepairSpec
from llmos_tui.doctor.book import OPEN_STATES, DoctorEvent, FindingBook
from llmos_tui.doctor.canary import Canary, ensure_config
from llmos_tui.doctor.context import ChangeGate, DetectorContext, JournalView
from llmos_tui.doctor.intake import WAKE_KINDS, Intake
from llmos_tui.doctor.plugins import PluginManager, describe_error
from llmos_tui.doctor.policy import Policy
from llmos_tui.doctor.runner import RepairRunner
from llmos_tui.engine.probe import CanaryResult
from llmos_tui.journal.port import JournalPort

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.supervisor import LogLine, Supervisor
    from llmos_tui.journal import Journal, JournalWriter
    from llmos_tui.telemetry.sample import Sample
    from llmos_tui.telemetry.sampler import Sampler

log = logging.getLogger("llmos_tui.doctor")

__all__ = ["Doctor", "DoctorEvent", "OPEN_STATES", "WAKE_KINDS"]

# what wakes the doctor thread: a word (event, sample, reply, tick), a command to run on it, or None (stop)
Wake = Union[str, Callable[[], None], None]


class ChatMessage(Protocol):
    role: str
    content: str
    status: str
    metrics: dict[str, float | int | None]


class ChatSettings(Protocol):
    def sampling(self) -> dict[str, object]: ...


class ChatSession(Protocol):
    """What the doctor reads of a conversation (core.chat.ChatSession)."""

    settings: ChatSettings

    def wire_messages(self) -> list[dict[str, str]]: ...

    def add_listener(self, listener: "Callable[[ChatSession, ChatMessage], None]") -> object: ...


class _Lane:
    """One detector's own long-lived thread: it runs the detector when a pass hands it a context
    and sleeps otherwise. A thread per detector per pass cost the idle cockpit more than the
    detectors themselves; a lane keeps the isolation (each detector on its own thread, with its
    own time limit) without starting threads. A lane whose detector ran past its limit is
    dropped: its thread ends when (if ever) the detector returns."""

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[DetectorContext], object], DetectorContext,
                                            dict[str, object], threading.Event] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fn, ctx, box, done = item
            try:
                box["result"] = fn(ctx)
            except BaseException as exc:  # noqa: BLE001 - isolate the plugin, whatever it raised
                box["error"] = exc
            done.set()

    def submit(self, fn: Callable[[DetectorContext], object], ctx: DetectorContext,
               box: dict[str, object]) -> threading.Event:
        done = threading.Event()
        self._work.put((fn, ctx, box, done))
        return done

    def close(self) -> None:
        self._work.put(None)


class _Shared:
    """What every detector of one pass sees alike (read once per pass)."""

    def __init__(self, sample: "Sample | None", stats: dict[str, object] | None, logs: "list[LogLine]") -> None:
        self.sample, self.stats, self.logs = sample, stats, logs


class Doctor:
    """Watches the engine and telemetry through detectors and repairs what the policy allows.

    ``supervisor``: the engine Supervisor (None: telemetry only, e.g. a replayed trace; nothing
    is repaired). ``sampler``: the telemetry Sampler the detectors read (None: the detectors
    that need samples do not run). ``journal``: a Journal, a JournalWriter or None. ``policy``: a
    Policy or the ``[doctor]`` config table. ``changes``: the change transaction every repair acts
    through (None: no repair that changes the engine can run). ``services``: parts of the core a
    repair may use (``"tuner"``: a callable returning the core's Tuner). ``dry_run``: say what
    would be done, do nothing. ``replayed``: a doctor over a replayed trace (faces label it).
    ``plugins``: a loaded PluginManager (None: built-ins plus the default plugin folders).
    """

    def __init__(
        self,
        supervisor: "Supervisor | None",
        sampler: "Sampler | None",
        journal: "Journal | JournalWriter | None",
        policy: Policy | Mapping[str, object] | None,
        *,
        changes: ChangeGate | None = None,
        services: Mapping[str, Callable[[], object]] | None = None,
        dry_run: bool = False,
        replayed: bool = False,
        plugins: PluginManager | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.sampler = sampler
        self.policy = policy if isinstance(policy, Policy) else Policy.from_config(policy or {})
        if plugins is None:
            plugins = PluginManager()
            plugins.load_all()
        self.plugins = plugins
        self.registry = plugins.registry
        self.replayed = replayed
        self.journal = JournalPort(journal, "doctor")
        self.journal_view = JournalView(self.journal.call if journal is not None else None)
        self.book = FindingBook(self.journal)
        self.canary = Canary(supervisor, self.journal, self.policy)
        self._stop = threading.Event()
        self._wake: queue.SimpleQueue[Wake] = queue.SimpleQueue()
        self.intake = Intake(self.canary.probing, lambda: self._wake.put("event"),
                             last_load_ts=time.time() if supervisor is not None and supervisor.is_ready else None)
        self.runner = RepairRunner(
            supervisor, changes, self.book, self.journal, self.policy, plugins, self.canary, self.intake.workloads,
            services=services, dry_run=dry_run, operator_idle_s=self.operator_idle_s, stopping=self._stop,
            wake=lambda: self._wake.put("event"))
        if supervisor is not None and changes is not None:
            changes.set_canary(self.canary.run)  # the doctor's canary is the transaction's liveness probe
        self._pass_lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}  # each detector's own thread, kept between passes
        self._memory: dict[str, dict[str, object]] = collections.defaultdict(dict)  # each detector's own
        self._pass_extra: list[Finding] = []
        self._plugins_reported = False
        self._thread: threading.Thread | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self.started_ts = time.time()
        self.passes = 0

    # ---- the public surface faces use -----------------------------------------------------
    def subscribe(self, callback: Callable[[DoctorEvent], object]) -> Callable[[], None]:
        return self.book.subscribe(callback)

    def findings(self, *, open_only: bool = False) -> list[Finding]:
        return self.book.findings(open_only=open_only)

    def get(self, finding_id: int) -> Finding:
        return self.book.get(finding_id)

    @property
    def notices(self) -> list[str]:
        return self.book.notices

    @property
    def actions(self) -> list[dict[str, object]]:
        return self.runner.actions

    @property
    def services(self) -> dict[str, Callable[[], object]]:
        return self.runner.services

    @property
    def kill_switch(self) -> bool:
        return self.runner.kill_switch_on

    @kill_switch.setter
    def kill_switch(self, on: bool) -> None:
        self.runner.set_kill_switch(bool(on))

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    @dry_run.setter
    def dry_run(self, on: bool) -> None:
        self.runner.dry_run = bool(on)

    @property
    def busy(self) -> bool:
        return self.runner.busy

    @property
    def start_limit_hit(self) -> bool:
        return self.runner.start_limit_hit

    @property
    def changes_allowed(self) -> bool:
        return self.runner.changes_allowed

    @property
    def last_canary(self) -> CanaryResult | None:
        return self.canary.last

    @property
    def last_load_ts(self) -> float | None:
        return self.intake.last_load_ts

    def reset_start_limit(self) -> str:
        """Allow automatic restarts again; the line says what was reset (journaled as a doctor event)."""
        return self.runner.reset_start_limit()

    def run_canary(self, *, timeout: float | None = None, max_tokens: int | None = None) -> CanaryResult:
        """Run the canary probe now (blocking, any thread but the UI's): the liveness check."""
        return self.canary.run(timeout=timeout, max_tokens=max_tokens)

    def check_config(self, params: "EngineParams | None") -> str | None:
        return self.runner.check_config(params)

    def plan(self, finding: Finding) -> "tuple[RepairSpec | None, EngineParams | None, list[str]]":
        return self.runner.plan(finding)

    def accept(self, finding_id: int) -> str | None:
        """Apply the proposed repair now (suggest mode). Returns None, or why it cannot."""
        return self.runner.accept(self.get(finding_id))

    def reject(self, finding_id: int) -> str | None:
        finding = self.get(finding_id)
        if finding.state not in OPEN_STATES:
            return f"finding #{finding_id} is {finding.state}"
        self.book.reject_action(finding, "rejected by the operator")
        finding.note("rejected")
        self.book.resolve(finding, "rejected by the operator", state="rejected")
        self.book.emit("action", finding, "rejected", state="rejected", repair=finding.proposed)
        return None

    def silence(self, finding_id: int, seconds: float | None = None) -> str | None:
        self.book.silence(self.get(finding_id), float(seconds if seconds is not None else self.policy.silence_s))
        return None

    # ---- wiring -----------------------------------------------------------------------
    def start(self) -> "Doctor":
        """Subscribe to the supervisor and the sampler and start the doctor thread (never blocks
        on the journal: the first thing the thread does is record the running configuration)."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self.attach_events()
        if self.sampler is not None:
            self._unsubscribe.append(self.sampler.subscribe(lambda sample: self._wake.put("sample")))
        self._wake.put(lambda: ensure_config(self.journal, self.supervisor))
        self._thread = threading.Thread(target=self._run, name="llmos-doctor", daemon=True)
        self._thread.start()
        return self

    def attach_events(self) -> None:
        """Subscribe to engine events without starting the thread (headless run_once use)."""
        if self.supervisor is not None and not self._unsubscribe:
            self._unsubscribe.append(self.supervisor.subscribe(self.intake.on_engine_event))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.put(None)
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:  # noqa: BLE001
                pass
        self._unsubscribe.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.runner.join(timeout)
        self._thread = None
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            lane.close()  # after the work it holds (a pass in progress still gets its answers)

    close = stop

    def watch_chat(self, chat: ChatSession) -> None:
        """Read the replies of a ChatSession (the repetition detector; the workload a metric repair is
        verified on)."""

        def on_message(session: ChatSession, message: ChatMessage) -> None:
            if message.role != "assistant":
                return
            metrics = message.metrics or {}
            self.observe_reply(message.content, metrics)
            try:
                wire = session.wire_messages()
                prompt = wire[:-1] if wire and wire[-1].get("role") == "assistant" else wire
                max_tokens = session.settings.sampling().get("max_tokens")
                if metrics and message.status == "done":
                    self.intake.workloads.on_chat(prompt, int(max_tokens) if isinstance(max_tokens, (int, float)) else None,
                                            metrics)
            except Exception:  # noqa: BLE001 - a session without these is only less informative
                log.debug("chat workload not recorded", exc_info=True)

        chat.add_listener(on_message)

    def observe_reply(self, text: str, metrics: Mapping[str, object] | None = None) -> None:
        self.intake.on_reply(text, metrics)

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
            self.book.expire_silences(now)
            self._pass_extra = []
            if not self._plugins_reported:
                self._plugins_reported = True
                self._report_plugin_problems()
            specs = self._due(now, force)
            results = self._run_detectors(specs, now)
            touched = self._pass_extra + self._merge(specs, results, now)
            self.passes += 1
        if decide:
            self.runner.decide(self._hysteresis)
        return touched

    def _hysteresis(self, detector_id: str) -> int | None:
        spec = self.registry.detectors.get(detector_id)
        return spec.hysteresis if spec is not None else None

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
            if "reply" in needs and self.intake.last_reply is None:
                continue
            due.append(spec)
        return due

    def _context(self, spec: DetectorSpec, now: float, shared: _Shared) -> DetectorContext:
        hidden = self.runner.caused  # a reconfiguring repair's own failed loads are not crashes
        events, new_events = self.intake.events_for(spec.id, hidden)
        new_logs: list[LogLine] = []
        if "logs" in spec.needs and self.supervisor is not None:
            new_logs = self.intake.logs_for(spec.id, shared.logs, self.started_ts, hidden)
        sup = self.supervisor
        return DetectorContext(
            detector_id=spec.id,
            severity_default=spec.severity_default,
            now=now,
            sample=shared.sample,
            series=self.sampler.series if self.sampler is not None else None,
            params=sup.params if sup is not None else None,
            model_info=sup.model_info if sup is not None else None,
            engine_state=sup.state.value if sup is not None else None,
            engine_stats=shared.stats,
            events=events,
            new_events=new_events,
            new_logs=new_logs,
            last_reply=self.intake.last_reply,
            journal=self.journal_view,
            memory=self._memory[spec.id],
            settings=self.policy.settings_for(spec.id),
            interval=self.sampler.interval if self.sampler is not None else self.policy.interval,
            last_load_ts=self.last_load_ts,
            operator_active=self._operator_active(now),
            _logs=sup.logs if sup is not None else None,
            _canary=self.canary.run if sup is not None else None,
        )

    def operator_idle_s(self) -> float:
        """Seconds since the operator's last request (0 while a reply streams)."""
        now = time.time()
        if self._operator_generating():
            return 0.0
        last = self.intake.last_operator_ts
        return now - last if last else now - self.started_ts

    def _operator_generating(self) -> bool:
        return self.supervisor is not None and self.supervisor.state.value == "generating" \
            and not self.canary.probing.is_set()

    def _operator_active(self, now: float) -> bool:
        return self._operator_generating() or now - self.intake.last_operator_ts < self.policy.operator_quiet_s

    def _run_detectors(self, specs: list[DetectorSpec], now: float) -> dict[str, object]:
        """Run each detector in its own worker thread, all at once; wait up to each one's limit."""
        sup = self.supervisor
        shared = _Shared(
            self.sampler.latest if self.sampler is not None else None,
            sup.stats() if sup is not None else None,
            sup.logs(400) if sup is not None and any("logs" in s.needs for s in specs) else [])
        boxes: dict[str, dict[str, object]] = {}
        running: list[tuple[DetectorSpec, threading.Event, float]] = []
        for spec in specs:
            ctx = self._context(spec, now, shared)
            box: dict[str, object] = {}
            boxes[spec.id] = box
            spec.last_run = now
            spec.runs += 1
            lane = self._lanes.get(spec.id)
            if lane is None:
                lane = self._lanes[spec.id] = _Lane(f"detector-{spec.id}")
            running.append((spec, lane.submit(spec.fn, ctx, box), time.monotonic() + spec.timeout))
        results: dict[str, object] = {}
        for spec, done, deadline in running:
            done.wait(max(0.0, deadline - time.monotonic()))
            box = boxes[spec.id]
            error = box.get("error")
            if not done.is_set():
                lane = self._lanes.pop(spec.id, None)
                if lane is not None:
                    lane.close()  # its thread ends if the detector ever returns
                self._disable(spec, f"detector {spec.id} ran past its {spec.timeout:g} s limit and was abandoned")
            elif isinstance(error, BaseException):
                self._disable(spec, f"detector {spec.id} raised {describe_error(error)}")
            else:
                results[spec.id] = box.get("result")
        return results

    # ---- findings from a pass -----------------------------------------------------------------
    def _merge(self, specs: list[DetectorSpec], results: dict[str, object], now: float) -> list[Finding]:
        touched: list[Finding] = []
        for spec in specs:
            if spec.id not in results:
                continue
            raw = results[spec.id]
            items = [raw] if isinstance(raw, Finding) else list(raw or [])  # type: ignore[call-overload]
            reported: set[str] = set()
            for item in items:
                if not isinstance(item, Finding):
                    self._disable(spec, f"detector {spec.id} returned {type(item).__name__}, not a Finding")
                    break
                item.detector = item.detector or spec.id
                item.severity = item.severity or spec.severity_default
                item.fingerprint = item.fingerprint or f"{spec.id}:{item.title}"
                reported.add(item.fingerprint)
                if self.book.is_silenced(item.fingerprint, now):
                    continue
                touched.append(self._add(item))
            sticky = bool(set(spec.needs) & {"events", "logs"})
            if not sticky:
                for finding in self.book.open_findings():
                    if finding.detector == spec.id and finding.fingerprint not in reported \
                            and finding is not self.runner.inflight:
                        self.book.resolve(finding, "condition cleared")
        return touched

    def _add(self, item: Finding) -> Finding:
        """A reported finding: the open one of its fingerprint updated, or a new one opened."""
        return self.book.update_open(item) or self.book.open(item, prepare=self.runner.capture_workload)

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
