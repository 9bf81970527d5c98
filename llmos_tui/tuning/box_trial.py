"""One box's part of a distributed study: describe the box, measure one trial, verify a winner.

A fleet study (``llmos_tui.fleet.tune``) runs on a head; its trials run on the boxes, each
through that box's own daemon (``POST /v1/llmos/trial`` on the owner-only control socket), so
that the box's own core does what the single-box tuner does: hold the engine's life cycle
(``changes.holding``: the daemon's hold listeners drain its API's requests first), pause the
serving engine through the change transaction, measure the configuration in a fresh child
(``tuning.measure``), and resume. A trial never raises: a refusal, a busy engine, a crash or a
timeout is a result (``ok: False`` with the reason), as on one box.

Everything here returns plain JSON values: it crosses HTTP and Ray.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import LlmosError
from llmos_tui.tuning.measure import BenchSpec, TrialResult, default_timeout, llama_cpp_version, measure
from llmos_tui.tuning.objective import make_objective

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import Supervisor
    from llmos_tui.tuning.ports import ChangesPort

JsonDict = dict[str, object]
Measure = Callable[..., TrialResult]


def bench_spec(spec: Mapping[str, object]) -> BenchSpec:
    """The bench of a trial from a fleet spec (its ``bench`` mapping; defaults for what it omits)."""
    raw = spec.get("bench") or {}
    if not isinstance(raw, Mapping):
        raise LlmosError("spec.bench must be a mapping (n_prompt, n_gen, depth, reps, warmup)")
    fields = {k: raw[k] for k in ("n_prompt", "n_gen", "depth", "reps", "warmup") if k in raw}
    try:
        return BenchSpec(**fields)  # type: ignore[arg-type]
    except TypeError as exc:
        raise LlmosError(f"bad bench spec: {exc}") from None


def describe(supervisor: "Supervisor", spec: Mapping[str, object]) -> JsonDict:
    """What the head needs to plan a study for this box: its hardware class (GPU model and count,
    model file), the space of its parameters, what runs now."""
    from llmos_tui.engine.gguf_info import read_model_info
    from llmos_tui.journal.studies import model_key
    from llmos_tui.tuning.runner import gpu_info
    from llmos_tui.tuning.prior import held_values
    from llmos_tui.tuning.slo import is_service_objective
    from llmos_tui.tuning.space import build_space

    running = supervisor.params
    info = supervisor.model_info or read_model_info(running.model_path)
    bench = bench_spec(spec)
    n_ctx = int(spec.get("n_ctx") or running.n_ctx or info.context_length or 2048)  # type: ignore[arg-type]
    gpu = gpu_info()
    cpu_count = os.cpu_count() or 1
    objective = str(spec.get("objective") or "")
    held = held_values(objective, running, service=is_service_objective(objective))  # as the tuner on one box
    fixed: dict[str, object] = {"n_ctx": n_ctx, **held}
    space = build_space(info, cpu_count=cpu_count, gpu=gpu, n_ctx=n_ctx, fixed=fixed)
    return {
        "hardware": {"gpu_name": (gpu or {}).get("name") or "", "gpu_count": gpu_count(),
                     "model_key": model_key(running.model_path, info.size_bytes), "cpu_count": cpu_count},
        "build": llama_cpp_version(),
        "space": space.to_dict(),
        "running": running.to_dict(),
        "defaults": _plain_dict(space.defaults(running.replace(n_ctx=n_ctx))),
        "n_ctx": n_ctx,
        "bench": bench.to_dict(),
        "timeout_s": default_timeout(bench, int(info.size_bytes or 0)),
    }


def gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML, no GPU
        return 0


@contextmanager
def engine_span(supervisor: "Supervisor", changes: "ChangesPort", who: str) -> Iterator[None]:
    """Hold the engine for ``who`` and pause a serving engine through the change transaction; resume
    it at the end (as the single-box tuner's span). Raises LlmosError (EngineBusy) when another
    caller holds the engine."""
    serving = supervisor.state.value not in ("stopped", "failed", "crashed", "paused")
    with changes.holding(who):
        if serving:
            supervisor.cancel()
            paused = changes.pause(source=who, reason=who)
            if not paused.ok:
                raise LlmosError(f"the serving engine could not be paused: {paused.message}")
        try:
            yield
        finally:
            if serving and not supervisor.is_ready:
                changes.resume(source=who, reason=f"{who} ended")


def run_trial(supervisor: "Supervisor", changes: "ChangesPort", params: Mapping[str, object],
              spec: Mapping[str, object], *, readonly: bool = False, measure_fn: Measure | None = None) -> JsonDict:
    """Measure ``params`` (a point of the space: names of EngineParams) on this box, under its change
    transaction. ``spec``: ``objective`` (tg, pp, ttft, mix), ``bench`` (BenchSpec fields),
    ``n_ctx``, ``timeout_s``, ``study`` and ``trial`` (for the hold's name). Never raises."""
    started = time.monotonic()
    config = {str(k): v for k, v in params.items()}
    out: JsonDict = {"ok": False, "outcome": "error", "value": None, "values": {}, "reason": "", "params": config,
                     "wall_s": 0.0, "summary": ""}

    def done(result: TrialResult | None = None, *, outcome: str = "error", reason: str = "") -> JsonDict:
        if result is not None:
            out.update(ok=result.ok, outcome=result.outcome, reason=result.reason, summary=result.summary(),
                       values={"tg": result.tg_tok_s, "pp": result.pp_tok_s, "ttft_ms": result.ttft_ms},
                       peak_rss_mb=result.peak_rss_mb, peak_vram_mb=result.peak_vram_mb, load_ms=result.load_ms)
        else:
            out.update(ok=False, outcome=outcome, reason=reason, summary=f"{outcome}: {reason}")
        out["wall_s"] = round(time.monotonic() - started, 3)
        return out

    if readonly:
        return done(outcome="refused", reason="read-only mode: this box runs no trials")
    try:
        objective, bench, base = _trial_frame(supervisor, spec)
        trial_params = EngineParams.from_mapping(config, base=base)
    except (LlmosError, TypeError, ValueError) as exc:
        return done(outcome="refused", reason=str(exc))
    why = changes.bad_reason(trial_params)
    if why:
        return done(outcome="refused", reason=f"marked bad on this box: {why}")
    budget = spec.get("timeout_s") or default_timeout(bench, _model_bytes(trial_params))
    timeout = float(budget)  # type: ignore[arg-type]
    who = f"fleet trial {spec.get('study', '')}#{spec.get('trial', '')}".strip()
    fn = measure_fn or measure
    try:
        with engine_span(supervisor, changes, who):
            result = fn(trial_params, bench, timeout=timeout)
    except LlmosError as exc:  # the engine is busy (another study, a change), or it would not pause
        return done(outcome="refused", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - a trial never takes the daemon down
        return done(outcome="error", reason=f"{type(exc).__name__}: {exc}")
    value = objective.value(result) if result.ok else None
    done(result)
    if result.ok and (value is None or not math.isfinite(value)):
        out.update(ok=False, outcome="error", reason="the objective could not be computed from the bench")
    out["value"] = value if out["ok"] else None
    out["objective"] = objective.name
    out["engine_params"] = trial_params.to_dict()
    return out


def _trial_frame(supervisor: "Supervisor", spec: Mapping[str, object]) -> tuple[Any, Any, EngineParams]:
    """What a spec asks of a trial or a verdict: its objective, its bench, and the running engine's
    parameters with the spec's ``n_ctx`` (the base a configuration is a point over). Raises
    LlmosError, TypeError or ValueError on a bad spec."""
    objective = make_objective(str(spec.get("objective") or "tg"))
    bench = bench_spec(spec)
    running = supervisor.params
    n_ctx = int(spec.get("n_ctx") or running.n_ctx or 0)  # type: ignore[arg-type]
    return objective, bench, (running.replace(n_ctx=n_ctx) if n_ctx else running)


def verify(supervisor: "Supervisor", changes: "ChangesPort", candidate: Mapping[str, object],
           spec: Mapping[str, object], *, readonly: bool = False, measure_fn: Measure | None = None) -> JsonDict:
    """The box's own A/B verdict (``tuning.verdict.ab_verify``): A is what runs on this box now, B
    the candidate (a point of the space over it). Under one hold of the engine. Never raises: a
    verdict that could not be reached is ``significant: False`` with the reason."""
    from llmos_tui.tuning.verdict import VerifyDesign, ab_verify

    if readonly:
        return {"significant": False, "message": "read-only mode: this box verifies nothing"}
    try:
        objective, bench, a = _trial_frame(supervisor, spec)
        b = EngineParams.from_mapping({str(k): v for k, v in candidate.items()}, base=a)
        design = VerifyDesign.capped(int(spec.get("verify_rounds") or 12),  # type: ignore[arg-type]
                                     min_gain=float(spec.get("min_gain") or 0.02))  # type: ignore[arg-type]
    except (LlmosError, TypeError, ValueError) as exc:
        return {"significant": False, "message": f"nothing verified: {exc}"}
    timeout = float(spec.get("timeout_s") or default_timeout(bench, _model_bytes(b)))  # type: ignore[arg-type]
    fn = measure_fn or measure

    def once(params: EngineParams) -> float | None:
        result = fn(params, bench, timeout=timeout)
        return objective.value(result) if result.ok else None

    try:
        with engine_span(supervisor, changes, f"fleet verify {spec.get('study', '')}".strip()):
            verdict = ab_verify(lambda: once(a), lambda: once(b), design=design, speedup=objective.speedup)
    except LlmosError as exc:
        return {"significant": False, "message": f"not verified: {exc}"}
    out = verdict.to_dict()
    out["candidate"] = b.to_dict()
    return out


def _model_bytes(params: EngineParams) -> int:
    try:
        return os.path.getsize(params.model_path)
    except OSError:
        return 0


def _plain_dict(config: Mapping[str, object]) -> JsonDict:
    from llmos_tui.tuning.space import plain

    return plain(config)


__all__ = ["bench_spec", "describe", "engine_span", "run_trial", "verify"]
