"""The doctor end to end on the real supervisor and the demo model, with a real journal file."""

from __future__ import annotations

import signal
import threading
import time

from llmos_tui.doctor import Doctor, DoctorEvent, PluginManager, Policy
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
    table = {**FAST, **policy}
    doctor = Doctor(supervisor, None, journal, Policy.from_config(table), builtins())
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
        assert any("start limit" in e.message for e in events if e.kind == "notice")
        gave_up = [f for f in doctor.findings() if f.state == "gave_up"]
        assert gave_up
        time.sleep(1.0)
        assert len(loads) == 3 and not doctor.busy
        assert journal.events("doctor")
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


def test_oom_repair_that_fails_is_rolled_back_and_the_next_one_tried_at_once(
        supervisor: Supervisor, journal: Journal, demo_params: EngineParams) -> None:
    """OOM -> the smallest change (KV cache q8_0 + flash attention) -> on this CPU build llama.cpp
    refuses that context -> rolled back to the original configuration, the failed one marked bad ->
    at once, in the same incident, the next smallest change (batch) -> verified. The journal holds
    both actions and the finding's end state is what the engine runs."""
    doctor, events = make_doctor(supervisor, journal)  # engine.oom is auto out of the box
    try:
        supervisor.inject("oom")
        assert wait_for(lambda: any(e.kind == "settled" for e in events), 60), [e.message for e in events]
        oom = next(f for f in doctor.findings() if f.detector == "engine.oom")
        assert any("out of memory" in line for line in oom.evidence["log_lines"])
        assert not [f for f in doctor.findings() if f.detector == "engine.crashed"], "the OOM finding owns the crash"
        settled = next(e for e in events if e.kind == "settled")
        assert settled.data["outcome"] == "repaired" == oom.state, oom.history
        applied = [h for h in oom.history if h["what"] == "applied"]
        assert [h["repair"] for h in applied] == ["engine.kv_quant", "engine.smaller_batch"]
        first = journal.get_action(applied[0]["action_id"])
        assert first.kind == "engine.kv_quant" and first.finding_id == oom.journal_id
        assert [h["state"] for h in first.history] == ["proposed", "applied", "failed", "rolled_back"]
        bad = journal.get_config(first.config_after)
        assert bad.standing == "bad" and bad.params["type_k"] == "q8_0"
        assert "marked bad" in (doctor.check_config(params_of(bad)) or "")
        assert any(e.data.get("repair") == "rollback" and e.data.get("state") == "verified" for e in events)
        second = journal.get_action(applied[1]["action_id"])
        assert second.kind == "engine.smaller_batch" and second.state == "verified"
        assert oom.action_id == second.id
        assert supervisor.state is EngineState.READY
        assert supervisor.params == demo_params.replace(n_batch=256, n_ubatch=256)
        active = journal.active_config()
        assert active.id == second.config_after and active.standing == "good"
        assert params_of(active) == supervisor.params
    finally:
        doctor.stop()
