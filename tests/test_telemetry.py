"""Telemetry: safe NVML reads, throttle words, ring buffers, the sampler, record/replay, `status`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_pynvml as fake_nv  # noqa: E402
from fake_pynvml import FakeGpu, FakeNvml, rtx_gpu  # noqa: E402

from llmos_tui.cli import telemetry as cli_telemetry  # noqa: E402
from llmos_tui.telemetry import (  # noqa: E402
    HostSource,
    NvmlSource,
    Recorder,
    ReplaySource,
    Sample,
    Sampler,
    SeriesStore,
    TraceError,
    decode_clock_reasons,
    is_throttling,
    read_trace,
)
from llmos_tui.telemetry import format as fmt  # noqa: E402
from llmos_tui.telemetry.sample import GpuSample, HostSample  # noqa: E402
from llmos_tui.telemetry.series import Ring  # noqa: E402

TRACE = Path(__file__).resolve().parent / "data" / "trace_throttle.jsonl"
GIB = 1024**3


def poll(source: NvmlSource, engine: dict | None = None) -> Sample:
    sample = Sample(ts=time.time(), engine=engine)
    source.collect(sample)
    return sample


# ---- clock-event reasons ------------------------------------------------------------------
def test_clock_reasons_decode_to_words():
    assert decode_clock_reasons(None) == []
    assert decode_clock_reasons(0) == []
    assert decode_clock_reasons(0x4) == ["power cap"]
    assert decode_clock_reasons(0x4 | 0x20 | 0x40) == ["power cap", "SW thermal slowdown", "HW thermal slowdown"]
    every = decode_clock_reasons(0x1FF)
    for word in ("idle", "applications clocks setting", "power cap", "HW slowdown", "sync boost",
                 "SW thermal slowdown", "HW thermal slowdown", "HW power brake", "display clock setting"):
        assert word in every
    assert decode_clock_reasons(0x1 | 0x10000) == ["idle", "unknown (0x10000)"]


def test_only_costly_reasons_count_as_throttling():
    assert not is_throttling(None)
    assert not is_throttling(0x1)  # idle
    assert not is_throttling(0x2 | 0x100)  # application clocks, display clock
    assert is_throttling(0x4)
    assert is_throttling(0x80)  # HW power brake
    gpu = GpuSample(index=0, clock_reasons=0x20)
    assert gpu.throttled and gpu.throttle_reasons == ["SW thermal slowdown"]


# ---- the safe NVML source -------------------------------------------------------------------
def test_nvml_reads_every_field_of_a_healthy_gpu():
    gpu = FakeGpu(util_gpu=97, util_mem=55, power_mw=650_500, clock_reasons=0x4,
                  compute_processes=[(4242, 17 * GIB), (77, GIB)], graphics_processes=[(77, GIB // 2)])
    source = NvmlSource(nvml=FakeNvml([gpu]))
    sample = poll(source, engine={"pid": 4242})
    assert sample.nvml_error is None
    assert sample.driver_version == "550.90.07" and sample.cuda_version == "12.4"
    g = sample.gpus[0]
    assert g.name == "NVIDIA H100 80GB HBM3" and g.uuid.startswith("GPU-")
    assert (g.util_gpu, g.util_mem) == (97, 55)
    assert g.power == pytest.approx(650.5) and g.power_limit == pytest.approx(700.0)  # mW -> W
    assert (g.temp, g.temp_mem, g.temp_slowdown, g.temp_shutdown, g.temp_mem_max) == (34, 38, 87, 92, 95)
    assert (g.sm_clock, g.sm_clock_max, g.mem_clock, g.mem_clock_max) == (345, 1980, 2619, 2619)
    assert (g.pcie_gen, g.pcie_width, g.pcie_gen_max, g.pcie_width_max, g.pcie_replay) == (5, 16, 5, 16, 0)
    assert g.ecc_mode is True and g.ecc_volatile_uncorrected == 0 and g.ecc_aggregate_corrected == 0
    assert (g.remapped_corrected, g.remapped_uncorrected, g.remap_pending, g.remap_failure) == (0, 0, False, False)
    assert g.throttle_reasons == ["power cap"] and g.xid_events == []
    procs = {p.pid: p for p in g.processes}
    assert procs[4242].is_engine and procs[4242].used_memory == 17 * GIB
    assert not procs[77].is_engine and procs[77].kind == "compute+graphics"
    assert g.processes[0].pid == 4242  # biggest first


def test_unsupported_fields_read_none_and_are_not_asked_again():
    fake = FakeNvml([rtx_gpu()])
    source = NvmlSource(nvml=fake, slow_every=0.0)  # slow tier every sample: caching must still hold
    for _ in range(5):
        g = poll(source).gpus[0]
    assert g.name == "NVIDIA GeForce RTX 3090" and g.fan == 41
    for name in ("ecc_mode", "ecc_volatile_uncorrected", "remapped_corrected", "temp_mem", "temp_mem_max"):
        assert getattr(g, name) is None, name
    assert fake.calls["nvmlDeviceGetEccMode"] == 1
    assert fake.calls["nvmlDeviceGetRemappedRows"] == 1
    assert fake.calls["nvmlDeviceGetFieldValues"] == 1
    assert source.unsupported(0)["ecc_mode"] == "Not Supported"
    assert not source.watching_xid and "not supported" in source.event_error.lower()
    assert fake.calls["nvmlDeviceGetName"] == 1  # static fields are cached


def test_function_missing_from_old_pynvml_or_old_driver_falls_back():
    # an old pynvml module: no ClocksEventReasons, no RemappedRows, no EventSetWait_v2
    fake = FakeNvml([FakeGpu(clock_reasons=0x40)],
                    missing={"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetRemappedRows",
                             "nvmlEventSetWait_v2", "nvmlSystemGetCudaDriverVersion_v2"})
    source = NvmlSource(nvml=fake)
    g = poll(source).gpus[0]
    assert g.throttle_reasons == ["HW thermal slowdown"]  # via nvmlDeviceGetCurrentClocksThrottleReasons
    assert g.remapped_corrected is None and "missing" in source.unsupported(0)["remapped_rows"]
    assert poll(source).cuda_version == "12.4"
    fake.emit_xid(0, 48)
    assert poll(source).gpus[0].xid_events == [48]  # via nvmlEventSetWait
    # a new pynvml on an old driver: the symbol is missing from libnvidia-ml
    fake2 = FakeNvml([FakeGpu(clock_reasons=0x4, function_not_found={"nvmlDeviceGetCurrentClocksEventReasons"})])
    source2 = NvmlSource(nvml=fake2)
    for _ in range(3):
        assert poll(source2).gpus[0].throttle_reasons == ["power cap"]
    assert fake2.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1
    assert fake2.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3


def test_transient_and_foreign_errors_never_raise():
    gpu = FakeGpu(transient={"nvmlDeviceGetPowerUsage"})
    fake = FakeNvml([gpu])
    source = NvmlSource(nvml=fake)
    assert poll(source).gpus[0].power is None  # failed this time
    assert poll(source).gpus[0].power == pytest.approx(72.0)  # asked again, answered

    def broken(handle):
        raise TypeError("binding changed shape")

    fake.nvmlDeviceGetTemperature = broken
    fake.nvmlDeviceGetTemperatureV = broken
    sample = poll(source)
    assert sample.gpus[0].temp is None and sample.gpus[0].util_gpu == 0


def test_gpu_that_falls_off_the_bus_is_marked_lost_and_left_alone():
    fake = FakeNvml([FakeGpu(), FakeGpu(name="NVIDIA H100 80GB HBM3 #2")])
    source = NvmlSource(nvml=fake)
    assert [g.lost for g in poll(source).gpus] == [False, False]
    fake.fall_off_bus(0)
    sample = poll(source)
    lost, other = sample.gpus
    assert lost.xid_events == [79] and lost.lost and lost.error == "GPU is lost"
    assert lost.name == "NVIDIA H100 80GB HBM3"  # identity kept
    assert lost.util_gpu is None and lost.power is None and lost.processes == []  # readings not stale
    assert not other.lost and other.util_gpu == 0
    util_calls = fake.calls["nvmlDeviceGetUtilizationRates"]
    later = poll(source)
    assert later.gpus[0].lost and later.gpus[0].xid_events == [] and later.gpus[0].xid_last == 79
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == util_calls + 1  # only GPU 1 was asked
    assert "LOST" in fmt.format_status(later)


def test_no_driver_carries_nvmls_reason_and_retries_later():
    now = [0.0]
    fake = FakeNvml(init_error=fake_nv.NVML_ERROR_LIBRARY_NOT_FOUND)
    source = NvmlSource(nvml=fake, retry_init_every=30.0, clock=lambda: now[0])
    sample = poll(source)
    assert sample.gpus == [] and sample.nvml_error == "NVML Shared Library Not Found"
    poll(source)
    assert fake.calls["nvmlInit"] == 1  # not retried every sample
    fake.init_error = None
    now[0] = 31.0
    sample = poll(source)
    assert sample.nvml_error is None and len(sample.gpus) == 1


def test_no_gpu_on_this_machine_gives_nvmls_real_reason():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        expected = str(exc)
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVIDIA driver")
    source = NvmlSource()
    sample = poll(source)
    source.close()
    assert sample.gpus == [] and sample.nvml_error == expected
    if not any(Path(p, "libnvidia-ml.so.1").exists() for p in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
        assert sample.nvml_error == "NVML Shared Library Not Found"
    assert "No NVIDIA GPU: " + expected in fmt.format_status(sample)


def test_missing_pynvml_module_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    sample = poll(NvmlSource())
    assert sample.gpus == [] and "nvidia-ml-py" in sample.nvml_error


def test_sample_round_trips_through_json():
    fake = FakeNvml([FakeGpu(clock_reasons=0x24, compute_processes=[(9, GIB)])])
    sample = poll(NvmlSource(nvml=fake), engine={"state": "ready", "pid": 9, "params": {"n_ctx": 4096},
                                                 "rolling_gen_tps": float("nan"), "shape": (1, 2)})
    sample.host = HostSample(cpu_percent=12.5, cpu_count=8)
    data = json.loads(json.dumps(sample.to_dict(), allow_nan=False))
    assert data["engine"]["rolling_gen_tps"] is None and data["engine"]["shape"] == [1, 2]
    assert data["gpus"][0]["throttle_reasons"] == ["power cap", "SW thermal slowdown"]
    again = Sample.from_dict(data)
    assert again.to_dict() == data
    assert again.gpus[0].processes[0].is_engine


# ---- host --------------------------------------------------------------------------------------
def test_host_source_reads_the_engine_child():
    source = HostSource()
    engine = {"pid": os.getpid()}
    first = Sample(ts=0, engine=engine)
    source.collect(first)
    second = Sample(ts=1, engine=engine)
    sum(i * i for i in range(20000))
    source.collect(second)
    host = second.host
    assert host.mem_total > 0 and 0 <= host.mem_percent <= 100 and host.cpu_count >= 1
    assert host.cpu_percent is not None and host.engine_pid == os.getpid()
    assert host.engine_rss > 1024 * 1024 and host.engine_cpu_percent is not None
    assert first.host.engine_cpu_percent is None  # no baseline yet for a new child
    gone = Sample(ts=2, engine={"pid": 2**22 + 12345})
    source.collect(gone)
    assert gone.host.engine_rss is None and gone.host.engine_cpu_percent is None


# ---- series ---------------------------------------------------------------------------------
def test_ring_buffers_stay_bounded_and_aligned():
    ring = Ring(5)
    for i in range(23):
        ring.append(float(i))
    assert len(ring) == 5 and ring.last() == [18.0, 19.0, 20.0, 21.0, 22.0] and ring.last(2) == [21.0, 22.0]
    store = SeriesStore(capacity=100)
    for i in range(1000):
        values = {"ts": float(i), "gpu0.util": float(i % 100)}
        if i >= 990:
            values["gpu1.util"] = 1.0  # a GPU that appears late
        if i % 2:
            values["gpu0.util"] = None  # n/a samples
        store.add(values)
    assert len(store) == 100 and store.total == 1000
    assert len(store.window("ts", 10_000)) == 100
    assert store.window("ts", 3) == [997.0, 998.0, 999.0]
    assert store.window("gpu0.util", 4) == [96.0, 98.0]  # missing values dropped
    assert len(store.window("gpu0.util", 4, keep_missing=True)) == 4
    assert len(store.window("gpu1.util", 100, keep_missing=True)) == 100  # aligned with ts
    assert store.window("gpu1.util", 100) == [1.0] * 10
    assert store.latest("gpu0.util") is None and store.latest("ts") == 999.0
    assert store.window("nope", 5) == []


def test_sampler_feeds_named_series():
    fake = FakeNvml([FakeGpu(util_gpu=50, power_mw=300_000)])
    sampler = Sampler(NvmlSource(nvml=fake), engine_stats=lambda: {"last_gen_tps": 42.0, "last_ttft_ms": 80.0},
                      history=10)
    for _ in range(25):
        sampler.poll_once()
    assert sampler.series.window("gpu0.util", 3) == [50.0, 50.0, 50.0]
    assert sampler.series.window("gpu0.power", 100) == [300.0] * 10
    assert sampler.series.latest("engine.gen_tps") == 42.0 and sampler.series.latest("engine.ttft_ms") == 80.0
    assert {"gpu0.mem_used", "gpu0.temp", "gpu0.sm_clock"} <= set(sampler.series.names())
    assert len(sampler.recent()) <= 120 and sampler.polls == 25


# ---- the sampler --------------------------------------------------------------------------
class SlowSource:
    """Counts polls in flight; each poll takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []
        self.lock = threading.Lock()

    def collect(self, sample: Sample) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.starts.append(time.monotonic())
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1


