"""The built-in repairs, registered through the same ``@repair`` API plugins use.

Each returns the EngineParams to load (the doctor hands them to the change transaction,
which vets, journals, reloads and verifies them) or None after acting itself through
``ctx.engine`` (whose restart also goes through the change transaction). ``cost`` orders
them: the doctor prefers the smallest change that applies. What the model's header or the
engine's build already rules out is a precondition, never learned by a failed load.
"""

from __future__ import annotations

import time

from llmos_tui.doctor.api import Finding, NotApplicable, repair
from llmos_tui.doctor.context import RepairContext
from llmos_tui.engine.kvcache import cache_type_refusal, is_quantised
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.versions import params_of
from llmos_tui.errors import LlmosError


@repair("engine.reset_context", changes="clears the KV cache (the conversation the engine remembers)",
        restarts_engine=False, cost=0)
def reset_context(ctx: RepairContext, finding: Finding) -> None:
    """Clear the KV cache / reset the conversation."""
    ctx.engine.reset_context()
    ctx.log("KV cache cleared")


@repair("engine.restart", changes="nothing: same configuration, fresh process", cost=1)
def restart(ctx: RepairContext, finding: Finding) -> None:
    """Restart the engine with the same configuration."""
    result = ctx.engine.restart(reason=finding.title)  # the handle names the doctor as the source
    if not result.ok:
        raise LlmosError(result.message)


def _kv_quant_pre(ctx: RepairContext, finding: Finding) -> str | None:
    if is_quantised(ctx.params.type_k) and is_quantised(ctx.params.type_v):
        return f"the KV cache is already quantised ({ctx.params.type_k}/{ctx.params.type_v})"
    # the model's header says whether q8_0 blocks fit its heads: never learned by a failed load
    return cache_type_refusal(ctx.model_info, "q8_0", "q8_0")


@repair("engine.kv_quant", changes="type_k=type_v=q8_0, flash_attn=on (KV cache about half the size)",
        precondition=_kv_quant_pre, reconfigures=True, cost=2)
def kv_quant(ctx: RepairContext, finding: Finding) -> EngineParams:
    """Quantise the KV cache to q8_0 (needs flash attention for V)."""
    return ctx.params.replace(type_k="q8_0", type_v="q8_0", flash_attn="on")


def _batch_pre(ctx: RepairContext, finding: Finding) -> str | None:
    return "n_ubatch is already at its floor (64)" if ctx.params.n_ubatch <= 64 else None


@repair("engine.smaller_batch", changes="n_batch and n_ubatch halved (smaller compute buffer)",
        precondition=_batch_pre, reconfigures=True, cost=3)
