"""Benchmark the standing collector: how fast a box's journal entry reaches the head's journal
with no view running, and that nothing is lost or copied twice across a collector restart.

On one machine: a Ray cluster (``LocalFleet``: Ray's fast health checks) with N simulated boxes,
a real box agent on each over a real `llmos-tui serve` daemon on the demo model, and the
collector (a detached named Ray actor on the head, ``llmos_tui.fleet.collector``) polling every
``--interval`` seconds into a head journal. Nobody else polls.

- copy lag: a change made on a box through its own control socket (the kill switch flipped with
  an idempotency key, which the box journals as a ``request_key`` event) until the head's journal
  holds that entry; p50 and p99 over ``--samples`` changes spread over the boxes.
  Target: p99 <= interval + 2 s.
- restart: half-way, Ray restarts the collector (``ray.kill(no_restart=False)``); changes made
  while it is down are copied when it is back (they count in the lag: the target still holds).
- completeness: at the end the head's copy of each box equals the box's own journal (every
  entry, none twice). Target: 0 missing, 0 extra.

Each target is printed met / NOT MET; the exit code is 1 when one is not met. The last line is
exactly ``copy_lag_p50_s=A copy_lag_p99_s=B misses=M missing=X restart_s=R``.

    python scripts/bench_collector.py [--boxes 2] [--samples 20] [--interval 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_fleet import local_boxes, pct  # noqa: E402 - the same boxes and percentiles as bench_fleet


def keys_at_head(path: Path) -> set[str]:
    from llmos_tui.journal import Journal

    with Journal(path, readonly=True, create=False, check=False) as journal:
        rows = journal.fleet.db.query("SELECT data FROM fleet_entries WHERE kind = 'request_key'")
    out = set()
    for row in rows:
        data = json.loads(row["data"] or "null")
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            out.add(str(data["data"].get("key")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=2, help="simulated boxes (default 2)")
    parser.add_argument("--samples", type=int, default=20, help="changes timed (default 20)")
    parser.add_argument("--interval", type=float, default=1.0, help="the collector's interval (s, default 1)")
    args = parser.parse_args(argv)

    import ray

    from llmos_tui.fleet.collector import collector_handle, collector_status, start_collector, stop_collector
    from llmos_tui.journal import Journal
    from llmos_tui.journal.fleet import entries_after

    with local_boxes(args.boxes) as (boxes, local, clients):
        head = local.root / "head.sqlite"
        status = start_collector(head, interval_s=args.interval)
        print(f"collector pid {status['pid']}, every {args.interval:g} s into {head}", flush=True)
        rng = random.Random(20)
        lags: list[float] = []
        misses = 0
        restart_s = float("nan")
        for i in range(args.samples):
            if i == args.samples // 2:
                old = status["pid"]
                killed = time.time()
                ray.kill(collector_handle(), no_restart=False)
                while (collector_status(timeout_s=2) or {"pid": old})["pid"] == old and time.time() - killed < 30:
                    time.sleep(0.1)
                restart_s = time.time() - killed
                print(f"collector restarted by Ray in {restart_s:.1f} s", flush=True)
            box = boxes[i % len(boxes)]
            key = f"bench-{uuid.uuid4().hex}"
            answer = clients[box].change("kill_switch", {"on": i // len(boxes) % 2 == 0}, idempotency_key=key)
            done = time.time()
            if not answer.get("ok"):
                misses += 1
                continue
            while key not in keys_at_head(head) and time.time() - done < args.interval + 10:
                time.sleep(0.05)
            if key in keys_at_head(head):
                lags.append(time.time() - done)
            else:
                misses += 1
            time.sleep(rng.uniform(0.0, args.interval))  # changes at random phases of its rounds
        for box in boxes:
            clients[box].kill_switch(False)
        time.sleep(args.interval * 2 + 1)
        missing = extra = 0
        with Journal(head, readonly=True, create=False, check=False) as journal:
            for box in boxes:
                own_path = clients[box].snapshot()["journal"]["path"]
                with Journal(own_path, readonly=True, create=False, check=False) as own:
                    own_ids = {e["id"] for e in entries_after(own, {}, limit=100_000)[0]}
                rows = journal.fleet.db.query(
                    "SELECT entry_id FROM fleet_entries WHERE box = ? AND type != 'box'", (box,))
                copied = [r["entry_id"] for r in rows]
                missing += len(own_ids - set(copied))
                extra += len(copied) - len(set(copied)) + len(set(copied) - own_ids)
        stop_collector()

    p50, p99 = pct(lags, 0.5), pct(lags, 0.99)
    target = args.interval + 2.0
    ok_lag = bool(lags) and p99 <= target and misses == 0
    ok_complete = missing == 0 and extra == 0
    print(f"copy lag over {len(lags)} changes: p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(lags or [float('nan')]):.2f} s; "
          f"misses {misses}")
    print(f"target copy lag p99 <= {target:g} s with no miss: {'met' if ok_lag else 'NOT MET'}")
    print(f"target head's copy == each box's journal (missing {missing}, extra {extra}): "
          f"{'met' if ok_complete else 'NOT MET'}")
    print(f"copy_lag_p50_s={p50:.2f} copy_lag_p99_s={p99:.2f} misses={misses} missing={missing} restart_s={restart_s:.1f}")
    return 0 if ok_lag and ok_complete else 1


if __name__ == "__main__":
    sys.exit(main())
