"""Small statistical tests the detectors share: a shift test between windows, a trend test,
robust spread. scipy is imported on first use (it is not on the start path).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def clean(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def per_request(values: list[float], counters: list[float]) -> list[float]:
    """One value per finished request: keep a value where the request counter moved.

    The engine's last-request metrics repeat in every sample until the next request ends;
    a test over the raw samples would count one slow reply many times. Without counters,
    runs of equal consecutive values collapse into one.
    """
    out: list[float] = []
    if counters and len(counters) == len(values):
        prev = None
        for v, c in zip(values, counters):
            if c is None or math.isnan(c) or v is None or math.isnan(v):
                continue
            if prev is None or c != prev:
                out.append(v)
            prev = c
        return out
    prev_v = None
    for v in clean(values):
        if v != prev_v:
            out.append(v)
        prev_v = v
    return out


def mad(values: list[float]) -> float:
    if not values:
        return 0.0
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


@dataclass
class ShiftTest:
    baseline_median: float
    recent_median: float
    change: float  # (recent - baseline) / baseline
    p_value: float
    n_baseline: int
    n_recent: int


def shift_down(baseline: list[float], recent: list[float]) -> ShiftTest | None:
    """One-sided Mann-Whitney U: are ``recent`` values stochastically smaller than ``baseline``?"""
    baseline, recent = clean(baseline), clean(recent)
    if len(baseline) < 3 or len(recent) < 3:
        return None
    from scipy.stats import mannwhitneyu

    b_med, r_med = statistics.median(baseline), statistics.median(recent)
    if min(baseline) == max(baseline) == min(recent) == max(recent):
        p = 1.0
    else:
        p = float(mannwhitneyu(recent, baseline, alternative="less").pvalue)
    change = (r_med - b_med) / b_med if b_med else 0.0
    return ShiftTest(b_med, r_med, change, p, len(baseline), len(recent))


@dataclass
class Trend:
    slope_per_s: float
    p_value: float
    r: float
    start: float
    end: float
    n: int

    @property
    def growth(self) -> float:
        return self.end - self.start


def trend(ts: list[float], values: list[float]) -> Trend | None:
    """Least-squares slope of values over time, with the p-value of 'slope is zero'."""
    pairs = [(t, v) for t, v in zip(ts, values) if not (math.isnan(t) or math.isnan(v))]
    if len(pairs) < 8:
        return None
    xs, ys = zip(*pairs)
    if max(ys) == min(ys) or max(xs) == min(xs):
        return Trend(0.0, 1.0, 0.0, ys[0], ys[-1], len(ys))
    from scipy.stats import linregress

    fit = linregress(xs, ys)
    start = fit.intercept + fit.slope * xs[0]
    end = fit.intercept + fit.slope * xs[-1]
    return Trend(float(fit.slope), float(fit.pvalue), float(fit.rvalue), float(start), float(end), len(ys))
