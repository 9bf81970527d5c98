"""Estimate the GPU memory a configuration needs, from the GGUF header alone, before loading it.

weights (the offloaded share of the file, less the experts that n_cpu_moe keeps on the CPU) + KV cache
(n_ctx × the KV heads of the offloaded blocks × (head_dim_k × bytes(type_k) + head_dim_v × bytes(type_v));
a hybrid model's recurrent blocks have none)
+ a compute-buffer estimate + a fixed CUDA context overhead. It is an estimate meant to
refuse what clearly cannot fit, not to squeeze the last megabyte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

from llmos_tui.jsontypes import JsonDict

if TYPE_CHECKING:
    from llmos_tui.engine.params import EngineParams

MIB = 1024 * 1024


class ModelShape(Protocol):
    """What the estimate reads of a model: a ModelInfo (gguf_info), or its fields as a namespace."""

    size_bytes: int
    n_layer: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    head_dim_k: int | None
    head_dim_v: int | None
    context_length: int | None
    vocab_size: int | None


class _GpuProcess(Protocol):
    pid: int
    used_memory: int | None
    is_engine: bool


class _Gpu(Protocol):
    mem_total: int | None
    mem_used: int | None
    processes: Sequence[_GpuProcess]


class GpuMemorySample(Protocol):
    """What the free-memory reading needs of a telemetry Sample (the engine layer is below telemetry)."""

    gpus: Sequence[_Gpu]

# bytes per element of each KV cache type (block types: block bytes / block size)
TYPE_BYTES: dict[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0,
    "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32,
}
CUDA_OVERHEAD = 300 * MIB  # context, cuBLAS workspace: what a loaded engine costs beyond its buffers
SAFETY = 0.95  # refuse when the estimate exceeds this share of the free memory


@dataclass
class VramEstimate:
    weights: int
    kv_cache: int
    compute: int
    overhead: int
    offloaded_layers: int
    n_layer: int
    experts_on_cpu: int = 0  # expert bytes of offloaded blocks that n_cpu_moe keeps in CPU memory

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead

    def to_dict(self) -> JsonDict:
        return {"weights": self.weights, "kv_cache": self.kv_cache, "compute": self.compute,
                "overhead": self.overhead, "total": self.total, "offloaded_layers": self.offloaded_layers,
                "n_layer": self.n_layer, "experts_on_cpu": self.experts_on_cpu}

    def summary(self) -> str:
        return (f"{self.total / MIB:.0f} MiB (weights {self.weights / MIB:.0f}, KV {self.kv_cache / MIB:.0f}, "
                f"compute {self.compute / MIB:.0f}, overhead {self.overhead / MIB:.0f}"
                + (f"; experts on the CPU {self.experts_on_cpu / MIB:.0f}" if self.experts_on_cpu else "") + ")")


def experts_on_cpu(n_cpu_moe: int, gpu_layers: int, n_layer: int, expert_layer_bytes: Sequence[int]) -> int:
    """The expert bytes that n_cpu_moe takes off the GPU: those of blocks 0 … n_cpu_moe-1 that are
    offloaded at all (llama.cpp offloads the last ``gpu_layers`` of the n_layer + 1, output included)."""
    first_gpu = max(0, n_layer + 1 - gpu_layers)
    return sum(b for i, b in enumerate(expert_layer_bytes) if first_gpu <= i < n_cpu_moe)


def estimate(params: EngineParams, info: ModelShape) -> VramEstimate:
    """The GPU memory ``params`` (EngineParams) needs for the model described by ``info`` (ModelInfo)."""
    n_layer = int(info.n_layer or 0) or 1
    layers = n_layer + 1 if params.n_gpu_layers < 0 else min(params.n_gpu_layers, n_layer + 1)
    share = layers / (n_layer + 1)  # the output layer counts as one
    # namespaces from older journals and spaces lack the expert fields: no experts, nothing moved
    moved = experts_on_cpu(int(getattr(params, "n_cpu_moe", 0) or 0), layers, n_layer,
                           getattr(info, "expert_layer_bytes", None) or ())
    weights = max(0, int(info.size_bytes * share) - moved)
    n_ctx = params.n_ctx or int(info.context_length or 4096)
    n_head_kv = int(info.n_head_kv or info.n_head or 1)
    hk = int(info.head_dim_k or 0) or (int(info.n_embd or 0) // max(1, int(info.n_head or 1)))
    hv = int(info.head_dim_v or 0) or hk
    # llama.cpp puts blocks n_layer + 1 - n_gpu_layers ... n_layer - 1 and the output on the GPU
    # (i_gpu_start in llama-model.cpp): n_gpu_layers - 1 blocks, and with them their KV cache
    kv_layers = min(n_layer, max(0, layers - 1))
    per_layer = list(getattr(info, "kv_heads_per_layer", None) or ())  # a hybrid model: 0 on a recurrent block
    if len(per_layer) == n_layer:  # the offloaded blocks are the last ones
        kv_heads = sum(per_layer[n_layer - kv_layers:]) if kv_layers else 0
    else:
        kv_heads = kv_layers * n_head_kv
    kv = int(n_ctx * kv_heads * (hk * TYPE_BYTES[params.type_k] + hv * TYPE_BYTES[params.type_v]))
    n_embd = int(info.n_embd or 0)
    n_vocab = int(info.vocab_size or 32000)
    n_head = int(info.n_head or 1)
    ubatch = min(params.n_ubatch, params.n_batch)
    # logits + activations; without flash attention also the KQ score matrix of one layer
    compute = ubatch * n_vocab * 4 + ubatch * n_embd * 4 * 8
    if params.flash_attn == "off":
        compute += ubatch * n_ctx * n_head * 4
    if layers == 0:
        compute, overhead = 0, 0
    else:
        overhead = CUDA_OVERHEAD
    return VramEstimate(weights, kv, int(compute), overhead, layers, n_layer, moved)


def refusal(params: EngineParams, info: ModelShape | None, free_bytes: int | None) -> str | None:
    """A one-line reason why ``params`` cannot fit in ``free_bytes``, or None when it may."""
    if free_bytes is None or info is None:
        return None
    est = estimate(params, info)
    if est.total > free_bytes * SAFETY:
        return (f"needs about {est.summary()}, but only {free_bytes / MIB:.0f} MiB of GPU memory is free")
    return None


def free_gpu_memory(sample: GpuMemorySample | None, engine_pid: int | None = None) -> int | None:
    """Free memory on the first GPU, counting what our own engine holds as free (a reload releases it)."""
    if sample is None or not getattr(sample, "gpus", None):
        return None
    gpu = sample.gpus[0]
    if gpu.mem_total is None or gpu.mem_used is None:
        return None
    own = 0
    for proc in gpu.processes or []:
        if (proc.is_engine or (engine_pid and proc.pid == engine_pid)) and proc.used_memory:
            own += proc.used_memory
    return int(gpu.mem_total - gpu.mem_used + own)
