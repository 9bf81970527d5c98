"""What a model's header says about KV-cache types, before anything is loaded.

llama.cpp stores a quantised cache in blocks (32 values for q8_0, q4_0, q4_1, q5_0, q5_1 and
iq4_nl); a head whose size is not a multiple of the block size cannot hold them, and the
context fails to create ("block size does not divide the head size"). The demo model's head
size is 40: no quantised cache fits it. The tuner keeps such types out of its space and the
doctor out of its repairs, so neither learns by a failed load what the header already says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.gguf_info import ModelInfo

BLOCK_SIZE: dict[str, int] = {"f32": 1, "f16": 1, "bf16": 1, "q8_0": 32, "q4_0": 32, "q4_1": 32, "q5_0": 32,
                              "q5_1": 32, "iq4_nl": 32}


def is_quantised(cache_type: str) -> bool:
    return BLOCK_SIZE.get(cache_type, 1) > 1


def cache_type_refusal(info: "ModelInfo | None", type_k: str, type_v: str) -> str | None:
    """Why this model cannot use a K cache of ``type_k`` and a V cache of ``type_v``, or None
    (also None when the header does not say the head sizes: then only a load can tell)."""
    if info is None:
        return None
    for which, cache_type, head in (("K", type_k, info.head_dim_k), ("V", type_v, info.head_dim_v)):
        block = BLOCK_SIZE.get(cache_type, 1)
        if block > 1 and head and head % block:
            return (f"a {cache_type} {which} cache stores blocks of {block}, which does not divide this model's "
                    f"head size of {head}")
    return None


def allowed_cache_types(info: "ModelInfo | None", which: str = "K") -> list[str]:
    """The cache types (of ``BLOCK_SIZE``) that fit this model's K or V heads."""
    head = None if info is None else (info.head_dim_k if which == "K" else info.head_dim_v)
    return [t for t, block in BLOCK_SIZE.items() if block == 1 or not head or head % block == 0]
