"""The built-in detectors, registered through the same ``@detector`` API plugins use.

Each reads the context (telemetry windows, engine events, log lines, the last reply) and
returns findings with the evidence that proves them. Telemetry detectors hold a condition
for a few samples before reporting (hysteresis); event detectors report each event once.
Thresholds can be overridden per detector in the ``[doctor]`` config (``settings``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from typing import Any

from llmos_tui.doctor import stats
from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext

MIB = 1024 * 1024

# ---- engine life -------------------------------------------------------------------

OOM_PATTERNS = re.compile(
    r"out of memory|cudaMalloc failed|failed to allocate .*buffer|ggml_gallocr_reserve_n: failed"
    r"|unable to allocate .*buffer|cudaErrorMemoryAllocation|ErrorOutOfDeviceMemory|failed to allocate",
    re.IGNORECASE,
)


def oom_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if OOM_PATTERNS.search(line)]


def _crash_events(ctx: DetectorContext) -> list[Any]:
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
        repairs=["engine.kv_quant", "engine.smaller_batch", "engine.smaller_ctx", "engine.fewer_gpu_layers"],
    )]


# ---- GPU health --------------------------------------------------------------------

def _gpus(ctx: DetectorContext) -> list[Any]:
    return list(ctx.sample.gpus) if ctx.sample is not None else []


def _held(ctx: DetectorContext, key: str, condition: bool, need: int) -> int:
    """Count consecutive runs for which ``condition`` held (hysteresis inside a detector)."""
    count = ctx.memory.get(key, 0) + 1 if condition else 0
    ctx.memory[key] = count
    return count if count >= need else 0


@detector("gpu.vram_pressure", "warning", needs=("sample",))
def vram_pressure(ctx: DetectorContext) -> list:
    """GPU memory nearly full: the next long prompt may fail to allocate."""
    warn, err = float(ctx.setting("warn_pct", 95.0)), float(ctx.setting("error_pct", 98.5))
    out = []
    for gpu in _gpus(ctx):
        frac = gpu.mem_fraction
        if frac is None:
            continue
        pct = frac * 100
        if not _held(ctx, f"vram{gpu.index}", pct >= warn, int(ctx.setting("samples", 3))):
            continue
        out.append(ctx.finding(
            f"GPU {gpu.index} memory {pct:.1f} % full",
            severity="error" if pct >= err else "warning",
            evidence={"gpu": gpu.index, "mem_used": gpu.mem_used, "mem_total": gpu.mem_total, "pct": round(pct, 2),
                      "window_pct": [round(v, 1) for v in ctx.window(f"gpu{gpu.index}.mem_pct", 5)]},
            fingerprint=f"gpu.vram_pressure.{gpu.index}",
            repairs=["engine.kv_quant", "engine.smaller_ctx"],
        ))
    return out


THERMAL_BITS = {0x008: "HW slowdown", 0x020: "SW thermal slowdown", 0x040: "HW thermal slowdown",
                0x080: "HW power brake"}


@detector("gpu.thermal", "warning", needs=("sample",))
def thermal(ctx: DetectorContext) -> list:
    """Clocks held down by heat (clock-event reasons) or a temperature at the GPU's own slowdown threshold."""
    out = []
    for gpu in _gpus(ctx):
        mask = gpu.clock_reasons or 0
        reasons = [word for bit, word in THERMAL_BITS.items() if mask & bit]
        near = gpu.temp is not None and gpu.temp_slowdown is not None and gpu.temp >= gpu.temp_slowdown - 2
        if not _held(ctx, f"therm{gpu.index}", bool(reasons) or near, int(ctx.setting("samples", 2))):
            continue
        hw = any(r.startswith("HW") for r in reasons)
        what = ", ".join(reasons) if reasons else "temperature at the slowdown threshold"
        out.append(ctx.finding(
            f"GPU {gpu.index} thermal slowdown: {what} ({gpu.temp:.0f} °C, slowdown at {gpu.temp_slowdown} °C)"
            if gpu.temp is not None else f"GPU {gpu.index} thermal slowdown: {what}",
            severity="error" if hw else "warning",
            evidence={"gpu": gpu.index, "temp": gpu.temp, "temp_slowdown": gpu.temp_slowdown,
                      "temp_shutdown": gpu.temp_shutdown, "clock_reasons": mask, "reasons": gpu.throttle_reasons,
                      "sm_clock": gpu.sm_clock, "sm_clock_max": gpu.sm_clock_max,
                      "temps": ctx.window(f"gpu{gpu.index}.temp", 10)},
            fingerprint=f"gpu.thermal.{gpu.index}",
        ))
    return out


