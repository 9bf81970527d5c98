"""Reading llama.cpp's log for the reason a load or a run failed (shared by the supervisor's
load errors, the doctor and the tuner's trials)."""

from __future__ import annotations

OOM_MARKS = ("out of memory", "cudamalloc failed", "failed to allocate", "bad_alloc", "unable to allocate",
              "erroroutofdevicememory", "insufficient memory")
# lines that say why, in llama.cpp's log; an earlier mark beats a later one
_WHY_MARKS = ("does not divide", "requires", "not supported", "unsupported", "out of memory", "failed to allocate",
              "ggml_assert", "error", "failed", "cannot", "invalid")
_NOT_WHY = ("using cpu instead", "ignoring", "warning")  # notes and warnings, never the reason


def llama_reason(lines: list[str], fallback: str = "") -> str:
    """The log line that says why llama.cpp failed: the last line carrying the strongest mark."""
    texts = [ln.strip() for ln in lines if ln.strip()]
    texts = [t for t in texts if not t.startswith("llmos-worker:") or "GGML_ASSERT" in t]
    texts = [t for t in texts if not any(n in t.lower() for n in _NOT_WHY)]
    for mark in _WHY_MARKS:
        hits = [t for t in texts if mark in t.lower()]
        if hits:
            return hits[-1][:300]
    return fallback


def classify(message: str, lines: list[str], *, default: str) -> str:
    text = " ".join([message, *lines[-40:]]).lower()
    if any(mark in text for mark in OOM_MARKS):
        return "oom"
    return default
