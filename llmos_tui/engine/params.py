"""Engine parameters: one validated, immutable value shared by the CLI, config, tuner and repairs."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Mapping

from llmos_tui.errors import ConfigError
from llmos_tui.jsontypes import JsonDict, JsonScalar

# ggml type ids (ggml.h); the names are what operators type.
CACHE_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}
FLASH_ATTN = ("auto", "on", "off")
REPACK = ("auto", "on", "off")


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises Intel AMX (``amx_int8`` / ``amx_tile`` in /proc/cpuinfo)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[-1].split()
                    return "amx_int8" in flags or "amx_tile" in flags
    except OSError:
        return False
    return False


def resolve_repack(value: str, amx: bool | None = None) -> tuple[bool, str]:
    """Whether llama.cpp may repack the weights into its extra CPU buffer types (AMX, the x86 and
    ARM repacks), and why. ``auto`` turns it off on a CPU with AMX: llama.cpp's AMX kernels
    segfault at the first batched decode on such machines (ggml-org/llama.cpp#20824, seen here on
    a Sapphire-Rapids-class VM with a Q8_0 model: every prompt of more than one token killed the
    engine), so a crash-free engine wins over AMX's prompt speed."""
    if value == "on":
        return True, "repack=on (configured)"
    if value == "off":
        return False, "repack=off (configured)"
    amx = cpu_has_amx() if amx is None else amx
    if amx:
        return False, "repack=auto: off on this AMX CPU (llama.cpp's AMX kernels crash here, llama.cpp#20824)"
    return True, "repack=auto: on"


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EngineParams:
    """Everything that decides how llama.cpp loads and runs a model.

    Frozen so that a configuration version in the journal is exactly what ran.
    """

    model_path: str = ""
    n_gpu_layers: int = -1  # -1: all layers that fit (llama.cpp offloads nothing without a GPU build)
    n_ctx: int = 2048
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int = field(default_factory=_default_threads)
    n_threads_batch: int = field(default_factory=_default_threads)
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    seed: int = 0xC0FFEE
    use_mmap: bool = True
    repack: str = "auto"  # weight repacking into llama.cpp's extra CPU buffer types (AMX, x86/ARM repack)
    # mixture-of-experts models: keep the expert tensors of the first N blocks in CPU memory
    # (llama.cpp's --n-cpu-moe, through tensor buffer overrides); attention and KV stay offloaded
    n_cpu_moe: int = 0

    # ---- validation -------------------------------------------------------
    def validate(self) -> "EngineParams":
        """Return self if every value is sane, else raise ConfigError naming the bad value."""

        def need_int(name: str, lo: int, hi: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < lo or (hi is not None and value > hi):
                bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
                raise ConfigError(f"{name} must be {bound}, got {value}")

        need_int("n_gpu_layers", -1, 100_000)
        need_int("n_ctx", 0, 10_000_000)
        if 0 < self.n_ctx < 16:
            raise ConfigError(f"n_ctx must be 0 (the model's own) or at least 16, got {self.n_ctx}")
        need_int("n_batch", 1, 1_000_000)
        need_int("n_ubatch", 1, 1_000_000)
        if self.n_ubatch > self.n_batch:
            raise ConfigError(f"n_ubatch ({self.n_ubatch}) must not exceed n_batch ({self.n_batch})")
        need_int("n_threads", 1, 4096)
        need_int("n_threads_batch", 1, 4096)
        need_int("seed", 0, 2**32 - 1)
        need_int("n_cpu_moe", 0, 100_000)
        if self.flash_attn not in FLASH_ATTN:
            raise ConfigError(f"flash_attn must be one of {', '.join(FLASH_ATTN)}, got {self.flash_attn!r}")
        for name in ("type_k", "type_v"):
            value = getattr(self, name)
            if value not in CACHE_TYPES:
                raise ConfigError(f"{name} must be one of {', '.join(CACHE_TYPES)}, got {value!r}")
        if self.type_v not in ("f16", "f32", "bf16") and self.flash_attn == "off":
            raise ConfigError(
                f"type_v={self.type_v} (a quantised V cache) needs flash_attn=on or auto, got flash_attn=off"
            )
        if self.repack not in REPACK:
            raise ConfigError(f"repack must be one of {', '.join(REPACK)}, got {self.repack!r}")
        if not isinstance(self.use_mmap, bool):
            raise ConfigError(f"use_mmap must be true or false, got {self.use_mmap!r}")
        return self

    # ---- conversions ------------------------------------------------------
    def to_dict(self) -> JsonDict:
        return dataclasses.asdict(self)

    def replace(self, **changes: JsonScalar) -> "EngineParams":
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], base: "EngineParams | None" = None) -> "EngineParams":
        """Build from config/CLI values, coercing strings ("512", "on", "true") and naming unknown keys."""
        base = base or cls()
        known = {f.name: f for f in dataclasses.fields(cls)}
        changes: dict[str, object] = {}  # coerced to each field's type
        for key, raw in values.items():
            if raw is None:
                continue
            if key not in known:
                raise ConfigError(f"unknown engine parameter {key!r} (known: {', '.join(known)})")
            current = getattr(base, key)
            changes[key] = _coerce(key, raw, current)
        return dataclasses.replace(base, **changes).validate()

    def summary(self) -> str:
        """A short line for status bars: the values operators tune."""
        return (
            f"ngl={self.n_gpu_layers} ctx={self.n_ctx} batch={self.n_batch}/{self.n_ubatch} "
            f"threads={self.n_threads}/{self.n_threads_batch} fa={self.flash_attn} kv={self.type_k}/{self.type_v}"
            + (f" cpu_moe={self.n_cpu_moe}" if self.n_cpu_moe else "")
        )


def _coerce(key: str, raw: object, current: object) -> object:
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {raw!r}")
    if isinstance(current, int):
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
    if isinstance(current, str):
        if key == "model_path" and not isinstance(raw, (str, os.PathLike)):
            raise ConfigError(f"model_path must be a file path (a string), got {raw!r}")
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool) and key not in ("flash_attn", "repack"):
            raise ConfigError(f"{key} must be a string, got {raw!r}")
        if key in ("flash_attn", "repack") and isinstance(raw, bool):
            return "on" if raw else "off"
        return str(raw).strip().lower() if key != "model_path" else str(raw)
    return raw
