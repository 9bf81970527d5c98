"""Engine performance: tokens/s drops, time-to-first-token spikes, memory growth."""

from __future__ import annotations

import math
import statistics

from llmos_tui.doctor import stats
from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext
from llmos_tui.doctor.detectors.common import MIB, _gpus, _held


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
        fact=f"Generation runs at {test.recent_median:.1f} tok/s over the last {len(recent)} requests against "
             f"{test.baseline_median:.1f} earlier this session ({-test.change * 100:.0f} % slower, "
             f"p={test.p_value:.2g}).",
    )]


@detector("engine.ttft_spike", "warning", needs=("sample",))
def ttft_spike(ctx: DetectorContext) -> list:
    """Time to first token far above its usual value for two of the last three requests."""
    values = _request_values(ctx, "engine.ttft_ms", int(ctx.setting("samples", 600)))
    if len(values) < 8:
        return []
    history, last3 = values[:-3], values[-3:]
    med, spread = statistics.median(history), stats.mad(history)
    limit = max(float(ctx.setting("factor", 3.0)) * med, med + 6 * 1.4826 * spread, med + float(ctx.setting("min_ms", 50.0)))
    high = [v for v in last3 if v > limit]
    if len(high) < 2:
        return []
    return [ctx.finding(
        f"time to first token spiked to {max(high):.0f} ms (usual {med:.0f} ms)",
        evidence={"median_ms": round(med, 1), "mad_ms": round(spread, 1), "limit_ms": round(limit, 1),
                  "last": [round(v, 1) for v in last3], "verify_metric": "ttft_ms"},
        fingerprint="engine.ttft_spike",
        fact=f"{len(high)} of the last 3 requests waited up to {max(high):.0f} ms for their first token; "
             f"this session's usual is {med:.0f} ms.",
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
            likely=f"{name} grew from {fit.start / MIB:.0f} to {fit.end / MIB:.0f} MiB at "
                   f"~{fit.slope_per_s * 60 / MIB:.0f} MiB/min over {fit.n} samples (r={fit.r:.2f}): likely a leak "
                   f"or a cache that keeps growing.",
        ))
    return out


@detector("tuning.drift", "warning", needs=("events",), grace=False, hysteresis=1)
def tuning_drift(ctx: DetectorContext) -> list:
    """The served rate fell well below the tuned / learned rate in a quiet context and nothing the
    doctor knows explains it (the online learner's ``adapt_drift``): a short re-tune may find the
    settings that suit the box as it is now (a driver or llama.cpp upgrade, a co-tenant)."""
    drifts = [e for e in ctx.new_events if e.kind == "adapt_drift"]
    if not drifts:
        return []
    d = drifts[-1].data
    return [ctx.finding(
        f"served speed drifted: {d.get('median_tps', 0):.1f} tok/s against {d.get('reference_tps', 0):.1f} "
        f"learned in a quiet context",
        evidence={k: d.get(k) for k in ("median_tps", "reference_tps", "context", "window", "reason")},
        fingerprint="tuning.drift",
        repairs=["tuning.retune"],
        likely=f"Serving {d.get('median_tps', 0):.1f} tok/s against {d.get('reference_tps', 0):.1f} learned in a "
               f"quiet context, and no known cause: the box likely changed (a driver, a co-tenant).",
    )]
