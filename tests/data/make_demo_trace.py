"""Writes llmos_tui/data/demo_trace.jsonl, the packaged SYNTHETIC incident trace that
`llmos-tui --replay demo` plays (marked synthetic in its header, so every face says so).

Nine minutes of an H100-like 80 GiB GPU serving one long conversation, one sample a second:
- from 60 s the engine's KV cache grows ~5 GiB/min (the conversation gets longer) while another
  tenant holds a flat 8 GiB: the doctor foresees VRAM full (~444 s) and says when; at 330 s the
  conversation is reset, memory falls back, and the forecast is retracted;
- the context window fills at the same pace (overflow, then "full in ~N turns") until the reset;
- from 200 s the GPU heats up; 360-420 s it holds its clocks down (SW thermal slowdown) and
  tokens/s fall with them;
- at 450 s the driver reports XID 43 (GPU stopped processing) and the engine stalls: it says it
  is generating but no request completes after that.
Run: python tests/data/make_demo_trace.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

GIB = 1024**3
START, END = 1795000000.0, 540
OUT = Path(__file__).resolve().parents[2] / "llmos_tui" / "data" / "demo_trace.jsonl"


def sample(t: int, requests: int, ctx_used: int, tps: float) -> dict:
    reset = t >= 330
    climb = 0.0 if t < 60 else (min(t, 330) - 60) / 60 * 5 * GIB
    engine = 40 * GIB + (2 * GIB if reset else climb) + int(24 * 1024**2 * math.sin(t * 0.9))
    other = 8 * GIB
    temp = 60 + max(0.0, min(t, 420) - 200) * 0.125 - max(0, t - 420) * 0.1
    throttled = 360 <= t < 420
    stalled = t >= 450
    gpu = {
        "index": 0, "name": "SYNTHETIC H100-like 80GB", "uuid": "GPU-00000000-demo-0000-0000-000000000000",
        "util_gpu": 0 if stalled else 92, "mem_used": engine + other, "mem_total": 80 * GIB,
        "temp": round(temp, 1), "temp_slowdown": 87, "temp_shutdown": 92,
        "power": 300.0 if stalled else 560.0 + 10 * math.sin(t / 7), "power_limit": 700.0,
        "sm_clock": 1500 if throttled else (1410 if stalled else 1980), "sm_clock_max": 1980,
        "clock_reasons": 0x20 if throttled else 0, "ecc_volatile_uncorrected": 0, "remap_pending": False,
        "remap_failure": False, "xid_events": [43] if t == 450 else [], "xid_last": 43 if t >= 450 else None,
        "throttle_reasons": ["SW thermal slowdown"] if throttled else [],
        "processes": [{"pid": 4242, "name": "llmos-engine", "used_memory": engine, "is_engine": True},
                      {"pid": 777, "name": "other-tenant", "used_memory": other, "is_engine": False}],
    }
    engine_stats = {"state": "generating", "model": "synthetic-8b", "n_ctx": 8192, "ctx_used": ctx_used,
                    "last_gen_tps": round(tps, 2), "rolling_gen_tps": round(tps, 2), "last_ttft_ms": 70.0,
                    "requests": requests, "errors": 0, "restarts": 0}
    host = {"cpu_percent": 12.0, "cpu_count": 32, "load1": 2.0, "mem_used": 40 * GIB, "mem_total": 256 * GIB,
            "mem_percent": 15.6, "engine_pid": 4242, "engine_cpu_percent": 101.0, "engine_rss": 3 * GIB}
    return {"ts": START + t, "gpus": [gpu], "host": host, "engine": engine_stats}


def main() -> None:
    lines = [json.dumps({
        "format": "llmos-tui-trace", "version": 1, "host": "synthetic-demo", "start": START, "interval": 1.0,
        "synthetic": True,
        "description": "Synthetic demo incident: VRAM climbs toward full (then the conversation is reset), "
                       "the context window fills, the GPU heats into a thermal slowdown, XID 43 arrives and "
                       "the engine stalls."})]
    requests, ctx_used, tps = 0, 1800, 80.0
    for t in range(END + 1):
        if t == 330:
            ctx_used = 300
        if t % 5 == 0 and t < 450:
            requests += 1
            ctx_used = min(8192, ctx_used + 110)
            tps = 58.0 + (t % 3) if 365 <= t < 425 else 80.0 + (t % 3)
        lines.append(json.dumps(sample(t, requests, ctx_used, tps)))
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
