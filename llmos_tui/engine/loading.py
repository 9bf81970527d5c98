"""What llama-cpp-python's ``Llama(...)`` does not expose, set through the C defaults it reads.

``Llama.__init__`` builds its model parameters from ``llama_model_default_params()`` and maps
``flash_attn=False`` to ``LLAMA_FLASH_ATTN_TYPE_DISABLED``; both are read at call time, so for the
length of one construction they can be swapped: load progress, weight repacking
(``use_extra_bufts``) and flash attention "auto". Used by the engine's worker and by the
compression evaluator's child, so both load a model the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from llama_cpp.llama_cpp import llama_model_params


@contextmanager
def llama_defaults(*, flash_attn: str = "auto", repack: bool = True,
                   progress: Callable[..., object] | None = None) -> Iterator[None]:
    import llama_cpp.llama_cpp as C

    original_defaults = C.llama_model_default_params
    original_disabled = C.LLAMA_FLASH_ATTN_TYPE_DISABLED

    def model_defaults() -> llama_model_params:
        mp = original_defaults()
        if progress is not None:
            mp.progress_callback = progress
        if hasattr(mp, "use_extra_bufts"):
            mp.use_extra_bufts = bool(repack)
        return mp

    C.llama_model_default_params = model_defaults
    if flash_attn == "auto":
        C.LLAMA_FLASH_ATTN_TYPE_DISABLED = C.LLAMA_FLASH_ATTN_TYPE_AUTO
    try:
        yield
    finally:
        C.llama_model_default_params = original_defaults
        C.LLAMA_FLASH_ATTN_TYPE_DISABLED = original_disabled
