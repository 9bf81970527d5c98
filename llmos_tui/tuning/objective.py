"""What "faster" means for a study: one number per measured rep, and which way is better.

- ``tg``: generation tok/s (higher is better)
- ``pp``: prompt-processing tok/s (higher is better)
- ``ttft``: time to first token in ms for the bench's prompt length (lower is better)
- ``mix``: the rate of a request whose tokens are ``weights`` prompt : generated — the weighted
  harmonic mean ``1 / (w_pp / pp + w_tg / tg)``, since a request's time is the sum of both phases
- ``traffic``: ``mix`` with the weights this operator's chats really had (the prompt and generated
  tokens of the replies in the journal)
- a service-level objective (``tuning.slo``), e.g. ``throughput@4 ttft_p99<=2s`` or
  ``tg ttft_p99<=500ms``: measured by replaying the journal's request shapes with N clients; a
  configuration that breaks the TTFT bound is infeasible
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from llmos_tui.errors import ConfigError
from llmos_tui.tuning.slo import ServiceObjective, is_service_objective

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.tuning.measure import TrialResult

OBJECTIVES = ("tg", "pp", "ttft", "mix", "traffic")


@dataclass(frozen=True)
class Objective:
    name: str = "tg"
    weights: Mapping[str, float] = field(default_factory=lambda: {"pp": 0.5, "tg": 0.5})
    note: str = ""  # where the weights came from (traffic)
    service: ServiceObjective | None = None  # a service-level objective (name: its spelling)

    @property
    def maximize(self) -> bool:
        return self.name != "ttft"

    @property
    def prior_name(self) -> str:
        """Which objective's llama.cpp prior (``tuning.prior``) fits: a service's throughput mixes
        prompts and generation; its tg is generation."""
        if self.service is not None:
            return "tg" if self.service.metric == "tg" else "mix"
        return self.name

    @property
    def unit(self) -> str:
        return {"tg": "tok/s", "pp": "tok/s", "ttft": "ms"}.get(self.name, "tok/s")

    @property
    def label(self) -> str:
        if self.name in ("mix", "traffic"):
            w = self.weights
            return f"{self.name}(pp {w.get('pp', 0):.2f} : tg {w.get('tg', 0):.2f})"
        return self.name

    def of(self, values: Mapping[str, object]) -> float | None:
        """The objective of one rep row, or of a result's means (keys pp_tok_s, tg_tok_s, ttft_ms)."""
        pp, tg, ttft = values.get("pp_tok_s"), values.get("tg_tok_s"), values.get("ttft_ms")
        if self.name == "tg":
            return float(tg) if tg else None
        if self.name == "pp":
            return float(pp) if pp else None
        if self.name == "ttft":
            return float(ttft) if ttft else None
        w_pp, w_tg = float(self.weights.get("pp", 0.0)), float(self.weights.get("tg", 0.0))
        if (w_pp and not pp) or (w_tg and not tg) or (w_pp + w_tg) <= 0:
            return None
        return (w_pp + w_tg) / ((w_pp / pp if w_pp else 0.0) + (w_tg / tg if w_tg else 0.0))

    def value(self, result: "TrialResult") -> float | None:
        """The trial's value: the mean over its reps of the per-rep objective (a service-level
        objective: the replay's throughput or tg; None when it broke its bound)."""
        if self.service is not None:
            return _service_value(result)
        reps = self.rep_values(result)
        if reps:
            return sum(reps) / len(reps)
        return self.of(_means(result))

    def rep_values(self, result: "TrialResult") -> list[float]:
        if self.service is not None:  # one replay is one value
            v = _service_value(result)
            return [v] if v is not None else []
        rows = result.get("rows") if isinstance(result, Mapping) else getattr(result, "rows", None)
        values = [self.of(r) for r in rows or []]
        return [v for v in values if v is not None]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def speedup(self, new: float, old: float) -> float:
        """> 1 when ``new`` is better than ``old``, in either direction of the objective."""
        return new / old if self.maximize else old / new

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "weights": dict(self.weights), "maximize": self.maximize,
                                  "note": self.note}
        if self.service is not None:
            out["service"] = self.service.to_dict()
        return out


def _service_value(result: "TrialResult") -> float | None:
    ok = result.get("ok", True) if isinstance(result, Mapping) else getattr(result, "ok", True)
    facts = result.get("facts") if isinstance(result, Mapping) else getattr(result, "facts", None)
    service = (facts or {}).get("service") if isinstance(facts, Mapping) else None
    if not ok or not isinstance(service, Mapping):
        return None
    value = service.get("value")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _means(result: "TrialResult") -> dict[str, object]:
    if isinstance(result, Mapping):
        return dict(result)
    return {k: getattr(result, k, None) for k in ("pp_tok_s", "tg_tok_s", "ttft_ms")}


def parse_weights(text: str | None) -> dict[str, float]:
    """``"pp=0.8,tg=0.2"`` -> {"pp": 0.8, "tg": 0.2}."""
    if not text:
        return {"pp": 0.5, "tg": 0.5}
    weights: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in ("pp", "tg"):
            raise ConfigError(f"bad weights {text!r}: expected pp=W,tg=W")
        try:
            weights[key] = float(raw)
        except ValueError:
            raise ConfigError(f"bad weight {raw!r} for {key}: expected a number") from None
        if weights[key] < 0:
            raise ConfigError(f"weight {key} must not be negative, got {raw}")
    if sum(weights.values()) <= 0:
        raise ConfigError(f"bad weights {text!r}: at least one must be positive")
    return {"pp": weights.get("pp", 0.0), "tg": weights.get("tg", 0.0)}


def make_objective(name: str, *, weights: Mapping[str, float] | None = None,
                   traffic: Mapping[str, object] | None = None) -> Objective:
    """Build the objective; ``traffic`` is ``Journal.chat_traffic()`` for ``traffic``; a
    service-level spelling (``throughput@4 ttft_p99<=2s``) is parsed (a bad one: one clear line)."""
    if is_service_objective(name):
        slo = ServiceObjective.parse(name)
        return Objective(slo.spelling, {"pp": 0.5, "tg": 0.5}, service=slo,
                         note=f"{slo.clients} client(s) replaying the journal's request shapes")
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    if name == "traffic":
        t = traffic or {}
        p, g = int(t.get("prompt_tokens") or 0), int(t.get("gen_tokens") or 0)
        if p + g <= 0:
            return Objective("traffic", {"pp": 0.5, "tg": 0.5},
                             note="no chat traffic in the journal yet: equal weights (as mix)")
        return Objective("traffic", {"pp": p / (p + g), "tg": g / (p + g)},
                         note=f"{t.get('replies', 0)} replies in the journal: {p} prompt and {g} generated tokens")
    return Objective(name, dict(weights) if weights else {"pp": 0.5, "tg": 0.5})
