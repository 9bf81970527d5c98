"""The doctor end to end on the real supervisor and the demo model, with a real journal file."""

from __future__ import annotations

import signal
import threading
import time

from llmos_tui.core.changes import Changes
from llmos_tui.doctor import Doctor, DoctorEvent, PluginManager, Policy, detector, repair
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineState, Supervisor
from llmos_tui.engine.versions import params_of
from llmos_tui.journal import Journal
from tests.conftest import wait_for  # the `journal` fixture comes from conftest too

ASK = [{"role": "user", "content": "What is the KV cache?"}]
FAST = dict(interval=0.1, grace_s=0.0, backoff_s=0.05, backoff_max_s=0.5, hysteresis=1,
            canary_period_s=0, canary_timeout_s=10.0, ready_timeout_s=30.0, operator_quiet_s=0.0)


def builtins() -> PluginManager:
    manager = PluginManager()
    manager.load_all(folders=[], entry_points=False)
    return manager


def make_doctor(supervisor, journal, **policy) -> tuple[Doctor, list[DoctorEvent]]:
    """The doctor as the composition root builds it, with the change transaction it acts through
    (no sampler: these tests need only engine events)."""
    table = Policy.from_config({**FAST, **policy})
    changes = Changes(supervisor, journal, ready_timeout_s=table.ready_timeout_s)
    doctor = Doctor(supervisor, None, journal, table, changes=changes, plugins=builtins())
    events: list[DoctorEvent] = []
    doctor.subscribe(events.append)
    return doctor.start(), events


def test_kill_mid_reply_is_found_restarted_and_verified(supervisor: Supervisor, journal: Journal) -> None:
    doctor, events = make_doctor(supervisor, journal, **{"engine.crashed": "auto"})
    try:
        supervisor.inject("slow", ms=20)
        reply = supervisor.chat(ASK, max_tokens=200, temperature=1.0)
        next(iter(reply))
        supervisor.kill(signal.SIGKILL)
        reply.wait(10)
        assert reply.status == "interrupted"
        assert wait_for(lambda: any(e.kind == "action" and e.data.get("state") == "verified" for e in events), 30)
        crash = next(f for f in doctor.findings() if f.detector == "engine.crashed")
        assert crash.state == "repaired"
        assert crash.evidence["signal"] == "SIGKILL"
        assert supervisor.state is EngineState.READY
        assert doctor.last_canary is not None and doctor.last_canary.ok
        # the journal holds the finding and the action: proposed -> applied -> verified
        row = journal.get_finding(crash.journal_id)
        assert row["detector"] == "engine.crashed" and row["evidence"]["signal"] == "SIGKILL"
        action = journal.get_action(crash.action_id)
        assert action.kind == "engine.restart" and action.finding_id == crash.journal_id
        assert [h["state"] for h in action.history] == ["proposed", "applied", "verified"]
        assert journal.active_config().standing == "good"
    finally:
        doctor.stop()


def test_crash_loop_reaches_the_start_limit_and_stops(supervisor: Supervisor, journal: Journal) -> None:
    doctor, events = make_doctor(supervisor, journal, default="auto", start_limit_burst=3,
                                 start_limit_interval_s=60, canary_timeout_s=3.0)
    loads = []

    def crash_after_load(event) -> None:
        if event.kind == "loaded":
            loads.append(event)
            threading.Thread(target=lambda: _inject_quietly(supervisor, "abort"), daemon=True).start()

    unsubscribe = supervisor.subscribe(crash_after_load)
    try:
        supervisor.inject("abort")
        assert wait_for(lambda: doctor.start_limit_hit, 40), [e.message for e in events]
        time.sleep(0.5)
        assert len(loads) == 3, "exactly start_limit_burst restarts, then the doctor stops"
        notice = next(e.message for e in events if e.kind == "notice" and "start limit reached" in e.message)
        # the notice names every way to reset it
        assert "press l on the doctor screen" in notice and ":reset-limit" in notice \
            and "/reset-limit in the console" in notice, notice
        gave_up = [f for f in doctor.findings() if f.state == "gave_up"]
        assert gave_up
        time.sleep(1.0)
        assert len(loads) == 3 and not doctor.busy
        assert any("start limit reached" in e["data"].get("notice", "") for e in journal.events("doctor"))
        line = doctor.reset_start_limit()
        assert line == "start limit reset: automatic restarts allowed again"
        assert not doctor.start_limit_hit
        assert any(e["data"].get("start_limit_reset") and e["data"].get("was_hit")
                   for e in journal.events("doctor")), "the reset is journaled"
    finally:
        unsubscribe()
        doctor.stop()


