"""Verify a winner against what runs now, with a known error rate.

A verification is a sequence of A/B rounds, each a pair of fresh children (A: the running
configuration, B: the candidate). The order alternates A B, B A, B A, A B, … (an ABBA pattern), so
that an order effect (a warm page cache, a thermal trend, another tenant coming or going) biases
as many pairs one way as the other; the design only looks at an even number of rounds, where the
orders balance.

The test: the paired log-ratios ``d_i = log(B_i / A_i)`` (B better: d > 0), against the minimum
practical gain ``g`` (default 2 %): H0 ``mean(d) <= log(1 + g)``, H1 ``mean(d) > log(1 + g)``, a
one-sided Student t-test (valid for few rounds when the log noise is about normal; these machines'
noise is multiplicative, so the log is the scale where it is). Rounds are added while the answer is
undecided, up to ``max_rounds``; the test looks at ``looks`` (4, 6, 8, 10, 12 by default) and each
look spends ``alpha / len(looks)`` of the false-positive budget (Bonferroni over the looks), so the
chance of a false "verified" over the whole sequence is at most ``alpha`` whatever the data say
when it stops. A look stops early as "not verified" (futility) when the estimate is no gain at all
or the upper confidence bound lies below the practical gain: stopping for futility only removes
chances to verify, so it never raises the false-positive rate.

Measured on the recorded noise of ``tests/data/surface_bench_2core.csv`` by
``scripts/bench_verify.py`` (false "verified" rate, power at a true 10 % gain, median rounds).

``bootstrap_median_ci`` stays as a descriptive interval for benchmarks that report a spread; it is
not a test.
"""

from __future__ import annotations

import math
import random
import statistics
from functools import lru_cache
from dataclasses import asdict, dataclass, field
from typing import Callable

JsonDict = dict[str, object]


# ---- Student's t, without scipy ---------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The t with P(T > t) = p (bisection; cached: a design asks for a handful of them)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---- the design ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyDesign:
    """The sequential A/B design: when to look, the error budget, the practical gain."""

    alpha: float = 0.05  # the chance of a false "verified" over the whole sequence, at most
    min_gain: float = 0.02  # a gain below this is not worth a change (B must beat A by more)
    looks: tuple[int, ...] = (4, 6, 8, 10, 12)  # complete rounds at which the test is made

    @classmethod
    def capped(cls, max_rounds: int | None, *, alpha: float = 0.05, min_gain: float = 0.02) -> "VerifyDesign":
        """Looks every 2 rounds from 4 up to ``max_rounds`` (default 12). Never fewer than 4 rounds:
        a verdict over 2 rounds cannot be trusted, so a smaller cap is raised to the first look."""
        cap = max(4, int(max_rounds or 12))
        return cls(alpha=alpha, min_gain=min_gain, looks=tuple(range(4, cap + 1, 2)))

    @property
    def max_rounds(self) -> int:
        return self.looks[-1]

    @property
    def alpha_per_look(self) -> float:
        return self.alpha / len(self.looks)

    def order(self, round_index: int) -> str:
        """"AB" or "BA" for the 0-based round: A B, B A, B A, A B, … (ABBA)."""
        return "AB" if round_index % 4 in (0, 3) else "BA"

    def to_dict(self) -> JsonDict:
        return {"alpha": self.alpha, "min_gain": self.min_gain, "looks": list(self.looks),
                "alpha_per_look": self.alpha_per_look, "test": "one-sided t on log(B/A) against log(1 + min_gain), "
                "Bonferroni over the looks, ABBA order"}


@dataclass
class Look:
    """The test at one look."""

    rounds: int
    t: float | None
    p_value: float
    decision: str  # verified | futile | continue

    def to_dict(self) -> JsonDict:
        return asdict(self)


def look(log_ratios: list[float], design: VerifyDesign, *, final: bool = False) -> Look:
    n = len(log_ratios)
    threshold = math.log1p(design.min_gain)
    mean = statistics.fmean(log_ratios)
    sd = statistics.stdev(log_ratios) if n > 1 else 0.0
    df = n - 1
    if sd == 0.0:  # every pair the same ratio: the sign of the margin decides (only with real rounds)
        t = math.inf if mean > threshold else -math.inf
        p = 0.0 if mean > threshold else 1.0
    else:
        t = (mean - threshold) / (sd / math.sqrt(n))
        p = t_sf(t, df)
    if p <= design.alpha_per_look:
        return Look(n, _finite(t), p, "verified")
    if final:
        return Look(n, _finite(t), p, "futile")
    upper = mean + (t_quantile(0.05, df) * sd / math.sqrt(n) if sd else 0.0)  # a 95 % upper bound
    if mean <= 0.0 or upper < threshold:
        return Look(n, _finite(t), p, "futile")
    return Look(n, _finite(t), p, "continue")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class Verdict:
    rounds: int
    ratios: list[float] = field(default_factory=list)  # per round: > 1 means B (the candidate) is better
    median: float | None = None  # the median ratio
    estimate: float | None = None  # exp(mean log ratio): the geometric-mean speedup
    ci_low: float | None = None  # two-sided 1 - 2*alpha interval of the geometric-mean speedup
    ci_high: float | None = None
    confidence: float = 0.90
    p_value: float | None = None
    significant: bool = False
    min_gain: float = 0.02
    alpha: float = 0.05
    orders: list[str] = field(default_factory=list)  # per round, "AB" or "BA"
    looks: list[JsonDict] = field(default_factory=list)
    a_values: list[float] = field(default_factory=list)
    b_values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> JsonDict:
        return asdict(self)


