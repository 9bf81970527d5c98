"""A small isolation forest (Liu, Ting & Zhou 2008), the definition scikit-learn's
``IsolationForest.score_samples`` uses: ``-2 ** (-E[h(x)] / c(psi))``, about -0.5 for an
ordinary point and towards -1 for an outlier. Pure Python: the anomaly detector trains it on
a minute of telemetry (a few dozen rows of 3-8 numbers); scikit-learn and SciPy would add
~100 MB to the UI process for that.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

EULER = 0.5772156649015329


def average_path(n: int) -> float:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n points."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1) + EULER) - 2.0 * (n - 1) / n


class IsolationForest:
    def __init__(self, n_estimators: int = 50, max_samples: int = 256, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.rng = random.Random(seed)
        self.trees: list[tuple] = []
        self.psi = 0

    def fit(self, rows: Sequence[Sequence[float]]) -> "IsolationForest":
        data = [list(map(float, r)) for r in rows]
        if not data:
            raise ValueError("no rows to train on")
        self.psi = min(self.max_samples, len(data))
        limit = math.ceil(math.log2(max(2, self.psi)))
        self.trees = [self._grow(self.rng.sample(data, self.psi), 0, limit) for _ in range(self.n_estimators)]
        return self

    def _grow(self, rows: list[list[float]], depth: int, limit: int) -> tuple:
        if depth >= limit or len(rows) <= 1:
            return ("leaf", len(rows))
        spreads = [(i, min(c), max(c)) for i, c in enumerate(zip(*rows))]
        spreads = [s for s in spreads if s[2] > s[1]]
        if not spreads:
            return ("leaf", len(rows))
        feature, lo, hi = self.rng.choice(spreads)
        cut = self.rng.uniform(lo, hi)
        left = [r for r in rows if r[feature] < cut]
        right = [r for r in rows if r[feature] >= cut]
        return ("split", feature, cut, self._grow(left, depth + 1, limit), self._grow(right, depth + 1, limit))

    @staticmethod
    def _path(node: tuple, row: Sequence[float]) -> float:
        depth = 0
        while node[0] == "split":
            node = node[3] if row[node[1]] < node[2] else node[4]
            depth += 1
        return depth + average_path(node[1])

    def score_samples(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Minus the anomaly score of each row (scikit-learn's sign): lower is more abnormal."""
        c = average_path(self.psi)
        out = []
        for row in rows:
            mean = sum(self._path(t, row) for t in self.trees) / len(self.trees)
            out.append(-(2.0 ** (-mean / c)) if c else -0.5)
        return out
