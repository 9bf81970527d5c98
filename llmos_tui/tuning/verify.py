"""Verify a winner against what runs now: A B A B … in fresh children, the paired ratio per round,
its median and a bootstrap confidence interval. Only a gain whose whole interval lies above 1 is
significant; anything else means the running configuration is already as good.

On a noisy machine (two runs of one configuration differ by about 11 %) one run of each proves
nothing; alternating cancels slow drift (thermal, other tenants) out of the pairs.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


@dataclass
class Verdict:
    rounds: int
    ratios: list[float] = field(default_factory=list)  # per round: > 1 means B (the candidate) is better
    median: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95
    significant: bool = False
    a_values: list[float] = field(default_factory=list)
    b_values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_median_ci(values: list[float], *, confidence: float = 0.95, n_boot: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (resampling the rounds)."""
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(n_boot))
    lo = medians[int((1 - confidence) / 2 * (n_boot - 1))]
    hi = medians[int((1 + confidence) / 2 * (n_boot - 1))]
    return lo, hi


def judge(ratios: list[float], *, confidence: float = 0.95, min_gain: float = 0.0, seed: int = 0) -> Verdict:
    v = Verdict(rounds=len(ratios), ratios=list(ratios), confidence=confidence)
    if len(ratios) < 2:
        v.message = f"{len(ratios)} complete round(s): too few to judge"
        return v
    v.median = statistics.median(ratios)
    v.ci_low, v.ci_high = bootstrap_median_ci(ratios, confidence=confidence, seed=seed)
    v.significant = v.ci_low > 1.0 + min_gain
    pct = (v.median - 1) * 100
    ci = f"[{v.ci_low:.3f}, {v.ci_high:.3f}]"
    if v.significant:
        v.message = f"verified: {v.median:.3f}x ({pct:+.1f} %), {confidence:.0%} CI {ci} over {len(ratios)} rounds"
    else:
        v.message = (f"not significant: {v.median:.3f}x ({pct:+.1f} %), {confidence:.0%} CI {ci} over "
                     f"{len(ratios)} rounds: the running configuration is already as good")
    return v


def ab_verify(run_a: Callable[[], float | None], run_b: Callable[[], float | None], *, rounds: int = 4,
              speedup: Callable[[float, float], float] = lambda b, a: b / a, confidence: float = 0.95,
              should_stop: Callable[[], bool] = lambda: False, on_round: Callable[[int, Any, Any], None] | None = None,
              seed: int = 0) -> Verdict:
    """``run_a`` / ``run_b`` measure once (a fresh child each) and return the objective, or None
    for a failed run. ``speedup(b, a)`` > 1 means B is better. A failed B makes the verdict
    "not significant" at once; a failed A drops that round."""
    ratios: list[float] = []
    a_values: list[float] = []
    b_values: list[float] = []
    failures: list[str] = []
    for i in range(rounds):
        if should_stop():
            failures.append("stopped")
            break
        a = run_a()
        if should_stop():
            failures.append("stopped")
            break
        b = run_b()
        if on_round is not None:
            on_round(i, a, b)
        if b is None:
            failures.append(f"round {i + 1}: the candidate failed")
            break
        if a is None:
            failures.append(f"round {i + 1}: the running configuration failed")
            continue
        a_values.append(a)
        b_values.append(b)
        ratios.append(speedup(b, a))
    verdict = judge(ratios, confidence=confidence, seed=seed)
    if failures and any("candidate" in f for f in failures):
        verdict.significant = False
        verdict.message = f"the candidate failed during verification ({failures[-1]}): nothing to apply"
    verdict.a_values, verdict.b_values, verdict.failures = a_values, b_values, failures
    return verdict