def test_polls_never_overlap():
    source = SlowSource(0.02)
    sampler = Sampler(source, interval=0.001).start()
    callers = [threading.Thread(target=lambda: [sampler.poll_once() for _ in range(5)]) for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    time.sleep(0.1)
    sampler.stop()
    assert source.max_in_flight == 1
    gaps = [b - a for a, b in pairwise(source.starts)]
    assert min(gaps) >= 0.019  # the next poll starts only after the previous one finished
    assert not sampler.running


def test_sampler_keeps_its_interval():
    sampler = Sampler(SlowSource(0.0), interval=0.05).start()
    time.sleep(0.52)
    sampler.stop()
    assert 6 <= sampler.polls <= 12


def test_every_subscriber_gets_every_sample_and_a_bad_one_is_contained(caplog):
    sampler = Sampler(SlowSource(0.0), interval=0.01)
    got_a: list[Sample] = []
    got_b: list[Sample] = []

    def bad(sample: Sample) -> None:
        raise RuntimeError("subscriber bug")

    sampler.subscribe(got_a.append)
    sampler.subscribe(bad)
    unsubscribe_b = sampler.subscribe(got_b.append)
    sampler.start()
    deadline = time.monotonic() + 5
    while sampler.polls < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    unsubscribe_b()
    count_b = len(got_b)
    time.sleep(0.05)
    sampler.stop()
    assert sampler.polls >= 10 and len(got_a) == sampler.polls
    assert [s.ts for s in got_a] == sorted(s.ts for s in got_a)
    assert got_a[-1] is sampler.latest
    assert len(got_b) == count_b < len(got_a)  # unsubscribed
    assert "subscriber bug" in caplog.text


def test_engine_stats_are_copied_and_failures_contained():
    stats = {"state": "generating", "pid": None, "last_gen_tps": 50.0}
    sampler = Sampler(SlowSource(0.0), engine_stats=lambda: stats)
    sample = sampler.poll_once()
    stats["state"] = "crashed"
    assert sample.engine == {"state": "generating", "pid": None, "last_gen_tps": 50.0}

    def broken():
        raise RuntimeError("engine gone")

    sampler.engine_stats = broken
    assert sampler.poll_once().engine is None


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="positive"):
        Sampler(SlowSource(0.0), interval=0)


