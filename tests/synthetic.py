"""SYNTHETIC speeds for tests of what the tuner does with a result (verdict, apply, journal, undo).

Each distinct configuration is loaded and benched for real ONCE (so it is known to load on the
demo model, with real load time, memory and facts); later runs of the same configuration reuse that
real measurement with the synthetic rate. The verdict's A/B rounds re-measure the same two
configurations many times: re-loading them for a number the test replaces anyway only cost time.
"""

from __future__ import annotations

import copy
from typing import Callable

from llmos_tui.engine.params import EngineParams
from llmos_tui.tuning.measure import BenchSpec, TrialResult, measure


def synthetic_speeds(rate: Callable[[EngineParams, int], float],
                     measure_fn: Callable[..., TrialResult] = measure) -> Callable[..., TrialResult]:
    """A measure function reporting ``rate(params, n)`` tok/s for the n-th run of a configuration."""
    real: dict[tuple, TrialResult] = {}
    runs: dict[tuple, int] = {}

    def run(params: EngineParams, spec: BenchSpec, **kw: object) -> TrialResult:
        key = (tuple(sorted(params.to_dict().items())), spec)
        if key not in real or not real[key].ok:
            real[key] = measure_fn(params, spec, **kw)
        result = copy.deepcopy(real[key])
        if result.ok:
            runs[key] = runs.get(key, 0) + 1
            value = rate(params, runs[key])
            result.rows = [{**r, "tg_tok_s": value} for r in result.rows]
            result.tg_tok_s = value
        return result

    return run