def _inject_quietly(supervisor: Supervisor, kind: str) -> None:
    try:
        supervisor.inject(kind)
    except Exception:
        pass


def test_suggest_mode_waits_for_accept(supervisor: Supervisor, journal: Journal) -> None:
    doctor, events = make_doctor(supervisor, journal, default="suggest")
    try:
        supervisor.inject("exit", code=3)
        assert wait_for(lambda: any(e.kind == "proposed" for e in events), 10)
        finding = next(f for f in doctor.findings() if f.detector == "engine.crashed")
        assert finding.proposed == "engine.restart" and "exit code 3" in finding.title
        time.sleep(0.5)
        assert supervisor.state is EngineState.CRASHED, "suggest mode does nothing by itself"
        assert journal.get_action(finding.action_id).state == "proposed"
        assert doctor.accept(finding.id) is None
        assert wait_for(lambda: finding.state == "repaired", 30)
        assert supervisor.state is EngineState.READY
        assert journal.get_action(finding.action_id).state == "verified"
    finally:
        doctor.stop()


def test_reject_and_silence(supervisor: Supervisor, journal: Journal) -> None:
    doctor, events = make_doctor(supervisor, journal, default="suggest")
    try:
        supervisor.inject("exit", code=4)
        assert wait_for(lambda: any(e.kind == "proposed" for e in events), 10)
        finding = next(f for f in doctor.findings() if f.detector == "engine.crashed")
        assert doctor.reject(finding.id) is None
        assert finding.state == "rejected"
        assert journal.get_action(finding.action_id).state == "rejected"
        supervisor.start()
        assert doctor.silence(finding.id, 60) is None
        supervisor.inject("exit", code=5)
        time.sleep(0.6)
        assert not [f for f in doctor.findings(open_only=True) if f.detector == "engine.crashed"]
    finally:
        doctor.stop()


def test_oom_on_the_demo_model_raises_one_finding_and_skips_what_the_header_rules_out(
        supervisor: Supervisor, journal: Journal, demo_params: EngineParams) -> None:
    """OOM -> the smallest change the model's header allows: a q8_0 KV cache is ruled out (blocks
    of 32 do not divide the demo model's head size of 40), so it is never loaded; the batch is
    halved through the change transaction and verified. One incident, one finding."""
    doctor, events = make_doctor(supervisor, journal)  # engine.oom is auto out of the box
    try:
        supervisor.inject("oom")
        assert wait_for(lambda: any(e.kind == "settled" for e in events), 60), [e.message for e in events]
        time.sleep(0.5)  # a second finding (a crash loop, a crash) would come within a pass or two
        assert [f.detector for f in doctor.findings()] == ["engine.oom"], [f.title for f in doctor.findings()]
        oom = doctor.findings()[0]
        assert any("out of memory" in line for line in oom.evidence["log_lines"])
        assert oom.state == "repaired", oom.history
        proposed = [h for h in oom.history if h["what"] == "proposed"]
        assert [h["repair"] for h in proposed] == ["engine.smaller_batch"]
        assert any(s.startswith("engine.kv_quant: a q8_0 K cache") and "head size of 40" in s
                   for s in proposed[0]["skipped"]), proposed[0]["skipped"]
        assert [h["repair"] for h in oom.history if h["what"] == "applied"] == ["engine.smaller_batch"]
        assert all(c.params["type_k"] != "q8_0" for c in journal.configs()), "the refused cache was never loaded"
        action = journal.get_action(oom.action_id)
        assert action.kind == "engine.smaller_batch" and action.state == "verified"
        assert supervisor.state is EngineState.READY
        assert supervisor.params == demo_params.replace(n_batch=256, n_ubatch=256)
        active = journal.active_config()
        assert active.id == action.config_after and active.standing == "good"
    finally:
        doctor.stop()


