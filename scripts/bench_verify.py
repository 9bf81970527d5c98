#!/usr/bin/env python3
"""How far a "verified" can be trusted: the tuner's A/B verification on recorded noise.

Each simulated verification picks a configuration of a recorded response surface at random and
replays its bench reps: one A run is one of its reps drawn at random, one B run another draw of the
same configuration's reps (the null: A and B are the same configuration), or that draw scaled by
1.10 (a true 10 % gain, for the power). The verification is the tuner's own
(``llmos_tui.tuning.verdict.ab_verify`` with its default sequential design), so the numbers are the
error rates of what ``tune`` does, on this machine's measured noise.

    python scripts/bench_verify.py [--surface tests/data/surface_bench_2core.csv] [--sims 2000]

Prints the rates, each target as met / NOT MET, and last the line
``false_verified=F power10=P median_rounds=R`` (R: the larger of the null's and the gain's median
rounds). Exits 1 when a target is not met, 2 on a bad surface.
Targets: F <= 0.05, P >= 0.80, R <= 8.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmos_tui.tuning.verdict import VerifyDesign, ab_verify  # noqa: E402

SURFACE = ROOT / "tests" / "data" / "surface_bench_2core.csv"
TARGETS = {"false_verified": (0.05, "<="), "power10": (0.80, ">="), "median_rounds": (8, "<=")}


class BadSurface(Exception):
    pass


def load_reps(path: Path, metric: str = "tg_tok_s") -> dict[str, list[float]]:
    """Per configuration, the recorded reps of ``metric`` (configurations with at least 2 reps)."""
    try:
        with path.open() as fh:
            rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    except OSError as exc:
        raise BadSurface(f"cannot read {path}: {exc}") from None
    if not rows or not {"config", "ok", metric} <= set(rows[0]):
        raise BadSurface(f"{path}: missing columns (need config, ok, {metric})")
    reps: dict[str, list[float]] = {}
    for row in rows:
        if row["ok"] == "1" and row[metric]:
            reps.setdefault(row["config"], []).append(float(row[metric]))
    reps = {k: v for k, v in reps.items() if len(v) >= 2}
    if not reps:
        raise BadSurface(f"{path}: no configuration with two or more measured reps")
    return reps


def simulate(reps: dict[str, list[float]], *, gain: float, sims: int, seed: int,
             design: VerifyDesign) -> tuple[float, list[int]]:
    """The share of verifications that said "verified", and each one's rounds."""
    rng = random.Random(seed)
    configs = sorted(reps)
    verified = 0
    rounds: list[int] = []
    for _ in range(sims):
        values = reps[rng.choice(configs)]
        verdict = ab_verify(lambda: rng.choice(values), lambda: rng.choice(values) * gain, design=design)
        verified += int(verdict.significant)
        rounds.append(verdict.rounds)
    return verified / sims, rounds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--surface", type=Path, default=SURFACE, help="a recorded surface (CSV with reps)")
    ap.add_argument("--sims", type=int, default=2000, help="simulated verifications per case (2000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--metric", default="tg_tok_s", choices=("tg_tok_s", "pp_tok_s"))
    args = ap.parse_args(argv)
    if args.sims < 1:
        print("bench_verify: --sims must be at least 1", file=sys.stderr)
        return 2
    try:
        reps = load_reps(args.surface, args.metric)
    except BadSurface as exc:
        print(f"bench_verify: {exc}", file=sys.stderr)
        return 2
    design = VerifyDesign()
    print(f"surface {args.surface.name}: {len(reps)} configurations, {sum(map(len, reps.values()))} reps of "
          f"{args.metric}; design: {design.to_dict()['test']}, alpha {design.alpha}, min gain "
          f"{design.min_gain:.0%}, looks at {list(design.looks)} rounds")
    false_rate, null_rounds = simulate(reps, gain=1.0, sims=args.sims, seed=args.seed, design=design)
    power, gain_rounds = simulate(reps, gain=1.10, sims=args.sims, seed=args.seed + 1, design=design)
    med_null, med_gain = statistics.median(null_rounds), statistics.median(gain_rounds)
    median_rounds = max(med_null, med_gain)
    print(f"same configuration: {false_rate:.3f} verified over {args.sims} verifications "
          f"(median {med_null:g} rounds)")
    print(f"true 10 % gain: {power:.3f} verified over {args.sims} verifications (median {med_gain:g} rounds)")
    bare, _ = simulate(reps, gain=1.0, sims=args.sims, seed=args.seed + 2,
                       design=VerifyDesign(alpha=design.alpha, min_gain=0.0, looks=design.looks))
    print(f"(same configuration with no minimum gain, the sequential test's own false-positive rate: {bare:.3f}; "
          f"bounded by alpha {design.alpha})")
    values = {"false_verified": false_rate, "power10": power, "median_rounds": median_rounds}
    failed = False
    for name, (target, op) in TARGETS.items():
        ok = values[name] <= target if op == "<=" else values[name] >= target
        failed |= not ok
        print(f"target {name} {op} {target}: {'met' if ok else 'NOT MET'} ({values[name]:g})")
    print(f"false_verified={false_rate:.3f} power10={power:.3f} median_rounds={median_rounds:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
