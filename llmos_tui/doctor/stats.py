"""Small statistical tests the detectors share: a shift test between windows, a trend test,
robust spread. Pure Python (the same definitions as SciPy's ``mannwhitneyu`` and
``linregress``, checked against SciPy in the tests): SciPy alone would add ~65 MB to the UI
process that watches the engine, for a few dozen numbers per test.
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
    b_med, r_med = statistics.median(baseline), statistics.median(recent)
    if min(baseline) == max(baseline) == min(recent) == max(recent):
        p = 1.0
    else:
        p = mann_whitney_less(recent, baseline)
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
    slope, intercept, r, p = linear_fit(list(xs), list(ys))
    start = intercept + slope * xs[0]
    end = intercept + slope * xs[-1]
    return Trend(slope, p, r, start, end, len(ys))


# ---- the tests themselves ------------------------------------------------------------------
def _ranks(values: list[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (ties share the mean rank) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _exact_u_cdf(u: float, n1: int, n2: int) -> float:
    """P(U <= u) under the null, no ties (the distribution by counting, as SciPy's exact method)."""
    # counts[k]: number of arrangements with U = k, built up one sample at a time
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def count(k: int, a: int, b: int) -> int:
        if k < 0:
            return 0
        if a == 0 or b == 0:
            return 1 if k == 0 else 0
        return count(k - b, a - 1, b) + count(k, a, b - 1)

    total = math.comb(n1 + n2, n1)
    return sum(count(k, n1, n2) for k in range(int(math.floor(u)) + 1)) / total


def mann_whitney_less(x: list[float], y: list[float]) -> float:
    """One-sided Mann-Whitney U p-value that ``x`` is stochastically less than ``y`` (SciPy's
    ``method="auto"``: exact when a side has at most 8 values and nothing ties, else normal with tie and continuity
    correction)."""
    n1, n2 = len(x), len(y)
    ranks, ties = _ranks(list(x) + list(y))
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    if min(n1, n2) <= 8 and all(t == 1 for t in ties):
        return min(1.0, _exact_u_cdf(u1, n1, n2))
    n = n1 + n2
    mu = n1 * n2 / 2
    tie_term = sum(t ** 3 - t for t in ties) / (n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term))
    if sigma == 0:
        return 1.0
    z = (u1 - mu + 0.5) / sigma  # continuity correction toward the null
    return 0.5 * math.erfc(-z / math.sqrt(2))


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float, float]:
    """Least squares: (slope, intercept, r, two-sided p-value of slope = 0), as ``linregress``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy))) if syy > 0 else 0.0
    df = n - 2
    if abs(r) >= 1.0:
        return slope, intercept, r, 0.0
    t = r * math.sqrt(df / ((1.0 - r) * (1.0 + r)))
    return slope, intercept, r, _t_two_sided(t, df)


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, Lentz's method)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    f, c, d = tiny, tiny, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = tiny if abs(d) < tiny else d
        d = 1.0 / d
        c = 1.0 + num / c
        c = tiny if abs(c) < tiny else c
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return math.exp(ln_front) * f / a
