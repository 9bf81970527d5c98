"""Served traffic: what the daemon's API requests show (tokens/s under concurrency, TTFT on long
prompts, a growing queue).

The daemon (``llmos_tui.serve.traffic``) publishes one ``serve_request`` engine event per finished
request: its outcome, prompt tokens (and those really evaluated, the rest came from the prefix
cache), generated tokens, TTFT, generation tok/s, queue wait and the queue depth behind it. The
doctor keeps the recent events (the intake) and these detectors read them from the context, so
the doctor never imports the daemon. Without a daemon there are no such events and they stay quiet.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from llmos_tui.doctor import stats
from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import EngineEvent

ANSWERED = frozenset({"done", "stop", "length"})


def served(ctx: DetectorContext) -> "list[EngineEvent]":
    """The answered API requests among the recent engine events, oldest first."""
    return [e for e in ctx.events if e.kind == "serve_request" and e.data.get("outcome") in ANSWERED]


def _num(event: "EngineEvent", key: str) -> float | None:
    value = event.data.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@detector("serve.tps_concurrency", "warning", needs=("events",), interval=5.0, grace=False)
def tps_under_concurrency(ctx: DetectorContext) -> list:
    """Generation tok/s of requests served while others waited fell below that of requests served
    alone (Mann-Whitney U, one-sided): the daemon's own work for the waiting clients (streams,
    HTTP) competes with the engine. The engine answers one request at a time, so its rate should
    not depend on the queue."""
    n_min, drop, alpha = int(ctx.setting("min_requests", 5)), float(ctx.setting("drop", 0.2)), \
        float(ctx.setting("alpha", 0.01))
    alone, busy = [], []
    for e in served(ctx)[-int(ctx.setting("window", 100)):]:
        rate, depth = _num(e, "gen_tps"), _num(e, "queue_depth")
        if rate is None or rate <= 0 or depth is None:
            continue
        (busy if depth >= 1 else alone).append(rate)
    if len(alone) < n_min or len(busy) < n_min:
        return []
    test = stats.shift_down(alone, busy)
    if test is None or test.p_value >= alpha or -test.change < drop:
        return []
    return [ctx.finding(
        f"served generation {-test.change * 100:.0f} % slower under concurrency: {test.recent_median:.1f} tok/s "
        f"with clients waiting vs {test.baseline_median:.1f} alone",
        evidence={"alone_median_tps": round(test.baseline_median, 2), "busy_median_tps": round(test.recent_median, 2),
                  "change": round(test.change, 3), "p_value": test.p_value, "n_alone": len(alone),
                  "n_busy": len(busy), "test": "Mann-Whitney U, one-sided"},
        fingerprint="serve.tps_concurrency",
        fact=f"API requests generated {test.recent_median:.1f} tok/s while other clients waited against "
             f"{test.baseline_median:.1f} tok/s when served alone ({len(busy)} and {len(alone)} requests, "
             f"p={test.p_value:.2g}).",
    )]


@detector("serve.ttft_long_prompt", "warning", needs=("events",), interval=5.0, grace=False)
def ttft_long_prompt(ctx: DetectorContext) -> list:
    """Time to first token per evaluated prompt token far above its usual for two of the last three
    long prompts. Normalised by the prompt's length: a long prompt may take longer, in proportion."""
    min_prompt = int(ctx.setting("min_prompt_tokens", 64))
    per_token: list[tuple[float, float, float]] = []  # (ms per prompt token, ttft ms, prompt tokens)
    for e in served(ctx):
        ttft = _num(e, "ttft_ms")
        prompt = _num(e, "prompt_eval_tokens")
        prompt = prompt if prompt is not None else _num(e, "prompt_tokens")
        if ttft is None or ttft <= 0 or prompt is None or prompt < min_prompt:
            continue
        per_token.append((ttft / prompt, ttft, prompt))
    if len(per_token) < 8:
        return []
    history, last3 = [p[0] for p in per_token[:-3]], per_token[-3:]
    med, spread = statistics.median(history), stats.mad(history)
    limit = max(float(ctx.setting("factor", 3.0)) * med, med + 6 * 1.4826 * spread)
    high = [p for p in last3 if p[0] > limit and p[1] - med * p[2] >= float(ctx.setting("min_ms", 50.0))]
    if len(high) < 2:
        return []
    worst = max(high, key=lambda p: p[0])
    return [ctx.finding(
        f"time to first token on long prompts spiked to {worst[0]:.2f} ms per prompt token (usual {med:.2f})",
        evidence={"median_ms_per_token": round(med, 3), "mad_ms_per_token": round(spread, 3),
                  "limit_ms_per_token": round(limit, 3),
                  "last": [{"ms_per_token": round(p[0], 3), "ttft_ms": round(p[1], 1), "prompt_tokens": int(p[2])}
                           for p in last3],
                  "min_prompt_tokens": min_prompt},
        fingerprint="serve.ttft_long_prompt",
        fact=f"{len(high)} of the last 3 long prompts (>= {min_prompt} tokens) took up to {worst[1]:.0f} ms to the "
             f"first token for {int(worst[2])} prompt tokens, {worst[0]:.2f} ms per token against a usual "
             f"{med:.2f}.",
    )]


@detector("serve.queue_growth", "warning", needs=("events",), interval=5.0, grace=False)
def queue_growth(ctx: DetectorContext) -> list:
    """The queue of API requests grows steadily while the engine is up (a significant positive
    slope of the depth over time): requests arrive faster than the engine answers them."""
    if ctx.engine_state not in ("ready", "generating"):
        return []  # a down engine makes any queue grow: the engine detectors say why
    window = float(ctx.setting("window_s", 300.0))
    points = [(e.ts, _num(e, "queue_depth")) for e in ctx.events
              if e.kind == "serve_request" and e.ts >= ctx.now - window]
    pairs = [(t, d) for t, d in points if d is not None]
    if len(pairs) < int(ctx.setting("min_requests", 8)):
        return []
    fit = stats.trend([p[0] for p in pairs], [p[1] for p in pairs])
    min_depth = float(ctx.setting("min_depth", 4))
    if fit is None or fit.slope_per_s <= 0 or fit.p_value > float(ctx.setting("alpha", 0.01)) or fit.r < 0.6:
        return []
    last = pairs[-1][1]
    if last < min_depth or fit.growth < min_depth / 2:
        return []
    return [ctx.finding(
        f"the API queue grows: {fit.start:.0f} -> {fit.end:.0f} waiting requests "
        f"(+{fit.slope_per_s * 60:.1f}/min)",
        evidence={"slope_per_min": round(fit.slope_per_s * 60, 2), "r": round(fit.r, 3), "p_value": fit.p_value,
                  "start": round(fit.start, 1), "end": round(fit.end, 1), "last_depth": last, "requests": fit.n},
        fingerprint="serve.queue_growth",
        likely=f"The queue went from {fit.start:.0f} to {fit.end:.0f} waiting requests over {fit.n} requests "
               f"(r={fit.r:.2f}) with the engine up: clients likely send faster than the engine answers.",
    )]
