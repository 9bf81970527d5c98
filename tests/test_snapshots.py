"""Screen snapshots (pytest-textual-snapshot): each screen at 80x24 and 120x40, in the default
(dark) and the 16-colour theme. Update them after an intended change of the look with
``pytest tests/test_snapshots.py --snapshot-update`` and look at the report before committing.

Deterministic by construction: telemetry is the replayed trace (tests/data/trace_throttle.jsonl,
synthetic) polled a fixed number of times by a sampler that never runs on its own; no engine
starts (its state is "stopped"); the doctor's findings and the journal's entries carry fixed
times; the clock is UTC.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmos_tui.config import load_config
from llmos_tui.core.wiring import build_core
from llmos_tui.journal import Journal
from llmos_tui.ui.app import LlmosApp

TRACE = Path(__file__).parent / "data" / "trace_throttle.jsonl"
T0 = 1793700000.0  # the trace's start: 2026-11-03 10:00:00 UTC
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
THEMES = ("dark", "16-colour")
SCREENS = ("dashboard", "chat", "doctor", "journal", "tuning", "help", "command", "explain")


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from textual.widgets import Input

    monkeypatch.setenv("TZ", "UTC")
    # an input's cursor blinks every 0.5 s: on a slow box a snapshot caught it off. It stays on here.
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
    monkeypatch.chdir(tmp_path)  # the journal's path is shown: a relative one is the same on every run
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def seed_journal(path: Path) -> int:
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.paths import DEMO_MODEL

    with Journal(path) as journal:
        params = EngineParams(model_path=str(DEMO_MODEL), n_ctx=2048, n_threads=2, n_threads_batch=2)
        first = journal.record_config(params, note="first start", ts=T0 + 1)
        journal.mark_good(first.id, ts=T0 + 2)
        journal.record_event("loaded", {"load_ms": 15}, ts=T0 + 3)
        finding = journal.record_finding("gpu.throttle", "warning", "GPU 0 clocks held down by the power cap",
                                         {"power_w": 699.1, "limit_w": 700.0, "sm_clock_mhz": 1410,
                                          "reasons": ["power cap"]}, ts=T0 + 60)
        journal.record_event("crashed", {"signal": "SIGABRT"}, ts=T0 + 120)
        for i in range(60):  # the flight recorder's hour: 1-minute means, GPU 0 warming under load
            journal.rollups.record(60, T0 + 60 * i, {"gpu0.util": 90.0 + i % 7, "gpu0.temp": 60.0 + i / 4,
                                                     "gpu0.power": 600.0 + 3 * (i % 10), "host.cpu": 35.0})
        journal.db.execute("UPDATE actions SET ts = ?, updated = ?", (T0 + 5, T0 + 5))
        journal.db.execute("UPDATE action_states SET ts = ?", (T0 + 5,))
        journal.db.conn.commit()
    return finding


def snapshot_app(theme: str, screen: str) -> LlmosApp:
    from llmos_tui.doctor import Doctor
    from llmos_tui.doctor.api import Finding
    from llmos_tui.doctor.policy import Policy
    from llmos_tui.telemetry.replay import ReplaySource
    from llmos_tui.telemetry.sampler import Sampler

    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2})
    config.theme = theme
    config.journal_path = Path("journal.sqlite")
    journal_finding = seed_journal(config.journal_file)
    op = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    sampler = Sampler(ReplaySource(str(TRACE), speed=0, loop=False), interval=1.0, engine_stats=None)
    for _ in range(90):  # 90 s into the trace: under load, power-capped, the sparklines full
        sampler.poll_once()
    op.sampler = sampler
    doctor = Doctor(None, sampler, None, Policy())
    for i, (severity, title, evidence) in enumerate([
        ("warning", "GPU 0 clocks held down by the power cap", {"power_w": 699.1, "limit_w": 700.0}),
        ("error", "Generation speed fell 41% below its baseline", {"gen_tps": 31.2, "baseline_tps": 52.9}),
    ]):
        found = doctor._add(Finding(title=title, severity=severity, detector=f"demo.{i}", evidence=evidence,
                                    fingerprint=f"demo.{i}", ts=T0 + 60 + i))
        found.last_ts, found.history = found.ts, []
        found.journal_id = journal_finding
    op.doctor = doctor
    op.problems.clear()
    start = {"help": "chat", "command": "dashboard", "explain": "doctor"}.get(screen, screen)
    app = LlmosApp(op, start_screen=start, start_engine=False)
    app.snapshot_closer = op.close  # type: ignore[attr-defined]
    return app


PRESS = {"help": ("f1",), "command": ("colon", "t", "h"), "explain": ("e",)}


def study_events() -> list[dict]:
    """A finished study as the tuner publishes it: warm-started, one timeout, one refusal."""
    base = {"n_batch": 512, "n_ubatch": 512, "n_threads": 2, "n_threads_batch": 2, "flash_attn": "auto",
            "type_k": "f16", "type_v": "f16"}
    trials = [
        ("warm start: trl:12 of std:3 (same model, build and machine)", base, "ok", 204.31),
        ("optimiser", {**base, "n_threads": 1, "n_ubatch": 128}, "ok", 241.77),
        ("optimiser", {**base, "n_batch": 2048, "type_k": "q8_0", "type_v": "q8_0"}, "refused", None),
        ("optimiser", {**base, "n_threads_batch": 1, "flash_attn": "on"}, "timeout", None),
        ("repeat", {**base, "n_threads": 1, "n_ubatch": 128}, "ok", 238.02),
        ("optimiser", {**base, "n_batch": 256, "n_ubatch": 256}, "ok", 219.45),
    ]
    best = {"mean": 239.9, "n": 2, "config": {**base, "n_threads": 1, "n_ubatch": 128}}
    events: list[dict] = [{"kind": "study", "study_id": 7, "objective": {"name": "gen_tps", "maximize": True},
                           "trials": 6, "strategy": "gp"}]
    for i, (origin, config, outcome, value) in enumerate(trials, 1):
        trial = {"index": i, "origin": origin, "config": config, "outcome": outcome, "value": value,
                 "reason": {"refused": "type_k q8_0: block size 32 does not divide the head size 40",
                            "timeout": "no result in 60 s"}.get(outcome, "")}
        events.append({"kind": "trial", "trial": trial, "best": best})
    events.append({"kind": "state", "state": "idle"})
    events.append({"kind": "done", "report": {"study_id": 7, "status": "done", "best": best,
                                              "message": "best 239.9 tok/s (n=2): not verified (no --verify)"}})
    return events


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    if app.current_mode == "tuning":
        from llmos_tui.ui.tuning_screen import TunerUpdate

        for event in study_events():
            app.screen.on_tuner_update(TunerUpdate(event))
        await pilot.pause(0.3)
    if app.current_mode == "journal" or app.screen.__class__.__name__ == "ExplainScreen":
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await pilot.pause(0.1)
            if not any(w.is_running for w in app.workers):
                break
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(snap_compare, screen: str, size: str, theme: str) -> None:
    app = snapshot_app(theme, screen)
    try:
        assert snap_compare(app, press=PRESS.get(screen, ()), terminal_size=SIZES[size], run_before=settle)
    finally:
        app.snapshot_closer()
