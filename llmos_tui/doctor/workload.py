"""Verification that proves a repair: the metric that raised the finding, measured again on a
workload of the same shape (the operator's own last request when the doctor saw it, else a
request with the same prompt length and max tokens), against the detector's own baseline.

The canary stays the liveness check (it runs first, in the change transaction or after a
restart); this is the second half: "is the trouble gone", not "does the engine answer".
"""

from __future__ import annotations

import collections
import statistics
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

from llmos_tui.engine.probe import run_canary

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import Supervisor

# a check after a change: None when it holds, else why not
Verifier = Callable[[], "str | None"]

# a word the demo model's and most BPE tokenizers keep as one token (with its space)
_FILLER = "the"


@dataclass
class Workload:
    """The shape of a request: its messages (or a prompt length to fill), and its max tokens."""

    max_tokens: int
    prompt_tokens: int = 0
    messages: list[dict[str, str]] | None = None
    source: str = "request"  # chat (the operator's own messages) | request (its shape, filled)

    def wire_messages(self) -> list[dict[str, str]]:
        if self.messages:
            return [dict(m) for m in self.messages]
        words = max(1, self.prompt_tokens - 8)  # the chat template's own tokens
        return [{"role": "user", "content": " ".join([_FILLER] * words)}]

    def summary(self) -> dict[str, object]:
        return {"source": self.source, "prompt_tokens": self.prompt_tokens, "max_tokens": self.max_tokens}


@dataclass
class WorkloadLog:
    """The shapes of the operator's recent requests (never the doctor's own probes)."""

    keep: int = 20
    items: "collections.deque[Workload]" = field(default_factory=lambda: collections.deque(maxlen=20))
    _chat_first: bool = False  # the chat's record of a reply came before the engine's request_done

    def on_request(self, metrics: Mapping[str, float | int | None]) -> None:
        prompt = int(metrics.get("prompt_tokens") or 0)
        gen = int(metrics.get("gen_tokens") or metrics.get("sampled_tokens") or 0)
        if self._chat_first and self.items and self.items[-1].prompt_tokens == prompt:
            self._chat_first = False  # the same request, already recorded with its messages
            return
        self._chat_first = False
        if gen <= 0:
            return
        self.items.append(Workload(max_tokens=gen, prompt_tokens=prompt))

    def on_chat(self, messages: list[dict[str, str]], max_tokens: int | None,
                metrics: Mapping[str, float | int | None]) -> None:
        """A chat reply ended: its prompt was ``messages``; attach them to the matching request."""
        gen = int(metrics.get("gen_tokens") or metrics.get("sampled_tokens") or 0)
        shape = Workload(max_tokens=max(1, min(int(max_tokens or gen or 1), max(gen, 1))),
                         prompt_tokens=int(metrics.get("prompt_tokens") or 0), messages=messages, source="chat")
        if self.items and self.items[-1].prompt_tokens == shape.prompt_tokens and self.items[-1].messages is None:
            self.items[-1] = shape
        else:
            self.items.append(shape)
            self._chat_first = True

    def typical(self) -> Workload | None:
        """The most recent request whose shape is typical (median prompt length) of the window."""
        items = list(self.items)
        if not items:
            return None
        med = statistics.median(w.prompt_tokens for w in items)
        return min(reversed(items), key=lambda w: abs(w.prompt_tokens - med))


@dataclass
class MetricCheck:
    """Run ``n`` requests of ``workload`` (after one warm-up) and judge ``metric`` against ``target``."""

    supervisor: "Supervisor"
    metric: str  # gen_tps (higher is better) | ttft_ms (lower is better)
    target: float
    workload: Workload
    n: int = 3
    timeout: float = 60.0
    probe_flag: threading.Event | None = None  # set while the probes run (not operator traffic)
    measured: list[float] = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return self.metric.endswith("tps")

    def __call__(self) -> str | None:
        self.measured.clear()
        messages = self.workload.wire_messages()
        for i in range(self.n + 1):
            if self.probe_flag is not None:
                self.probe_flag.set()
            try:
                result = run_canary(self.supervisor, prompt=messages, max_tokens=self.workload.max_tokens,
                                    timeout=self.timeout, ready_timeout=10.0)
            finally:
                if self.probe_flag is not None:
                    self.probe_flag.clear()
            if not result.ok:
                return f"verification request {i + 1} of {self.n + 1}: {result.reason}"
            if i == 0:
                continue  # the first request after a load warms the caches up; not counted
            value = getattr(result, self.metric, None)
            if value is None:
                return f"verification request {i + 1}: the engine reported no {self.metric}"
            self.measured.append(float(value))
        value = statistics.median(self.measured)
        shape = f"{self.n} requests of {self.workload.prompt_tokens} prompt tokens, {self.workload.max_tokens} max tokens"
        if self.higher_is_better and value < self.target:
            return f"{self.metric} {value:.1f} is still below {self.target:.1f} ({shape})"
        if not self.higher_is_better and value > self.target:
            return f"{self.metric} {value:.1f} is still above {self.target:.1f} ({shape})"
        return None

    def describe(self) -> dict[str, object]:
        return {"metric": self.metric, "target": round(self.target, 2), "measured": [round(v, 2) for v in self.measured],
                "workload": self.workload.summary()}


def target_for(metric: str, evidence: Mapping[str, object], settings: Mapping[str, object]) -> float | None:
    """The value the metric must reach again: the detector's own baseline, less its own tolerance."""
    if metric.endswith("tps"):
        base = evidence.get("baseline_median")
        if base is None:
            return None
        return float(base) * (1.0 - float(settings.get("drop", evidence.get("drop", 0.10))))
    if metric.endswith("_ms"):
        limit = evidence.get("limit_ms")
        return float(limit) if limit is not None else None
    return None


def metric_check(supervisor: "Supervisor | None", evidence: Mapping[str, object], settings: Mapping[str, object],
                 workload: Workload | None, metric: str | None,
                 probe_flag: threading.Event | None = None) -> Verifier | None:
    """The check for a finding raised by ``metric`` (None when there is nothing to measure against)."""
    if not metric or supervisor is None:
        return None
    target = target_for(metric, evidence, settings)
    if target is None:
        return None
    if workload is None:
        shape = evidence.get("workload") or {}
        if not shape.get("max_tokens"):
            return lambda: (f"no workload recorded for {metric}: the repair cannot be verified against the metric "
                            f"that raised the finding")
        workload = Workload(int(shape["max_tokens"]), int(shape.get("prompt_tokens") or 0))
    return MetricCheck(supervisor, metric, target, workload, n=int(settings.get("verify_requests", 3)),
                       probe_flag=probe_flag)
