"""The built-in repairs, registered through the same ``@repair`` API plugins use.

Each returns the EngineParams to load (the doctor journals, VRAM-checks and applies
them) or None after acting itself through the supervisor. ``cost`` orders them: the
doctor prefers the smallest change that applies.
"""

from __future__ import annotations

from llmos_tui.doctor.api import NotApplicable, repair
from llmos_tui.doctor.context import RepairContext


@repair("engine.reset_context", changes="clears the KV cache (the conversation the engine remembers)",
        restarts_engine=False, cost=0)
def reset_context(ctx: RepairContext, finding) -> None:
    """Clear the KV cache / reset the conversation."""
    ctx.supervisor.reset_context()
    ctx.log("KV cache cleared")


@repair("engine.restart", changes="nothing: same configuration, fresh process", cost=1)
def restart(ctx: RepairContext, finding) -> None:
    """Restart the engine with the same configuration."""
    ctx.supervisor.restart(ctx.params, reason=f"doctor: {finding.title}")


def _kv_quant_pre(ctx: RepairContext, finding) -> str | None:
    if ctx.params.type_k in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl") and \
            ctx.params.type_v in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"):
        return f"the KV cache is already quantised ({ctx.params.type_k}/{ctx.params.type_v})"
    return None


@repair("engine.kv_quant", changes="type_k=type_v=q8_0, flash_attn=on (KV cache about half the size)",
        precondition=_kv_quant_pre, reconfigures=True, cost=2)
def kv_quant(ctx: RepairContext, finding):
    """Quantise the KV cache to q8_0 (needs flash attention for V)."""
    return ctx.params.replace(type_k="q8_0", type_v="q8_0", flash_attn="on")


def _batch_pre(ctx: RepairContext, finding) -> str | None:
    return "n_ubatch is already at its floor (64)" if ctx.params.n_ubatch <= 64 else None


@repair("engine.smaller_batch", changes="n_batch and n_ubatch halved (smaller compute buffer)",
        precondition=_batch_pre, reconfigures=True, cost=3)
def smaller_batch(ctx: RepairContext, finding):
    """Halve n_batch and n_ubatch."""
    ubatch = max(64, ctx.params.n_ubatch // 2)
    batch = max(ubatch, ctx.params.n_batch // 2)
    return ctx.params.replace(n_batch=batch, n_ubatch=ubatch)


def _ctx_of(ctx: RepairContext) -> int:
    n_ctx = ctx.params.n_ctx
    if n_ctx == 0 and ctx.model_info is not None:
        n_ctx = int(ctx.model_info.context_length or 0)
    return n_ctx


def _ctx_pre(ctx: RepairContext, finding) -> str | None:
    n = _ctx_of(ctx)
    floor = int(ctx.settings.get("min_ctx", 512))
    return f"n_ctx {n} is already at the floor ({floor})" if n and n // 2 < floor else (
        "the context size is unknown" if not n else None)


@repair("engine.smaller_ctx", changes="n_ctx halved (KV cache half the size; shorter conversations)",
        precondition=_ctx_pre, reconfigures=True, cost=4)
def smaller_ctx(ctx: RepairContext, finding):
    """Reload with half the context window."""
    return ctx.params.replace(n_ctx=_ctx_of(ctx) // 2)


def _layers_pre(ctx: RepairContext, finding) -> str | None:
    if ctx.params.n_gpu_layers == 0:
        return "no layers are offloaded to the GPU"
    return None


@repair("engine.fewer_gpu_layers", changes="a quarter fewer layers on the GPU (slower, last resort)",
        precondition=_layers_pre, reconfigures=True, cost=9)
def fewer_gpu_layers(ctx: RepairContext, finding):
    """Offload fewer layers to the GPU."""
    n_layer = int(getattr(ctx.model_info, "n_layer", 0) or 0)
    current = ctx.params.n_gpu_layers
    if current < 0:
        if not n_layer:
            raise NotApplicable("the model's layer count is unknown")
        current = n_layer + 1
    return ctx.params.replace(n_gpu_layers=max(0, current - max(1, current // 4)))


def _rollback_pre(ctx: RepairContext, finding) -> str | None:
    lkg = ctx.journal.last_known_good(exclude_active=True)
    if lkg is None:
        return "the journal holds no last-known-good configuration other than the active one"
    return None


@repair("engine.rollback", changes="the last-known-good configuration from the journal",
        precondition=_rollback_pre, reconfigures=True, cost=5)
def rollback(ctx: RepairContext, finding):
    """Roll back to the last-known-good configuration."""
    lkg = ctx.journal.last_known_good(exclude_active=True)
    if lkg is None:
        raise NotApplicable("no last-known-good configuration")
    params = lkg.engine_params()
    ctx.log(f"rolling back to cfg:{lkg.id}")
    return params
