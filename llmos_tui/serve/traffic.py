"""What each API request put on the engine: Prometheus series, the journal, the doctor's events.

- ``/metrics``: requests by route and HTTP status, prompt and completion tokens, TTFT, request
  and queue-wait durations, the last generation rate, the queue and the hold (a collector that
  reads the gate at scrape time)
- the journal: one chat per daemon run ("serve: API traffic (pid N)") with one assistant message
  per answered request carrying its metrics, so the tuner's ``traffic`` objective weighs real
  prompt and reply lengths. The text is journaled only with ``[serve] log_prompts = true``.
- the engine's subscribers (the doctor): a ``serve_request`` event per request (read by the
  doctor's ``traffic`` detectors: tokens/s under concurrency, TTFT on long prompts, queue growth)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from llmos_tui.engine.supervisor import Json, Supervisor

if TYPE_CHECKING:
    from llmos_tui.journal.store import Journal
    from llmos_tui.journal.writer import JournalWriter
    from llmos_tui.serve.gate import Gate

log = logging.getLogger("llmos_tui.serve.traffic")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class RequestRecord:
    """One finished API request (what the journal and the metrics keep; text only when allowed)."""

    route: str  # chat or completion
    status: int  # the HTTP status the client saw (200 even when a stream ended in an error event)
    outcome: str  # done, stop, length, cancelled (client gone), cut, crashed, error, refused, quarantined
    stream: bool
    queued_s: float = 0.0
    wall_s: float = 0.0
    metrics: dict[str, Json] = field(default_factory=dict)
    prompt: str = ""
    reply: str = ""


class _GateCollector:
    def __init__(self, gate: "Gate") -> None:
        self.gate = gate

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.gate.stats()
        yield GaugeMetricFamily("llmos_serve_queue_requests", "API requests waiting for the engine", value=stats.queued)
        yield GaugeMetricFamily("llmos_serve_in_flight_requests", "API requests the engine is answering",
                                value=stats.in_flight)
        yield GaugeMetricFamily("llmos_serve_engine_held", "1 while a change, restart or study holds the engine",
                                value=1 if stats.hold else 0)


class Traffic:
    def __init__(self, supervisor: Supervisor, writer: "JournalWriter | None", gate: "Gate", *,
                 log_prompts: bool = False, registry: CollectorRegistry | None = None) -> None:
        self.supervisor = supervisor
        self.writer = writer
        self.log_prompts = log_prompts
        self.registry = registry or CollectorRegistry()
        self.gate = gate
        self._chat_id: int | None = None
        r = self.registry
        self.requests = Counter("llmos_serve_requests", "API requests by route, HTTP status and outcome",
                                ["route", "code", "outcome"], registry=r)
        self.prompt_tokens = Counter("llmos_serve_prompt_tokens", "prompt tokens of answered API requests", registry=r)
        self.completion_tokens = Counter("llmos_serve_completion_tokens", "tokens generated for API requests",
                                         registry=r)
        self.ttft = Histogram("llmos_serve_time_to_first_token_seconds", "time to the first token (engine)",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.duration = Histogram("llmos_serve_request_duration_seconds", "API request time, queue included",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("llmos_serve_queue_wait_seconds", "time an API request waited for the engine",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.gen_rate = Gauge("llmos_serve_last_generation_tokens_per_second",
                              "generation rate of the last answered API request", registry=r)
        r.register(_GateCollector(gate))

    def record(self, rec: RequestRecord) -> None:
        """Count one request and queue its journal row (never blocks: the writer has its own thread)."""
        self.requests.labels(rec.route, str(rec.status), rec.outcome).inc()
        self.duration.observe(rec.wall_s)
        if rec.outcome not in ("refused", "quarantined"):  # never queued
            self.queue_wait.observe(rec.queued_s)
        m = rec.metrics
        prompt, gen = _number(m.get("prompt_tokens")), _number(m.get("gen_tokens"))
        if prompt:
            self.prompt_tokens.inc(prompt)
        if gen:
            self.completion_tokens.inc(gen)
        ttft = _number(m.get("ttft_ms"))
        if ttft:
            self.ttft.observe(ttft / 1000)
        rate = _number(m.get("gen_tps"))
        if rate:
            self.gen_rate.set(rate)
        event: dict[str, Json] = {"route": rec.route, "status": rec.status, "outcome": rec.outcome,
                                  "stream": rec.stream, "queued_ms": round(rec.queued_s * 1000, 1),
                                  "wall_ms": round(rec.wall_s * 1000, 1), "prompt_tokens": prompt,
                                  "gen_tokens": gen, "ttft_ms": ttft, "gen_tps": rate,
                                  # for the doctor's traffic detectors: the prompt tokens really evaluated
                                  # (TTFT per token) and the clients waiting behind this one (concurrency)
                                  "prompt_eval_tokens": _number(m.get("prompt_eval_tokens")) or prompt,
                                  "queue_depth": self.gate.stats().queued}
        try:
            self.supervisor.publish("serve_request", **event)
        except Exception:  # noqa: BLE001 - a subscriber's bug never fails a request
            log.exception("serve_request event failed")
        if self.writer is not None and m and rec.outcome != "refused":
            self._journal(rec, event)

    def _journal(self, rec: RequestRecord, event: dict[str, Json]) -> None:
        metrics: dict[str, Json] = {**rec.metrics, "source": "serve", "route": rec.route, "stream": rec.stream,
                                    "queued_ms": event["queued_ms"], "http_status": rec.status}
        model = self.supervisor.model_info.name if self.supervisor.model_info else ""
        status = "done" if rec.outcome in ("done", "stop", "length") else (
            "cancelled" if rec.outcome in ("cancelled", "cut") else "interrupted" if rec.outcome == "crashed" else "error")
        keep_text = self.log_prompts
        prompt, reply = rec.prompt, rec.reply
        ts = time.time()

        def write(j: "Journal") -> None:
            if self._chat_id is None:
                self._chat_id = j.create_chat(f"serve: API traffic (pid {os.getpid()})", model=model)
            if keep_text:
                j.add_message(self._chat_id, "user", prompt, ts=ts)
            j.add_message(self._chat_id, "assistant", reply if keep_text else "", metrics=metrics, status=status, ts=ts)

        assert self.writer is not None
        try:
            self.writer.submit(write)
        except Exception as exc:  # noqa: BLE001 - a closed journal never fails a request
            log.warning("request not journaled: %s", exc)


def _number(value: Json) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
