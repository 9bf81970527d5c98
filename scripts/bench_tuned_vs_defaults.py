"""The tuned configuration against the project's defaults and llama-cpp-python's own defaults,
measured side by side on this machine (A B C, A B C, ...; fresh engine child each run).

    python scripts/bench_tuned_vs_defaults.py --journal J.sqlite [--study N] [--model PATH]
                                              [--rounds 5] [--n-ctx 512]

The tuned configuration is the best of a study in the journal (repeated mean of its ok trials;
the newest study when --study is not given). The model defaults to the study's model; --n-ctx
applies to the tuned and the project rows.
llama-cpp-python's defaults: what ``Llama(model_path)`` runs with no other argument, read at run
time from the installed binding (``inspect.signature(Llama.__init__)``, what ``__init__`` makes
of its None defaults, and ``llama_context_default_params`` / ``llama_model_default_params`` for
what it leaves to llama.cpp). With 0.3.x that is n_gpu_layers = 0 (nothing offloaded), n_ctx =
n_batch = n_ubatch = 512, n_threads = cpu_count // 2, n_threads_batch = cpu_count, flash
attention off, an f16 cache, weight repacking on; the row prints what it read. Prints the
median of the paired ratios with a bootstrap 95 % interval, and the misses (failed runs; exit
code 1 when there is one). The generation tok/s come from the tuner's bench (llama.cpp's timing).
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmos_tui.engine.params import CACHE_TYPES, EngineParams  # noqa: E402
from llmos_tui.journal import Journal  # noqa: E402
from llmos_tui.tuning.measure import BenchSpec, measure  # noqa: E402
from llmos_tui.tuning.verdict import bootstrap_median_ci  # noqa: E402


def best_of_study(journal: Journal, study_id: int | None) -> tuple[dict, dict]:
    studies = journal.studies()
    if not studies:
        raise SystemExit("no study in the journal: run `llmos-tui tune` first")
    study = next((s for s in studies if s["id"] == study_id), None) if study_id else studies[0]
    if study is None:
        raise SystemExit(f"no study std:{study_id} in the journal")
    values: dict[str, list[float]] = defaultdict(list)
    for trial in journal.trials(study["id"]):
        if trial["outcome"] == "ok" and trial["value"] is not None:
            values[json.dumps(trial["params"], sort_keys=True)].append(trial["value"])
    if not values:
        raise SystemExit(f"std:{study['id']} has no successful trial")
    key = max(values, key=lambda k: (len(values[k]) >= 2, statistics.mean(values[k])))
    return study, json.loads(key)


def binding_defaults(model: str) -> EngineParams:
    """What ``llama_cpp.Llama(model_path=model)`` runs with, read from the installed binding."""
    import llama_cpp
    import llama_cpp.llama_cpp as C

    arg = {name: p.default for name, p in inspect.signature(llama_cpp.Llama.__init__).parameters.items()}
    cpus = multiprocessing.cpu_count()  # what Llama.__init__ counts its None thread defaults from
    context, model_defaults = C.llama_context_default_params(), C.llama_model_default_params()
    type_names = {v: k for k, v in CACHE_TYPES.items()}
    type_k = arg["type_k"] if arg["type_k"] is not None else context.type_k  # None: llama.cpp's default
    type_v = arg["type_v"] if arg["type_v"] is not None else context.type_v
    return EngineParams(
        model_path=model,
        n_gpu_layers=int(arg["n_gpu_layers"]),
        n_ctx=int(arg["n_ctx"]),
        n_batch=int(arg["n_batch"]),
        n_ubatch=int(arg["n_ubatch"]),
        n_threads=int(arg["n_threads"] or max(cpus // 2, 1)),
        n_threads_batch=int(arg["n_threads_batch"] or cpus),
        flash_attn="on" if arg["flash_attn"] else "off",
        type_k=type_names[int(type_k)],
        type_v=type_names[int(type_v)],
        seed=int(arg["seed"]),
        use_mmap=bool(arg["use_mmap"]),
        repack="on" if getattr(model_defaults, "use_extra_bufts", True) else "off",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--study", type=int)
    parser.add_argument("--model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--n-prompt", type=int, default=128)
    parser.add_argument("--n-gen", type=int, default=24)
    args = parser.parse_args()
    with Journal(args.journal, readonly=True) as journal:
        study, tuned_values = best_of_study(journal, args.study)
    model = args.model or study.get("model_path")
    if not model:
        raise SystemExit("the study names no model: pass --model")
    project = EngineParams(model_path=model, n_ctx=args.n_ctx)
    tuned = EngineParams.from_mapping({k: v for k, v in tuned_values.items() if k in EngineParams.field_names()},
                                      project)
    binding = binding_defaults(model)
    configs = {"tuned": tuned, "project": project, "llama-cpp-python": binding}
    spec = BenchSpec(n_prompt=args.n_prompt, n_gen=args.n_gen, reps=2)
    rates: dict[str, list[float | None]] = {name: [] for name in configs}
    print(f"std:{study['id']} tuned: {tuned.summary()}")
    print(f"project defaults: {project.summary()}")
    print(f"llama-cpp-python defaults (read from the installed binding): {binding.summary()} "
          f"seed={binding.seed} mmap={binding.use_mmap} repack={binding.repack}")
    for r in range(args.rounds):
        for name, params in configs.items():
            result = measure(params, spec, timeout=300)
            rates[name].append(result.tg_tok_s if result.ok else None)
        print(f"round {r + 1}: " + "  ".join(f"{n} {v[-1]:.1f}" if v[-1] else f"{n} FAILED" for n, v in rates.items()),
              flush=True)
    misses = sum(v is None for vals in rates.values() for v in vals)
    lines = []
    for base in ("project", "llama-cpp-python"):
        ratios = [t / b for t, b in zip(rates["tuned"], rates[base]) if t and b]
        if not ratios:
            lines.append(f"tuned/{base}: no paired round")
            continue
        low, high = bootstrap_median_ci(ratios)
        lines.append(f"tuned/{base}: median paired ratio {statistics.median(ratios):.3f} "
                     f"(95 % CI {low:.3f}-{high:.3f}, {len(ratios)} rounds)")
    for line in lines:
        print(line)
    print(f"misses={misses} (failed runs of {args.rounds * len(configs)})")
    return 0 if misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
