"""Narrated findings (fact / likely) and looking ahead (the VRAM trend with an ETA)."""

from __future__ import annotations

import json
from pathlib import Path

from llmos_tui.doctor import Doctor, PluginManager, Policy
from llmos_tui.doctor.api import Finding, detector, ensure_narration, generic_narration
from llmos_tui.telemetry import ReplaySource, Sampler
from llmos_tui.telemetry.sample import GpuProcess, GpuSample, Sample

DATA = Path(__file__).parent / "data"
CLIMB = DATA / "trace_vram_climb.jsonl"
THROTTLE = DATA / "trace_throttle.jsonl"
GIB, MIB = 1024**3, 1024**2


def builtins() -> PluginManager:
    manager = PluginManager()
    manager.load_all(folders=[], entry_points=False)
    return manager


def replay(trace: Path) -> tuple[Doctor, Sampler]:
    sampler = Sampler(ReplaySource(trace, speed=0), interval=1.0)
    return Doctor(None, sampler, None, Policy.from_config({"grace_s": 0}), plugins=builtins()), sampler


def drive(doctor: Doctor, sampler: Sampler, each=None) -> None:
    while not any(getattr(s, "exhausted", False) for s in sampler.sources):
        sampler.poll_once()
        found = doctor.run_once(force=False)
        if each is not None:
            each(sampler.latest, found)
    sampler.close()


def test_builtin_findings_on_a_replayed_trace_are_narrated_with_their_numbers() -> None:
    doctor, sampler = replay(THROTTLE)
    drive(doctor, sampler)
    findings = doctor.findings()
    assert {"gpu.power_cap", "gpu.thermal", "engine.tps_drop"} <= {f.detector for f in findings}
    for f in findings:
        assert f.narration_kind in ("fact", "likely") and f.narration, f
        assert f.narrated.startswith(f.narration_kind + ": ")
        assert any(ch.isdigit() for ch in f.narration), f"no number in {f.narration!r}"
    cap = next(f for f in findings if f.detector == "gpu.power_cap")
    assert cap.narration_kind == "fact" and " W of its " in cap.narration
    drop = next(f for f in findings if f.detector == "engine.tps_drop")
    assert "tok/s" in drop.narration and "slower" in drop.narration
    # to_dict carries it (the doctor's JSON, the journal's record)
    assert drop.to_dict()["narration"] == drop.narration and drop.to_dict()["narration_kind"] == "fact"


def test_a_plugin_finding_without_narration_gets_a_generic_fact_line() -> None:
    manager = builtins()

    @detector("plugin.quiet", "warning", registry=manager.registry)
    def quiet(ctx):
        return [ctx.finding("disk almost full", evidence={"free_gib": 1.5, "mount": "/var", "log": ["a", "b"]})]

    doctor = Doctor(None, Sampler(_Gpu(GpuSample(index=0)), interval=1.0), None, Policy(), plugins=manager)
    doctor.sampler.poll_once()
    f = next(f for f in doctor.run_once() if f.detector == "plugin.quiet")
    assert f.narration_kind == "fact"
    assert f.narration == "Disk almost full (free_gib 1.5, mount /var)."
    assert generic_narration("x", {}) == "X."
    likely = ensure_narration(Finding("t", narration="it is probably hot", narration_kind="likely"))
    assert likely.narrated == "likely: it is probably hot"


def test_the_journal_record_carries_the_narration(tmp_path: Path) -> None:
    from llmos_tui.journal import Journal

    journal = Journal(tmp_path / "j.db")
    gpu = GpuSample(index=0, mem_used=int(79.5 * GIB), mem_total=80 * GIB)
    doctor = Doctor(None, Sampler(_Gpu(gpu), interval=1.0), journal, Policy(), plugins=builtins())
    for _ in range(3):
        doctor.sampler.poll_once()
        doctor.run_once()
    f = next(f for f in doctor.findings() if f.detector == "gpu.vram_pressure")
    row = journal.get_finding(f.journal_id)
    assert row["evidence"]["narration"] == f.narration == "GPU 0 VRAM 99 % full (81408 of 81920 MiB)."
    assert row["evidence"]["narration_kind"] == "fact"
    journal.close()