# ---- record and replay ----------------------------------------------------------------------
def test_recorder_and_replay_round_trip(tmp_path):
    fake = FakeNvml([FakeGpu()])
    path = tmp_path / "t.jsonl"
    sampler = Sampler(NvmlSource(nvml=fake), interval=0.5, engine_stats=lambda: {"state": "ready", "pid": None})
    with Recorder(path, interval=0.5) as recorder:
        sampler.subscribe(recorder)
        for watts in (100, 200, 300):
            fake.gpus[0].power_mw = watts * 1000
            sampler.poll_once()
    header, samples = read_trace(path)
    assert header["version"] == 1 and header["interval"] == 0.5 and header["host"] and header["start"] > 0
    assert header["synthetic"] is False
    assert [s.gpus[0].power for s in samples] == [100.0, 200.0, 300.0]
    assert [s.to_dict() for s in samples] == [s.to_dict() for s in sampler.recent()]


def test_replay_yields_recorded_samples_in_order_and_honours_speed(tmp_path):
    path = tmp_path / "steps.jsonl"
    with Recorder(path, interval=1.0) as recorder:
        for i in range(6):
            recorder.write(Sample(ts=1000.0 + i, engine={"requests": i}))
    started = time.monotonic()
    fast = [s.engine["requests"] for s in ReplaySource(path, speed=0)]
    assert time.monotonic() - started < 0.5 and fast == list(range(6))
    started = time.monotonic()
    paced = [s.ts for s in ReplaySource(path, speed=25)]  # 5 gaps of 1 s at 25x = 0.2 s
    elapsed = time.monotonic() - started
    assert paced == [1000.0 + i for i in range(6)]
    assert 0.18 <= elapsed < 1.5