def smaller_batch(ctx: RepairContext, finding: Finding) -> EngineParams:
    """Halve n_batch and n_ubatch."""
    ubatch = max(64, ctx.params.n_ubatch // 2)
    batch = max(ubatch, ctx.params.n_batch // 2)
    return ctx.params.replace(n_batch=batch, n_ubatch=ubatch)


def _ctx_of(ctx: RepairContext) -> int:
    n_ctx = ctx.params.n_ctx
    if n_ctx == 0 and ctx.model_info is not None:
        n_ctx = int(ctx.model_info.context_length or 0)
    return n_ctx


def _ctx_pre(ctx: RepairContext, finding: Finding) -> str | None:
    n = _ctx_of(ctx)
    floor = int(ctx.settings.get("min_ctx", 512))
    return f"n_ctx {n} is already at the floor ({floor})" if n and n // 2 < floor else (
        "the context size is unknown" if not n else None)


@repair("engine.smaller_ctx", changes="n_ctx halved (KV cache half the size; shorter conversations)",
        precondition=_ctx_pre, reconfigures=True, cost=4)
def smaller_ctx(ctx: RepairContext, finding: Finding) -> EngineParams:
    """Reload with half the context window."""
    return ctx.params.replace(n_ctx=_ctx_of(ctx) // 2)


def _layers_pre(ctx: RepairContext, finding: Finding) -> str | None:
    offload = ctx.engine.gpu_offload
    if offload is None:
        return "the engine has not loaded, so whether its llama.cpp build offloads to a GPU is unknown"
    if not offload:
        return "this llama.cpp build has no GPU to offload to: n_gpu_layers changes nothing here"
    if ctx.params.n_gpu_layers == 0:
        return "no layers are offloaded to the GPU"
    return None


@repair("engine.fewer_gpu_layers", changes="a quarter fewer layers on the GPU (slower, last resort)",
        precondition=_layers_pre, reconfigures=True, cost=9)
def fewer_gpu_layers(ctx: RepairContext, finding: Finding) -> EngineParams:
    """Offload fewer layers to the GPU."""
    n_layer = int(ctx.model_info.n_layer or 0) if ctx.model_info is not None else 0
    current = ctx.params.n_gpu_layers
    if current < 0:
        if not n_layer:
            raise NotApplicable("the model's layer count is unknown")
        current = n_layer + 1
    return ctx.params.replace(n_gpu_layers=max(0, current - max(1, current // 4)))


def _rollback_pre(ctx: RepairContext, finding: Finding) -> str | None:
    lkg = ctx.journal.last_known_good(exclude_active=True)
    if lkg is None:
        return "the journal holds no last-known-good configuration other than the active one"
    return None


@repair("engine.rollback", changes="the last-known-good configuration from the journal",
        precondition=_rollback_pre, reconfigures=True, cost=5)
def rollback(ctx: RepairContext, finding: Finding) -> EngineParams:
    """Roll back to the last-known-good configuration."""
    lkg = ctx.journal.last_known_good(exclude_active=True)
    if lkg is None:
        raise NotApplicable("no last-known-good configuration")
    params = params_of(lkg)
    ctx.log(f"rolling back to cfg:{lkg.id}")
    return params


def _retune_pre(ctx: RepairContext, finding: Finding) -> str | None:
    factory = ctx.services.get("tuner")
    if factory is None:
        return "no tuner in this core"
    if not ctx.engine.is_ready:
        return "the engine is not serving"
    return None


@repair("tuning.retune", changes="a short tuning study in an idle window; a verified faster configuration is "
        "applied through the change transaction (source tuner), undoable", precondition=_retune_pre,
        restarts_engine=True, cost=6)
def retune(ctx: RepairContext, finding: Finding) -> None:
    """A short re-tune when the served speed drifted. It waits for an idle window (no operator
    request for ``idle_s``, default 60 s; at most ``idle_wait_s``, default 1800 s), runs
    ``trials`` (default 8) warm-started from the journal, verifies the best A/B against the running
    configuration and applies it only when significantly faster. Nothing faster: NotApplicable,
    said as such (the running configuration stays)."""
    idle_s = float(ctx.settings.get("idle_s", 60.0))
    wait_s = float(ctx.settings.get("idle_wait_s", 1800.0))
    trials = int(ctx.settings.get("trials", 8))
    deadline = time.monotonic() + wait_s
    while ctx.operator_idle_s() < idle_s:
        if ctx.stopped():
            raise NotApplicable("stopped while waiting for an idle window")
        if time.monotonic() > deadline:
            raise NotApplicable(f"no idle window of {idle_s:.0f} s within {wait_s:.0f} s")
        time.sleep(min(1.0, max(0.05, idle_s / 20)))
    tuner = ctx.services["tuner"]()  # the core's Tuner (tuning sits above the doctor: not imported here)
    options = {k: ctx.settings[k] for k in ("objective", "verify_rounds", "strategy", "vram_budget")
               if k in ctx.settings}
    bench = {k: int(ctx.settings[k]) for k in ("n_prompt", "n_gen", "depth", "reps") if k in ctx.settings}
    if bench:
        options["spec"] = bench  # the study's bench shape, as plain data (the tuner builds its BenchSpec)
    ctx.log(f"re-tune: {trials} trials after {ctx.operator_idle_s():.0f} s idle")
    report = tuner.run(trials=trials, apply=True, **{"objective": "tg", **options})
    applied = report.applied or {}
    if report.status != "done" and not applied:
        raise NotApplicable(f"the re-tune ended {report.status}: {report.message}")
    if not applied:
        raise NotApplicable(f"the re-tune (std:{report.study_id}) found nothing verified faster: {report.message}")
    if not applied.get("ok"):
        raise LlmosError(f"the re-tune's change was not kept: {applied.get('message')}")
    ctx.log(f"re-tune std:{report.study_id} applied cfg:{applied.get('config_id')}: {report.message}")


def _experts_pre(ctx: RepairContext, finding: Finding) -> str | None:
    info = ctx.model_info
    if info is None or not info.is_moe:
        return "the model is not a mixture of experts (its header names no expert tensors)"
    reason = _layers_pre(ctx, finding)  # a GPU build with layers on the GPU
    if reason:
        return reason
    if ctx.params.n_cpu_moe >= info.n_expert_layers:
        return f"every expert is already on the CPU (n_cpu_moe={ctx.params.n_cpu_moe})"
    return None


@repair("engine.experts_to_cpu", changes="half the remaining expert layers' weights to the CPU (attention and "
        "KV cache stay on the GPU; tried before fewer GPU layers)", precondition=_experts_pre,
        reconfigures=True, cost=8)
def experts_to_cpu(ctx: RepairContext, finding: Finding) -> EngineParams:
    """Keep more mixture-of-experts weights in CPU memory (llama.cpp's --n-cpu-moe)."""
    info = ctx.model_info
    if info is None or not info.is_moe:
        raise NotApplicable("not a mixture-of-experts model")
    total, current = info.n_expert_layers, ctx.params.n_cpu_moe
    return ctx.params.replace(n_cpu_moe=min(total, current + max(1, (total - current + 1) // 2)))
