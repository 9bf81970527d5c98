#!/usr/bin/env python3
"""Measure compression on this box: the demo model's quantisations (size, speed, perplexity, KLD)
and the KV-cache quantisation cost (KLD of q8_0 / q4_0 cache against f16, flash attention on).

The demo model's head size (40) does not divide the 32-wide blocks of q8_0 / q4_0, so llama.cpp
refuses those caches for it; that refusal is printed as it is. The KV-cache cost is then measured
on the synthetic bench model (scripts/make_bench_model.py: random weights, 64-wide heads) when
--bench-model is given: SYNTHETIC data — its numbers say what the cache type costs a model of that
shape, not what it costs a trained one.

    nice -n 5 .venv/bin/python scripts/bench_compress.py [--types q8_0,q4_k_m,q4_0] [--bench-model]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmos_tui.compress import variants as V  # noqa: E402
from llmos_tui.compress.quantize import quantize  # noqa: E402
from llmos_tui.engine.params import EngineParams  # noqa: E402


def kv_report(model: str, label: str, chunks: int) -> None:
    print(f"\nKV cache on {label} (flash attention on, KLD against the f16 cache, {chunks} chunks of 256)")
    for r in V.kv_cache_quality(model, max_chunks=chunks, n_threads=2):
        kld = "-" if r.get("kld") is None else f"{r['kld']:.5f}"
        p99 = "-" if r.get("kld_p99") is None else f"{r['kld_p99']:.4f}"
        ppl = "-" if r.get("perplexity") is None else f"{r['perplexity']:.5g}"
        top = "-" if r.get("same_top") is None else f"{r['same_top'] * 100:.1f}%"
        print(f"  {r['cache']:<5} PPL {ppl:<10} KLD mean {kld:<9} p99 {p99:<8} same top {top:<7} {r.get('reason') or ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="q8_0,q6_k,q5_k_m,q4_k_m,q4_0")
    ap.add_argument("--bench-model", action="store_true", help="also the KV cost on the synthetic bench model")
    ap.add_argument("--chunks", type=int, default=8)
    args = ap.parse_args()
    demo = str(ROOT / "llmos_tui" / "data" / "demo.gguf")
    with tempfile.TemporaryDirectory(prefix="llmos-compress-") as tmp:
        paths = []
        for t in args.types.split(","):
            r = quantize(demo, t, Path(tmp) / f"demo-{t.upper()}.gguf", nthread=2)
            print(f"quantised {t}: {r.size_bytes} B in {r.seconds:.2f} s (estimate {r.estimate_bytes} B)")
            paths.append(r.output)
        rows = V.measure_variants(demo, paths, base=EngineParams(n_threads=1, n_threads_batch=1), max_chunks=args.chunks,
                                  n_prompt=64, n_gen=32, reps=3)
        print("\nvariants of the demo model (bench: n_threads=1, pp64 tg32, 3 reps; quality: shipped held-out text)")
        print(V.table(rows))
        best, why = V.pick(rows, max_kld=0.05)
        print(f"budget KLD <= 0.05: {why}")
    kv_report(demo, "the demo model (head size 40)", args.chunks)
    if args.bench_model:
        spec = importlib.util.spec_from_file_location("make_bench_model", ROOT / "scripts" / "make_bench_model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        kv_report(str(mod.ensure_bench_model()), "the synthetic bench model (random weights, head size 64)",
                  min(args.chunks, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
