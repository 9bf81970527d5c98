#!/usr/bin/env python3
"""Benchmark the online learner (llmos_tui.tuning.adapt) against fixed thread settings.

A stream of chat requests to the demo model in a real engine child, served by
  (a) the default threads (EngineParams' default: every core, for both knobs),
  (b) the best fixed setting — found here by a short sweep of every (n_threads, n_threads_batch)
      pair with no extra load (the tuner's study is not run by this script; say so in the output),
  (c) the online learner (mode "on"; one learner per scenario, learning across rounds),
in two scenarios: "steady" (nothing else runs but the box's own noise) and "varying" (a process
made by this script spins one core part of the time, bounded in time). How the load comes and goes:

- ``--phase requests`` (the default, the target's measure): the spinner runs during blocks of
  requests (``--block`` requests loaded, then ``--block`` quiet, ...; stopped and continued with
  SIGSTOP / SIGCONT between requests), the same request indices for every policy. The policies
  meet the same share of loaded requests, so their per-reply statistics compare like with like.
- ``--phase time``: the spinner spins ON seconds, then sleeps OFF seconds, whatever is being
  served. Per-reply statistics are then biased against a policy that is fast under load: a slow
  policy serves few replies while the load is on (a 2-thread reply against a spinner on this
  2-core box takes ~5 s, a 1-thread one ~1 s), so its median and p10 are mostly quiet replies.
Policies alternate inside each round (a b c, b c a, c a b, ...), each segment starting its own
load process with the same pattern. Reported: median and 10th percentile of the replies'
generation tok/s (llama.cpp's own counters), and the three targets as met / NOT MET; the exit
code is 1 when one is not met. The engine is the wired core's (``build_core(config, "oneshot")``
with the journal, telemetry and doctor left out); the learner is given that core's supervisor.

    nice -n 5 .venv/bin/python scripts/bench_adapt.py --rounds 3 --requests 30
    .venv/bin/python scripts/bench_adapt.py --model ~/.cache/llmos-tui/bench/bench-300m.gguf \
        --rounds 2 --requests 30 --sweep 6 --max-tokens 32 --on 15 --off 15

The demo model answers 64 tokens in ~40 ms, so a load that comes and goes every 1.5 s is slow
against its requests; on a model at tens of tok/s a reply takes 1-5 s, and a per-request choice
can only follow a load that holds for several replies (--on/--off of 15 s or more). The learner
does not learn from a reply during which the free-core count changed (reported).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmos_tui.config import Config  # noqa: E402
from llmos_tui.core.wiring import build_core  # noqa: E402
from llmos_tui.engine.params import EngineParams  # noqa: E402
from llmos_tui.engine.supervisor import Supervisor  # noqa: E402
from llmos_tui.tuning.adapt import OnlineAdapter  # noqa: E402

PROMPTS = ["How do I see GPU memory?", "What is a KV cache?", "Why is my model slow?", "hello",
           "What does n_threads do?", "Explain quantisation briefly."]

LOAD_CODE = """
import sys, time
on, off, until = float(sys.argv[1]), float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < until:
    end = time.monotonic() + on
    while time.monotonic() < end:
        pass
    time.sleep(min(off, max(0.0, until - time.monotonic())))
"""


SPIN_CODE = """
import sys, time
until = time.monotonic() + float(sys.argv[1])
while time.monotonic() < until:
    pass
