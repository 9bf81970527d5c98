"""Engine life: crashes, crash loops, out-of-memory, and the canary (a hang)."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import EngineEvent

OOM_PATTERNS = re.compile(
    r"out of memory|cudaMalloc failed|failed to allocate .*buffer|ggml_gallocr_reserve_n: failed"
    r"|unable to allocate .*buffer|cudaErrorMemoryAllocation|ErrorOutOfDeviceMemory|failed to allocate",
    re.IGNORECASE,
)


def oom_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if OOM_PATTERNS.search(line)]


def _crash_events(ctx: DetectorContext) -> "list[EngineEvent]":
    return [e for e in ctx.new_events if e.kind == "crashed"]


@detector("engine.crashed", "error", needs=("events",), grace=False, hysteresis=1, timeout=2.0)
def engine_crashed(ctx: DetectorContext) -> list:
    """The engine child died: exit code or signal, and its last log lines."""
    out = []
    for ev in _crash_events(ctx):
        logs = list(ev.data.get("last_logs") or [])
        if oom_lines(logs):
            continue  # engine.oom owns this one: it needs a smaller configuration, not a restart
        how = f"signal {ev.data['signal']}" if ev.data.get("signal") else f"exit code {ev.data.get('exit_code')}"
        out.append(ctx.finding(
            f"engine crashed ({how})",
            evidence={"exit_code": ev.data.get("exit_code"), "signal": ev.data.get("signal"),
                      "last_logs": logs[-10:], "interrupted_request": ev.data.get("interrupted_request"),
                      "crash_ts": ev.ts},
            fingerprint="engine.crashed",
            repairs=["engine.restart"],
            fact=f"The engine process ended with {how}"
                 + (f"; its last log line: {logs[-1][:120]!r}." if logs else "; it left no log line."),
        ))
    return out


@detector("engine.crash_loop", "critical", needs=("events",), grace=False, hysteresis=1)
def crash_loop(ctx: DetectorContext) -> list:
    """Several crashes or failed loads within a short time: the configuration itself is suspect."""
    window_s = float(ctx.setting("window_s", 60.0))
    limit = int(ctx.setting("crashes", 3))
    if not any(e.kind in ("crashed", "load_failed") for e in ctx.new_events):
        return []
    recent = [e for e in ctx.events if e.kind in ("crashed", "load_failed") and ctx.now - e.ts <= window_s]
    if len(recent) < limit:
        return []
    return [ctx.finding(
        f"crash loop: {len(recent)} crashes or failed loads in {window_s:.0f} s",
        evidence={"crashes": len(recent), "window_s": window_s,
                  "kinds": dict(Counter(e.kind for e in recent)),
                  "last": [{k: e.data.get(k) for k in ("signal", "exit_code", "error") if e.data.get(k)}
                           for e in recent[-3:]]},
        fingerprint="engine.crash_loop",
        repairs=["engine.rollback"],
        likely=f"{len(recent)} crashes or failed loads in {window_s:.0f} s: the configuration itself is likely "
               f"at fault, not a passing accident.",
    )]


@detector("engine.oom", "error", needs=("events", "logs"), grace=False, hysteresis=1)
def engine_oom(ctx: DetectorContext) -> list:
    """A CUDA/ggml allocation failure in llama.cpp's log (with or without a crash)."""
    # Log lines arrive a moment before the crash or load failure they cause; hold them briefly
    # so one incident gives one finding (with the crash), not two.
    hold_s = float(ctx.setting("hold_s", 0.5))
    pending: list[tuple[float, str]] = ctx.memory.setdefault("pending", [])
    pending += [(line.ts, line.text) for line in ctx.new_logs if OOM_PATTERNS.search(line.text)]
    lines: list[str] = []
    crashed = False
    for ev in ctx.new_events:
        if ev.kind == "crashed":
            found = oom_lines(list(ev.data.get("last_logs") or []))
        elif ev.kind == "load_failed":
            found = oom_lines([str(ev.data.get("error", ""))]) + [t for ts, t in pending if ts <= ev.ts]
        else:
            continue
        consumed = [t for ts, t in pending if ts <= ev.ts]
        pending[:] = [(ts, t) for ts, t in pending if ts > ev.ts]
        if found or (consumed and ev.kind == "crashed"):
            lines += found or consumed
            crashed = crashed or ev.kind == "crashed"
    if not lines:
        ripe = [t for ts, t in pending if ts <= ctx.now - hold_s]
        if ripe and ctx.engine_state not in ("crashed", "restarting", "loading"):
            lines = ripe
            pending[:] = [(ts, t) for ts, t in pending if ts > ctx.now - hold_s]
    if not lines:
        return []
    sizes = [m.group(0) for line in lines for m in [re.search(r"[\d.]+ MiB|size of \d+", line)] if m]
    return [ctx.finding(
        "GPU memory allocation failed (out of memory)" + (" and the engine died" if crashed else ""),
        severity="error" if crashed else "warning",
        evidence={"log_lines": list(dict.fromkeys(lines))[:8], "requested": sizes[:3], "crashed": crashed,
                  "n_ctx": ctx.params.n_ctx if ctx.params else None,
                  "type_k": ctx.params.type_k if ctx.params else None},
        fingerprint="engine.oom",
        repairs=["engine.kv_quant", "engine.smaller_batch", "engine.smaller_ctx", "engine.experts_to_cpu",
                 "engine.fewer_gpu_layers"],
        fact=("llama.cpp could not allocate GPU memory"
              + (f" ({', '.join(sizes[:2])} requested)" if sizes else "")
              + (f" at n_ctx {ctx.params.n_ctx}" if ctx.params else "")
              + (", and the engine died." if crashed else ".")),
    )]


