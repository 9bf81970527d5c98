"""Quality of a compressed model against its source: perplexity and KL divergence, from logits.

Pure numpy, no llama.cpp: the engine child (``compress.evaluate``) hands these functions the
logits it read; the tests hand them a case small enough to compute by hand.

- Perplexity of a model on a text: ``exp(mean(-log p(next token)))`` over the scored positions.
- KL divergence of the next-token distributions, reference P (the source model, or the f16
  KV cache) against candidate Q: ``KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))`` per position,
  in nats, summarised by mean, median, 90th/99th percentile and maximum, with the share of
  positions where both pick the same most likely token (as llama.cpp's perplexity tool does).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from numpy.typing import ArrayLike


def log_softmax(logits: ArrayLike) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable: the row maximum is subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def token_nll(logits: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """Negative log-likelihood of each target token under its row of logits (nats)."""
    logp = log_softmax(logits)
    idx = np.asarray(targets, dtype=np.int64)
    if idx.shape[0] != logp.shape[0]:
        raise ValueError(f"{logp.shape[0]} rows of logits but {idx.shape[0]} target tokens")
    return -logp[np.arange(logp.shape[0]), idx]


def perplexity(logits: ArrayLike, targets: ArrayLike) -> float:
    """exp of the mean negative log-likelihood of ``targets`` (one per row of ``logits``)."""
    nll = token_nll(logits, targets)
    if nll.size == 0:
        raise ValueError("no tokens to score")
    return float(math.exp(nll.mean()))


def kl_per_position(ref_logits: ArrayLike, cand_logits: ArrayLike) -> np.ndarray:
    """KL(P_ref || P_cand) for each row, in nats (never negative: rounding is clipped at 0)."""
    lp = log_softmax(ref_logits)
    lq = log_softmax(cand_logits)
    if lp.shape != lq.shape:
        raise ValueError(f"logit shapes differ: reference {lp.shape}, candidate {lq.shape}")
    p = np.exp(lp)
    return np.maximum((p * (lp - lq)).sum(axis=1), 0.0)


def same_top(ref_logits: ArrayLike, cand_logits: ArrayLike) -> np.ndarray:
    """1.0 where both distributions have the same most likely token, else 0.0."""
    a = np.asarray(ref_logits)
    b = np.asarray(cand_logits)
    if a.ndim == 1:
        a, b = a[None, :], b[None, :]
    return (a.argmax(axis=1) == b.argmax(axis=1)).astype(np.float64)


@dataclass
class KLStats:
    """KL divergence over a text, summarised."""

    mean: float
    median: float
    p90: float
    p99: float
    max: float
    same_top: float  # share of positions with the same most likely token
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarise_kl(kl: Iterable[float], top: Iterable[float]) -> KLStats:
    values = np.asarray(list(kl) if not isinstance(kl, np.ndarray) else kl, dtype=np.float64)
    tops = np.asarray(list(top) if not isinstance(top, np.ndarray) else top, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no positions to compare")
    return KLStats(
        mean=float(values.mean()),
        median=float(np.median(values)),
        p90=float(np.percentile(values, 90)),
        p99=float(np.percentile(values, 99)),
        max=float(values.max()),
        same_top=float(tops.mean()) if tops.size else float("nan"),
        n=int(values.size),
    )


class Accumulator:
    """Collects one text's scores chunk by chunk (the child sees one chunk of logits at a time)."""

    def __init__(self) -> None:
        self.nll: list[np.ndarray] = []
        self.kl: list[np.ndarray] = []
        self.top: list[np.ndarray] = []

    def add_nll(self, logits: ArrayLike, targets: ArrayLike) -> None:
        self.nll.append(token_nll(logits, targets))

    def add_kl(self, ref_logits: ArrayLike, cand_logits: ArrayLike) -> None:
        self.kl.append(kl_per_position(ref_logits, cand_logits))
        self.top.append(same_top(ref_logits, cand_logits))

    @property
    def n_scored(self) -> int:
        return int(sum(a.size for a in self.nll))

    def perplexity(self) -> float:
        nll = np.concatenate(self.nll) if self.nll else np.zeros(0)
        if nll.size == 0:
            raise ValueError("no tokens to score")
        return float(math.exp(nll.mean()))

    def ppl_stderr(self) -> float:
        """Standard error of the perplexity (delta method on the mean NLL)."""
        nll = np.concatenate(self.nll) if self.nll else np.zeros(0)
        if nll.size < 2:
            return float("nan")
        se_mean = nll.std(ddof=1) / math.sqrt(nll.size)
        return float(math.exp(nll.mean()) * se_mean)

    def kl_stats(self) -> KLStats | None:
        if not self.kl:
            return None
        return summarise_kl(np.concatenate(self.kl), np.concatenate(self.top))
