"""A box that replays a recorded response surface (``scripts/record_surface.py``): for the
distributed-tuning benchmark and tests, where the engine is not the point.

A trial of a configuration draws one of its recorded repetitions at random (the real noise) and
takes its recorded wall time (scaled by ``time_scale``; ``sleep=False``: reported, not slept, for
the simulated clock); a configuration that failed when recorded fails again with its recorded
reason. Plain data only, so the object pickles into a Ray task on any node.
"""

from __future__ import annotations

import random
import time
from typing import Any, Mapping

JsonDict = dict[str, Any]


class SurfaceBox:
    """``describe / trial / verify / apply`` over one recorded surface (the ``calls`` of
    ``RayExecutor``; ``trial`` is also a ``LocalExecutor`` / ``SimulatedExecutor`` trial_fn)."""

    def __init__(self, names: list[str], reps: Mapping[tuple, list[float]], failed: Mapping[tuple, str],
                 wall_s: Mapping[tuple, float], space: JsonDict, *, hardware: JsonDict | None = None,
                 seed: int = 0, time_scale: float = 1.0, sleep: bool = False, fixed_s: float | None = None) -> None:
        self.names = list(names)
        self.reps = {tuple(k): list(v) for k, v in reps.items()}
        self.failed = {tuple(k): str(v) for k, v in failed.items()}
        self.wall = {tuple(k): float(v) for k, v in wall_s.items()}
        self.space = dict(space)
        self.hardware = dict(hardware or {"gpu_name": "", "gpu_count": 0, "model_key": "recorded.gguf:0",
                                          "cpu_count": 2})
        self.rng = random.Random(seed)
        self.time_scale = float(time_scale)
        self.sleep = sleep
        self.fixed_s = fixed_s

    def key(self, config: Mapping[str, Any]) -> tuple:
        return tuple(config.get(n) for n in self.names)

    def describe(self, box: str, spec: JsonDict) -> JsonDict:
        return {"hardware": dict(self.hardware), "space": dict(self.space), "defaults": {}, "build": "recorded",
                "timeout_s": 120.0}

    def trial(self, box: str, params: JsonDict, spec: JsonDict) -> JsonDict:
        key = self.key(params)
        took = (self.fixed_s if self.fixed_s is not None else self.wall.get(key, 0.0)) * self.time_scale
        if self.sleep and took > 0:
            time.sleep(took)
        base: JsonDict = {"box": box, "params": dict(params), "wall_s": took, "values": {}}
        if key in self.failed or key not in self.reps or not self.reps[key]:
            why = self.failed.get(key, "not recorded on this surface")
            return {**base, "ok": False, "outcome": "refused", "value": None, "reason": why}
        value = self.rng.choice(self.reps[key])
        return {**base, "ok": True, "outcome": "ok", "value": value, "reason": "", "values": {"tg": value}}

    def verify(self, box: str, candidate: JsonDict, spec: JsonDict) -> JsonDict:
        return {"significant": False, "message": "a recorded surface verifies nothing"}

    def apply(self, box: str, changes: JsonDict, reason: str) -> JsonDict:
        return {"ok": False, "message": "a recorded surface applies nothing"}


__all__ = ["SurfaceBox"]