def test_a_repairs_own_failed_load_is_its_failure_and_not_a_crash(
        supervisor: Supervisor, journal: Journal, demo_params: EngineParams, bad_models) -> None:
    """A reconfiguring repair whose new configuration fails to load is rolled back and marked bad,
    and the next repair is tried at once; its failed load is not a crash: no crash loop, even
    with the crash-loop detector set to fire on a single failed load."""
    refused = str(bad_models["refused"])

    def install(registry) -> None:
        @detector("test.asks", "warning", needs=("events",), grace=False, registry=registry)
        def asks(ctx):
            if ctx.memory.get("done"):
                return []
            ctx.memory["done"] = True
            return [ctx.finding("needs a new model", fingerprint="test.asks",
                                repairs=["test.bad_load", "engine.smaller_batch"])]

        @repair("test.bad_load", changes="a model llama.cpp refuses", reconfigures=True, cost=0,
                registry=registry)
        def bad_load(ctx, finding):
            return ctx.params.replace(model_path=refused)

    manager = builtins()
    with manager.registry.loading("test-plugin"):
        install(manager.registry)
    failed_loads = []
    unsubscribe = supervisor.subscribe(lambda e: failed_loads.append(e) if e.kind == "load_failed" else None)
    table = Policy.from_config({**FAST, "test.asks": "auto", "engine.crash_loop": {"crashes": 1}})
    doctor = Doctor(supervisor, None, journal, table, changes=Changes(supervisor, journal, ready_timeout_s=30.0),
                    plugins=manager)
    events: list[DoctorEvent] = []
    doctor.subscribe(events.append)
    doctor.start()
    try:
        assert wait_for(lambda: any(e.kind == "settled" for e in events), 60), [e.message for e in events]
        time.sleep(0.5)
        assert failed_loads, "the repair's configuration really failed to load"
        assert [f.detector for f in doctor.findings()] == ["test.asks"], [f.title for f in doctor.findings()]
        found = doctor.findings()[0]
        assert found.state == "repaired", found.history
        applied = [h for h in found.history if h["what"] == "applied"]
        assert [h["repair"] for h in applied] == ["test.bad_load", "engine.smaller_batch"]
        first = journal.get_action(applied[0]["action_id"])
        assert [h["state"] for h in first.history] == ["proposed", "applied", "failed", "rolled_back"]
        assert journal.get_config(first.config_after).standing == "bad"
        assert supervisor.params == demo_params.replace(n_batch=256, n_ubatch=256)
    finally:
        unsubscribe()
        doctor.stop()


def test_stalled_decode_is_found_within_one_interval_and_restarted(supervisor: Supervisor,
                                                                   journal: Journal) -> None:
    """The forward-progress watchdog: a decode that stops producing tokens (the worker's injected
    stall; the process stays up and the state stays "generating") is found on the doctor's next
    pass after its threshold, with no canary running, and the restart through the change
    transaction brings back an engine that answers."""
    interval, stall_s = 0.2, 1.0
    doctor, events = make_doctor(supervisor, journal, interval=interval,
                                 **{"engine.stalled": {"mode": "auto", "stall_s": stall_s}})
    try:
        first_pid = supervisor.pid
        # temperature 0: the demo model's 50-token answer, never an end at the first token; at
        # 50 ms a token the stall lands well inside it
        supervisor.inject("slow", ms=50)
        reply = supervisor.chat(ASK, max_tokens=400, temperature=0.0)
        assert wait_for(lambda: (supervisor.in_flight() or {}).get("tokens", 0) >= 2, 10)
        flight = supervisor.in_flight()
        assert flight["prompt_counted"] and flight["prompt_tokens"] > 5, flight
        supervisor.inject("stall")
        assert wait_for(lambda: any(f.detector == "engine.stalled" for f in doctor.findings()), 10), \
            [e.message for e in events]
        stall = next(f for f in doctor.findings() if f.detector == "engine.stalled")
        last_token = stall.evidence["since_progress_s"]
        # found on the first pass past the threshold: within one doctor interval of it (and a
        # little for the detector's own thread on a loaded box)
        assert stall_s <= last_token <= stall_s + interval + 0.5, stall.evidence
        assert stall.evidence["tokens"] >= 2 and stall.narration_kind == "likely"
        assert "no token" in stall.narration and "hung" in stall.narration
        assert doctor.last_canary is None, "found without a canary"
        assert wait_for(lambda: stall.state == "repaired", 40), stall.history
        assert stall.proposed == "engine.restart"
        assert supervisor.pid != first_pid, "the stalled engine was replaced"
        assert reply.wait(5).status == "interrupted"
        assert journal.get_action(stall.action_id).state == "verified"
        assert wait_for(lambda: supervisor.state is EngineState.READY, 10)
        again = supervisor.chat(ASK, max_tokens=8, temperature=0.0).wait(20)
        assert again.status == "done" and again.text, "the restarted engine answers again"
        assert supervisor.in_flight() is None
    finally:
        doctor.stop()
