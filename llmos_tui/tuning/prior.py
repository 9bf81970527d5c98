"""What llama.cpp's design says about where the fastest configuration lies: a prior over the space.

A study does not start blind. Facts about llama.cpp, not about any one recording:

- a single-token decode runs on ``n_threads``, a batch (the prompt) on ``n_threads_batch``
  (``llama_context``: ``n_tokens == 1 ? n_threads : n_threads_batch``). So for generation the
  prompt's knobs (``n_threads_batch``, ``n_batch``, ``n_ubatch``) do not matter, and for prompt
  processing ``n_threads`` does not;
- generation is memory-bound and its threads synchronise every token: it peaks near the number of
  *physical* cores (an SMT sibling adds little and a thread on a busy core stalls the rest);
  prompt processing is compute-bound and peaks near the number of *logical* cores;
- every layer offloaded to a GPU that fits is faster than running it on the CPU (the space only
  holds offloads that fit), so more layers are more likely best;
- on a GPU, flash attention is usually faster; on a CPU it can go either way.

``Preference`` turns these into a weight per configuration (1 = as likely as any). The study
draws its initial design from it and multiplies its acquisition by ``weight ** (beta / n)``
(πBO, Hvarfner et al., ICLR 2022): the prior steers the first trials and fades as measurements
accumulate, so a machine where it is wrong costs a few trials, not the study. Neutral knobs (the
cache types, batch sizes for generation) get weight 1 throughout.

Pure Python; no scikit-optimize here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

# which knobs each objective's time depends on (the others are neutral: weight 1)
_GEN = ("n_threads", "n_gpu_layers", "flash_attn")
_PROMPT = ("n_threads_batch", "n_gpu_layers", "flash_attn", "n_ubatch")
RELEVANT = {"tg": _GEN, "pp": _PROMPT, "ttft": _PROMPT}
# the knobs an objective's own measurement never touches (llama.cpp: a one-token decode runs on
# n_threads with no batch to split; a prompt on n_threads_batch): a study of that objective keeps
# them at the running values instead of spending trials on them
UNTOUCHED = {"tg": ("n_threads_batch", "n_batch", "n_ubatch"), "pp": ("n_threads",), "ttft": ("n_threads",)}
WHY_UNTOUCHED = {"tg": "a one-token decode does not use them", "pp": "a prompt runs on n_threads_batch",
                 "ttft": "a prompt runs on n_threads_batch"}  # the note a study prints for its held knobs


def held_knobs(objective: str, *, service: bool = False) -> tuple[str, ...]:
    """The knobs a study of ``objective`` keeps at the running values (``UNTOUCHED``); none for a
    service-level objective, whose TTFT bound depends on the prompt's knobs as well."""
    return () if service else UNTOUCHED.get(objective, ())


def held_values(objective: str, params: object, *, service: bool = False) -> dict[str, object]:
    """``held_knobs`` with their values in ``params`` (the running EngineParams)."""
    return {k: getattr(params, k) for k in held_knobs(objective, service=service)}


@dataclass
class Preference:
    """A soft prior: ``weight(config)`` in (0, 1], the product of one factor per knob."""

    physical_cores: int
    logical_cores: int
    objective: str = "tg"
    gpu: bool = False
    max_gpu_layers: int | None = None
    sharpness: float = 1.5  # per halving or doubling away from the preferred thread count
    floor: float = 0.05  # no configuration is ruled out by the prior
    notes: list[str] = field(default_factory=list)

    @classmethod
    def for_machine(cls, objective: str, *, logical_cores: int, physical_cores: int | None = None,
                    gpu: bool = False, max_gpu_layers: int | None = None) -> "Preference":
        logical = max(1, int(logical_cores))
        physical = max(1, min(logical, int(physical_cores or logical)))
        return cls(physical, logical, objective, gpu, max_gpu_layers)

    def _relevant(self, name: str) -> bool:
        knobs = RELEVANT.get(self.objective)
        return True if knobs is None else name in knobs  # mixes: every knob

    def _threads(self, value: object, want: int) -> float:
        try:
            v = max(1, int(value))
        except (TypeError, ValueError):
            return 1.0
        return math.exp(-self.sharpness * abs(math.log2(v) - math.log2(want)))

    def factor(self, name: str, value: object) -> float:
        if not self._relevant(name):
            return 1.0
        if name == "n_threads":
            return self._threads(value, self.physical_cores)
        if name == "n_threads_batch":
            return self._threads(value, self.logical_cores)
        if name == "n_gpu_layers" and self.max_gpu_layers:
            try:  # -1: every layer
                share = 1.0 if int(value) < 0 else max(0.0, min(1.0, int(value) / self.max_gpu_layers))
            except (TypeError, ValueError):
                return 1.0
            return math.exp(-3.0 * (1.0 - share))
        if name == "flash_attn" and self.gpu:
            return 1.0 if value == "on" else 0.5
        return 1.0

    def weight(self, config: Mapping[str, object]) -> float:
        w = 1.0
        for name, value in config.items():
            w *= self.factor(name, value)
        return max(self.floor, w)

    def describe(self) -> str:
        parts = []
        if self._relevant("n_threads"):
            parts.append(f"generation threads near {self.physical_cores} (physical cores)")
        if self._relevant("n_threads_batch"):
            parts.append(f"prompt threads near {self.logical_cores} (logical cores)")
        if self.gpu and self.max_gpu_layers:
            parts.append("every layer that fits offloaded")
        if self.gpu:
            parts.append("flash attention on")
        return "prior: " + ", ".join(parts) if parts else "prior: none (every configuration alike)"

    def to_dict(self) -> dict[str, object]:
        return {"physical_cores": self.physical_cores, "logical_cores": self.logical_cores,
                "objective": self.objective, "gpu": self.gpu, "max_gpu_layers": self.max_gpu_layers,
                "describe": self.describe()}


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil missing or the platform does not say
        return None


__all__ = ["Preference", "RELEVANT", "UNTOUCHED", "WHY_UNTOUCHED", "held_knobs", "held_values", "physical_cores"]