def judge(ratios: list[float], design: VerifyDesign | None = None) -> Verdict:
    """The verdict on a complete set of rounds (the sequential design's last look)."""
    design = design or VerifyDesign()
    v = Verdict(rounds=len(ratios), ratios=list(ratios), min_gain=design.min_gain, alpha=design.alpha,
                confidence=1 - 2 * design.alpha)
    if len(ratios) < design.looks[0] or any(r <= 0 for r in ratios):
        v.message = (f"{len(ratios)} complete round(s): too few to judge (at least {design.looks[0]})"
                     if len(ratios) < design.looks[0] else "a ratio that is not positive: nothing to judge")
        return v
    logs = [math.log(r) for r in ratios]
    return _fill(v, logs, look(logs, design, final=True), design)


def _fill(v: Verdict, logs: list[float], last: Look, design: VerifyDesign) -> Verdict:
    n = len(logs)
    mean = statistics.fmean(logs)
    sd = statistics.stdev(logs) if n > 1 else 0.0
    half = t_quantile(design.alpha, n - 1) * sd / math.sqrt(n) if n > 1 and sd else 0.0
    v.median = statistics.median(math.exp(x) for x in logs)
    v.estimate = math.exp(mean)
    v.ci_low, v.ci_high = math.exp(mean - half), math.exp(mean + half)
    v.p_value = last.p_value
    v.significant = last.decision == "verified"
    pct = (v.estimate - 1) * 100
    ci = f"[{v.ci_low:.3f}, {v.ci_high:.3f}]"
    if v.significant:
        v.message = (f"verified: {v.estimate:.3f}x ({pct:+.1f} %), {v.confidence:.0%} CI {ci} over {n} rounds "
                     f"(p={v.p_value:.4f} against a {design.min_gain:.0%} gain)")
    else:
        v.message = (f"not verified: {v.estimate:.3f}x ({pct:+.1f} %), {v.confidence:.0%} CI {ci} over {n} rounds "
                     f"(p={v.p_value:.3f} against a {design.min_gain:.0%} gain): the running configuration stays")
    return v


Measure = Callable[[], "float | None"]


def ab_verify(run_a: Measure, run_b: Measure, *, design: VerifyDesign | None = None,
              speedup: Callable[[float, float], float] = lambda b, a: b / a,
              should_stop: Callable[[], bool] = lambda: False,
              on_round: Callable[[int, float | None, float | None], None] | None = None) -> Verdict:
    """``run_a`` / ``run_b`` measure once (a fresh child each) and return the objective, or None
    for a failed run. ``speedup(b, a)`` > 1 means B is better. A failed B ends the verification
    "not verified" at once; a failed A drops that round (it still counts against the cap)."""
    design = design or VerifyDesign()
    ratios: list[float] = []
    orders: list[str] = []
    a_values: list[float] = []
    b_values: list[float] = []
    failures: list[str] = []
    looks: list[Look] = []
    last: Look | None = None
    for i in range(design.max_rounds):
        order = design.order(i)
        got: dict[str, float | None] = {}
        for arm in order:
            if should_stop():
                failures.append("stopped")
                break
            got[arm] = (run_a if arm == "A" else run_b)()
        if "stopped" in failures:
            break
        a, b = got.get("A"), got.get("B")
        if on_round is not None:
            on_round(i, a, b)
        if b is None:
            failures.append(f"round {i + 1}: the candidate failed")
            break
        if a is None:
            failures.append(f"round {i + 1}: the running configuration failed")
            continue
        ratio = speedup(b, a)
        if not (ratio > 0 and math.isfinite(ratio)):
            failures.append(f"round {i + 1}: no ratio ({a!r} vs {b!r})")
            continue
        a_values.append(a)
        b_values.append(b)
        ratios.append(ratio)
        orders.append(order)
        if len(ratios) in design.looks:
            last = look([math.log(r) for r in ratios], design, final=len(ratios) == design.max_rounds)
            looks.append(last)
            if last.decision != "continue":
                break
    v = Verdict(rounds=len(ratios), ratios=ratios, min_gain=design.min_gain, alpha=design.alpha,
                confidence=1 - 2 * design.alpha)
    if last is not None and len(ratios) >= design.looks[0]:
        v = _fill(v, [math.log(r) for r in ratios], last, design)
    else:
        v.message = f"{len(ratios)} complete round(s): too few to judge (at least {design.looks[0]})"
    if any("candidate" in f for f in failures):
        v.significant = False
        v.message = f"the candidate failed during verification ({failures[-1]}): nothing to apply"
    elif "stopped" in failures:
        v.significant = False
        v.message = f"stopped after {len(ratios)} round(s): no verdict"
    v.orders, v.looks = orders, [lk.to_dict() for lk in looks]
    v.a_values, v.b_values, v.failures = a_values, b_values, failures
    return v


def bootstrap_median_ci(values: list[float], *, confidence: float = 0.95, n_boot: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (descriptive: benchmarks' spread, not a test)."""
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(n_boot))
    lo = medians[int((1 - confidence) / 2 * (n_boot - 1))]
    hi = medians[int((1 + confidence) / 2 * (n_boot - 1))]
    return lo, hi
