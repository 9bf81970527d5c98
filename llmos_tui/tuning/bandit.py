"""The learner's maths: contexts, and Thompson sampling on the log of the rate with discounted
statistics (it follows a box that changes). No engine, no journal: plain data in, choices out."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

PROMPT_CLASSES = ((64, "short"), (512, "medium"), (10**12, "long"))
Arm = Hashable  # one choice of the knob(s): the learner's arms are (n_threads, n_threads_batch) pairs


@dataclass(frozen=True)
class Context:
    ui: str  # streaming | idle
    free_cores: int  # cores the other processes leave (rounded, at least 1)
    prompt: str  # short | medium | long

    @property
    def key(self) -> str:
        return f"{self.ui}/free{self.free_cores}/{self.prompt}"


def thread_grid(ncpu: int) -> list[int]:
    """Thread counts worth trying: powers of two, half, all but one, all (not every number on a big box)."""
    values = {1, ncpu, max(1, ncpu // 2), max(1, ncpu - 1)}
    p = 2
    while p < ncpu:
        values.add(p)
        p *= 2
    return sorted(values)


def _free_of(key: str) -> int | None:
    """The free-core count of a context key (``idle/free2/short`` -> 2)."""
    for part in key.split("/"):
        if part.startswith("free") and part[4:].isdigit():
            return int(part[4:])
    return None


def prompt_class(tokens: int) -> str:
    for limit, name in PROMPT_CLASSES:
        if tokens < limit:
            return name
    return "long"


# ---- the bandit ---------------------------------------------------------------------------
@dataclass
class _Stat:
    """Discounted mean and variance of log(rate) for one arm in one context."""

    w: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    n: int = 0

    def add(self, x: float, gamma: float) -> None:
        self.w *= gamma
        self.m2 *= gamma
        self.w += 1.0
        delta = x - self.mean
        self.mean += delta / self.w
        self.m2 += delta * (x - self.mean)
        self.n += 1

    def sd(self, prior_sd: float) -> float:
        if self.w < 2:
            return prior_sd
        var = self.m2 / max(self.w - 1.0, 1.0)
        # shrink towards the prior noise: a few equal samples do not mean no noise
        return math.sqrt((var * self.w + prior_sd**2 * 2) / (self.w + 2))


class KnobBandit:
    """Thompson sampling over one knob's values, per context key."""

    def __init__(self, values: list[Arm], baseline: Arm, *, gamma: float = 0.97, prior_sd: float = 0.15,
                 rng: random.Random | None = None,
                 prior: Callable[[str, Arm], float | None] | None = None) -> None:
        self.prior = prior  # (key, value) -> log-rate a context that has not tried it expects (else pooled)
        self.values = list(values)
        self.baseline = baseline if baseline in values else values[-1]
        self.gamma = gamma
        self.prior_sd = prior_sd
        self.stats: dict[str, dict[Arm, _Stat]] = {}
        self.rng = rng or random.Random(0xADA)

    def _ctx(self, key: str) -> dict[Arm, _Stat]:
        stats = self.stats.setdefault(key, {})
        for v in self.values:  # an arm added later (a new baseline) starts untried everywhere
            if v not in stats:
                stats[v] = _Stat()
        return stats

    def pooled(self, value: Arm, where: Callable[[str], bool] | None = None) -> float | None:
        """The arm's mean over every context (``where``: those whose key it accepts), weighted by
        how much each has seen of it (the prior of a context that has not tried it)."""
        w = m = 0.0
        for key, stats in self.stats.items():
            if where is not None and not where(key):
                continue
            s = stats.get(value)
            if s is not None and s.w > 0:
                m += s.mean * s.w
                w += s.w
        return m / w if w else None

    def expected(self, key: str, value: Arm) -> float | None:
        """What a context that has not tried ``value`` expects of it (log-rate): the prior hook's
        answer, else the arm's mean over every context."""
        if self.prior is not None:
            guess = self.prior(key, value)
            if guess is not None:
                return guess
        return self.pooled(value)

    def best(self, key: str, allowed: list[Arm]) -> Arm:
        """The arm with the highest estimated mean; untried arms lose to tried ones; a context
        that has tried nothing follows what the other contexts learned, else the baseline."""
        stats = self._ctx(key)
        tried = [v for v in allowed if stats[v].w > 0]
        if not tried:
            pooled = {v: self.expected(key, v) for v in allowed}
            known = [v for v in allowed if pooled[v] is not None]
            if known:
                return max(known, key=lambda v: pooled[v])
            return self.baseline if self.baseline in allowed else allowed[-1]
        return max(tried, key=lambda v: stats[v].mean)

    def sample(self, key: str, allowed: list[Arm]) -> Arm:
        stats = self._ctx(key)
        tried = [stats[v].mean for v in allowed if stats[v].w > 0]
        optimistic = max(tried) if tried else 0.0
        draws = {}
        for v in allowed:
            s = stats[v]
            if s.w > 0:
                draws[v] = self.rng.gauss(s.mean, s.sd(self.prior_sd) / math.sqrt(s.w))
            else:  # untried here: centred on what other contexts learned of it, else the best known; wide
                prior = self.expected(key, v)
                draws[v] = self.rng.gauss(optimistic if prior is None else prior, self.prior_sd * 2)
        return max(draws, key=draws.get)

    def update(self, key: str, value: Arm, rate: float) -> None:
        if rate and rate > 0:
            self._ctx(key)[value].add(math.log(rate), self.gamma)

    def estimate(self, key: str, value: Arm) -> float | None:
        s = self.stats.get(key, {}).get(value)
        return math.exp(s.mean) if s is not None and s.w > 0 else None

    def count(self, key: str, value: Arm) -> int:
        s = self.stats.get(key, {}).get(value)
        return s.n if s else 0


@dataclass
class Decision:
    context: Context
    n_threads: int
    n_threads_batch: int
    explored: bool
    applied: bool  # False in shadow mode (or when stopped): the baseline ran
    best: tuple[int, int]
    ts: float = field(default_factory=time.time)


__all__ = ["Context", "Decision", "KnobBandit", "PROMPT_CLASSES", "prompt_class", "thread_grid"]
