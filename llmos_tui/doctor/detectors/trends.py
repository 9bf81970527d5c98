"""Looking ahead: trends with an ETA, raised before the fact and retracted when the trend turns.

``gpu.vram_trend``: the least-squares slope of a GPU's used memory over a window of samples
(the sample's own timestamps, so a replayed trace is read at its own pace); when the memory
left divided by the slope is under the horizon, a ``likely`` finding says when it will be full.
Where the sample lists per-process memory, the engine's own growth (its KV cache, buffers)
is told apart from the other tenants' growth, so the narration says whose memory climbs.

``context.trend``: the conversation's pace in tokens per turn and the turns left before
the context window is full.
"""

from __future__ import annotations

from collections import deque

from llmos_tui.doctor import stats
from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext
from llmos_tui.doctor.detectors.common import MIB, _gpus, _held

VramPoint = tuple[float, float, float | None]  # ts, used bytes, the engine's own bytes (None: unknown)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def vram_eta(points: list[VramPoint], total: float) -> dict[str, float] | None:
    """Slope (bytes/s), fit quality and the seconds until ``total`` from the last point; the
    engine's own slope and the other tenants' where the points carry the engine's share."""
    fit = stats.trend([p[0] for p in points], [p[1] for p in points])
    if fit is None:
        return None
    out = {"slope": fit.slope_per_s, "r": fit.r, "p_value": fit.p_value, "n": float(fit.n),
           "fitted_used": fit.end}
    used = points[-1][1]
    out["eta_s"] = (total - used) / fit.slope_per_s if fit.slope_per_s > 0 else float("inf")
    engine = [(t, e) for t, _, e in points if e is not None]
    if len(engine) >= len(points) * 0.8:
        efit = stats.trend([t for t, _ in engine], [e for _, e in engine])
        if efit is not None:
            out["engine_slope"] = efit.slope_per_s
            out["other_slope"] = fit.slope_per_s - efit.slope_per_s
    return out


@detector("gpu.vram_trend", "warning", needs=("sample",), grace=False)
def vram_trend(ctx: DetectorContext) -> list:
    """GPU memory climbing steadily toward full: an ETA from the slope over a window."""
    window_s = float(ctx.setting("window_s", 120.0))
    horizon_s = float(ctx.setting("horizon_s", 1800.0))
    min_samples = int(ctx.setting("min_samples", 10))
    min_slope = float(ctx.setting("min_mib_per_min", 16.0)) * MIB / 60
    sample_ts = ctx.sample.ts if ctx.sample is not None else ctx.now
    out = []
    for gpu in _gpus(ctx):
        if gpu.mem_used is None or not gpu.mem_total:
            continue
        points: deque[VramPoint] = ctx.memory.setdefault(f"pts{gpu.index}", deque())  # type: ignore[assignment]
        if points and points[-1][0] >= sample_ts:
            if sample_ts < points[-1][0] - window_s:
                points.clear()  # time went backwards (a looped trace): start again
            else:
                continue  # the same sample seen twice
        known = [p.used_memory for p in gpu.processes if p.is_engine and p.used_memory is not None]
        points.append((sample_ts, float(gpu.mem_used), float(sum(known)) if known else None))
        while points and points[0][0] < sample_ts - window_s:
            points.popleft()
        active = bool(ctx.memory.get(f"on{gpu.index}"))
        est = vram_eta(list(points), float(gpu.mem_total)) if len(points) >= min_samples else None
        # a trend that just changed (a climb that began inside the window) is read from the
        # window's recent half: the whole window would average the old pace in
        recent = [p for p in points if p[0] >= sample_ts - window_s / 2]
        half = vram_eta(recent, float(gpu.mem_total)) if est is not None and len(recent) >= min_samples else None
        steady = half is not None and est is not None and abs(half["slope"] - est["slope"]) <= 0.25 * abs(est["slope"])
        if est is not None and half is not None and not steady:
            est = {**half, "window_s": window_s / 2}
        # enter only on a steady climb (both halves agree); once raised, follow the recent pace
        rising = est is not None and est["slope"] >= min_slope and (
            est["r"] >= 0.6 if active else (steady and est["r"] >= 0.85))
        # enter inside the horizon; leave only past 1.5 horizons (or when the climb stops)
        soon = rising and est is not None and est["eta_s"] <= horizon_s * (1.5 if active else 1.0)
        held = _held(ctx, f"trend{gpu.index}", soon and gpu.mem_used < gpu.mem_total,
                     1 if active else int(ctx.setting("samples", 3)))
        ctx.memory[f"on{gpu.index}"] = bool(held)
        if not held or est is None:
            continue
        pct = gpu.mem_used / gpu.mem_total * 100
        per_min = est["slope"] * 60 / MIB
        eta = est["eta_s"]
        whose = ""
        if "engine_slope" in est:
            whose = (f" (the engine's own {est['engine_slope'] * 60 / MIB:+.0f}, other tenants "
                     f"{est['other_slope'] * 60 / MIB:+.0f} MiB/min)")
        out.append(ctx.finding(
            f"GPU {gpu.index} memory climbing: {pct:.0f} % full, likely full in {_minutes(eta)}",
            severity="error" if eta <= float(ctx.setting("error_s", 120.0)) else "warning",
            evidence={"gpu": gpu.index, "pct": round(pct, 1), "mem_used": gpu.mem_used, "mem_total": gpu.mem_total,
                      "slope_mib_per_min": round(per_min, 1), "eta_s": round(eta, 1), "r": round(est["r"], 3),
                      "window_s": est.get("window_s", window_s), "samples": int(est["n"]),
                      **({"engine_mib_per_min": round(est["engine_slope"] * 60 / MIB, 1),
                          "other_mib_per_min": round(est["other_slope"] * 60 / MIB, 1)} if "engine_slope" in est
                         else {}),
                      "advice": "shorten the conversation or quantise the KV cache before it fills"},
            fingerprint=f"gpu.vram_trend.{gpu.index}",
            likely=f"VRAM {pct:.0f} %, climbing ~{per_min:.0f} MiB/min{whose} over the last {est.get('window_s', window_s):.0f} s "
                   f"(r={est['r']:.2f}), likely full in {_minutes(eta)}.",
        ))
    return out


