"""Writes trace_vram_climb.jsonl: a SYNTHETIC trace (marked so in its header) of an 80 GiB GPU
whose memory is flat at 50 GiB for 60 s, then climbs steadily at 2 GiB/min (the engine's KV
cache 1.8 GiB/min, another tenant 0.2 GiB/min) with +-48 MiB of deterministic jitter until it is
full at 960 s. One sample every 2 s. Run: python tests/data/make_trace_vram_climb.py"""

from __future__ import annotations

import json
import math
from pathlib import Path

GIB, MIB = 1024**3, 1024**2
START, INTERVAL, TOTAL = 1793800000.0, 2.0, 80 * GIB
FLAT_S, FULL_S = 60.0, 960.0


def used_at(t: float) -> tuple[int, int]:
    """(engine bytes, other tenant bytes) at ``t`` seconds into the trace."""
    climb = max(0.0, min(t, FULL_S) - FLAT_S) / 60
    jitter = 48 * MIB * math.sin(t * 0.7) * math.cos(t * 0.13)
    engine = 40 * GIB + climb * 1.8 * GIB + jitter
    other = 10 * GIB + climb * 0.2 * GIB
    return int(engine), int(other)


def main() -> None:
    out = Path(__file__).with_name("trace_vram_climb.jsonl")
    lines = [json.dumps({
        "format": "llmos-tui-trace", "version": 1, "host": "synthetic", "start": START, "interval": INTERVAL,
        "synthetic": True, "full_at_s": FULL_S,
        "description": "Synthetic: 80 GiB GPU, flat at 50 GiB for 60 s, then VRAM climbs 2 GiB/min "
                       "(engine 1.8, other tenant 0.2) until full at 960 s."})]
    t = 0.0
    while t <= FULL_S:
        engine, other = used_at(t)
        gpu = {"index": 0, "name": "SYNTHETIC 80GB", "mem_used": min(engine + other, TOTAL), "mem_total": TOTAL,
               "util_gpu": 90, "processes": [
                   {"pid": 4242, "name": "llmos-engine", "used_memory": engine, "is_engine": True},
                   {"pid": 777, "name": "other-tenant", "used_memory": other, "is_engine": False}]}
        lines.append(json.dumps({"ts": START + t, "gpus": [gpu]}))
        t += INTERVAL
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