@detector("engine.canary", "error", needs=("engine",), interval=300.0, timeout=30.0, hysteresis=1)
def canary(ctx: DetectorContext) -> list:
    """The canary probe: a short fixed prompt must be answered in time with the expected tokens."""
    stats_ = ctx.engine_stats or {}
    if ctx.engine_state not in ("ready",) or ctx.operator_active:
        return []
    result = ctx.canary()
    if result is None:
        return []
    ctx.memory["last"] = result.to_dict()
    if result.ok:
        return []
    return [ctx.finding(
        f"canary failed: {result.reason}",
        evidence={**result.to_dict(), "requests": stats_.get("requests")},
        fingerprint="engine.canary",
        repairs=["engine.restart"],
        likely=f"The canary prompt failed ({result.reason}) while the engine says it is ready: it is likely hung "
               f"or answering wrong.",
    )]


def stall_threshold(prompt_tokens: int, tokens: int, *, stall_s: float, prefill_tps: float | None,
                    prefill_floor_tps: float) -> float:
    """Seconds without a token after which a generating request counts as hung.

    Before the first token the prompt is still being processed, so it gets its grace: its
    length over the prefill rate (a quarter of the last measured rate, never below the floor,
    so a model that slows down under load is not called hung), plus ``stall_s``. Once tokens
    come, ``stall_s`` alone."""
    if tokens > 0:
        return stall_s
    rate = max(prefill_floor_tps, (prefill_tps or 0.0) / 4)
    return stall_s + prompt_tokens / rate


@detector("engine.stalled", "error", needs=("engine",), grace=False, hysteresis=1, timeout=2.0)
def stalled(ctx: DetectorContext) -> list:
    """The forward-progress watchdog: a request that is generating but has produced no token
    for longer than its threshold (which grows with the prompt) is a hang, found on the next
    pass rather than at the next canary."""
    stats_ = ctx.engine_stats or {}
    flight = stats_.get("in_flight")
    if ctx.engine_state != "generating" or not isinstance(flight, dict):
        return []
    stall_s = float(ctx.setting("stall_s", 30.0))
    floor = float(ctx.setting("prefill_floor_tps", 50.0))
    prompt, tokens = int(flight.get("prompt_tokens") or 0), int(flight.get("tokens") or 0)
    measured = stats_.get("last_prompt_tps")
    threshold = stall_threshold(prompt, tokens, stall_s=stall_s,
                                prefill_tps=float(measured) if isinstance(measured, (int, float)) else None,
                                prefill_floor_tps=floor)
    quiet = float(flight.get("since_progress_s") or 0.0)
    if quiet < threshold:
        return []
    where = (f"after {tokens} token{'s' if tokens != 1 else ''}" if tokens
             else f"before its first token ({prompt}-token prompt, {threshold - stall_s:.0f} s of it prefill grace)")
    return [ctx.finding(
        f"no token for {quiet:.0f} s while generating (request {flight.get('id')})",
        evidence={"request": flight.get("id"), "since_progress_s": quiet, "threshold_s": round(threshold, 2),
                  "tokens": tokens, "prompt_tokens": prompt, "prompt_counted": flight.get("prompt_counted"),
                  "age_s": flight.get("age_s"), "stall_s": stall_s, "last_prompt_tps": measured},
        fingerprint="engine.stalled",
        repairs=["engine.restart"],
        likely=f"Request {flight.get('id')} has produced no token for {quiet:.0f} s {where}, past its "
               f"{threshold:.0f} s threshold, while the engine says it is generating: its decode is likely hung.",
    )]