@detector("gpu.power_cap", "info", needs=("sample",))
def power_cap(ctx: DetectorContext) -> list:
    """Clocks limited by the power cap while the GPU is busy."""
    out = []
    for gpu in _gpus(ctx):
        capped = bool((gpu.clock_reasons or 0) & 0x004)
        busy = (gpu.util_gpu or 0) >= float(ctx.setting("busy_pct", 80.0))
        if not _held(ctx, f"pcap{gpu.index}", capped and busy, int(ctx.setting("samples", 5))):
            continue
        out.append(ctx.finding(
            f"GPU {gpu.index} power-capped under load ({gpu.power or 0:.0f} W of {gpu.power_limit or 0:.0f} W)",
            evidence={"gpu": gpu.index, "power": gpu.power, "power_limit": gpu.power_limit, "util": gpu.util_gpu,
                      "sm_clock": gpu.sm_clock, "sm_clock_max": gpu.sm_clock_max,
                      "power_window": ctx.window(f"gpu{gpu.index}.power", 10)},
            fingerprint=f"gpu.power_cap.{gpu.index}",
        ))
    return out


# DCGM's reading of XIDs: these mean the GPU (or its memory/link) failed.
XID_FAILURES = {48: "double-bit ECC error", 74: "NVLink error", 79: "GPU has fallen off the bus",
                95: "uncontained ECC error", 64: "ECC page retirement or row-remap failure",
                92: "high single-bit ECC error rate", 94: "contained ECC error", 119: "GSP RPC timeout",
                120: "GSP error"}
XID_APP = {13: "graphics engine exception", 31: "GPU memory page fault", 43: "GPU stopped processing",
           45: "preemptive cleanup", 63: "ECC page retirement or row remapping recorded"}
XID_CRITICAL = (48, 74, 79, 95)


@detector("gpu.xid_ecc", "error", needs=("sample",), grace=False, hysteresis=1)
def xid_ecc(ctx: DetectorContext) -> list:
    """XID errors (with DCGM's severity) and uncorrectable ECC errors."""
    out = []
    for gpu in _gpus(ctx):
        for xid in sorted(set(gpu.xid_events or [])):
            if xid in XID_CRITICAL:
                sev, what = "critical", XID_FAILURES[xid]
            elif xid in XID_FAILURES:
                sev, what = "error", XID_FAILURES[xid]
            else:
                sev, what = "warning", XID_APP.get(xid, "driver-reported error")
            out.append(ctx.finding(
                f"GPU {gpu.index} XID {xid}: {what}",
                severity=sev,
                evidence={"gpu": gpu.index, "xid": xid, "xid_events": list(gpu.xid_events), "meaning": what,
                          "dcgm": "failure" if xid in XID_CRITICAL else "warning",
                          "advice": "drain the node and reset or replace the GPU" if sev == "critical" else
                          "check dmesg; restart the engine if it keeps happening"},
                fingerprint=f"gpu.xid.{gpu.index}.{xid}",
                repairs=[] if xid in XID_FAILURES else ["engine.restart"],
            ))
        prev = ctx.memory.get(f"ecc{gpu.index}")
        unc = gpu.ecc_volatile_uncorrected
        ctx.memory[f"ecc{gpu.index}"] = unc
        if unc and (prev is None or unc > prev):
            out.append(ctx.finding(
                f"GPU {gpu.index} uncorrectable ECC errors: {unc}",
                severity="critical" if gpu.remap_failure else "error",
                evidence={"gpu": gpu.index, "ecc_volatile_uncorrected": unc, "previous": prev,
                          "ecc_aggregate_uncorrected": gpu.ecc_aggregate_uncorrected,
                          "remapped_uncorrected": gpu.remapped_uncorrected, "remap_pending": gpu.remap_pending,
                          "remap_failure": gpu.remap_failure},
                fingerprint=f"gpu.ecc.{gpu.index}",
            ))
        elif gpu.remap_failure:
            out.append(ctx.finding(
                f"GPU {gpu.index} row remapping failed", severity="critical",
                evidence={"gpu": gpu.index, "remap_failure": True}, fingerprint=f"gpu.remap.{gpu.index}"))
    return out


# ---- engine performance ------------------------------------------------------------

def _request_values(ctx: DetectorContext, name: str, n: int) -> list[float]:
    return stats.per_request(ctx.window_raw(name, n), ctx.window_raw("engine.requests", n))