def test_replay_through_the_sampler_stops_or_loops_at_the_end(tmp_path):
    header, recorded = read_trace(TRACE)
    sampler = Sampler(ReplaySource(TRACE, speed=0))
    seen: list[float] = []
    sampler.subscribe(lambda s: seen.append(s.ts))
    sampler.start()
    assert sampler.finished.wait(10)
    assert seen == [s.ts for s in recorded]
    assert sampler.poll_once().ts == recorded[-1].ts  # an exhausted replay yields nothing new
    looped = ReplaySource(TRACE, speed=0, loop=True)
    times = []
    for _ in range(len(recorded) + 20):
        sample = Sample(ts=0)
        looped.collect(sample)
        times.append(sample.ts)
    assert not looped.exhausted and looped.loops == 1
    assert all(b > a for a, b in pairwise(times))  # time keeps running forward across the loop


def test_replay_pacing_goes_through_the_sampler(tmp_path):
    path = tmp_path / "p.jsonl"
    with Recorder(path, interval=1.0) as recorder:
        for i in range(4):
            recorder.write(Sample(ts=50.0 + i))
    sampler = Sampler(ReplaySource(path, speed=20), interval=5.0)  # the trace paces, not the interval
    started = time.monotonic()
    sampler.start()
    assert sampler.finished.wait(5)
    assert 0.12 <= time.monotonic() - started < 2.0 and sampler.polls == 4


