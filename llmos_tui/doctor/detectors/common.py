"""Small helpers the built-in detector families share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos_tui.doctor.context import DetectorContext

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.telemetry.sample import GpuSample

MIB = 1024 * 1024


def _gpus(ctx: DetectorContext) -> "list[GpuSample]":
    return list(ctx.sample.gpus) if ctx.sample is not None else []


def _held(ctx: DetectorContext, key: str, condition: bool, need: int) -> int:
    """Count consecutive runs for which ``condition`` held (hysteresis inside a detector)."""
    count = ctx.memory.get(key, 0) + 1 if condition else 0
    ctx.memory[key] = count
    return count if count >= need else 0