@detector("engine.tps_drop", "warning", needs=("sample",))
def tps_drop(ctx: DetectorContext) -> list:
    """Generation tokens/s fell below the session's own baseline (Mann-Whitney U, with hysteresis)."""
    base_n, recent_n = int(ctx.setting("baseline", 10)), int(ctx.setting("recent", 5))
    alpha, drop = float(ctx.setting("alpha", 0.01)), float(ctx.setting("drop", 0.10))
    values = _request_values(ctx, "engine.gen_tps", int(ctx.setting("samples", 600)))
    active = ctx.memory.get("active", False)
    if len(values) < base_n + recent_n:
        return []
    # the baseline is the best window seen so far this session, not just the previous one:
    # a slow slide must not drag its own baseline down with it
    recent = values[-recent_n:]
    baseline = ctx.memory.get("baseline")
    candidate = values[-(base_n + recent_n):-recent_n]
    if baseline is None or statistics.median(candidate) > statistics.median(baseline):
        if not active:
            baseline = candidate
            ctx.memory["baseline"] = baseline
    test = stats.shift_down(baseline, recent)
    if test is None:
        return []
    # hysteresis: enter at p < alpha and a real drop; leave only when clearly recovered
    if not active:
        active = test.p_value < alpha and -test.change >= drop
        streak = _held(ctx, "enter", active, int(ctx.setting("evaluations", 2)))
        active = bool(streak)
    else:
        active = not (test.p_value > 0.2 or -test.change < drop / 2)
    ctx.memory["active"] = active
    if not active:
        return []
    return [ctx.finding(
        f"generation speed fell {-test.change * 100:.0f} %: {test.recent_median:.1f} tok/s "
        f"vs baseline {test.baseline_median:.1f}",
        evidence={"baseline_median": round(test.baseline_median, 2), "recent_median": round(test.recent_median, 2),
                  "change": round(test.change, 3), "p_value": test.p_value, "test": "Mann-Whitney U, one-sided",
                  "baseline": [round(v, 2) for v in baseline], "recent": [round(v, 2) for v in recent],
                  "verify_metric": "gen_tps"},
        fingerprint="engine.tps_drop",
        repairs=["engine.restart"],
    )]


@detector("engine.ttft_spike", "warning", needs=("sample",))
def ttft_spike(ctx: DetectorContext) -> list:
    """Time to first token far above its usual value for two of the last three requests."""
    values = _request_values(ctx, "engine.ttft_ms", int(ctx.setting("samples", 600)))
    if len(values) < 8:
        return []
    history, last3 = values[:-3], values[-3:]
    med, spread = statistics.median(history), stats.mad(history)
    limit = max(float(ctx.setting("factor", 3.0)) * med, med + 6 * 1.4826 * spread, med + 50.0)
    high = [v for v in last3 if v > limit]
    if len(high) < 2:
        return []
    return [ctx.finding(
        f"time to first token spiked to {max(high):.0f} ms (usual {med:.0f} ms)",
        evidence={"median_ms": round(med, 1), "mad_ms": round(spread, 1), "limit_ms": round(limit, 1),
                  "last": [round(v, 1) for v in last3]},
        fingerprint="engine.ttft_spike",
    )]


@detector("engine.memory_growth", "warning", needs=("sample",), interval=10.0)
def memory_growth(ctx: DetectorContext) -> list:
    """Engine RSS or GPU memory growing steadily (linear-regression slope, significant)."""
    n = int(ctx.setting("samples", 300))
    min_growth = float(ctx.setting("min_growth_mib", 64)) * MIB
    out = []
    ts_all = ctx.window_raw("ts", n)
    names = ["engine.rss"] + [f"gpu{g.index}.mem_used" for g in _gpus(ctx)]
    load_ts = ctx.last_load_ts or 0.0
    for name in names:
        values = ctx.window_raw(name, n)
        pairs = [(t, v) for t, v in zip(ts_all, values) if t >= load_ts + 5 and not math.isnan(v)]
        if len(pairs) < 30:
            continue
        fit = stats.trend([p[0] for p in pairs], [p[1] for p in pairs])
        if fit is None or fit.slope_per_s <= 0 or fit.p_value > 1e-6 or fit.r < 0.8:
            continue
        if fit.growth < max(min_growth, 0.05 * fit.start):
            continue
        out.append(ctx.finding(
            f"{name} grows steadily: {fit.slope_per_s * 60 / MIB:.1f} MiB/min",
            evidence={"series": name, "slope_mib_per_min": round(fit.slope_per_s * 60 / MIB, 2), "r": round(fit.r, 3),
                      "p_value": fit.p_value, "start_mib": round(fit.start / MIB), "end_mib": round(fit.end / MIB),
                      "samples": fit.n},
            fingerprint=f"engine.memory_growth.{name}",
            repairs=["engine.restart"],
        ))
    return out


