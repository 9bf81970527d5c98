"""Telemetry as a whole: an isolation forest over the session's own healthy period (our own
small one, ``doctor/iforest.py``: no scikit-learn in the UI process)."""

from __future__ import annotations

import math

from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext
from llmos_tui.doctor.detectors.common import _held

ANOMALY_FEATURES = ("gpu0.util", "gpu0.mem_pct", "gpu0.power", "gpu0.temp", "gpu0.sm_clock",
                    "engine.rolling_tps", "host.cpu", "engine.cpu")


@detector("telemetry.anomaly", "info", needs=("sample",), timeout=5.0)
def anomaly(ctx: DetectorContext) -> list:
    """IsolationForest over the telemetry vector, trained on this session's own healthy start."""
    train_n = int(ctx.setting("train_samples", 60))
    features = [f for f in ANOMALY_FEATURES if ctx.latest(f) is not None]
    if len(features) < 3:
        return []
    model = ctx.memory.get("model")
    if model is None:
        if ctx.memory.get("unhealthy"):
            return []
        rows = [ctx.window_raw(f, train_n) for f in features]
        if min(len(r) for r in rows) < train_n:
            return []
        matrix = [list(col) for col in zip(*rows) if not any(math.isnan(v) for v in col)]
        if len(matrix) < train_n * 0.8:
            return []
        from llmos_tui.doctor.iforest import IsolationForest

        model = IsolationForest(n_estimators=50, seed=0).fit(matrix)
        ctx.memory.update(model=model, features=features, trained_on=len(matrix))
        return []
    features = ctx.memory["features"]
    row = [ctx.latest(f) for f in features]
    if any(v is None for v in row):
        return []
    score = float(model.score_samples([row])[0])
    threshold = float(ctx.setting("score", -0.6))
    if not _held(ctx, "anomalous", score < threshold, int(ctx.setting("samples", 3))):
        return []
    return [ctx.finding(
        f"telemetry unlike this session's healthy period (score {score:.2f})",
        evidence={"score": round(score, 3), "threshold": threshold, "vector": dict(zip(features, row)),
                  "trained_on": ctx.memory.get("trained_on")},
        fingerprint="telemetry.anomaly",
        likely=f"The telemetry now scores {score:.2f} against this session's healthy start (threshold "
               f"{threshold:.2f}) on {len(features)} series: likely something changed on the box.",
    )]
