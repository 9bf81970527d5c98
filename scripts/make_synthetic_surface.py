#!/usr/bin/env python3
"""Write a SYNTHETIC response surface of a GPU box serving a mixture-of-experts model: a cost model,
not a measurement. For bench_tuner.py where no GPU was lent to record one: it has what the CPU
surfaces lack, a memory edge (a configuration that does not fit fails with CUDA's out-of-memory
line, every rep) with the fastest configurations just inside it.

    python scripts/make_synthetic_surface.py --out /tmp/surface_gpu_synthetic.csv [--seed 0] [--noise 0.02] [--vram 24000]
    python scripts/bench_tuner.py --surface /tmp/surface_gpu_synthetic.csv --objective all

The model (48 layers, 480 MiB of expert weights and 60 MiB of the rest per layer, a KV cache per
layer by cache type): a layer on the GPU costs 0.18 ms a token (flash attention 8 % less, a
quantised K cache 4 % more), a layer on the CPU 1.1 ms and an expert block moved to the CPU 0.55 ms,
divided by the threads' share of 8 physical cores (16 logical: 15 % slower); prompt processing
likewise, faster with a larger micro-batch. The VRAM it needs: the offloaded layers' dense part
and KV cache, their experts not on the CPU, and a compute buffer by micro-batch (flash attention:
less). Each configuration gets a fixed effect (1 %) and each rep a log-normal noise (``--noise``).
The first line's facts say ``SYNTHETIC``; bench_tuner prints them.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import sys
from pathlib import Path

LAYERS = 48
EXPERT_MIB, DENSE_MIB = 480.0, 60.0
KV_MIB = {"f16": 40.0, "q8_0": 21.0, "q4_0": 11.0}  # per layer, at the recorded context
COLUMNS = ["n_threads", "n_threads_batch", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v", "n_gpu_layers",
           "n_cpu_moe", "rep", "ok", "error", "pp_tok_s", "tg_tok_s", "outcome"]
OOM = "ggml_backend_cuda_buffer_type_alloc_buffer: allocating buffer on device 0: cudaMalloc failed: out of memory"


def vram_mib(c: dict) -> float:
    gpu = c["n_gpu_layers"]
    moved = min(gpu, c["n_cpu_moe"])
    kv = (KV_MIB[c["type_k"]] + KV_MIB[c["type_v"]]) / 2
    return gpu * (DENSE_MIB + kv) + (gpu - moved) * EXPERT_MIB + c["n_ubatch"] / 512 * (250 if c["flash_attn"] else 600)


def speeds(c: dict) -> tuple[float, float]:
    """(pp, tg) tok/s of the cost model."""
    gpu = c["n_gpu_layers"]
    cpu, moved = LAYERS - gpu, min(gpu, c["n_cpu_moe"])
    share = min(c["n_threads"], 8) / 8 * (0.85 if c["n_threads"] > 8 else 1.0)
    tg_ms = (cpu * 1.1 + moved * 0.55) / share + gpu * 0.18 * (0.92 if c["flash_attn"] else 1.0) \
        * (1.0 if c["type_k"] == "f16" else 1.04) + 2.0
    ub = c["n_ubatch"]
    pp_ms = (cpu * 9.0 + moved * 2.5 * math.sqrt(512 / ub)) / share + gpu * 0.6 * (256 / ub) ** 0.3 \
        * (0.85 if c["flash_attn"] else 1.0) + 20.0
    return 128 * 1000.0 / pp_ms, 1000.0 / tg_ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.02, help="a rep's log-normal noise (0.02: 2 %%)")
    ap.add_argument("--vram", type=float, default=24000.0, help="MiB the GPU has for the model")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args(argv)
    if args.reps < 1 or args.noise < 0 or args.vram <= 0:
        print("make_synthetic_surface: --reps >= 1, --noise >= 0 and --vram > 0", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    facts = {"kind": "llmos-tui response surface", "model": "SYNTHETIC: a cost model of a 48-layer MoE on a GPU",
             "note": f"SYNTHETIC (scripts/make_synthetic_surface.py --seed {args.seed} --noise {args.noise} "
                     f"--vram {args.vram:g}): not a measurement", "synthetic": True, "gpu": True,
             "cpu_count": 16, "physical_cores": 8, "vram_mib": args.vram}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        fh.write("# " + json.dumps(facts) + "\n")
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        grid = itertools.product([4, 8, 16], [256, 512, 1024], [False, True],
                                 [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0")], [32, 40, 48], [0, 6, 12, 18, 24, 30])
        for t, ub, fa, (tk, tv), ngl, moe in grid:
            c = {"n_threads": t, "n_ubatch": ub, "flash_attn": fa, "type_k": tk, "type_v": tv, "n_gpu_layers": ngl,
                 "n_cpu_moe": moe}
            knobs = [t, t, 2048, ub, int(fa), tk, tv, ngl, moe]
            effect = math.exp(rng.gauss(0.0, 0.01))
            if vram_mib(c) > args.vram:  # every rep fails: it does not fit
                w.writerow([*knobs, 0, 0, OOM, "", "", "oom"])
                continue
            pp, tg = speeds(c)
            for rep in range(args.reps):
                w.writerow([*knobs, rep, 1, "", round(pp * effect * math.exp(rng.gauss(0.0, args.noise)), 3),
                            round(tg * effect * math.exp(rng.gauss(0.0, args.noise)), 3), "ok"])
    print(f"wrote {out} (SYNTHETIC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
