"""Benchmark the doctor on the demo model (or --model): how fast it finds and repairs.

1. fault -> finding, in sample intervals, for injected faults (abort, oom, exit, hang);
   target: within 2 sample intervals (hang is found by the canary, so its period counts).
2. crash -> serving again (engine ready and the canary answered), against the model's own
   load time; target: load time + 2 s.
3. the replayed throttle trace: samples from each condition's onset to its finding.

Usage: python scripts/bench_doctor.py [--rounds 5] [--interval 0.25] [--model PATH]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmos_tui.doctor import Doctor, PluginManager, Policy  # noqa: E402
from llmos_tui.engine.params import EngineParams  # noqa: E402
from llmos_tui.engine.supervisor import Supervisor  # noqa: E402
from llmos_tui.journal import Journal  # noqa: E402
from llmos_tui.paths import DEMO_MODEL  # noqa: E402


def plugins() -> PluginManager:
    manager = PluginManager()
    manager.load_all(folders=[], entry_points=False)
    return manager


def wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


def fault_to_finding(params: EngineParams, kind: str, interval: float, journal_path: Path) -> tuple[float, float]:
    """Seconds from the injection to the first finding, and to the engine serving again."""
    sup = Supervisor(params)
    sup.start()
    policy = Policy.from_config({
        "default": "auto", "interval": interval, "grace_s": 0, "hysteresis": 1, "backoff_s": 0.1,
        "canary_period_s": interval if kind == "hang" else 0,
        "canary_timeout_s": 2.0 if kind == "hang" else 10.0,
        "start_limit_burst": 100,
    })
    with Journal(journal_path) as journal:
        doctor = Doctor(sup, None, journal, policy, plugins())
        found, served = threading.Event(), threading.Event()
        marks: dict[str, float] = {}

        def on_event(e) -> None:
            if e.kind == "finding" and "found" not in marks:
                marks["found"] = time.perf_counter()
                found.set()
            if e.kind == "action" and e.data.get("state") == "verified" and sup.is_ready:
                marks["served"] = time.perf_counter()
                served.set()

        doctor.subscribe(on_event)
        doctor.start()
        time.sleep(interval * 1.5)  # let the periodic canary schedule start
        t0 = time.perf_counter()
        if kind == "kill":
            sup.kill(signal.SIGKILL)
        else:
            sup.inject(kind)
        wait(found, 30)
        wait(served, 60)
        doctor.stop()
    sup.stop()
    return marks.get("found", float("nan")) - t0, marks.get("served", float("nan")) - t0


def load_time(params: EngineParams) -> float:
    sup = Supervisor(params)
    t0 = time.perf_counter()
    sup.start()
    elapsed = time.perf_counter() - t0
    sup.stop()
    return elapsed


def replay_lags() -> dict[str, int]:
    from llmos_tui.telemetry import ReplaySource, Sampler

    trace = ROOT / "tests" / "data" / "trace_throttle.jsonl"
    sampler = Sampler(ReplaySource(trace, speed=0), interval=1.0)
    doctor = Doctor(None, sampler, None, Policy.from_config({"grace_s": 0}), plugins())
    onset: dict[str, int] = {}
    found: dict[str, int] = {}
    i = 0
    while not any(getattr(s, "exhausted", False) for s in sampler.sources):
        sample = sampler.poll_once()
        gpu = sample.gpus[0]
        if gpu.clock_reasons and gpu.clock_reasons & 0x004:
            onset.setdefault("gpu.power_cap", i)
        if gpu.clock_reasons and gpu.clock_reasons & 0x060 or (gpu.temp or 0) >= (gpu.temp_slowdown or 999) - 2:
            onset.setdefault("gpu.thermal", i)
        for f in doctor.run_once(force=False):
            found.setdefault(f.detector, i)
        i += 1
    sampler.close()
    return {k: found[k] - onset[k] for k in onset if k in found}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.25, help="the doctor's sample interval, seconds")
    ap.add_argument("--model", default=str(DEMO_MODEL))
    args = ap.parse_args()
    params = EngineParams(model_path=args.model, n_ctx=1024, n_threads=2, n_threads_batch=2)
    loads = [load_time(params) for _ in range(args.rounds)]
    load = statistics.median(loads)
    print(f"model load (supervisor start, median of {args.rounds}): {load:.2f} s")
    print(f"sample interval: {args.interval:.2f} s\n")
    print(f"{'fault':<8} {'finding (s)':>12} {'intervals':>10} {'target':>7} {'serving again (s)':>18} "
          f"{'load+2s':>8} {'ok':>4}")
    all_ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("kill", "abort", "oom", "exit", "hang"):
            finds, serves = [], []
            for r in range(args.rounds if kind != "hang" else max(1, args.rounds // 2)):
                f, s = fault_to_finding(params, kind, args.interval, Path(tmp) / f"{kind}{r}.sqlite")
                finds.append(f)
                serves.append(s)
            f_med, s_med = statistics.median(finds), statistics.median(serves)
            intervals = f_med / args.interval
            target = 2 if kind != "hang" else None
            # hang: found by the canary (its period and timeout), and stopping a hung child takes 5 s
            ok_find = intervals <= 2 if target else True
            ok_serve = s_med <= load + 2.0 if kind != "hang" else True
            all_ok &= ok_find and ok_serve
            print(f"{kind:<8} {f_med:>12.3f} {intervals:>10.2f} {('<=2' if target else 'canary'):>7} "
                  f"{s_med:>18.2f} {load + 2:>8.2f} {('yes' if ok_find and ok_serve else 'NO'):>4}")
    lags = replay_lags()
    print("\nreplayed throttle trace: samples from onset to finding (hysteresis included)")
    for name, lag in lags.items():
        print(f"  {name:<16} {lag} samples")
    print("\nall targets met" if all_ok else "\nSOME TARGETS MISSED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
