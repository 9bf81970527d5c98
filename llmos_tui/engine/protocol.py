"""The wire between the supervisor and the engine child: JSON lines, names shared by both ends."""

from __future__ import annotations

from llmos_tui.engine.params import CACHE_TYPES

# commands (parent -> child, stdin)
OP_LOAD = "load"
OP_CHAT = "chat"
OP_CANCEL = "cancel"
OP_RESET = "reset"
OP_FAULT = "fault"
OP_SHUTDOWN = "shutdown"
OP_BENCH = "bench"  # llama-bench-style measurement on the loaded model (the tuner's trial)
OP_SET_THREADS = "set_threads"  # llama_set_n_threads, live (the online learner), before the next request

# events (child -> parent, private stdout copy)
EV_HELLO = "hello"
EV_PROGRESS = "progress"
EV_LOADED = "loaded"
EV_LOAD_FAILED = "load_failed"
EV_TOKEN = "token"
EV_DONE = "done"
EV_ERROR = "error"
EV_RESET_DONE = "reset_done"
EV_BYE = "bye"
EV_BENCH = "bench_done"  # answer to OP_BENCH: per-rep rates and their means
EV_THREADS_SET = "threads_set"  # answer to OP_SET_THREADS: the counts now in force
EV_PREFILL = "prefill"  # a chat's prompt is tokenised: its length, before prompt processing starts
EV_GEN_PROGRESS = "gen_progress"  # tokens sampled so far, when no text went out for a while (held back)

FAULTS = ("abort", "oom", "exit", "slow", "hang", "stall")
# "stall": decode stops producing tokens while the command loop still looks alive (the
# forward-progress watchdog's test; a CUDA kernel that never returns looks like this)
# the interval of EV_GEN_PROGRESS while tokens are sampled but no text is sent
PROGRESS_EVERY_S = 1.0

# What llama.cpp's CUDA backend logs when an allocation fails during decode, followed by
# ggml_abort; the injected "oom" fault writes the same shape so the doctor reads it alike.
OOM_LOG_LINES = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: cudaMalloc failed: out of memory",
    "ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 4294967296",
    "CUDA error: out of memory",
    "  current device: 0, in function ggml_backend_cuda_buffer_type_alloc_buffer (injected by llmos-tui)",
    "GGML_ASSERT: ggml-cuda.cu: CUDA error",
)


def cache_type_id(name: str) -> int:
    return CACHE_TYPES[name]
