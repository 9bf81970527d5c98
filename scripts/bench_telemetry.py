#!/usr/bin/env python3
"""How much monitoring costs: CPU per sample, memory over many samples, the TUI's idle CPU.

    python scripts/bench_telemetry.py                    # all three parts
    python scripts/bench_telemetry.py --tui-cmd dashboard   # measure the dashboard alone (no app needed)
    python scripts/bench_telemetry.py --skip-tui

1. CPU time per sample of the whole sampling path (sources, series, subscribers), by
   process_time over many polls: live sources as they are on this machine, and NVML
   through a fake driver with two busy GPUs (our wrapper's cost; a real driver adds
   its own time, which scripts/gpu_check.py prints).
2. Python memory (tracemalloc) after 1 000 and after 10 000 samples: must be flat.
3. The TUI's CPU share while idle at the default 1 s interval: the app runs in a pty
   and is measured from outside with psutil over --tui-seconds (30).
Parts 1 and 2 measure the Sampler class itself with controlled sources (a unit cost, no core);
the dashboard-alone app of part 3 samples through the wired core (``build_core(config, "live")``
with the journal, doctor and endpoint left out), as the TUI does.
Targets: idle TUI at most 2 % of one core; memory flat. Each printed met / NOT MET (or "not
measured" when the TUI could not be started); the exit code is 1 when one is not met.
"""

from __future__ import annotations

import argparse
import os
import pty
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from llmos_tui.telemetry import HostSource, NvmlSource, Sampler  # noqa: E402

IDLE_TARGET = 2.0  # % of one core
GIB = 1024**3


def engine_stats_of(pid: int):
    def stats() -> dict:
        return {
            "state": "generating", "model": "bench", "model_path": "/m/bench.gguf", "params": {"n_ctx": 4096},
            "n_ctx": 4096, "ctx_used": 1200, "last_gen_tps": 80.0, "rolling_gen_tps": 79.5, "last_ttft_ms": 55.0,
            "requests": 10, "errors": 0, "pid": pid, "restarts": 0,
        }
    return stats


def fake_sources():
    from fake_pynvml import FakeGpu, FakeNvml

    pid = os.getpid()
    gpus = [FakeGpu(util_gpu=98, clock_reasons=0x4, compute_processes=[(pid, 17 * GIB), (1, GIB)]) for _ in range(2)]
    return NvmlSource(nvml=FakeNvml(gpus)), HostSource()


def cpu_per_sample(label: str, sampler: Sampler, polls: int) -> float:
    sampler.subscribe(lambda sample: None)
    for _ in range(20):  # warm caches, first-time NVML init
        sampler.poll_once()
    if "{nvml}" in label:
        label = label.format(nvml=sampler.latest.nvml_error or f"{len(sampler.latest.gpus)} GPU(s)")
    start = time.process_time()
    for _ in range(polls):
        sampler.poll_once()
    per = (time.process_time() - start) / polls
    print(f"  {label[:60]:<60} {per * 1000:7.3f} ms CPU/sample  = {per * 100:.3f} % of a core at 1 s")
    return per


def part_cpu(polls: int) -> None:
    print(f"1. CPU per sample ({polls} polls each)")
    live = Sampler(engine_stats=engine_stats_of(os.getpid()))
    cpu_per_sample("live sources (NVML: {nvml})", live, polls)
    live.close()
    faked = Sampler(*fake_sources(), engine_stats=engine_stats_of(os.getpid()))
    cpu_per_sample("fake NVML (2 GPUs, 2 procs each) + host", faked, polls)
    faked.close()


