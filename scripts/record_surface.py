#!/usr/bin/env python3
"""Record a response surface of llama.cpp's runtime parameters on this machine, for bench_tuner.py.

Every configuration of a chosen grid is measured in a FRESH engine child through the tuner's own
trial (``llmos_tui.tuning.measure.measure``: the worker's llama-bench-style bench op), with
``--reps`` repetitions inside the child. One CSV row per measured repetition; a configuration that
fails (llama.cpp refuses it, or it dies) is one row with ``ok=0`` and the reason. The first line is
a ``#`` comment with the recording's facts (machine, date, model, bench spec) and the same facts
go to a sidecar ``.json``.

Configurations are measured in a seeded random order, so that the load of a shared machine
drifting over the recording does not line up with one parameter, and in ``--passes`` passes over
the whole grid (each in its own order, ``reps / passes`` repetitions per child): a configuration's
runs then come from different times of the recording, so a drift in the machine's speed shows as
noise within each configuration, not as a difference between configurations. With one pass (every
rep in one child, back to back), the MoE surface's four best configurations for generation were
four that happened to be measured one after another while the box ran fast (recording positions
66-72 of 96): a "top" no tuner can learn from the knobs. The file is written as it goes and a rerun
with the same --out continues where it stopped.

    nice -n 5 python scripts/record_surface.py --model bench --out tests/data/surface_bench_2core.csv
    nice -n 5 python scripts/record_surface.py --model demo --grid small --out tests/data/surface_demo_2core.csv
    nice -n 5 python scripts/record_surface.py --model moe --out tests/data/surface_moe_2core.csv

A grid may name more knobs than the CPU ones (``extra``: ``n_cpu_moe``, ``n_gpu_layers``...): they
become columns before ``rep``, and ``bench_tuner.py`` replays every column before ``rep`` as a knob.
``all`` as a value of ``n_cpu_moe`` is the model's expert-block count (from its GGUF header).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import itertools
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KNOBS = ["n_threads", "n_threads_batch", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v"]
MEASURES = ["rep", "pass", "ok", "error", "pp_tok_s", "tg_tok_s", "peak_rss_mb", "load_ms", "ttft_ms", "outcome", "config",
            "wall_s"]

# (n_batch, n_ubatch) and (type_k, type_v) pairs: a subset of the tuner's space that fits ~30 min here
GRIDS = {
    "bench": {
        "threads": [1, 2],
        "batches": [(128, 32), (128, 128), (512, 64)],
        "flash_attn": ["on", "off"],
        "kv": [("f16", "f16"), ("q8_0", "f16"), ("q8_0", "q8_0"), ("q4_0", "f16")],
    },
    "small": {
        "threads": [1, 2],
        "batches": [(128, 32), (512, 128)],
        "flash_attn": ["on", "off"],
        "kv": [("f16", "f16"), ("q8_0", "f16"), ("f16", "q8_0")],
    },
    # the synthetic MoE model (--model moe): the experts' matmuls (mul_mat_id) scale with threads and
    # micro-batch otherwise than a dense model's; expert offload to the CPU (n_cpu_moe) is a knob too,
    # where on a CPU-only build it moves the experts out of the mapped file into an allocated CPU buffer
    "moe": {
        "threads": [1, 2],
        "batches": [(128, 32), (512, 128)],
        "flash_attn": ["on", "off"],
        "kv": [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "f16")],
        "extra": {"n_cpu_moe": [0, "all"]},
    },
}
# the MoE model a "moe" surface is recorded on: big enough that its timings are the experts' (about
# 120 MB of F16), small enough that a 96-configuration grid takes half an hour on two cores
MOE_SHAPE = {"n_embd": 1024, "n_layer": 12, "n_ff": 1024, "n_expert": 8}


def load_bench_maker():
    spec = importlib.util.spec_from_file_location("make_bench_model", ROOT / "scripts" / "make_bench_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_moe_maker():
    spec = importlib.util.spec_from_file_location("make_moe_model", ROOT / "scripts" / "make_moe_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ensure_moe_bench_model() -> Path:
    """The MoE model of ``MOE_SHAPE`` in the cache folder, written first when missing (seeded: the
    same bytes every time)."""
    mod = load_moe_maker()
    shape = mod.MoeShape(**MOE_SHAPE)
    path = mod.DEFAULT_PATH.with_name(f"moe-{shape.n_embd}x{shape.n_layer}x{shape.n_expert}.gguf")
    if not path.is_file():
        mod.write_moe_model(path, shape)
    return path


def grid_configs(name: str, n_expert_layers: int = 0) -> list[dict]:
    """Every configuration of the grid; ``n_expert_layers`` resolves ``all`` in ``n_cpu_moe``."""
    g = GRIDS[name]
    extra = {k: sorted({n_expert_layers if v == "all" else v for v in vals})
             for k, vals in g.get("extra", {}).items()}
    out = []
    for t, tb, (b, ub), fa, (tk, tv), *more in itertools.product(g["threads"], g["threads"], g["batches"],
                                                                 g["flash_attn"], g["kv"], *extra.values()):
        out.append({"n_threads": t, "n_threads_batch": tb, "n_batch": b, "n_ubatch": ub, "flash_attn": fa,
                    "type_k": tk, "type_v": tv, **dict(zip(extra, more))})
    return out


def config_id(c: dict) -> str:
    more = "".join(f" {k}={c[k]}" for k in c if k not in KNOBS)
    return (f"t{c['n_threads']}/{c['n_threads_batch']} b{c['n_batch']}/{c['n_ubatch']} fa={c['flash_attn']} "
            f"kv={c['type_k']}/{c['type_v']}{more}")


def machine_facts() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    from llmos_tui.tuning.prior import physical_cores

    return {"host_cpu": cpu, "cpu_count": os.cpu_count(), "physical_cores": physical_cores(),
            "platform": platform.platform(),
            "python": platform.python_version(), "loadavg_at_start": load,
            "note": "no GPU", "repack": "auto"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bench", help="'bench' (scripts/make_bench_model.py), 'moe' (the synthetic "
                                                     "MoE model of MOE_SHAPE), 'demo', or a GGUF path")
    ap.add_argument("--grid", default=None, choices=sorted(GRIDS), help="which subset (default: bench for the bench "
                                                                       "model, small otherwise)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--passes", type=int, default=None,
                    help="passes over the grid, each in its own random order, the reps split between them "
                         "(default: one per rep, fully interleaved)")
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=24)
    ap.add_argument("--depth", type=int, default=0, help="KV depth the generation runs at (llama-bench's -d)")
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--limit", type=int, default=0, help="measure at most this many configurations (0: all)")
    ap.add_argument("--note", default="", help="what else the machine was doing (kept in the facts)")
    ap.add_argument("--trial-reps", type=int, default=0, metavar="K",
                    help="a row is one trial as the tuner runs it: the mean of K reps in one engine child "
                         "(then --reps rows per configuration, one per pass)")
    args = ap.parse_args(argv)

    from llmos_tui.engine.gguf_info import read_model_info
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.tuning.measure import BenchSpec, default_timeout, llama_cpp_version, measure

    if args.model == "bench":
        model = load_bench_maker().ensure_bench_model()
    elif args.model == "moe":
        model = ensure_moe_bench_model()
    elif args.model == "demo":
        model = ROOT / "llmos_tui" / "data" / "demo.gguf"
    else:
        model = Path(args.model).expanduser()
    info = read_model_info(model)
    grid = args.grid or {"bench": "bench", "moe": "moe"}.get(args.model, "small")
    configs = grid_configs(grid, int(getattr(info, "n_expert_layers", 0) or 0))
    columns = [*configs[0], *MEASURES]
    passes = args.passes if args.passes is not None else args.reps
    if args.reps < 1 or passes < 1 or args.reps % passes:
        ap.error(f"--reps {args.reps} must be a positive multiple of --passes {passes}")
    if args.trial_reps < 0 or (args.trial_reps and passes != args.reps):
        ap.error(f"--trial-reps {args.trial_reps}: one row per child, so --passes must equal --reps")
    spec = BenchSpec(n_prompt=args.n_prompt, n_gen=args.n_gen, depth=args.depth,
                     reps=args.trial_reps or args.reps // passes)
    if spec.tokens > args.n_ctx:
        ap.error(f"depth + n_prompt + n_gen = {spec.tokens} does not fit --n-ctx {args.n_ctx}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    facts = {"kind": "llmos-tui response surface", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "model": info.name, "model_file": model.name, "model_bytes": info.size_bytes, "n_params": info.n_params,
             "quantization": info.quantization, "n_layer": info.n_layer, "llama_cpp_python": llama_cpp_version(),
             "bench": {**spec.to_dict(), "reps": args.reps, "reps_per_child": spec.reps, "passes": passes,
                       **({"row": f"one trial: the mean of {args.trial_reps} reps in one engine child"}
                          if args.trial_reps else {})},
             "n_ctx": args.n_ctx, "grid": grid, "configurations": len(configs),
             **machine_facts()}
    if args.note:
        facts["note"] = f"{args.note}; {facts['note']}"

    done: set[tuple[int, str]] = set()  # (pass, configuration) already recorded
    refused: set[str] = set()  # failed in an earlier pass: not run again
    if out.exists():
        with out.open(newline="") as fh:
            rows = csv.DictReader(line for line in fh if not line.startswith("#"))
            if rows.fieldnames and list(rows.fieldnames) != columns:
                ap.error(f"{out} was recorded with other columns ({', '.join(rows.fieldnames)}): "
                         f"continue it with the script that wrote it, or record to a new --out")
            for r in rows:
                done.add((int(r.get("pass") or 0), r["config"]))
                if str(r.get("ok")).strip() != "1":
                    refused.add(r["config"])
        fh = out.open("a", newline="")
        writer = csv.DictWriter(fh, columns)
    else:
        fh = out.open("w", newline="")
        fh.write("# " + json.dumps(facts) + "\n")
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
    out.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")
    timeout = default_timeout(spec, info.size_bytes) * 2
    base = EngineParams(model_path=str(model), n_ctx=args.n_ctx, n_gpu_layers=0)
    started = time.time()

    def pass_order(n: int) -> list[dict]:  # each pass in its own seeded order
        order = list(configs)
        random.Random(args.seed + n).shuffle(order)
        return order

    if args.limit:  # the first configurations of the first pass's order, in every pass
        keep = {config_id(c) for c in pass_order(0)[: args.limit]}
        configs = [c for c in configs if config_id(c) in keep]
    todo = [(n, c) for n in range(passes) for c in pass_order(n) if (n, config_id(c)) not in done]
    print(f"{model.name}: {len(configs)} configurations in grid {grid!r}, {len(done)} runs of a configuration "
          f"already recorded, {len(todo)} to run: {args.reps} reps each in {passes} passes", flush=True)
    for i, (n, c) in enumerate(todo, 1):
        import dataclasses

        if config_id(c) in refused:
            continue  # it failed in an earlier pass (llama.cpp refused it): its one ok=0 row stands
        params = dataclasses.replace(base, **c)
        t = time.time()
        r = measure(params, spec, timeout=timeout)
        base_row = {**c, "flash_attn": 1 if c["flash_attn"] == "on" else 0, "config": config_id(c), "pass": n,
                    "outcome": r.outcome, "wall_s": round(time.time() - t, 2)}
        if r.ok and r.rows and args.trial_reps:  # one row: the trial's means, as the tuner is told
            writer.writerow({**base_row, "rep": n, "ok": 1, "error": "", "pp_tok_s": round(r.pp_tok_s or 0.0, 3),
                             "tg_tok_s": round(r.tg_tok_s or 0.0, 3), "peak_rss_mb": r.peak_rss_mb,
                             "load_ms": round(r.load_ms or 0.0, 1), "ttft_ms": round(r.ttft_ms or 0.0, 1)})
        elif r.ok and r.rows:
            for row in r.rows:
                writer.writerow({**base_row, "rep": n * spec.reps + int(row.get("rep") or 0), "ok": 1, "error": "",
                                 "pp_tok_s": round(row.get("pp_tok_s") or 0.0, 3),
                                 "tg_tok_s": round(row.get("tg_tok_s") or 0.0, 3),
                                 "peak_rss_mb": r.peak_rss_mb, "load_ms": round(r.load_ms or 0.0, 1),
                                 "ttft_ms": round(row.get("ttft_ms") or 0.0, 1)})
        else:
            refused.add(config_id(c))
            writer.writerow({**base_row, "rep": n * spec.reps, "ok": 0, "error": (r.reason or r.outcome)[:200]})
        fh.flush()
        print(f"[{i}/{len(todo)} {time.time() - started:.0f}s] {config_id(c)}: {r.summary()}", flush=True)
    fh.close()
    print(f"wrote {out} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