def test_damaged_traces(tmp_path):
    cut = tmp_path / "cut.jsonl"
    lines = TRACE.read_text(encoding="utf-8").splitlines()[:4]
    cut.write_text("\n".join(lines) + "\n" + lines[3][:100], encoding="utf-8")  # killed mid-line
    source = ReplaySource(cut, speed=0)
    assert len(list(source)) == 3 and source.skipped == 1
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(TraceError, match="not an llmos-tui trace"):
        ReplaySource(other)
    with pytest.raises(TraceError, match="cannot read trace"):
        ReplaySource(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(TRACE, speed=-1)


def test_shipped_trace_shows_power_cap_then_thermal_throttle():
    header, samples = read_trace(TRACE)
    assert header["synthetic"] is True and header["interval"] == 1.0 and len(samples) >= 120
    reasons = [set(s.gpus[0].throttle_reasons) for s in samples]
    first_cap = next(i for i, r in enumerate(reasons) if "power cap" in r)
    first_thermal = next(i for i, r in enumerate(reasons) if "SW thermal slowdown" in r)
    assert first_cap < first_thermal
    assert all(s.gpus[0].xid_events == [] for s in samples)
    tps_cap = [s.engine["last_gen_tps"] for s in samples[first_cap:first_thermal]]
    tps_hot = [s.engine["last_gen_tps"] for s in samples[first_thermal:] if s.engine["state"] == "generating"]
    assert sum(tps_hot) / len(tps_hot) < sum(tps_cap) / len(tps_cap)
    assert samples[first_thermal].gpus[0].temp >= samples[first_thermal].gpus[0].temp_slowdown - 1
    assert samples[100].gpus[0].power > 0.95 * samples[100].gpus[0].power_limit


# ---- formatting -------------------------------------------------------------------------------
def test_formatters_show_na_for_missing_values():
    assert fmt.fmt_pct(None) == "n/a" and fmt.fmt_temp(None) == "n/a"
    assert fmt.fmt_of(None, None, "W") == "n/a" and fmt.fmt_of(650.4, None, "W") == "650 / n/a W"
    assert fmt.fmt_used_total(17 * GIB, 80 * GIB) == "17.0 / 80.0 GiB"
    assert fmt.fmt_bytes(512 * 1024**2) == "512.0 MiB"
    assert fmt.bar(0.5, 4) == "██  " and fmt.bar(None, 3) == "   " and fmt.bar(2.0, 2) == "██"
    assert fmt.spark([0, 50, 100], 3, 0, 100) == "▁▅█" and fmt.spark([], 5) == ""
    text = fmt.format_status(Sample(ts=0, gpus=[GpuSample(index=0, name="X")]))
    assert "GPU 0  X" in text and "clock events: n/a" in text and "engine  not attached" in text


# ---- the CLI ------------------------------------------------------------------------------------
def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="llmos-tui")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_telemetry.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_status_json_parses_and_has_host_and_gpus(capsys):
    assert run_cli("status", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {"host", "gpus", "engine", "nvml_error", "ts"} <= set(data)
    assert data["host"]["mem_total"] > 0
    if not data["gpus"]:
        assert data["nvml_error"]  # no GPU: NVML says why


def test_status_with_a_gpu_and_in_text(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeGpu(clock_reasons=0x4)]))
    assert run_cli("status") == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out and "clock events: power cap" in out and "host  CPU" in out
    assert run_cli("status", "--json") == 0
    assert json.loads(capsys.readouterr().out)["gpus"][0]["throttle_reasons"] == ["power cap"]