def part_memory(first: int, total: int) -> bool:
    print(f"2. Memory (tracemalloc) after {first} and {total} samples, history 3600")
    sampler = Sampler(*fake_sources(), engine_stats=engine_stats_of(os.getpid()))
    sampler.subscribe(lambda sample: None)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(first):
        sampler.poll_once()
    at_first = tracemalloc.get_traced_memory()[0] - base
    for _ in range(total - first):
        sampler.poll_once()
    at_total, peak = tracemalloc.get_traced_memory()
    at_total -= base
    tracemalloc.stop()
    sampler.close()
    growth = at_total - at_first
    flat = growth <= 0.02 * at_first + 64 * 1024
    print(f"  after {first:>6}: {at_first / 1024:9.1f} KiB")
    print(f"  after {total:>6}: {at_total / 1024:9.1f} KiB  "
          f"(growth {growth / 1024:+.1f} KiB, peak {(peak - base) / 1024:.1f} KiB)")
    print(f"  target memory flat (growth <= 2 % + 64 KiB): {'met' if flat else 'NOT MET'}")
    return flat


def serve_dashboard() -> None:
    """The dashboard alone in a minimal app with live sampling (for measuring without the full app)."""
    from textual.app import App

    from llmos_tui.ui.dashboard import DashboardScreen

    from llmos_tui.config import load_config
    from llmos_tui.core.wiring import build_core

    class DashboardOnly(App):
        def on_mount(self) -> None:
            self.core = build_core(load_config(overrides={"interval": 1.0}), "live", journal=False, doctor=False,
                                   endpoint=False)
            self.push_screen(DashboardScreen(self.core.sampler))

        def on_unmount(self) -> None:
            self.core.close()

    DashboardOnly().run()


def part_tui(command: str, seconds: float, warmup: float) -> bool | None:
    print(f"3. TUI idle CPU over {seconds:g} s at the default interval")
    if command == "dashboard":
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-dashboard"]
    else:
        argv = shlex.split(command)
        if not argv or shutil.which(argv[0]) is None:
            print(f"  skipped: cannot start {command!r} (not found on PATH); "
                  f"use --tui-cmd 'CMD' or --tui-cmd dashboard for the dashboard alone")
            return None
    import fcntl
    import struct
    import termios

    import psutil

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40")
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(ROOT),
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        print(f"  skipped: cannot start {command!r}: {exc}")
        return None
    os.close(slave)
    tail = bytearray()

    def drain() -> None:  # a pty nobody reads fills up and blocks the app
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            tail.extend(data)
            del tail[:-4096]

    threading.Thread(target=drain, daemon=True).start()
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            text = bytes(tail).decode("utf-8", "replace")[-300:].replace("\x1b", "^[")
            print(f"  skipped: {command!r} exited with code {proc.returncode} during start-up; last output: {text!r}")
            return None
        ps = psutil.Process(proc.pid)

        def tree_cpu() -> float:
            total = 0.0
            for p in [ps, *ps.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total

        before, started = tree_cpu(), time.monotonic()
        time.sleep(seconds)
        used, wall = tree_cpu() - before, time.monotonic() - started
        share = used / wall * 100
        ok = share <= IDLE_TARGET
        print(f"  {' '.join(argv)[:70]}")
        print(f"  CPU {used:.3f} s over {wall:.1f} s = {share:.2f} % of one core  "
              f"(target <= {IDLE_TARGET:g} %: {'met' if ok else 'NOT MET'})")
        return ok
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session, started above
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.close(master)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=2000, help="polls for the CPU part (2000)")
    parser.add_argument("--tui-cmd", default="llmos-tui",
                        help="command that starts the TUI ('dashboard': the dashboard alone)")
    parser.add_argument("--tui-seconds", type=float, default=30.0)
    parser.add_argument("--tui-warmup", type=float, default=5.0)
    parser.add_argument("--skip-tui", action="store_true")
    parser.add_argument("--serve-dashboard", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_dashboard:
        serve_dashboard()
        return 0
    part_cpu(args.polls)
    flat = part_memory(1000, 10_000)
    idle = None if args.skip_tui else part_tui(args.tui_cmd, args.tui_seconds, args.tui_warmup)
    print("\ntargets: memory flat:", "met" if flat else "NOT MET",
          "| idle TUI <= 2 % of a core:", {True: "met", False: "NOT MET", None: "not measured"}[idle])
    return 0 if flat and idle is not False else 1


if __name__ == "__main__":
    sys.exit(main())