ANOMALY_FEATURES = ("gpu0.util", "gpu0.mem_pct", "gpu0.power", "gpu0.temp", "gpu0.sm_clock",
                    "engine.rolling_tps", "host.cpu", "engine.cpu")


@detector("telemetry.anomaly", "info", needs=("sample",), timeout=5.0)
def anomaly(ctx: DetectorContext) -> list:
    """IsolationForest over the telemetry vector, trained on this session's own healthy start."""
    train_n = int(ctx.setting("train_samples", 60))
    features = [f for f in ANOMALY_FEATURES if ctx.latest(f) is not None]
    if len(features) < 3:
        return []
    model = ctx.memory.get("model")
    if model is None:
        if ctx.memory.get("unhealthy"):
            return []
        rows = [ctx.window_raw(f, train_n) for f in features]
        if min(len(r) for r in rows) < train_n:
            return []
        matrix = [list(col) for col in zip(*rows) if not any(math.isnan(v) for v in col)]
        if len(matrix) < train_n * 0.8:
            return []
        try:
            from sklearn.ensemble import IsolationForest
        except ImportError:
            ctx.memory["unhealthy"] = "scikit-learn is not installed"
            return []
        model = IsolationForest(n_estimators=50, contamination="auto", random_state=0).fit(matrix)
        ctx.memory.update(model=model, features=features, trained_on=len(matrix))
        return []
    features = ctx.memory["features"]
    row = [ctx.latest(f) for f in features]
    if any(v is None for v in row):
        return []
    score = float(model.score_samples([row])[0])
    threshold = float(ctx.setting("score", -0.6))
    if not _held(ctx, "anomalous", score < threshold, int(ctx.setting("samples", 3))):
        return []
    return [ctx.finding(
        f"telemetry unlike this session's healthy period (score {score:.2f})",
        evidence={"score": round(score, 3), "threshold": threshold, "vector": dict(zip(features, row)),
                  "trained_on": ctx.memory.get("trained_on")},
        fingerprint="telemetry.anomaly",
    )]


# ---- the conversation --------------------------------------------------------------

def repetition(text: str, n: int = 4) -> tuple[float, str]:
    """Share of word n-grams that repeat an earlier one, and the most repeated n-gram."""
    words = text.split()
    if len(words) < n * 4:
        return 0.0, ""
    grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    repeated = sum(c - 1 for c in counts.values() if c > 1)
    top, _ = counts.most_common(1)[0]
    return repeated / len(grams), top


@detector("reply.repetition", "warning", needs=("reply",))
def reply_repetition(ctx: DetectorContext) -> list:
    """The model repeats itself in a loop (n-gram repetition in the last reply)."""
    reply = ctx.last_reply or {}
    if reply.get("ts") == ctx.memory.get("checked"):
        return []
    ctx.memory["checked"] = reply.get("ts")
    share, top = repetition(reply.get("text", ""), int(ctx.setting("n", 4)))
    if share < float(ctx.setting("share", 0.5)):
        return []
    return [ctx.finding(
        f"the model is repeating itself ({share * 100:.0f} % repeated 4-grams)",
        evidence={"repeated_share": round(share, 3), "most_repeated": top, "tail": reply.get("text", "")[-200:],
                  "advice": "raise repeat_penalty or temperature; reset the conversation"},
        fingerprint="reply.repetition",
        repairs=["engine.reset_context"],
    )]


@detector("context.overflow", "warning", needs=("engine",), grace=False)
def context_overflow(ctx: DetectorContext) -> list:
    """The conversation is about to fill the context window."""
    stats_ = ctx.engine_stats or {}
    used, n_ctx = stats_.get("ctx_used") or 0, stats_.get("n_ctx") or 0
    if not n_ctx:
        return []
    share = used / n_ctx
    if share < float(ctx.setting("warn", 0.85)):
        return []
    return [ctx.finding(
        f"context window {share * 100:.0f} % full ({used} of {n_ctx} tokens)",
        severity="error" if share >= 0.97 else "warning",
        evidence={"ctx_used": used, "n_ctx": n_ctx, "share": round(share, 3)},
        fingerprint="context.overflow",
        repairs=["engine.reset_context"],
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
    )]