@detector("context.trend", "info", needs=("engine",), grace=False)
def context_trend(ctx: DetectorContext) -> list:
    """The context window will be full in a few turns at this conversation's pace."""
    stats_ = ctx.engine_stats or {}
    used, n_ctx = stats_.get("ctx_used") or 0, stats_.get("n_ctx") or 0
    if not n_ctx or not isinstance(used, int) or not isinstance(n_ctx, int):
        return []
    seen: list[int] = ctx.memory.setdefault("used", [])  # type: ignore[assignment]
    if not seen or used != seen[-1]:
        if seen and used < seen[-1]:
            seen.clear()  # the conversation was reset
        seen.append(used)
        del seen[:-8]
    steps = [b - a for a, b in zip(seen, seen[1:]) if b > a]
    if len(steps) < 2:
        return []
    pace = sum(steps) / len(steps)
    turns = (n_ctx - used) / pace
    if turns > float(ctx.setting("turns", 5)):
        return []
    return [ctx.finding(
        f"context window full in ~{turns:.0f} turns at this pace",
        evidence={"ctx_used": used, "n_ctx": n_ctx, "tokens_per_turn": round(pace), "turns_left": round(turns, 1)},
        fingerprint="context.trend",
        likely=f"{used} of {n_ctx} tokens used at ~{pace:.0f} tokens a turn: likely full in ~{max(turns, 0):.0f} "
               f"turns.",
    )]


@detector("gpu.temp_trend", "info", needs=("sample",), grace=False)
def temp_trend(ctx: DetectorContext) -> list:
    """A GPU warming steadily toward its own slowdown threshold: an ETA from the slope."""
    window_s = float(ctx.setting("window_s", 120.0))
    horizon_s = float(ctx.setting("horizon_s", 900.0))
    min_per_min = float(ctx.setting("min_c_per_min", 0.5))
    sample_ts = ctx.sample.ts if ctx.sample is not None else ctx.now
    out = []
    for gpu in _gpus(ctx):
        if gpu.temp is None or not gpu.temp_slowdown:
            continue
        points: deque[tuple[float, float]] = ctx.memory.setdefault(f"pts{gpu.index}", deque())  # type: ignore[assignment]
        if points and points[-1][0] >= sample_ts:
            if sample_ts < points[-1][0] - window_s:
                points.clear()
            else:
                continue
        points.append((sample_ts, float(gpu.temp)))
        while points and points[0][0] < sample_ts - window_s:
            points.popleft()
        active = bool(ctx.memory.get(f"on{gpu.index}"))
        fit = stats.trend([t for t, _ in points], [v for _, v in points]) if len(points) >= 10 else None
        recent = [p for p in points if p[0] >= sample_ts - window_s / 2]
        half = stats.trend([t for t, _ in recent], [v for _, v in recent]) if fit is not None else None
        slope = (half.slope_per_s if half is not None and active else (fit.slope_per_s if fit else 0.0))
        steady = (fit is not None and half is not None and fit.slope_per_s > 0
                  and abs(half.slope_per_s - fit.slope_per_s) <= 0.35 * fit.slope_per_s and fit.r >= 0.8)
        left = float(gpu.temp_slowdown) - float(gpu.temp)
        eta = left / slope if slope > 0 else float("inf")
        warming = points[-1][1] >= max(v for _, v in points) - 0.5  # at its peak, not cooling from one
        soon = (steady or active) and warming and slope * 60 >= min_per_min and 0 < left and eta <= horizon_s * (
            1.5 if active else 1.0)
        held = _held(ctx, f"warm{gpu.index}", soon, 1 if active else int(ctx.setting("samples", 3)))
        ctx.memory[f"on{gpu.index}"] = bool(held)
        if not held:
            continue
        out.append(ctx.finding(
            f"GPU {gpu.index} warming toward its slowdown: {gpu.temp:.0f} °C, likely at {gpu.temp_slowdown} °C "
            f"in {_minutes(eta)}",
            evidence={"gpu": gpu.index, "temp": gpu.temp, "temp_slowdown": gpu.temp_slowdown,
                      "c_per_min": round(slope * 60, 2), "eta_s": round(eta, 1), "window_s": window_s,
                      "advice": "check the airflow and the fans before the clocks are held down"},
            fingerprint=f"gpu.temp_trend.{gpu.index}",
            likely=f"GPU {gpu.index} at {gpu.temp:.0f} °C, warming ~{slope * 60:.1f} °C/min over the last "
                   f"{window_s:.0f} s: likely at its {gpu.temp_slowdown} °C slowdown threshold in {_minutes(eta)}.",
        ))
    return out