def test_status_watch_stops_cleanly_on_ctrl_c(monkeypatch, capsys):
    polls = []
    real_poll = Sampler.poll_once

    def poll_then_interrupt(self):
        polls.append(1)
        if len(polls) == 3:
            raise KeyboardInterrupt
        return real_poll(self)

    monkeypatch.setattr(Sampler, "poll_once", poll_then_interrupt)
    assert run_cli("status", "--json", "--watch", "0.01") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("host" in json.loads(line) for line in lines)


def test_record_writes_a_trace_and_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "rec.jsonl"
    assert run_cli("record", str(path), "--interval", "0.05", "--duration", "0.3") == 0
    header, samples = read_trace(path)
    assert header["interval"] == 0.05 and len(samples) >= 2 and samples[0].host is not None
    assert "recorded" in capsys.readouterr().err
    assert run_cli("record", str(tmp_path / "no" / "such" / "dir.jsonl"), "--duration", "0.1") == 1
    err = capsys.readouterr().err
    assert err.startswith("llmos-tui: error: cannot write trace") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_every_series_the_sampler_writes_is_in_the_names_table() -> None:
    import json
    from pathlib import Path

    from llmos_tui.telemetry import names
    from llmos_tui.telemetry.sample import Sample
    from llmos_tui.telemetry.series import sample_values

    lines = (Path(__file__).parent / "data" / "trace_throttle.jsonl").read_text().splitlines()[1:4]
    for line in lines:
        sample = Sample.from_dict(json.loads(line))
        sample.engine = {"last_gen_tps": 10.0, "ctx_used": 5}
        values = sample_values(sample)
        assert "gpu0.temp" in values and "engine.gen_tps" in values and "host.cpu" in values
        unknown = [name for name in values if not names.known(name)]
        assert unknown == []
    assert names.unit("gpu3.power") == "W" and names.unit("engine.ttft_ms") == "ms"
    import pytest

    with pytest.raises(KeyError):
        names.gpu(0, "temprature")


