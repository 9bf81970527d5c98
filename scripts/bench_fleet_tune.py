#!/usr/bin/env python3
"""Benchmark distributed tuning (issue 20): wall-clock to the top-5 % plateau with 1, 2 and 4 boxes.

    python scripts/bench_fleet_tune.py [--surface tests/data/surface_bench_2core.csv] [--seeds 20]
                                       [--budget 60] [--objective tg] [--ray [--ray-seeds 2]]

The study is the real fleet driver (``llmos_tui.fleet.tune.FleetTuner``: one study, proposals in
constant-liar batches, at most one trial per box at a time) over boxes that replay a recorded
surface (``llmos_tui.fleet.replay.SurfaceBox``): a trial draws one recorded repetition of its
configuration at random and takes the configuration's recorded wall time; a configuration that
failed when recorded fails again. The same trial budget for 1, 2 and 4 boxes.

**Time is simulated** by default (``SimulatedExecutor``: each box's trials one after another at
their recorded durations, the boxes in parallel; the time to the plateau is the simulated clock
when the study's kept best — ``Study.best()``, judged on repeated means — first lies in the top 5 %
of the recorded configurations). A run that never gets there within the budget is a miss (its
time: the whole study's). ``--ray`` also runs the same study over a real local Ray cluster
(``ray.cluster_utils.Cluster``, one labelled node per box, trials as Ray tasks that sleep the
recorded time scaled by ``--ray-scale``) for a few seeds, and reports the measured wall-clock.

Targets: the median time to the plateau with 4 boxes is at least 2.5x shorter than with 1; and 4
boxes miss no more often than 1. Exit 1 when a target is not met (2 on bad input). The last line is
exactly ``boxes4_speedup=S misses1=M1 misses4=M4``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_tuner import SurfaceError, load_surface, preference_for  # noqa: E402

DEFAULT_SURFACE = ROOT / "tests" / "data" / "surface_bench_2core.csv"
BOX_COUNTS = (1, 2, 4)
TARGET_SPEEDUP = 2.5


def surface_box(surface, objective: str, seed: int, **kwargs):
    from llmos_tui.fleet.replay import SurfaceBox
    from llmos_tui.tuning.space import Space

    reps = {k: [r[objective] for r in rows] for k, rows in surface.reps.items() if rows}
    space = Space.from_configs(surface.configs).to_dict()
    return SurfaceBox(surface.knobs, reps, surface.failed, surface.walls, space, seed=seed, **kwargs)


def study_once(surface, objective: str, boxes: int, seed: int, budget: int, executor_factory=None,
               strategy: str = "gp") -> dict:
    """One study with ``boxes`` boxes; its time to the plateau (None: a miss) and its total time."""
    from llmos_tui.fleet.tune import BoxInfo, FleetTuner, SimulatedExecutor

    box = surface_box(surface, objective, 10_000 + seed)
    infos = [BoxInfo.from_describe(f"box{i}", box.describe(f"box{i}", {})) for i in range(boxes)]
    top = surface.top(objective)
    pref = preference_for(surface, objective)
    if executor_factory is None:
        executor = SimulatedExecutor(infos, box.trial)
    else:
        executor = executor_factory(infos, box)
    started = executor.now()
    tuner = FleetTuner(executor, None, trials=budget, objective=objective, seed=seed, verify=False, strategy=strategy,
                       warm_start=False, resume=False, preference=lambda _box: pref,
                       target=lambda _cls, cfg: cfg is not None and surface.key(cfg) in top, stop_at_target=True)
    report = tuner.run([b.name for b in infos])[0]
    end = executor.now() - started
    plateau = report.plateau_s - started if report.plateau_s is not None else None
    return {"plateau_s": plateau, "total_s": end, "trials": len(report.trials), "hit": plateau is not None,
            "boxes_used": sorted({t["box"] for t in report.trials})}


def _time(r: dict) -> str:
    return f"{r['plateau_s']:.0f} s ({r['trials']} trials)" if r["hit"] else f"MISS ({r['total_s']:.0f} s)"


def run(seeds: int = 20, *, surface_path: str | Path = DEFAULT_SURFACE, objective: str = "tg", budget: int = 60,
        strategy: str = "gp", say=print) -> dict:
    """The simulated-time benchmark; returns boxes4_speedup, misses1, misses4 (and the details)."""
    surface = load_surface(surface_path)
    out: dict = {"seeds": seeds, "budget": budget, "objective": objective, "strategy": strategy, "time": "simulated",
                 "per_boxes": {}}
    say(f"surface {surface.path.name}: {len(surface.configs)} configurations, top 5 % = {len(surface.top(objective))}; "
        f"objective {objective}, budget {budget} trials, {seeds} seeds; SIMULATED TIME (recorded trial durations, "
        f"boxes in parallel)")
    results: dict[int, list[dict]] = {n: [] for n in BOX_COUNTS}
    for seed in range(seeds):  # seeds outside, box counts inside: a cut run still compares like with like
        t0 = time.time()
        for n in BOX_COUNTS:
            results[n].append(study_once(surface, objective, n, seed, budget, strategy=strategy))
        say(f"seed {seed}: " + ", ".join(
            f"{n} box(es) {_time(results[n][-1])}" for n in BOX_COUNTS) + f"  ({time.time() - t0:.0f} s)")
    say(f"{'boxes':>5} {'median_s':>9} {'mean_s':>8} {'p90_s':>7} {'misses':>6} {'trials_med':>10}")
    for n in BOX_COUNTS:
        runs = results[n]
        times = sorted(r["plateau_s"] if r["hit"] else r["total_s"] for r in runs)
        row = {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
               "p90_s": times[min(len(times) - 1, int(0.9 * len(times) + 0.999) - 1)],
               "misses": sum(1 for r in runs if not r["hit"]),
               "trials_median": statistics.median(r["trials"] for r in runs), "runs": runs}
        out["per_boxes"][n] = row
        say(f"{n:>5} {row['median_s']:>9.1f} {row['mean_s']:>8.1f} {row['p90_s']:>7.1f} {row['misses']:>6} "
            f"{row['trials_median']:>10g}")
    one, four = out["per_boxes"][1], out["per_boxes"][4]
    out["boxes4_speedup"] = one["median_s"] / four["median_s"] if four["median_s"] else float("inf")
    out["boxes2_speedup"] = one["median_s"] / out["per_boxes"][2]["median_s"] if out["per_boxes"][2]["median_s"] \
        else float("inf")
    out["boxes4_speedup_mean"] = one["mean_s"] / four["mean_s"] if four["mean_s"] else float("inf")
    out["misses1"], out["misses4"] = one["misses"], four["misses"]
    say(f"speedup (median time to the plateau, simulated): 2 boxes {out['boxes2_speedup']:.2f}x, 4 boxes "
        f"{out['boxes4_speedup']:.2f}x (on the mean: {out['boxes4_speedup_mean']:.2f}x)")
    out["targets"] = [(f"4 boxes >= {TARGET_SPEEDUP}x faster than 1 to the top-5 % plateau, simulated time "
                       f"({out['boxes4_speedup']:.2f}x)", out["boxes4_speedup"] >= TARGET_SPEEDUP),
                      (f"4 boxes miss no more than 1 box ({out['misses4']} vs {out['misses1']} of {seeds})",
                       out["misses4"] <= out["misses1"])]
    out["met"] = all(ok for _, ok in out["targets"])
    return out


def _warm_up() -> bool:
    import llmos_tui.fleet.replay  # noqa: F401 - what a trial task imports

    return True


def run_ray(seeds: int, *, surface_path: str | Path = DEFAULT_SURFACE, objective: str = "tg", budget: int = 60,
            scale: float = 0.05, box_counts: tuple[int, ...] = (1, 4), strategy: str = "gp", say=print) -> dict:
    """The same study over a real local Ray cluster (one labelled node per box; a trial sleeps its
    recorded time x ``scale``): measured wall-clock to the plateau."""
    tmp = tempfile.mkdtemp(prefix="llmos-fleet-bench-")
    os.environ.setdefault("RAY_TMPDIR", tmp)
    import ray
    from ray.cluster_utils import Cluster

    from llmos_tui.fleet.ray_exec import LABEL, RayExecutor

    surface = load_surface(surface_path)
    most = max(box_counts)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 * 2**20,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    for i in range(most):
        cluster.add_node(num_cpus=1, labels={LABEL: f"box{i}"}, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    out: dict = {"time": "measured (real local Ray cluster)", "scale": scale, "per_boxes": {}}
    # each node's worker process starts before the clock does (a cold start is not a trial's time)
    warm = ray.remote(_warm_up)
    ray.get([warm.options(label_selector={LABEL: f"box{i}"}, num_cpus=0).remote() for i in range(most)])
    try:
        say(f"real local Ray cluster: head + {most} labelled nodes; a trial sleeps its recorded time x {scale}")
        for n in box_counts:
            rows = []
            for seed in range(seeds):
                def factory(infos, box, _n=n):
                    box.sleep, box.time_scale = True, scale
                    return RayExecutor(box, boxes=infos)
                rows.append(study_once(surface, objective, n, seed, budget, executor_factory=factory,
                                       strategy=strategy))
            times = [r["plateau_s"] if r["hit"] else r["total_s"] for r in rows]
            out["per_boxes"][n] = {"median_s": statistics.median(times), "misses": sum(1 for r in rows if not r["hit"]),
                                   "boxes_used": sorted({b for r in rows for b in r["boxes_used"]})}
            say(f"{n} box(es): median {statistics.median(times):.2f} s measured to the plateau over {seeds} seed(s), "
                f"misses {out['per_boxes'][n]['misses']}, trials ran on {', '.join(out['per_boxes'][n]['boxes_used'])}")
        if 1 in out["per_boxes"] and most in out["per_boxes"] and out["per_boxes"][most]["median_s"]:
            out["speedup"] = out["per_boxes"][1]["median_s"] / out["per_boxes"][most]["median_s"]
            say(f"measured speedup {most} boxes vs 1 on Ray: {out['speedup']:.2f}x ({seeds} seed(s): reported, "
                "not a target)")
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surface", default=str(DEFAULT_SURFACE))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--objective", default="tg", choices=("tg", "pp", "gm"))
    ap.add_argument("--ray", action="store_true", help="also run the study over a real local Ray cluster")
    ap.add_argument("--ray-seeds", type=int, default=2)
    ap.add_argument("--ray-scale", type=float, default=0.05, help="recorded trial time x this, slept on Ray")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.budget < 1 or args.ray_seeds < 1 or args.ray_scale < 0:
        print("bench_fleet_tune: seeds, budget and ray-seeds must be at least 1, ray-scale not negative",
              file=sys.stderr)
        return 2
    try:
        out = run(args.seeds, surface_path=args.surface, objective=args.objective, budget=args.budget)
        if args.ray:
            run_ray(args.ray_seeds, surface_path=args.surface, objective=args.objective, budget=args.budget,
                    scale=args.ray_scale)
    except SurfaceError as exc:
        print(f"bench_fleet_tune: {exc}", file=sys.stderr)
        return 2
    for line, ok in out["targets"]:
        print(f"target {line}: {'met' if ok else 'NOT MET'}")
    print(f"boxes4_speedup={out['boxes4_speedup']:.2f} misses1={out['misses1']} misses4={out['misses4']}")
    return 0 if out["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
