#!/usr/bin/env python3
"""Supervisor vs raw llama-cpp-python, side by side in one run.

Same model, same parameters, same prompts and seeds; the two are alternated (A B, B A, ...)
over several rounds because this machine is noisy, and the medians of the paired ratios are
reported. Measured as a consumer sees it: time to first token is from the request to the
first text received; generation tokens/s is llama.cpp's generated-token count over the time
from the first to the last text received. llama.cpp's own perf-counter rate is printed too.

The supervised side is the engine of the wired core (``build_core(config, "oneshot")`` with the
journal, telemetry and doctor left out), started through the change transaction.

Targets (issue 2): the supervisor keeps >= 98 % of raw generation tokens/s and adds <= 5 ms
to time to first token. Each is printed met / NOT MET; the exit code is 1 when one is not met.

    python scripts/bench_engine.py [--model PATH] [--rounds 12] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmos_tui.config import Config  # noqa: E402
from llmos_tui.core.wiring import build_core  # noqa: E402
from llmos_tui.engine.params import EngineParams  # noqa: E402
from llmos_tui.paths import DEMO_MODEL  # noqa: E402

PROMPTS = [
    "Tell me about GPUs and VRAM.",
    "What is the KV cache?",
    "How do I make generation faster?",
    "What does thermal throttling mean?",
]


class Raw:
    """llama-cpp-python in this process, driven exactly as the worker drives it."""

    def __init__(self, params: EngineParams) -> None:
        from llmos_tui.engine import worker

        # the worker's own load, so both sides run with exactly the same llama.cpp settings
        worker._out_fd = os.open(os.devnull, os.O_WRONLY)
        self.worker = worker.Worker()
        self.worker.load(params.to_dict())

    def run(self, prompt: str, sampling: dict) -> dict:
        import llama_cpp.llama_cpp as C

        llm = self.worker.llm
        C.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        tokens, stop = self.worker.format_prompt([{"role": "user", "content": prompt}])
        first = last = None
        for chunk in llm.create_completion(prompt=tokens, stream=True, stop=stop, **sampling):
            if chunk["choices"][0].get("text"):
                last = time.perf_counter()
                first = first or last
        perf = C.llama_perf_context(llm.ctx)
        return measure(t0, first, last, int(perf.n_eval), float(perf.t_eval_ms))


class Supervised:
    """The engine as every face gets it: the wired core's supervisor, started by the core."""

    def __init__(self, params: EngineParams) -> None:
        self.op = build_core(Config(engine=params), "oneshot", journal=False, telemetry=False, doctor=False,
                             endpoint=False)
        self.op.start_engine()
        self.sup = self.op.supervisor

    def run(self, prompt: str, sampling: dict) -> dict:
        t0 = time.perf_counter()
        reply = self.sup.chat([{"role": "user", "content": prompt}], **sampling)
        first = last = None
        for _piece in reply:
            last = time.perf_counter()
            first = first or last
        m = reply.metrics
        return measure(t0, first, last, int(m["gen_tokens"]), float(m["gen_ms"]))

    def close(self) -> None:
        self.op.close()


def measure(t0: float, first: float | None, last: float | None, n_gen: int, eval_ms: float) -> dict:
    if first is None or last is None or n_gen < 8:
        return {}
    return {
        "ttft_ms": (first - t0) * 1000,
        "gen_tps": (n_gen - 1) / (last - first) if last > first else float("nan"),
        "llama_tps": n_gen * 1000 / eval_ms if eval_ms else float("nan"),
        "n": n_gen,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEMO_MODEL))
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    args = ap.parse_args()
    params = EngineParams(model_path=args.model, n_ctx=2048, n_threads=args.threads,
                          n_threads_batch=args.threads, n_gpu_layers=args.n_gpu_layers)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    raw, sup = Raw(params), Supervised(params)
    pairs: list[tuple[dict, dict]] = []
    try:
        for r in range(args.rounds):
            prompt = PROMPTS[r % len(PROMPTS)]
            sampling = {"max_tokens": args.max_tokens, "temperature": 0.8, "seed": 1000 + r}
            order = (raw, sup) if r % 2 == 0 else (sup, raw)
            results = {id(x): x.run(prompt, sampling) for x in order}
            a, b = results[id(raw)], results[id(sup)]
            if a and b:
                pairs.append((a, b))
    finally:
        sup.close()
    if not pairs:
        print("no usable rounds (replies too short)")
        return 1
    med = statistics.median
    print(f"model {Path(args.model).name} · threads {args.threads} · {len(pairs)} paired rounds "
          f"· median {med(b['n'] for _a, b in pairs)} generated tokens")
    print(f"{'':24}{'raw':>12}{'supervisor':>12}{'ratio/diff':>12}")
    for key, label in (("gen_tps", "gen tok/s (observed)"), ("llama_tps", "gen tok/s (llama.cpp)")):
        ra, sb = med(a[key] for a, _ in pairs), med(b[key] for _, b in pairs)
        ratio = med(b[key] / a[key] for a, b in pairs)
        print(f"{label:<24}{ra:>12.1f}{sb:>12.1f}{ratio:>11.1%}")
    ta, tb = med(a["ttft_ms"] for a, _ in pairs), med(b["ttft_ms"] for _, b in pairs)
    diff = med(b["ttft_ms"] - a["ttft_ms"] for a, b in pairs)
    print(f"{'TTFT ms':<24}{ta:>12.2f}{tb:>12.2f}{diff:>+11.2f}")
    gen_ratio = med(b["gen_tps"] / a["gen_tps"] for a, b in pairs)
    gen_ok, ttft_ok = gen_ratio >= 0.98, diff <= 5
    print(f"target gen >= 98 % of raw: {gen_ratio:.1%}  {'met' if gen_ok else 'NOT MET'}")
    print(f"target TTFT <= +5 ms: {diff:+.2f} ms  {'met' if ttft_ok else 'NOT MET'}")
    return 0 if gen_ok and ttft_ok else 1


if __name__ == "__main__":
    sys.exit(main())