def test_a_looped_replay_as_fast_as_possible_still_yields_between_polls():
    # speed 0 and a loop never run out: the sampling thread must still pause (and so release the
    # GIL) between polls, or the rest of the process starves (a CI run timed out on it)
    from llmos_tui.telemetry import sampler as sampler_module

    sampler = Sampler(ReplaySource(TRACE, speed=0, loop=True))
    waits: list[float] = []
    real_wait = sampler._stop.wait

    def recording_wait(timeout):
        waits.append(timeout)
        return real_wait(timeout)

    sampler._stop.wait = recording_wait
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while len(waits) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sampler.close()
    assert len(waits) >= 50
    assert min(waits) >= sampler_module.MIN_WAIT_S > 0


# ---- idle pacing: the TUI's live sampler samples less while nothing changes ----------------------
class _EngineSource:
    """A source whose engine state the test sets (the rest of a sample stays empty)."""

    def __init__(self) -> None:
        self.engine = {"state": "ready", "requests": 0}

    def collect(self, sample) -> None:
        sample.engine = dict(self.engine)


def test_idle_pacing_stretches_the_interval_while_nothing_changes_and_snaps_back() -> None:
    from llmos_tui.telemetry.sample import Sample
    from llmos_tui.telemetry.sampler import IdlePacing

    pacing = IdlePacing(idle_interval=5.0, after=3)
    idle = Sample(ts=0.0, engine={"state": "ready", "requests": 4},
                  gpus=[GpuSample(index=0, util_gpu=0, mem_used=1000, mem_total=10_000)])
    steps = [pacing.next_interval(idle, 1.0) for _ in range(8)]
    assert steps == [1.0, 1.0, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    moved = Sample(ts=1.0, engine={"state": "ready", "requests": 5}, gpus=idle.gpus)  # a request ended
    assert pacing.next_interval(moved, 1.0) == 1.0 and pacing.quiet == 0
    busy = Sample(ts=2.0, engine={"state": "generating", "requests": 5}, gpus=idle.gpus)
    assert [pacing.next_interval(busy, 1.0) for _ in range(6)] == [1.0] * 6, "never slow while generating"
    hot = Sample(ts=3.0, engine={"state": "ready", "requests": 5},
                 gpus=[GpuSample(index=0, util_gpu=60, mem_used=1000, mem_total=10_000)])
    assert [pacing.next_interval(hot, 1.0) for _ in range(6)] == [1.0] * 6, "a busy GPU is activity"


def test_a_paced_sampler_slows_down_when_idle_and_an_engine_event_wakes_it() -> None:
    from llmos_tui.telemetry.sampler import IdlePacing

    source = _EngineSource()
    sampler = Sampler(source, interval=0.05)
    sampler.pacing = IdlePacing(idle_interval=2.0, after=2)
    sampler.start()
    try:
        assert wait_until(lambda: sampler.pacing.quiet >= 6, 5), "quiet samples counted"
        polls = sampler.polls
        time.sleep(0.5)
        assert sampler.polls - polls <= 1, "at most one poll in 0.5 s once stretched to 2 s"
        source.engine = {"state": "generating", "requests": 0}
        started = time.monotonic()
        sampler.wake()  # the supervisor's "state" event, in the TUI's wiring
        assert wait_until(lambda: (sampler.latest.engine or {}).get("state") == "generating", 1.0)
        assert time.monotonic() - started < 0.5, "woken at once, not at the end of the slow interval"
        polls = sampler.polls
        time.sleep(0.5)
        assert sampler.polls - polls >= 5, "back to the base interval while generating"
    finally:
        sampler.close()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
