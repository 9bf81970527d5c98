"""What llama-cpp-python's ``Llama(...)`` does not expose, set through the C defaults it reads.

``Llama.__init__`` builds its model parameters from ``llama_model_default_params()`` and maps
``flash_attn=False`` to ``LLAMA_FLASH_ATTN_TYPE_DISABLED``; both are read at call time, so for the
length of one construction they can be swapped: load progress, weight repacking
(``use_extra_bufts``), flash attention "auto" and tensor buffer overrides (expert offload: the
binding declares ``tensor_buft_overrides`` as a bare pointer and has no keyword for it). Used by the engine's worker and by the
compression evaluator's child, so both load a model the same way.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from llama_cpp.llama_cpp import llama_model_params


EXPERT_TENSOR_RE = r"ffn_(up|down|gate|gate_up)_(ch|)exps"  # llama.cpp's LLM_FFN_EXPS_REGEX (gate_up: fused experts)


class TensorBuftOverride(ctypes.Structure):
    """``struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }``"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def expert_patterns(n_cpu_moe: int) -> list[str]:
    """llama.cpp's ``--n-cpu-moe N``: the expert tensors of blocks 0 … N-1 (regexes, searched)."""
    return [rf"blk\.{i}\.{EXPERT_TENSOR_RE}" for i in range(max(0, int(n_cpu_moe)))]


def cpu_buffer_type() -> int:
    """ggml's CPU buffer type (a pointer), from the ggml libraries the binding loaded."""
    import llama_cpp

    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    try:
        cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"))
        fn = cpu.ggml_backend_cpu_buffer_type
        fn.restype = ctypes.c_void_p
        fn.argtypes = []
        buft = fn()
    except (OSError, AttributeError):  # a build with dynamically loaded backends: ask the registry
        ggml = ctypes.CDLL(os.path.join(libdir, "libggml.so"))
        ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
        ggml.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
        dev = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
        buft = ggml.ggml_backend_dev_buffer_type(dev) if dev else None
    if not buft:
        raise RuntimeError("ggml has no CPU buffer type (expert offload needs it)")
    return int(buft)


class BuftOverrides:
    """A NULL-terminated array of overrides and the bytes its patterns point to. llama.cpp keeps the
    pointer in the model's parameters: hold this object as long as the model lives."""

    def __init__(self, patterns: list[str], buft: int) -> None:
        self.patterns = [p.encode() for p in patterns]
        self.array = (TensorBuftOverride * (len(self.patterns) + 1))(
            *[TensorBuftOverride(p, buft) for p in self.patterns], TensorBuftOverride(None, None))

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


def expert_overrides(n_cpu_moe: int) -> BuftOverrides | None:
    """The overrides that keep the first ``n_cpu_moe`` blocks' experts on the CPU (None for 0)."""
    if n_cpu_moe <= 0:
        return None
    return BuftOverrides(expert_patterns(n_cpu_moe), cpu_buffer_type())


@contextmanager
def llama_defaults(*, flash_attn: str = "auto", repack: bool = True,
                   progress: Callable[..., object] | None = None,
                   overrides: BuftOverrides | None = None) -> Iterator[None]:
    import llama_cpp.llama_cpp as C

    original_defaults = C.llama_model_default_params
    original_disabled = C.LLAMA_FLASH_ATTN_TYPE_DISABLED

    def model_defaults() -> llama_model_params:
        mp = original_defaults()
        if progress is not None:
            mp.progress_callback = progress
        if hasattr(mp, "use_extra_bufts"):
            mp.use_extra_bufts = bool(repack)
        if overrides is not None:
            mp.tensor_buft_overrides = overrides.address
        return mp

    C.llama_model_default_params = model_defaults
    if flash_attn == "auto":
        C.LLAMA_FLASH_ATTN_TYPE_DISABLED = C.LLAMA_FLASH_ATTN_TYPE_AUTO
    from llama_cpp import llama_chat_format as F

    original_formatter = F.Jinja2ChatFormatter
    F.Jinja2ChatFormatter = _tolerant_formatter(original_formatter)
    try:
        yield
    finally:
        C.llama_model_default_params = original_defaults
        C.LLAMA_FLASH_ATTN_TYPE_DISABLED = original_disabled
        F.Jinja2ChatFormatter = original_formatter


def _tolerant_formatter(base: type) -> type:
    """``Llama(...)`` compiles every chat template in the GGUF and raises on one that Jinja cannot
    parse, so the whole model fails to load over a template. For the length of a load the binding gets
    this subclass, which keeps such a template as one that says why when used (the worker formats
    prompts itself and falls back to ChatML there, as llama-server does)."""
    import jinja2

    class Tolerant(base):  # type: ignore[misc, valid-type]
        def __init__(self, template: str, *args: object, **kwargs: object) -> None:
            try:
                super().__init__(template, *args, **kwargs)
            except jinja2.TemplateError as exc:
                super().__init__("{{ raise_exception(why) }}", *args, **kwargs)
                self.template, self.broken = template, f"the chat template does not parse: {exc}"

        def __call__(self, **kwargs: object) -> object:
            return super().__call__(**{"why": getattr(self, "broken", ""), **kwargs})

    return Tolerant
