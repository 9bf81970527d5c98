"""The conversation: a model repeating itself, a context window about to fill."""

from __future__ import annotations

from collections import Counter

from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext


def repetition(text: str, n: int = 4) -> tuple[float, str]:
    """Share of word n-grams that repeat an earlier one, and the most repeated n-gram."""
    words = text.split()
    if len(words) < n * 4:
        return 0.0, ""
    grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    repeated = sum(c - 1 for c in counts.values() if c > 1)
    top, _ = counts.most_common(1)[0]
    return repeated / len(grams), top


@detector("reply.repetition", "warning", needs=("reply",))
def reply_repetition(ctx: DetectorContext) -> list:
    """The model repeats itself in a loop (n-gram repetition in the last reply)."""
    reply = ctx.last_reply or {}
    if reply.get("ts") == ctx.memory.get("checked"):
        return []
    ctx.memory["checked"] = reply.get("ts")
    share, top = repetition(reply.get("text", ""), int(ctx.setting("n", 4)))
    if share < float(ctx.setting("share", 0.5)):
        return []
    return [ctx.finding(
        f"the model is repeating itself ({share * 100:.0f} % repeated 4-grams)",
        evidence={"repeated_share": round(share, 3), "most_repeated": top, "tail": reply.get("text", "")[-200:],
                  "advice": "raise repeat_penalty or temperature; reset the conversation"},
        fingerprint="reply.repetition",
        repairs=["engine.reset_context"],
        fact=f"{share * 100:.0f} % of the last reply's 4-word phrases repeat an earlier one "
             f"(most often {top[:40]!r}).",
    )]


@detector("context.overflow", "warning", needs=("engine",), grace=False)
def context_overflow(ctx: DetectorContext) -> list:
    """The conversation is about to fill the context window."""
    stats_ = ctx.engine_stats or {}
    used, n_ctx = stats_.get("ctx_used") or 0, stats_.get("n_ctx") or 0
    if not n_ctx:
        return []
    share = used / n_ctx
    if share < float(ctx.setting("warn", 0.85)):
        return []
    return [ctx.finding(
        f"context window {share * 100:.0f} % full ({used} of {n_ctx} tokens)",
        severity="error" if share >= 0.97 else "warning",
        evidence={"ctx_used": used, "n_ctx": n_ctx, "share": round(share, 3)},
        fingerprint="context.overflow",
        repairs=["engine.reset_context"],
        fact=f"The context window holds {used} of {n_ctx} tokens ({share * 100:.0f} %); "
             f"{n_ctx - used} are left.",
    )]
