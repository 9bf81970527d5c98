"""Service-level objectives: what a served engine delivers to N clients under a latency bound.

A bench of one fixed prompt says how fast a configuration is alone; a server is judged by what its
clients see. A service-level objective is spelled

    throughput@4 ttft_p99<=2s     generated tokens per second with 4 clients, TTFT p99 at most 2 s
    tg ttft_p99<=500ms            generation tok/s (the median request's) with 1 client, TTFT bound
    tg@2 ttft<=1.5s               ``ttft`` alone is the p99; ``ttft_p50``, ``ttft_p90``, ``ttft_max``

and measured by replaying the journal's real request shapes (``Journal.request_shapes``: the
prompt and generated tokens of what the daemon served, else of the cockpit's chats), not a fixed
prompt: ``clients`` closed-loop clients each send their next request as soon as the last one is
answered, in the journal's order; the engine answers one at a time in arrival order (the daemon's
gate does the same), so a request's TTFT includes its wait in the queue. A configuration whose
TTFT quantile breaks the bound is infeasible (``TrialResult(ok=False, outcome="slo")``): the
study learns it as a failure, it is never the kept best, never applied.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import ConfigError, EngineError, LlmosError, ModelError
from llmos_tui.tuning.measure import TrialResult

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import Supervisor

METRICS = ("throughput", "tg")
_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "max": 1.0}
_SPELLING = re.compile(r"^(?P<metric>[a-z]+)(?:@(?P<clients>\d+))?"
                       r"(?:\s+ttft(?:_(?P<q>p50|p90|p95|p99|max))?\s*<=\s*(?P<bound>[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s))?$")
# words for a replayed prompt (each request starts with its own number: no prefix-cache hits across requests)
_WORDS = ("the river carries light stone north through old green valleys where quiet farms keep small "
          "orchards and every morning the market opens early for bread cheese apples and news").split()


def is_service_objective(text: object) -> bool:
    """True for a service-level spelling (``throughput@4 ...``, ``tg ttft...``), not a plain name."""
    if not isinstance(text, str):
        return False
    t = text.strip().lower()
    return t.startswith("throughput") or ("ttft" in t and " " in t) or "@" in t


@dataclass(frozen=True)
class ServiceObjective:
    metric: str  # throughput (generated tok/s, all clients) | tg (the median request's generation tok/s)
    clients: int = 1
    quantile: float = 0.99  # of TTFT, over the replayed requests
    bound_ms: float | None = None  # TTFT at that quantile must not exceed it; None: no bound

    @classmethod
    def parse(cls, text: str) -> "ServiceObjective":
        raw = " ".join(str(text).strip().lower().split())
        m = _SPELLING.match(raw)
        if not m or m.group("metric") not in METRICS:
            raise ConfigError(f"bad service objective {text!r}: expected e.g. 'throughput@4 ttft_p99<=2s' or "
                              f"'tg ttft_p99<=500ms' (metrics: {', '.join(METRICS)})")
        clients = int(m.group("clients") or 1)
        if not 1 <= clients <= 64:
            raise ConfigError(f"bad service objective {text!r}: clients must be 1 to 64, got {clients}")
        bound = None
        if m.group("bound") is not None:
            bound = float(m.group("bound")) * (1000.0 if m.group("unit") == "s" else 1.0)
            if bound <= 0:
                raise ConfigError(f"bad service objective {text!r}: the TTFT bound must be positive")
        return cls(m.group("metric"), clients, _QUANTILES[m.group("q") or "p99"], bound)

    @property
    def quantile_name(self) -> str:
        return next(k for k, v in _QUANTILES.items() if v == self.quantile)

    @property
    def spelling(self) -> str:
        out = f"{self.metric}@{self.clients}"
        if self.bound_ms is not None:
            bound = f"{self.bound_ms / 1000:g}s" if self.bound_ms >= 1000 else f"{self.bound_ms:g}ms"
            out += f" ttft_{self.quantile_name}<={bound}"
        return out

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "clients": self.clients, "quantile": self.quantile,
                "bound_ms": self.bound_ms, "spelling": self.spelling}


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest rank (p99 of 12 requests: the slowest; max: the slowest)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def plan(shapes: Sequence[Mapping[str, object]], clients: int, requests: int | None = None,
         max_prompt: int | None = None, max_gen: int = 256) -> list[tuple[int, int]]:
    """The replayed requests: the journal's shapes (oldest first) in order, cycled to at least
    ``4 x clients`` requests (at least 8), each clipped to what the context holds."""
    usable = [(int(s.get("prompt_tokens") or 0), int(s.get("gen_tokens") or 0)) for s in shapes]  # type: ignore[call-overload]
    usable = [(max(1, p), g) for p, g in usable if g > 0]
    if not usable:
        raise ConfigError("the journal holds no answered requests to replay: serve some traffic first "
                          "(`llmos-tui serve`, or chat in the cockpit)")
    n = requests or max(8, 4 * clients, min(len(usable), 32))
    out = []
    for i in range(n):
        p, g = usable[i % len(usable)]
        g = min(g, max_gen)
        if max_prompt is not None:
            p = max(1, min(p, max_prompt - g - 8))
        out.append((p, g))
    return out


def prompt_text(index: int, words: int) -> str:
    body = " ".join(_WORDS[(index + i) % len(_WORDS)] for i in range(max(0, words - 1)))
    return f"{index} {body}"


def replay(sup: "Supervisor", requests: Sequence[tuple[int, int]], clients: int, *, timeout: float,
           tokens_per_word: float = 1.0) -> list[dict[str, float]]:
    """Replay ``requests`` with ``clients`` closed-loop clients on a loaded engine; one row per
    request: its shape asked (``want_prompt``, ``want_gen``), what the engine did (``prompt_tokens``,
    ``gen_tokens``, ``gen_tps``), its ``ttft_ms`` from arrival (queue included), ``done_s``."""
    lock = threading.Condition()
    state = {"next": 0, "ticket": 0, "serving": 0}
    rows: list[dict[str, float]] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout

    def client() -> None:
        while True:
            with lock:
                if state["next"] >= len(requests) or errors:
                    return
                index = state["next"]
                state["next"] += 1
                ticket = state["ticket"]
                state["ticket"] += 1
                arrived = time.perf_counter()
                while state["serving"] != ticket and not errors:  # first come, first served
                    if not lock.wait(timeout=max(0.01, deadline - time.monotonic())) and time.monotonic() > deadline:
                        errors.append(f"the replay ran past its {timeout:.0f} s")
                        lock.notify_all()
                        return
                if errors:
                    return
            want_p, want_g = requests[index]
            try:
                words = max(1, round(want_p / max(0.2, tokens_per_word)))
                reply = sup.chat([{"role": "user", "content": prompt_text(index, words)}],
                                 max_tokens=want_g, temperature=0.0, seed=index)
                reply.wait(max(1.0, deadline - time.monotonic()))
                if reply.status != "done":
                    raise EngineError(reply.error or f"request {index} ended {reply.status}")
                m = reply.metrics or {}
                first = reply.first_piece_at
                ttft = (first - arrived) * 1000 if first is not None else (time.perf_counter() - arrived) * 1000
                rows.append({"index": index, "want_prompt": want_p, "want_gen": want_g,
                             "prompt_tokens": float(m.get("prompt_tokens") or 0),
                             "gen_tokens": float(m.get("gen_tokens") or 0), "gen_tps": float(m.get("gen_tps") or 0),
                             "ttft_ms": ttft, "done_s": time.perf_counter() - t0})
            except (EngineError, TimeoutError) as exc:
                with lock:
                    errors.append(str(exc))
            finally:
                with lock:
                    state["serving"] += 1
                    lock.notify_all()

    threads = [threading.Thread(target=client, name=f"slo-client-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 5))
    if errors:
        raise EngineError(errors[0])
    return sorted(rows, key=lambda r: r["index"])


def summarise(rows: Sequence[Mapping[str, float]], slo: ServiceObjective) -> dict[str, float]:
    ttfts = [float(r["ttft_ms"]) for r in rows]
    wall = max(float(r["done_s"]) for r in rows) if rows else 0.0
    gen = sum(float(r["gen_tokens"]) for r in rows)
    rates = sorted(float(r["gen_tps"]) for r in rows if r["gen_tps"])
    return {"requests": len(rows), "throughput_tok_s": gen / wall if wall > 0 else 0.0,
            "tg_tok_s": rates[len(rates) // 2] if rates else 0.0,
            "ttft_p50_ms": quantile(ttfts, 0.5), "ttft_q_ms": quantile(ttfts, slo.quantile),
            "ttft_max_ms": max(ttfts) if ttfts else float("nan"), "wall_s": wall}


def measure_service(params: EngineParams, slo: ServiceObjective, shapes: Sequence[Mapping[str, object]], *,
                    timeout: float = 300.0, supervisor_factory: Callable[..., "Supervisor"] | None = None,
                    on_child: Callable[["Supervisor"], None] | None = None) -> TrialResult:
    """Load ``params`` in a fresh engine child, replay the journal's request shapes with the
    objective's clients, stop it. Never raises: a broken TTFT bound is ``outcome="slo"``."""
    from llmos_tui.engine.supervisor import Supervisor

    started = time.monotonic()
    try:
        params = params.validate()
        requests = plan(shapes, slo.clients, max_prompt=params.n_ctx or None)
    except ConfigError as exc:
        return TrialResult(False, "refused", str(exc))
    sup = (supervisor_factory or Supervisor)(params, load_timeout=max(1.0, timeout))
    if on_child is not None:
        on_child(sup)
    try:
        try:
            sup.start(params, timeout=max(1.0, timeout))
        except ModelError as exc:
            return TrialResult(False, "refused", str(exc), wall_s=time.monotonic() - started)
        # one calibration request (a warm-up too): how many tokens a word of the replayed text makes
        warm = sup.chat([{"role": "user", "content": prompt_text(10_000, 32)}], max_tokens=2, temperature=0.0)
        warm.wait(max(1.0, timeout - (time.monotonic() - started)))
        per_word = float((warm.metrics or {}).get("prompt_tokens") or 32) / 32 * 0.8  # the chat template's share
        rows = replay(sup, requests, slo.clients, timeout=max(1.0, timeout - (time.monotonic() - started)),
                      tokens_per_word=max(0.5, per_word))
        summary = summarise(rows, slo)
        value = summary["throughput_tok_s"] if slo.metric == "throughput" else summary["tg_tok_s"]
        result = TrialResult(True, "ok", "", tg_tok_s=summary["tg_tok_s"], ttft_ms=summary["ttft_q_ms"],
                             rows=[dict(r) for r in rows], wall_s=time.monotonic() - started,
                             facts={"service": {**summary, "value": value, "objective": slo.to_dict()},
                                    "runtime": dict(sup.runtime)})
        if slo.bound_ms is not None and summary["ttft_q_ms"] > slo.bound_ms:
            result.ok, result.outcome = False, "slo"
            result.reason = (f"TTFT {slo.quantile_name} {summary['ttft_q_ms']:.0f} ms over the bound of "
                             f"{slo.bound_ms:.0f} ms with {slo.clients} client(s) ({len(rows)} replayed requests)")
        return result
    except (LlmosError, TimeoutError) as exc:
        return TrialResult(False, "error", str(exc), wall_s=time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - a trial never takes the tuner down
        return TrialResult(False, "error", f"{type(exc).__name__}: {exc}", wall_s=time.monotonic() - started)
    finally:
        try:
            sup.stop()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["ServiceObjective", "is_service_objective", "measure_service", "plan", "quantile", "replay", "summarise"]