def test_vram_climb_is_foreseen_before_full_with_an_eta_within_30_percent() -> None:
    header = json.loads(CLIMB.read_text().splitlines()[0])
    assert header["synthetic"] is True
    full_ts = header["start"] + header["full_at_s"]
    doctor, sampler = replay(CLIMB)
    first: dict[str, object] = {}

    def each(sample: Sample, found: list[Finding]) -> None:
        for f in found:
            if f.detector == "gpu.vram_trend" and not first:
                gpu = sample.gpus[0]
                first.update(ts=sample.ts, eta=f.evidence["eta_s"], full=gpu.mem_used >= gpu.mem_total, f=f)

    drive(doctor, sampler, each)
    assert first, "no VRAM trend finding on a steady climb"
    assert not first["full"], "raised only once VRAM was already full"
    real = full_ts - first["ts"]
    assert real > 60, f"raised only {real:.0f} s before full"
    assert abs(first["eta"] - real) <= 0.3 * real, (first["eta"], real)
    f = first["f"]
    assert f.narration_kind == "likely" and "likely full in" in f.narration and "MiB/min" in f.narration
    # the engine's own growth (1.8 GiB/min) is told from the other tenant's (0.2 GiB/min)
    assert abs(f.evidence["engine_mib_per_min"] - 1.8 * 1024) < 0.15 * 1.8 * 1024
    assert abs(f.evidence["other_mib_per_min"] - 0.2 * 1024) < 60
    # it followed the climb with a shrinking ETA
    last = next(x for x in doctor.findings() if x.detector == "gpu.vram_trend")
    assert last.evidence["eta_s"] < first["eta"]


def test_vram_trend_is_retracted_when_the_climb_stops() -> None:
    source = _Series()
    doctor = Doctor(None, Sampler(source, interval=1.0), None, Policy.from_config({"grace_s": 0}),
                    plugins=builtins())
    for t in range(0, 120, 2):  # climbing 3 GiB/min from 60 GiB
        source.next(t, 60 * GIB + t / 60 * 3 * GIB)
        doctor.sampler.poll_once()
        doctor.run_once(force=False)
    trend = [f for f in doctor.findings(open_only=True) if f.detector == "gpu.vram_trend"]
    assert trend, "a 3 GiB/min climb with 14 GiB left is inside the horizon"
    level = 60 * GIB + 118 / 60 * 3 * GIB
    for t in range(120, 400, 2):  # the conversation was reset: memory falls back and stays flat
        source.next(t, level - 4 * GIB)
        doctor.sampler.poll_once()
        doctor.run_once(force=False)
    assert trend[0].state == "resolved"
    assert not [f for f in doctor.findings(open_only=True) if f.detector == "gpu.vram_trend"]


def test_flat_memory_raises_no_trend() -> None:
    source = _Series()
    doctor = Doctor(None, Sampler(source, interval=1.0), None, Policy.from_config({"grace_s": 0}),
                    plugins=builtins())
    for t in range(0, 300, 2):
        source.next(t, 70 * GIB + (t % 7) * MIB)
        doctor.sampler.poll_once()
        doctor.run_once(force=False)
    assert not [f for f in doctor.findings() if f.detector == "gpu.vram_trend"]


class _Gpu:
    def __init__(self, gpu: GpuSample) -> None:
        self.gpu = gpu

    def collect(self, sample: Sample) -> None:
        sample.gpus = [self.gpu]


class _Series:
    """One GPU whose used memory (and sample time) the test sets before each poll."""

    def __init__(self) -> None:
        self.ts, self.used = 0.0, 0

    def next(self, t: float, used: float) -> None:
        self.ts, self.used = 1_000_000.0 + t, int(used)

    def collect(self, sample: Sample) -> None:
        sample.ts = self.ts
        sample.gpus = [GpuSample(index=0, mem_used=self.used, mem_total=80 * GIB,
                                 processes=[GpuProcess(pid=1, used_memory=self.used, is_engine=True)])]


# ---- XID and ECC ladders ---------------------------------------------------------------------
def _xid_findings(**gpu_fields) -> list[Finding]:
    doctor = Doctor(None, Sampler(_Gpu(GpuSample(index=0, **gpu_fields)), interval=1.0), None, Policy(),
                    plugins=builtins())
    doctor.sampler.poll_once()
    return [f for f in doctor.run_once() if f.detector == "gpu.xid_ecc"]


