"""One line of measured numbers under each reply (from llama.cpp's own perf counters)."""

from __future__ import annotations

from typing import Mapping

from llmos_tui.jsontypes import Json


def _num(value: Json, fmt: str, unit: str) -> str:
    return "n/a" if value is None else f"{format(value, fmt)}{unit}"


def format_metrics(m: Mapping[str, Json]) -> str:
    if not m:
        return ""
    parts = [
        f"{m.get('prompt_tokens', 0)} prompt tok",
        f"{m.get('gen_tokens', 0)} gen tok",
        f"TTFT {_num(m.get('ttft_ms'), '.0f', ' ms')}",
        f"prompt {_num(m.get('prompt_tps'), '.1f', ' tok/s')}",
        f"gen {_num(m.get('gen_tps'), '.1f', ' tok/s')}",
    ]
    if m.get("n_ctx"):
        parts.append(f"ctx {m.get('ctx_used', 0)}/{m['n_ctx']}")
    if m.get("dropped_messages"):
        parts.append(f"{m['dropped_messages']} earlier messages left out to fit the context")
    return " · ".join(parts)
