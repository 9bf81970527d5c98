#!/usr/bin/env python3
"""Journal throughput and journal-screen open time.

Measures, on a fresh temporary journal:
  * events/s and messages/s written as the app writes them (through JournalWriter:
    the caller only queues, the writer thread batches), and the caller's cost per write;
  * for comparison, one-transaction-per-row synchronous writes (what the CLI does);
  * the unified timeline query and the journal screen's open time (headless Textual,
    until the table is populated) on a journal of 100 000 rows.

Usage: python scripts/bench_journal.py [--rows 100000] [--events 50000] [--messages 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmos_tui.journal import Journal, JournalWriter  # noqa: E402

EVENT_KINDS = ("loaded", "unloaded", "crashed", "restarting", "error")


def bench_writer_events(path: Path, n: int) -> None:
    _time_writer(path, n, "events via JournalWriter  ", lambda writer, i: writer.record_event(
        EVENT_KINDS[i % 5], {"i": i, "load_ms": 812.5, "exit_code": None,
                             "log_tail": ["llama_model_load: ok", "ggml_cuda_init: found 1"]}))


def _time_writer(path: Path, n: int, label: str, write) -> None:
    """n writes as the app makes them (queued on the caller), then until all are committed."""
    with JournalWriter(path) as writer:
        started = time.perf_counter()
        for i in range(n):
            write(writer, i)
        queued = time.perf_counter() - started
        writer.flush(timeout=None)
        total = time.perf_counter() - started
        print(f"{label} {n / total:>10,.0f} rows/s  ({n} rows in {total:.2f} s, "
              f"{writer.batches} commits, caller {queued / n * 1e6:.1f} µs/row)")


def bench_writer_messages(path: Path, n: int) -> None:
    with Journal(path) as journal:
        chat = journal.create_chat("bench", model="bench.gguf")
    text = "The KV cache holds keys and values of past tokens. " * 10  # ~500 chars, a typical reply
    _time_writer(path, n, "messages via JournalWriter", lambda writer, i: writer.add_message(
        chat, "assistant" if i % 2 else "user", text,
        metrics={"prompt_tps": 900.0, "gen_tps": 41.5, "tokens": 128, "ttft_ms": 85}))


def bench_sync(path: Path, n: int) -> None:
    with Journal(path) as journal:
        started = time.perf_counter()
        for i in range(n):
            journal.record_event("loaded", {"i": i})
        total = time.perf_counter() - started
    print(f"events, one commit each    {n / total:>10,.0f} rows/s  (synchronous API, {n} rows)")


def build_big(path: Path, rows: int) -> dict[str, int]:
    rng = random.Random(7)
    now = time.time()
    with Journal(path, telemetry_retention_days=None) as journal, journal.batch():
        counts = {"configs": rows // 1000, "actions": rows // 1000, "findings": rows // 500,
                  "trials": rows // 200, "telemetry": rows // 10, "messages": rows // 5}
        counts["events"] = rows - sum(counts.values())
        t = now - rows  # one row a second, spread back in time
        for i in range(counts["configs"]):
            journal.record_config({"n_ctx": 1024 + i, "n_batch": 512}, model_path="/m/x.gguf",
                                  source=rng.choice(["operator", "tuner", "repair"]), ts=t + i * 1000)
        for i in range(counts["findings"]):
            fid = journal.record_finding("kv_pressure", "warning", f"KV cache at {90 + i % 10} %",
                                         {"window": [rng.random() for _ in range(20)]}, ts=t + i * 500)
            if i < counts["actions"]:
                journal.propose_action("restart", {"why": "stall"}, proposed_by="auto", finding_id=fid, ts=t + i * 500)
        study = journal.start_study({"n_batch": [64, 2048]}, "gen_tps", ts=t)
        for i in range(counts["trials"]):
            journal.record_trial(study, {"n_batch": 64 * (1 + i % 32)}, "ok", value=rng.uniform(20, 60), ts=t + i * 200)
        for i in range(counts["telemetry"]):
            journal.record_telemetry({"gpu_util": rng.uniform(0, 100), "vram_mib": 5000}, ts=t + i * 10)
        chat = journal.create_chat("long chat", ts=t)
        for i in range(counts["messages"]):
            journal.add_message(chat, "user" if i % 2 else "assistant", "hello " * 40, metrics={"gen_tps": 40}, ts=t + i * 5)
        for i in range(counts["events"]):
            journal.record_event(EVENT_KINDS[i % 5], {"i": i, "load_ms": 800}, ts=t + i)
    return counts


async def time_screen_open(path: Path) -> tuple[float, int]:
    """With the app already running: from pushing the screen to a populated table."""
    from textual.app import App
    from textual.widgets import DataTable

    from llmos_tui.ui.journal_screen import JournalScreen

    app: App[None] = App()
    async with app.run_test(size=(160, 40)) as pilot:
        screen = JournalScreen(path, refresh_interval=60)
        started = time.perf_counter()
        app.push_screen(screen)
        while not (screen.is_mounted and screen.query_one("#journal-table", DataTable).row_count > 0):
            await pilot.pause(0.001)
        return time.perf_counter() - started, screen.query_one("#journal-table", DataTable).row_count


async def time_screen_cold(path: Path) -> tuple[float, int]:
    """From creating the app to a populated table (includes Textual's own start)."""
    from textual.app import App
    from textual.widgets import DataTable

    from llmos_tui.ui.journal_screen import JournalScreen

    started = time.perf_counter()
    screen = JournalScreen(path, refresh_interval=60)

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    async with Host().run_test(size=(160, 40)) as pilot:
        while not (screen.is_mounted and screen.query_one("#journal-table", DataTable).row_count > 0):
            await pilot.pause(0.001)
        return time.perf_counter() - started, screen.query_one("#journal-table", DataTable).row_count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="screen-open measurements to take the median of")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp:
        folder = Path(tmp)
        print(f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}, {os.cpu_count()} cpus")
        bench_writer_events(folder / "w.sqlite", args.events)
        bench_writer_messages(folder / "w.sqlite", args.messages)
        bench_sync(folder / "s.sqlite", 2_000)

        big = folder / "big.sqlite"
        started = time.perf_counter()
        counts = build_big(big, args.rows)
        print(f"built a {sum(counts.values()):,}-row journal in {time.perf_counter() - started:.1f} s "
              f"({big.stat().st_size / 1e6:.1f} MB): " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        started = time.perf_counter()
        journal = Journal(big)
        opened = time.perf_counter() - started
        for label, kwargs in (("timeline (newest 500)", {"limit": 500}),
                              ("timeline --kind crashed", {"kinds": "crashed", "limit": 500}),
                              ("timeline text search", {"text": "KV cache at 97", "limit": 500})):
            started = time.perf_counter()
            found = journal.timeline(**kwargs)
            print(f"{label:<26} {(time.perf_counter() - started) * 1000:>8.1f} ms  ({len(found)} entries)")
        journal.close()
        print(f"open + quick check         {opened * 1000:>8.1f} ms")
        for label, probe, note in (("journal screen populated", time_screen_open, "app already running"),
                                   ("journal screen cold start", time_screen_cold, "app start + screen")):
            times, rows = [], 0
            for _ in range(args.repeat):
                elapsed, rows = asyncio.run(probe(big))
                times.append(elapsed)
            times.sort()
            print(f"{label:<26} {times[len(times) // 2] * 1000:>8.1f} ms  median of {args.repeat} "
                  f"(min {times[0] * 1000:.1f} ms; {note}; {rows} rows shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