def test_xid_ladders_are_table_driven_and_the_doctor_only_restarts_its_engine() -> None:
    from llmos_tui.doctor.xid import DOCTOR_STEPS, ECC_LADDERS, STEPS, XID_LADDERS, xid_ladder

    assert DOCTOR_STEPS == {"restart_engine"}, "the doctor never resets, drains, reboots or calls anyone"
    for table in (XID_LADDERS, ECC_LADDERS):
        for ladder in table.values():
            assert ladder.steps and set(ladder.steps) <= set(STEPS)
            assert "restart_engine" not in ladder.steps[1:] or ladder.steps[0] == "watch"
    # NVIDIA's buckets: 13 restart the application, 48 reset the GPU, 79 reboot the box
    assert xid_ladder(13).bucket == "RESTART_APP" and xid_ladder(13).doctor_acts
    assert xid_ladder(48).steps == ("stop_work", "drain", "reset_gpu", "service")
    assert xid_ladder(79).bucket == "RESTART_BM" and "reboot" in xid_ladder(79).steps
    assert xid_ladder(12345).severity == "warning" and "catalog" in xid_ladder(12345).meaning

    (app,) = _xid_findings(xid_events=[13])
    assert app.repairs == ["engine.restart"] and app.severity == "warning"
    assert app.evidence["ladder"][0] == "1. restart the engine (the doctor does this)"
    assert app.narration_kind == "fact" and "restart engine -> reset gpu -> service" in app.narration
    (bus,) = _xid_findings(xid_events=[79])
    assert bus.repairs == [] and bus.severity == "critical"
    assert "reboot" in bus.narration and "the doctor only tells" in bus.narration
    assert bus.evidence["nvidia_action"] == "RESTART_BM"


def test_ecc_and_remap_states_get_their_ladders() -> None:
    (ecc,) = _xid_findings(ecc_volatile_uncorrected=3)
    assert ecc.severity == "error" and ecc.evidence["ladder"][0].startswith("1. restart the engine")
    assert "3 uncorrectable ECC errors" in ecc.narration
    (failed,) = _xid_findings(remap_failure=True)
    assert failed.severity == "critical" and any("call service" in s for s in failed.evidence["ladder"])
    (pending,) = _xid_findings(remap_pending=True)
    assert pending.severity == "warning" and "reset the GPU" in pending.evidence["ladder"][-1]


# ---- the packaged demo trace -------------------------------------------------------------------
def test_the_packaged_demo_trace_shows_narration_eta_and_ladders() -> None:
    from llmos_tui.paths import DEMO_MODEL

    demo = DEMO_MODEL.with_name("demo_trace.jsonl")
    header = json.loads(demo.read_text().splitlines()[0])
    assert header["synthetic"] is True and "Synthetic" in header["description"]
    doctor, sampler = replay(demo)
    seen: dict[str, float] = {}
    drive(doctor, sampler, lambda sample, found: [seen.setdefault(f.detector, sample.ts - header["start"])
                                                  for f in found])
    by = {f.detector: f for f in doctor.findings()}
    # VRAM full would be at ~444 s: foreseen well before, retracted when the conversation is reset (330 s)
    assert seen["gpu.vram_trend"] < 200 and by["gpu.vram_trend"].state == "resolved"
    assert "likely full in" in by["gpu.vram_trend"].narration
    assert 355 <= seen["gpu.thermal"] <= 400 and "engine.tps_drop" in by
    xid = by["gpu.xid_ecc"]
    assert seen["gpu.xid_ecc"] == 450 and xid.state == "open", "an XID's finding outlives its one sample"
    assert xid.evidence["ladder"][0].startswith("1. restart the engine") and "XID 43" in xid.narration


def test_replay_demo_names_the_packaged_trace(tmp_path: Path, monkeypatch) -> None:
    from llmos_tui.config import load_config
    from llmos_tui.core.wiring import build_core

    monkeypatch.setenv("LLMOS_TUI_HOME", str(tmp_path))
    op = build_core(load_config(tmp_path / "none.toml"), "replay", replay="demo", replay_speed=0, doctor=False,
                    endpoint=False)
    try:
        assert op.replay is not None and op.replay["path"].endswith("llmos_tui/data/demo_trace.jsonl")
        assert op.replay["synthetic"] is True
    finally:
        op.close()


def test_console_notice_carries_the_narration() -> None:
    from llmos_tui.console.app import _notice_for
    from llmos_tui.doctor.book import DoctorEvent

    f = Finding("GPU 0 memory 99 % full", severity="error", narration="VRAM 99 %.", narration_kind="fact")
    assert _notice_for(DoctorEvent("finding", f)) == "[doctor] error: GPU 0 memory 99 % full\n         fact: VRAM 99 %."


