"""A measured fit: the engine's real peak memory beside the header's estimate, and the correction
the pre-flight takes from what was seen before for this model on this device.

The estimate (engine/vram.py) reads the header only; real engines add what no header says (the
runtime, allocator slack, compute buffers larger than the guess). Every load and every tuning trial
records a reading, ``{"device", "model", "estimate_mib", "measured_mib", "source"}``: on a GPU the
child's VRAM from NVML, on a CPU the child's peak RSS. ``correction(readings, model, device)`` is the
median of ``measured - estimate`` over the latest readings of that model and device; the pre-flight
adds it to the estimate before it compares with the budget, and says so.

``llama.cpp --fit`` measures by trial allocation; this measures by what the journal has seen, so a
configuration that a corrected estimate refuses is never loaded to find out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from llmos_tui.journal.studies import model_key  # the same key the journal's studies use
from llmos_tui.engine.vram import MIB, ModelShape, VramEstimate, estimate
from llmos_tui.jsontypes import JsonDict

if TYPE_CHECKING:
    from llmos_tui.engine.params import EngineParams

EVENT_KIND = "memory"  # the journal's events row of a trial's reading (a load's travels in "loaded")
KEEP = 20  # the latest readings that decide a correction


def host_estimate(params: EngineParams, info: ModelShape) -> VramEstimate:
    """What a CPU-only engine holds in memory: every weight, the whole KV cache, the compute buffer
    (no GPU context). The engine's own runtime (Python, the libraries) is what the correction learns."""
    est = estimate(params.replace(n_gpu_layers=-1, n_cpu_moe=0), info)
    est.overhead = 0
    return est


def device_of(params: EngineParams, gpu: bool) -> str:
    """"gpu" when layers are offloaded to a GPU (VRAM is the limit), else "cpu" (RSS is)."""
    return "gpu" if gpu and params.n_gpu_layers != 0 else "cpu"


def estimate_mib(params: EngineParams, info: ModelShape, device: str) -> float:
    est = estimate(params, info) if device == "gpu" else host_estimate(params, info)
    return est.total / MIB


def reading(params: EngineParams, info: ModelShape, device: str, measured_mib: float | None,
            source: str) -> JsonDict | None:
    """The journal's record of one measurement (None when nothing was measured)."""
    if measured_mib is None or measured_mib <= 0:
        return None
    return {"device": device, "model": model_key(params.model_path, getattr(info, "size_bytes", None)),
            "estimate_mib": round(estimate_mib(params, info, device), 2), "measured_mib": round(float(measured_mib), 2),
            "source": source, "params": params.summary()}


@dataclass
class Correction:
    device: str
    delta_mib: float  # median of measured - estimate
    n: int  # readings it rests on

    def apply(self, estimate_mib: float) -> float:
        return estimate_mib + self.delta_mib

    def describe(self) -> str:
        what = "RSS" if self.device == "cpu" else "VRAM"
        return (f"estimate corrected by {self.delta_mib:+.0f} MiB (the median of measured - estimated peak {what} "
                f"over {self.n} earlier run(s) of this model on the {self.device})")


def readings_from_rows(rows: Iterable[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """The readings in journal event rows: ``memory`` rows (trials) and ``loaded`` rows (whose
    runtime carries the load's reading)."""
    out: list[Mapping[str, object]] = []
    for row in rows:
        data = row.get("data")
        if not isinstance(data, Mapping):
            continue
        if row.get("kind") == EVENT_KIND:
            out.append(data)
        elif row.get("kind") == "loaded":
            runtime = data.get("runtime")
            mem = runtime.get("memory") if isinstance(runtime, Mapping) else None
            if isinstance(mem, Mapping):
                out.append(mem)
    return out


def readings_from_journal(events: "Callable[[str, int], object]") -> list[Mapping[str, object]]:
    """The readings the journal holds, newest first: ``events(kind, limit)`` reads its events rows
    (trials' ``memory`` rows and loads' ``loaded`` rows)."""
    rows: list[Mapping[str, object]] = []
    for kind in (EVENT_KIND, "loaded"):
        got = events(kind, 500)
        rows += got if isinstance(got, list) else []
    rows.sort(key=lambda r: float(r.get("ts") or 0.0), reverse=True)  # type: ignore[arg-type]
    return readings_from_rows(rows)


def correction(readings: Iterable[Mapping[str, object]], model: str, device: str,
               keep: int = KEEP) -> Correction | None:
    """The correction for ``model`` on ``device`` from ``readings`` (newest first), None without any."""
    deltas: list[float] = []
    for r in readings:
        if r.get("model") != model or r.get("device") != device:
            continue
        est, got = r.get("estimate_mib"), r.get("measured_mib")
        if isinstance(est, (int, float)) and isinstance(got, (int, float)) and got > 0:
            deltas.append(float(got) - float(est))
        if len(deltas) >= keep:
            break
    if not deltas:
        return None
    return Correction(device, statistics.median(deltas), len(deltas))


def refusal(params: EngineParams, info: ModelShape, device: str, limit_mib: float,
            fix: Correction | None) -> str | None:
    """Why ``params`` must not run under ``limit_mib`` by the (corrected) estimate, or None."""
    raw = estimate_mib(params, info, device)
    corrected = fix.apply(raw) if fix is not None else raw
    if corrected <= limit_mib:
        return None
    what = "VRAM" if device == "gpu" else "RSS"
    how = f"about {corrected:.0f} MiB ({fix.describe()}; header estimate {raw:.0f} MiB)" if fix is not None \
        else f"about {raw:.0f} MiB (header estimate)"
    return f"needs {how}, over the {what} budget of {limit_mib:.0f} MiB (estimate, not run)"


def corrected_vram_refusal(params: EngineParams, info: ModelShape | None, free_bytes: int | None,
                           readings: Iterable[Mapping[str, object]]) -> str | None:
    """The change transaction's VRAM pre-flight with the measured fit: ``vram.refusal`` when nothing
    was measured for this model on the GPU, else the estimate plus the correction against the free
    memory (with SAFETY), saying so. For ``core/changes.py`` (``Changes.vram_refusal``)."""
    from llmos_tui.engine import vram

    if free_bytes is None or info is None or params.n_gpu_layers == 0:
        return vram.refusal(params, info, free_bytes)
    fix = correction(readings, model_key(params.model_path, info.size_bytes), "gpu")
    if fix is None:
        return vram.refusal(params, info, free_bytes)
    return refusal(params, info, "gpu", free_bytes * vram.SAFETY / MIB, fix)