def free_bytes(path: str) -> float | None:
    """Free space (for an unprivileged writer) on the journal's filesystem; None when unreadable.
    Tests replace this function to inject a reading."""
    import os

    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:
        return None
    return float(st.f_bavail * st.f_frsize)


@detector("journal.disk_trend", "warning", needs=(), grace=False, interval=60.0)
def journal_disk_trend(ctx: DetectorContext) -> list:
    """The journal's disk will be full: the free space over the journal's growth rate (the
    least-squares slope of its size over a window), raised before the fact, retracted when the
    growth stops or the space comes back."""
    disk = ctx.journal.disk()
    if not disk:
        return []
    path, size = disk
    free = free_bytes(path)
    if free is None:
        return []
    window_s = float(ctx.setting("window_s", 6 * 3600.0))
    horizon_s = float(ctx.setting("horizon_s", 86400.0))
    min_points = int(ctx.setting("min_points", 8))
    points: deque[tuple[float, float]] = ctx.memory.setdefault("pts", deque())  # type: ignore[assignment]
    if points and ctx.now <= points[-1][0]:
        points.clear()  # time went backwards: start again
    points.append((ctx.now, size))
    while points and points[0][0] < ctx.now - window_s:
        points.popleft()
    fit = stats.trend([t for t, _ in points], [b for _, b in points]) if len(points) >= min_points else None
    # the window's slope gives the ETA; the last few readings say whether it still grows (a
    # journal that stopped growing is retracted even while the window still holds the climb)
    recent = list(points)[-min_points:]
    still = stats.trend([t for t, _ in recent], [b for _, b in recent]) if fit is not None else None
    slope = fit.slope_per_s if fit is not None else 0.0
    eta = free / slope if slope > 0 else float("inf")
    active = bool(ctx.memory.get("on"))
    soon = (fit is not None and still is not None and slope > 0 and still.slope_per_s > 0
            and fit.r >= (0.5 if active else 0.8) and eta <= horizon_s * (1.5 if active else 1.0))
    held = _held(ctx, "soon", soon, 1 if active else int(ctx.setting("samples", 2)))
    ctx.memory["on"] = bool(held)
    if not held or fit is None:
        return []
    per_h = slope * 3600 / MIB
    size_mib = points[-1][1] / MIB
    return [ctx.finding(
        f"journal's disk likely full in {_minutes(eta)}",
        severity="error" if eta <= float(ctx.setting("error_s", 3600.0)) else "warning",
        evidence={"path": path, "free_bytes": free, "journal_bytes": points[-1][1],
                  "growth_mib_per_h": round(per_h, 2), "eta_s": round(eta, 1), "r": round(fit.r, 3),
                  "window_s": round(points[-1][0] - points[0][0], 1), "points": len(points),
                  "advice": "free space on that filesystem, lower [rollups] max_journal_mb or the retention, "
                            "or move the journal ([journal] path)"},
        fingerprint="journal.disk_trend",
        likely=f"The journal ({size_mib:.0f} MiB) grows ~{per_h:.1f} MiB/h and its filesystem has "
               f"{free / MIB:.0f} MiB free: likely full in {_minutes(eta)}.",
    )]