def test_temperature_trend_foresees_the_slowdown_threshold() -> None:
    from llmos_tui.paths import DEMO_MODEL

    demo = DEMO_MODEL.with_name("demo_trace.jsonl")
    start = json.loads(demo.read_text().splitlines()[0])["start"]
    doctor, sampler = replay(demo)
    first: dict[str, object] = {}

    def each(sample: Sample, found: list[Finding]) -> None:
        for f in found:
            if f.detector == "gpu.temp_trend" and not first:
                first.update(t=sample.ts - start, temp=sample.gpus[0].temp, eta=f.evidence["eta_s"], f=f)

    drive(doctor, sampler, each)
    # the demo GPU warms 7.5 °C/min from 200 s and reaches 87 °C at ~416 s
    assert first and first["temp"] < 87, first
    real = 200 + (87 - 60) / 0.125 - first["t"]
    assert real > 60 and abs(first["eta"] - real) <= 0.3 * real, (first["eta"], real)
    assert first["f"].narration_kind == "likely" and "°C slowdown threshold in" in first["f"].narration
    (only,) = [f for f in doctor.findings() if f.detector == "gpu.temp_trend"]
    assert only.state == "resolved", "retracted once it reached the threshold; not raised again while cooling"


def test_context_trend_counts_the_turns_left() -> None:
    from llmos_tui.doctor.context import DetectorContext, JournalView
    from llmos_tui.doctor.detectors.trends import context_trend

    memory: dict = {}

    def run(used: int) -> list:
        ctx = DetectorContext("context.trend", "info", 0.0, None, None, None, None, "ready",
                              {"ctx_used": used, "n_ctx": 8192}, [], [], [], None, JournalView(None), memory)
        return context_trend(ctx)

    assert run(1000) == [] and run(1500) == [], "no pace from one turn"
    assert run(2000) == [], "500 tokens a turn, 12 turns left: not yet"
    (f,) = run(7000)  # steps 500, 500, 5000: ~2000 a turn, 1192 left
    assert f.evidence["tokens_per_turn"] == 2000 and f.evidence["turns_left"] == 0.6
    assert f.narration_kind == "likely" and "7000 of 8192 tokens used" in f.narration
    assert run(100) == [], "a reset conversation starts the pace again"


def test_journal_disk_full_is_foreseen_from_its_growth_and_retracted_when_it_stops(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """The journal's disk-full ETA: the real journal file grows (rollups written between the
    doctor's readings), the free space is an injected reading; the ETA is free / growth."""
    from llmos_tui.doctor.context import DetectorContext, JournalView
    from llmos_tui.doctor.detectors import trends
    from llmos_tui.journal import Journal

    journal = Journal(tmp_path / "j.sqlite")
    free = {"bytes": 50 * 1024 * 1024.0}  # ~5 MiB/h of growth below: full in ~9 h, inside the day
    monkeypatch.setattr(trends, "free_bytes", lambda path: free["bytes"])
    memory: dict = {}
    wide = {f"s{i}": float(i) for i in range(40)}

    def run(now: float) -> list:
        ctx = DetectorContext("journal.disk_trend", "warning", now, None, None, None, None, None, None, [], [], [],
                              None, JournalView(lambda fn: fn(journal)), memory)
        return trends.journal_disk_trend(ctx)

    t0, found = 1_800_000_000.0, []
    for minute in range(12):  # ~200 rows (~95 KiB) a minute
        for i in range(200):
            journal.rollups.record(10, t0 + minute * 60 + i * 0.3, wide)
        found = run(t0 + minute * 60)
    (f,) = found
    growth = f.evidence["growth_mib_per_h"]
    assert growth > 1, f.evidence
    expected = free["bytes"] / (growth * 1024 * 1024 / 3600)
    assert abs(f.evidence["eta_s"] - expected) <= 0.02 * expected
    assert f.narration_kind == "likely" and "MiB free: likely full in ~" in f.narration
    assert f.title.startswith("journal's disk likely full in ~")
    # the growth stops: the trend turns and the finding is retracted
    for minute in range(12, 40):
        found = run(t0 + minute * 60)
    assert found == []
    # plenty of room: no finding however it grows
    free["bytes"] = 1e15
    memory.clear()
    for minute in range(40, 52):
        for i in range(200):
            journal.rollups.record(10, t0 + minute * 60 + i * 0.3, wide)
        assert run(t0 + minute * 60) == []
    journal.close()
