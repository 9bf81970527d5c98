#!/usr/bin/env python3
"""Exercise the real NVML path on a real GPU: every field, the XID event set, one sample as JSON.

    python scripts/gpu_check.py                       # report every field (n/a ones with NVML's reason)
    python scripts/gpu_check.py --record t.jsonl --seconds 60   # and record a real trace

The field report reads the NVML source on its own (this script checks that source); a recording
comes from the wired core's live telemetry (``build_core(config, "live")`` with the journal, the
doctor and the endpoint left out), exactly what the TUI samples, engine stats included.

Exit codes: 0 all read; 1 no NVIDIA GPU / NVML cannot start (the reason is printed); 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmos_tui.config import load_config  # noqa: E402
from llmos_tui.core.wiring import build_core  # noqa: E402
from llmos_tui.telemetry import HostSource, NvmlSource, Recorder, Sample  # noqa: E402
from llmos_tui.telemetry.sample import GpuSample  # noqa: E402

SKIP = {"index", "processes", "xid_events", "xid_last", "lost", "error"}


def report_gpu(gpu: GpuSample, source: NvmlSource) -> list[str]:
    print(f"\nGPU {gpu.index}: {gpu.name}  ({gpu.uuid})")
    if gpu.lost:
        print(f"  LOST: {gpu.error}")
    missing = []
    for f in dataclasses.fields(gpu):
        if f.name in SKIP:
            continue
        value = getattr(gpu, f.name)
        if value is None:
            missing.append(f.name)
            why = source.na_reason(gpu.index, f.name)
            if why is None and f.name.startswith("ecc_"):
                why = {False: "ECC is off", None: "ECC mode n/a"}.get(gpu.ecc_mode)
            print(f"  {f.name:<26} n/a  ({why or 'no value this sample'})")
        else:
            extra = f"  -> {', '.join(gpu.throttle_reasons) or 'none'}" if f.name == "clock_reasons" else ""
            print(f"  {f.name:<26} {value}{extra}")
    print(f"  {'xid_events':<26} {gpu.xid_events or 'none'} (last: {gpu.xid_last})")
    print(f"  processes ({len(gpu.processes)}):")
    for proc in gpu.processes:
        print(f"    pid {proc.pid} {proc.name} {proc.kind} {proc.used_memory} bytes")
    xid_why = source.unsupported(gpu.index).get("xid_events")
    if xid_why:
        print(f"  (XID events not watched on this GPU: {xid_why})")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", metavar="FILE", help="also record a trace to FILE")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to record (60)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between recorded samples (1)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.interval <= 0:
        parser.error("--seconds and --interval must be positive")

    try:
        import pynvml
    except ImportError:
        print("error: the nvidia-ml-py package (module pynvml) is not installed", file=sys.stderr)
        return 1
    print(f"pynvml from {getattr(pynvml, '__file__', '?')}")

    source = NvmlSource(slow_every=0.0)
    host = HostSource()
    started = time.perf_counter()
    first = Sample(ts=time.time())
    source.collect(first)
    first_ms = (time.perf_counter() - started) * 1000
    if first.nvml_error or not first.gpus:
        print(f"No NVIDIA GPU: {first.nvml_error or 'NVML found none'}", file=sys.stderr)
        return 1
    print(f"driver {first.driver_version}  CUDA {first.cuda_version}  GPUs {len(first.gpus)}")
    print(f"first poll (init + static + slow + fast fields): {first_ms:.1f} ms")
    if source.watching_xid:
        print("XID event set: created and registered (nvmlEventSetWait_v2 polled with timeout 0 each sample)")
    else:
        print(f"XID event set: not available: {source.event_error}")

    time.sleep(1.0)
    sample = Sample(ts=time.time())
    started = time.perf_counter()
    source.collect(sample)
    poll_ms = (time.perf_counter() - started) * 1000
    host.collect(sample)
    print(f"steady poll of all GPUs: {poll_ms:.2f} ms")
    all_missing = {}
    for gpu in sample.gpus:
        all_missing[gpu.index] = report_gpu(gpu, source)
    print("\nn/a fields per GPU:", json.dumps(all_missing))
    print("\none sample as JSON:")
    print(json.dumps(sample.to_dict(), indent=2))

    source.close()
    if args.record:
        config = load_config(overrides={"interval": args.interval})
        op = build_core(config, "live", journal=False, doctor=False, endpoint=False)
        try:
            if op.sampler is None:
                print(f"error: no telemetry: {'; '.join(op.problems)}", file=sys.stderr)
                return 1
            with Recorder(args.record, interval=args.interval, command="gpu_check") as recorder:
                unsubscribe = op.sampler.subscribe(recorder)
                print(f"\nrecording {args.seconds:g} s to {args.record} ...", file=sys.stderr)
                try:
                    time.sleep(args.seconds)
                except KeyboardInterrupt:
                    pass
                unsubscribe()  # before the trace closes
        finally:
            op.close()
        print(f"recorded {recorder.count} samples to {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
