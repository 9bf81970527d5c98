"""Example repair plugin: give the engine one thread fewer (an oversubscribed CPU answers slowly).

A repair declares what it changes and when it applies. With ``reconfigures=True`` it only
returns the new EngineParams: the doctor hands them to the change transaction, which checks
them (bad in the journal? fits in VRAM?), journals the change, reloads the engine, runs the
canary, and rolls back if that fails. It never touches the engine itself.
"""

from llmos_tui.doctor import repair


def _has_spare_thread(ctx, finding):
    if ctx.params.n_threads <= 1:
        return "the engine already runs on one thread"
    return None


@repair("example.fewer_threads", changes="n_threads minus one", precondition=_has_spare_thread,
        reconfigures=True, cost=3)
def fewer_threads(ctx, finding):
    """Reload with one generation thread fewer."""
    return ctx.params.replace(n_threads=ctx.params.n_threads - 1)