"""


def start_load(scenario: str, phase: str, on: float, off: float, limit: float) -> subprocess.Popen | None:
    if scenario != "varying":
        return None
    if phase == "requests":  # a spinner the serving loop stops and continues between requests
        proc = subprocess.Popen([sys.executable, "-c", SPIN_CODE, str(limit)])
        os.kill(proc.pid, signal.SIGSTOP)
        return proc
    return subprocess.Popen([sys.executable, "-c", LOAD_CODE, str(on), str(off), str(limit)])


def loaded(i: int, block: int) -> bool:
    """Request ``i`` of a segment runs against the spinner (blocks of ``block``: quiet first)."""
    return (i // block) % 2 == 1


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p10(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(0, int(0.1 * (len(xs) - 1)))] if xs else float("nan")


def serve(sup: Supervisor, n: int, max_tokens: int, adapter: OnlineAdapter | None, rates: list[float],
          misses: list[str], load: subprocess.Popen | None = None, block: int = 0,
          by_phase: dict[str, list[float]] | None = None, work: list[float] | None = None) -> None:
    """``n`` requests; each counted reply's gen tok/s goes to ``rates`` (and ``by_phase``), its
    generated tokens and generation seconds are added to ``work`` ([tokens, seconds])."""
    for i in range(n):
        on = False
        if load is not None and block > 0:
            on = loaded(i, block)
            os.kill(load.pid, signal.SIGCONT if on else signal.SIGSTOP)
            time.sleep(0.05)  # the spinner is running (or stopped) before the request starts
        prompt = PROMPTS[i % len(PROMPTS)]
        if adapter is not None:
            adapter.before_request(streaming=False, prompt_tokens=len(prompt) // 3 + 20)
        reply = sup.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.7).wait(60)
        m = reply.metrics or {}
        if adapter is not None:
            adapter.after_reply(m)
        if reply.status != "done" or not m.get("gen_tps") or int(m.get("gen_tokens") or 0) < 4:
            misses.append(f"{reply.status}: {int(m.get('gen_tokens') or 0)} tokens")
            continue
        rates.append(float(m["gen_tps"]))
        if work is not None:
            work[0] += int(m["gen_tokens"])
            work[1] += float(m["gen_ms"]) / 1000.0  # llama.cpp's own generation time
        if by_phase is not None:
            by_phase["loaded" if on else "quiet"].append(float(m["gen_tps"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "llmos_tui" / "data" / "demo.gguf"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=30, help="requests per policy per round")
    ap.add_argument("--sweep", type=int, default=12, help="requests per setting in the sweep for (b)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--phase", choices=("requests", "time"), default="requests",
                    help="the load comes and goes per block of requests (paired) or per seconds")
    ap.add_argument("--block", type=int, default=5, help="--phase requests: requests per loaded / quiet block")
    ap.add_argument("--on", type=float, default=1.5, help="--phase time: seconds the load process spins")
    ap.add_argument("--off", type=float, default=1.5, help="--phase time: seconds it sleeps")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()

    ncpu = os.cpu_count() or 1
    default = EngineParams()
    params = EngineParams(model_path=args.model, n_ctx=1024, n_threads=default.n_threads,
                          n_threads_batch=default.n_threads_batch)
    op = build_core(Config(engine=params), "oneshot", journal=False, telemetry=False, doctor=False, endpoint=False)
    op.start_engine()
    sup = op.supervisor
    misses: list[str] = []
    try:
        # (b): a sweep with no extra load
        sweep = {}
        for n in range(1, ncpu + 1):
            for nb in range(1, ncpu + 1):
                sup.set_threads(n, nb)
                rates: list[float] = []
                serve(sup, args.sweep, args.max_tokens, None, rates, misses)
                sweep[(n, nb)] = statistics.median(rates) if rates else 0.0
        best_fixed = max(sweep, key=sweep.get)
        print(f"sweep (no extra load, median gen tok/s): "
              + ", ".join(f"{n}/{nb}: {v:.0f}" for (n, nb), v in sweep.items())
              + f" -> best fixed {best_fixed[0]}/{best_fixed[1]} (a sweep here, not the tuner's study)")
        if args.phase == "requests":
            print(f"varying load: a spinner on one core during blocks of {args.block} requests (quiet first), "
                  f"the same requests for every policy (--phase requests)")
        else:
            print(f"varying load: a spinner on one core {args.on:g} s on / {args.off:g} s off, whatever is served "
                  f"(--phase time: per-reply statistics favour a policy that is slow under load)")
        results: dict[str, dict[str, list[float]]] = {}
        phases: dict[str, dict[str, list[float]]] = {k: {"loaded": [], "quiet": []} for k in "abc"}
        learners: dict[str, OnlineAdapter] = {}
        work: dict[str, dict[str, list[float]]] = {}
        order = ["a", "b", "c"]
        segment_s = args.requests * 10 + 30  # a safety net: each segment kills its load process when it ends
        for scenario in ("steady", "varying"):
            results[scenario] = {k: [] for k in order}
            work[scenario] = {k: [0.0, 0.0] for k in order}
            sup.set_threads(*params_threads(params))
            learners[scenario] = OnlineAdapter(sup, mode="on", max_explore_share=0.2, summary_every=0)
            for r in range(args.rounds):
                for policy in order[r % 3:] + order[:r % 3]:
                    adapter = None
                    if policy == "a":
                        sup.set_threads(*params_threads(params))
                    elif policy == "b":
                        sup.set_threads(*best_fixed)
                    else:
                        adapter = learners[scenario]
                        adapter.current = None
                        sup.set_threads(*params_threads(params))
                    load = start_load(scenario, args.phase, args.on, args.off, segment_s)
                    paired = load is not None and args.phase == "requests"
                    done = len(results[scenario][policy])
                    t0 = time.monotonic()
                    try:
                        serve(sup, args.requests, args.max_tokens, adapter, results[scenario][policy], misses,
                              load if paired else None, args.block, phases[policy] if paired else None,
                              work[scenario][policy])
                        seg = results[scenario][policy][done:]
                        print(f"  {scenario} round {r + 1}/{args.rounds} ({policy}): {len(seg)} replies, median "
                              f"{median(seg):.1f} tok/s, "
                              f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
                    finally:
                        if load is not None:
                            os.kill(load.pid, signal.SIGCONT)
                            load.kill()
                            load.wait()
    finally:
        op.close()

    names = {"a": f"(a) default {params.n_threads}/{params.n_threads_batch}",
             "b": f"(b) best fixed {best_fixed[0]}/{best_fixed[1]}", "c": "(c) online learner"}
    summary: dict[str, dict[str, dict[str, float]]] = {}
    stall_below = 0.1 * max(sweep.values())  # a stalled reply: under 10 % of the best quiet rate
    for scenario, by in results.items():
        print(f"\n{scenario}: generation tok/s per reply (n, median, p10)")
        summary[scenario] = {}
        for k in order:
            xs = by[k]
            med, low = median(xs), p10(xs)
            tokens, seconds = work[scenario][k]
            tput = tokens / seconds if seconds else float("nan")
            stalled = sum(1 for x in xs if x < stall_below)
            summary[scenario][k] = {"n": len(xs), "median": med, "p10": low, "throughput": tput,
                                    "stalled": stalled, "rates": xs}
            print(f"  {names[k]:<28} n={len(xs):<4} median={med:8.1f}  p10={low:8.1f}  "
                  f"throughput={tput:6.1f} ({tokens:.0f} tokens in {seconds:.2f} s of generation)  "
                  f"stalled replies (< 10 % of the best quiet rate): {stalled}")
        if scenario == "varying" and args.phase == "requests":
            for k in order:
                ph = phases[k]
                print(f"  {names[k]:<28} loaded requests: median {median(ph['loaded']):6.1f}"
                      f"  quiet requests: median {median(ph['quiet']):6.1f}")
        pol = learners[scenario].policy()
        print(f"  learner policy: {json.dumps(pol['contexts'], default=str)[:400]}")
        print(f"  learner explore share: {pol['explore_share']:.2f}; replies not learned from "
              f"(the load changed during them): {pol['ambiguous']}")
    s, v = summary["steady"], summary["varying"]
    t1 = s["c"]["median"] >= 0.95 * s["b"]["median"]
    t2 = v["c"]["median"] > max(v["a"]["median"], v["b"]["median"])
    t3 = v["c"]["p10"] > max(v["a"]["p10"], v["b"]["p10"])
    t4 = v["c"]["throughput"] > max(v["a"]["throughput"], v["b"]["throughput"])
    print(f"\nmisses (replies not counted: not done or < 4 tokens): {len(misses)}")
    print(f"target steady: (c) median >= 95% of (b): {s['c']['median']:.1f} vs {s['b']['median']:.1f} -> "
          f"{'met' if t1 else 'NOT MET'}")
    print(f"target varying: (c) median beats (a) and (b): {v['c']['median']:.1f} vs {v['a']['median']:.1f} / "
          f"{v['b']['median']:.1f} -> {'met' if t2 else 'NOT MET'}")
    print(f"target varying: (c) p10 beats (a) and (b): {v['c']['p10']:.1f} vs {v['a']['p10']:.1f} / "
          f"{v['b']['p10']:.1f} -> {'met' if t3 else 'NOT MET'}")
    print(f"information, not a target: varying: (c) throughput (tokens / generation seconds, what an operator "
          f"waits for) against (a) and (b): {v['c']['throughput']:.1f} vs {v['a']['throughput']:.1f} / "
          f"{v['b']['throughput']:.1f} -> {'higher' if t4 else 'not higher'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sweep": {f"{a}/{b}": x for (a, b), x in sweep.items()},
                                               "summary": summary, "misses": len(misses)}, indent=2))
    all_met = t1 and t2 and t3
    print("all targets met" if all_met else "targets NOT MET (see the lines above)")
    return 0 if all_met else 1


def params_threads(p: EngineParams) -> tuple[int, int]:
    return p.n_threads, p.n_threads_batch


if __name__ == "__main__":
    sys.exit(main())
