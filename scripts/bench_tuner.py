#!/usr/bin/env python3
"""Benchmark the tuner's optimiser on recorded response surfaces (pure replay: no engine, fast).

    python scripts/bench_tuner.py --surface tests/data/surface_bench_2core.csv [--objective tg|pp|gm|all]
                                  [--seeds 100] [--budget 60] [--strategies gp,rf,random,grid]

A surface is a CSV with one row per measured run (see scripts/record_surface.py), or llama-bench's
own ``-o json`` / ``-o jsonl`` / ``-o csv`` output of one model (its varying parameters are the
knobs, its ``samples_ts`` the runs, or in a CSV each record's ``avg_ts``;
``scripts/make_synthetic_surface.py`` writes a SYNTHETIC GPU one). The space of a
replayed study is exactly the configurations the surface holds. A trial of a configuration draws
one of its recorded reps at random (so the tuner meets the real noise); a configuration that
failed when recorded fails again (a trial, and the study learns from it). The goal is the top 5 %
of the recorded configurations ranked by the mean of all their reps; a run counts the trials until
the configuration the study would apply (``Study.best()``, its kept best, judged on repeated
means) is in that set. A run that never gets there within the budget counts as budget + 1 and is
a miss. The top 5 % is itself a measurement: each configuration's recorded reps are bootstrapped to
say how often a member stays in it (``top_stability``), and the hits against the wider set of
configurations that the recording cannot tell from it are reported beside the target, not instead
of it. Also: the fraction of the best mean that the kept configuration reaches after 12 trials,
and a warm-started second study (its prior: the first study's trials) for the GP.

GP, RF and ET use the prior the real tuner uses (``tuning.prior.Preference``: generation threads
near the physical cores, prompt threads near the logical ones, every layer that fits on a GPU),
built from the surface's recorded machine facts (its ``.json``: ``cpu_count``, ``physical_cores``;
without them, the largest thread count recorded). The row ``gp-noprior`` is the GP without it;
``--no-prior`` drops it everywhere. Random search and grid order never use it. The speedup's
bootstrap interval over the seeds says how much of a median ratio over 20 seeds is luck.

Targets (issue 22: a short tail), judged on the GP over the seeds (100 by default: a median over 20
seeds moves by ±50 %): median <= 10 trials, p90 <= 20, misses <= 1 % of the seeds, mean <= half of
random search's mean; and plateau stopping (``Study.plateau``; ``tune --plateau-stop``, off by default) adds no
misses: each GP run also goes on until the study would stop on a plateau, and the line
``gp with plateau stopping: ...`` says how many trials the study would have run of the budget and
how many runs then missed (``--no-stopping`` skips it). The script exits 1 when a target is not
met (2 on bad input). The warm-started second study is reported, not a target. ``--perturb SEED``
benches a perturbed copy of the surface (per-knob-value effects and extra noise): a surface the
optimiser was not tuned on.

The last line per objective is exactly
``objective=tg gp_median=N gp_mean=M gp_p90=P gp_misses=K random_mean=R`` (M and R with one decimal).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KNOBS = ["n_threads", "n_threads_batch", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v"]  # a CPU surface's
# what a surface row says about a run (not a knob): every other column before ``rep`` is a knob
MEASURES = {"rep", "pass", "ok", "error", "pp_tok_s", "tg_tok_s", "peak_rss_mb", "peak_vram_mib", "load_ms", "ttft_ms",
            "outcome", "config", "wall_s"}
OBJECTIVES = ("tg", "pp", "gm")
AT = 12


class SurfaceError(Exception):
    pass


@dataclass
class Surface:
    path: Path
    configs: list[dict]  # every configuration, in file order
    reps: dict[tuple, list[dict[str, float]]]  # ok reps: {"tg":..., "pp":..., "gm":...}
    failed: dict[tuple, str]  # configurations whose every recorded run failed
    facts: dict = field(default_factory=dict)
    knobs: list[str] = field(default_factory=lambda: list(KNOBS))  # the columns that are knobs, in file order
    walls: dict[tuple, float] = field(default_factory=dict)  # each configuration's mean recorded wall_s
    objectives: tuple[str, ...] = OBJECTIVES  # what its runs measured (a tg-only surface: ("tg",))

    def key(self, config: dict) -> tuple:
        return tuple(config[k] for k in self.knobs)

    def means(self, objective: str) -> dict[tuple, float]:
        return {k: statistics.fmean(r[objective] for r in rows) for k, rows in self.reps.items() if rows}

    def top(self, objective: str, share: float = 0.05) -> set[tuple]:
        means = self.means(objective)
        ranked = sorted(means, key=means.get, reverse=True)
        n = max(1, math.ceil(share * len(ranked)))
        return set(ranked[:n])


def top_stability(surface: Surface, objective: str, n: int = 200, seed: int = 0) -> dict | None:
    """How well the recording itself knows its top 5 %: each configuration's recorded reps resampled
    with replacement ``n`` times (a bootstrap of the recording), the top set ranked again each time.
    ``stay``: the mean chance that a member of the recorded top set is in a resample's; ``contenders``:
    the configurations in it in at least 20 % of the resamples (against ``places``). Near 1 and
    ``places``: the target ranks what the recording measured; far below: part of the top set is the
    recording's own noise, which no optimiser can find except by luck. ``wide``: the contenders and the
    top set (a hit against it is reported beside the target, not instead). None where every configuration
    has a single rep (nothing to resample)."""
    if all(len(rows) < 2 for rows in surface.reps.values()):
        return None
    rng = random.Random(seed)
    top = surface.top(objective)
    keys = [k for k, rows in surface.reps.items() if rows]
    places = len(top)
    counts = dict.fromkeys(keys, 0)
    for _ in range(n):
        means = {k: statistics.fmean(rng.choice(surface.reps[k])[objective] for _ in surface.reps[k]) for k in keys}
        for k in sorted(keys, key=means.get, reverse=True)[:places]:
            counts[k] += 1
    wide = {k for k in keys if counts[k] >= 0.2 * n} | top
    return {"stay": statistics.fmean(counts[k] / n for k in top), "places": places,
            "contenders": len(wide), "wide": wide, "n": n}


def untouched_effect(surface: Surface, objective: str) -> dict | None:
    """Does the recording agree that the knobs a study of ``objective`` holds fixed
    (``tuning.prior.UNTOUCHED``: a tg study the prompt's, a pp study the generation threads) do not
    move it? Configurations that differ only in those knobs form a group; a one-way analysis of
    variance on log values, pooled over the groups, compares the spread of their means with the
    spread of their reps. F near 1: no effect beyond the recorded noise. None where the surface lacks
    those knobs or repeated reps. (Reps recorded back to back in one child understate the noise
    between children, so F is then inflated.)"""
    from llmos_tui.tuning.prior import held_knobs

    held = [k for k in held_knobs(objective) if k in surface.knobs]
    if not held:
        return None
    keep = [i for i, k in enumerate(surface.knobs) if k not in held]
    groups: dict[tuple, list[list[float]]] = {}
    for key, rows in surface.reps.items():
        if len(rows) >= 2:
            groups.setdefault(tuple(key[i] for i in keep), []).append([math.log(r[objective]) for r in rows])
    ssb = ssw = 0.0
    dfb = dfw = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        grand = statistics.fmean(v for runs in members for v in runs)
        for runs in members:
            m = statistics.fmean(runs)
            ssb += len(runs) * (m - grand) ** 2
            ssw += sum((v - m) ** 2 for v in runs)
            dfw += len(runs) - 1
        dfb += len(members) - 1
    if dfb == 0 or dfw == 0 or ssw <= 0:
        return None
    from scipy.stats import f as f_dist

    F = (ssb / dfb) / (ssw / dfw)
    return {"held": held, "F": F, "df": (dfb, dfw), "p": float(f_dist.sf(F, dfb, dfw))}


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# llama-bench's parameters (its -o json / jsonl records): those that vary between the records are the knobs
LLAMA_BENCH_PARAMS = ("n_threads", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v", "n_gpu_layers", "n_cpu_moe",
                      "split_mode", "main_gpu", "no_kv_offload", "tensor_split", "tensor_buft_overrides", "use_mmap",
                      "cpu_mask", "cpu_strict", "poll", "defrag_thold", "embeddings", "no_op_offload", "use_direct_io")


# what a llama-bench record says about the run, not a setting: never a knob (any other field that
# varies between the records is one, so a newer llama-bench's new parameters are knobs too)
LLAMA_BENCH_NOT_KNOBS = {"build_commit", "build_number", "cpu_info", "gpu_info", "backends", "model_filename",
                         "model_type", "model_size", "model_n_params", "n_prompt", "n_gen", "n_depth", "test_time",
                         "platform_ts"}
_MEASURED = ("avg_", "stddev_", "samples_")


def _bench_value(name: str, value: object) -> object:
    if name == "flash_attn":  # false/true, 0/1, -1 (auto)
        return {"true": "on", "1": "on", "false": "off", "0": "off", "-1": "auto"}.get(str(value).lower(), str(value))
    if isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and _is_int(value.strip()):  # llama-bench's CSV: every value is text
        return int(value.strip())
    return str(value)


def _llama_bench_records(p: Path, text: str) -> list[dict]:
    """llama-bench's records from its ``-o json``, ``-o jsonl`` or ``-o csv`` output (CSV files
    written one after another, each with its header, are one list)."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            if stripped.startswith("["):
                return json.loads(text)
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SurfaceError(f"{p}: not llama-bench JSON ({exc})") from None
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    header = rows[0]
    records = []
    for n, row in enumerate(rows[1:], 2):
        if row == header:
            continue
        if len(row) != len(header):
            raise SurfaceError(f"{p} line {n}: {len(row)} fields, the header has {len(header)}")
        records.append(dict(zip(header, row)))
    return records


def is_llama_bench_csv(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    fields = {f.strip().strip('"') for f in first.split(",")}
    return {"avg_ts", "n_prompt", "n_gen"} <= fields


def load_llama_bench(p: Path, text: str) -> Surface:
    """A surface from llama-bench's own output (``-o json``, ``-o jsonl`` or ``-o csv``, one model):
    its knobs are the parameters that vary between its records (the known ones in llama-bench's
    order, then any other field that varies and is not a measurement), a configuration's reps its
    ``samples_ts`` (the prompt test's i-th sample paired with the generation test's i-th). The CSV
    has no samples: a record's ``avg_ts`` is one rep, so a configuration benched once replays without
    noise (the facts say so). llama-bench writes no record for a configuration that failed, so such a
    surface has no failures. A configuration measured for only one of the two tests is left out (and
    counted in the facts)."""
    records = _llama_bench_records(p, text)
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise SurfaceError(f"{p}: no llama-bench records")
    if not any("n_prompt" in r or "n_gen" in r for r in records):
        raise SurfaceError(f"{p}: not llama-bench records (none has n_prompt or n_gen)")
    models = {str(r.get("model_filename") or r.get("model_type") or "") for r in records}
    if len(models) > 1:
        raise SurfaceError(f"{p}: records of {len(models)} models ({', '.join(sorted(models))}): a surface is one model")
    fields = list(dict.fromkeys(f for r in records for f in r))
    others = [f for f in fields if f not in LLAMA_BENCH_PARAMS and f not in LLAMA_BENCH_NOT_KNOBS
              and not f.startswith(_MEASURED)]
    knobs = [k for k in [*LLAMA_BENCH_PARAMS, *others]
             if len({json.dumps(r.get(k), sort_keys=True) for r in records}) > 1]
    if not knobs:
        raise SurfaceError(f"{p}: no parameter varies between the records (nothing to tune)")
    def test_shape(r: dict) -> tuple[int, int, int]:
        try:
            return int(r.get("n_prompt") or 0), int(r.get("n_gen") or 0), int(r.get("n_depth") or 0)
        except (TypeError, ValueError):
            raise SurfaceError(f"{p}: a record whose n_prompt / n_gen / n_depth is not a whole number") from None

    tests: dict[tuple, dict[str, list[float]]] = {}
    shapes: dict[str, dict[tuple, int]] = {"pp": {}, "tg": {}}
    for r in records:
        shape = test_shape(r)
        n_prompt, n_gen = shape[0], shape[1]
        kind = "pp" if n_prompt > 0 and n_gen == 0 else "tg" if n_gen > 0 and n_prompt == 0 else None
        if kind is None:
            continue  # a -pg test (prompt and generation together): neither objective
        shapes[kind][shape] = shapes[kind].get(shape, 0) + 1
    main = {kind: max(counts, key=counts.get) for kind, counts in shapes.items() if counts}
    if set(main) != {"pp", "tg"}:
        raise SurfaceError(f"{p}: llama-bench records need both a prompt (-p) and a generation (-n) test")
    for r in records:
        shape = test_shape(r)
        kind = "pp" if shape == main["pp"] else "tg" if shape == main["tg"] else None
        if kind is None:
            continue
        samples = r.get("samples_ts") or ([r["avg_ts"]] if r.get("avg_ts") else [])
        try:
            values = [float(v) for v in samples]
        except (TypeError, ValueError):
            raise SurfaceError(f"{p}: a record's samples_ts are not numbers") from None
        if not values or not all(v > 0 and math.isfinite(v) for v in values):
            raise SurfaceError(f"{p}: a record without positive, finite samples_ts")
        key = tuple(_bench_value(k, r.get(k)) for k in knobs)
        tests.setdefault(key, {"pp": [], "tg": []})[kind].extend(values)
    configs, reps = [], {}
    one_sided = 0
    for key, got in tests.items():
        n = min(len(got["pp"]), len(got["tg"]))
        if n == 0:
            one_sided += 1
            continue
        configs.append(dict(zip(knobs, key)))
        reps[key] = [{"tg": tg, "pp": pp, "gm": math.sqrt(tg * pp)} for pp, tg in zip(got["pp"][:n], got["tg"][:n])]
    if not configs:
        raise SurfaceError(f"{p}: no configuration has both a prompt and a generation test")
    first = records[0]
    backends = str(first.get("backends") or "")
    threads = [c["n_threads"] for c in configs if isinstance(c.get("n_threads"), int)]
    facts = {"kind": "llama-bench output", "model": first.get("model_type") or first.get("model_filename"),
             "date": first.get("test_time"), "host_cpu": first.get("cpu_info"), "gpu_info": first.get("gpu_info"),
             "backends": backends, "build": first.get("build_commit"),
             "cpu_count": max(threads) if threads else int(first.get("n_threads") or 1),
             "gpu": any(b in backends.upper() for b in ("CUDA", "METAL", "VULKAN", "ROCM", "HIP", "SYCL")),
             "tests": {"pp": "pp%d@d%d" % (main["pp"][0], main["pp"][2]), "tg": "tg%d@d%d" % (main["tg"][1], main["tg"][2])},
             "left_out_one_test_only": one_sided,
             "note": (f"llama-bench {p.suffix.lstrip('.') or 'json'} output; a rep is one of its samples"
                      if any("samples_ts" in r for r in records) else
                      f"llama-bench {p.suffix.lstrip('.') or 'csv'} output without samples: a rep is a record's "
                      f"average, so a configuration benched once replays without noise")}
    return Surface(p, configs, reps, {}, facts, knobs, {})


def load_surface(path: str | Path) -> Surface:
    """A recorded surface. Its knobs are the columns before ``rep`` (a file without ``rep``: every
    column that is not a measurement), so a surface of other knobs (``n_gpu_layers``, ``n_cpu_moe``,
    a GPU's batch sizes) replays as it was recorded; a knob whose every value is an integer is one.
    llama-bench's own ``-o json`` / ``-o jsonl`` output is a surface too (``load_llama_bench``)."""
    p = Path(path)
    if not p.is_file():
        raise SurfaceError(f"no surface file {p}")
    facts: dict = {}
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SurfaceError(f"{p}: cannot read it ({exc})") from None
    if text.lstrip().startswith(("[", "{")) or is_llama_bench_csv(text):
        return load_llama_bench(p, text)
    lines = text.splitlines()
    if lines and lines[0].startswith("#"):
        try:
            facts = json.loads(lines[0][1:].strip())
        except json.JSONDecodeError:
            facts = {"comment": lines[0][1:].strip()}
        if not isinstance(facts, dict):
            facts = {"comment": lines[0][1:].strip()}
    reader = csv.DictReader(line for line in lines if line.strip() and not line.startswith("#"))
    fields = list(reader.fieldnames or [])
    # tg and pp, or one of them (then only its objective); without ``ok`` a run is ok when it has its values
    measured = [m for m in ("tg", "pp") if f"{m}_tok_s" in fields]
    objectives = tuple(o for o in OBJECTIVES if o in measured or (o == "gm" and len(measured) == 2))
    missing = [] if measured else ["tg_tok_s or pp_tok_s"]
    knobs = fields[: fields.index("rep")] if "rep" in fields else [c for c in fields if c not in MEASURES]
    knobs = [k for k in knobs if k not in MEASURES]
    if missing or not knobs:
        raise SurfaceError(f"{p}: missing columns {', '.join(missing or ['(a knob)'])}")
    rows = list(enumerate(reader, 2))
    ints = {k for k in knobs if k != "flash_attn" and all(_is_int((row.get(k) or "").strip()) for _, row in rows)}
    configs: list[dict] = []
    reps: dict[tuple, list[dict[str, float]]] = {}
    errors: dict[tuple, str] = {}
    walls: dict[tuple, list[float]] = {}
    for n, row in rows:
        try:
            if any(row.get(k) is None for k in knobs):
                raise ValueError("a short row")
            config = {k: int(row[k]) if k in ints else row[k].strip() for k in knobs}
            if "flash_attn" in config:
                config["flash_attn"] = "on" if str(row["flash_attn"]).strip() in ("1", "on", "true") else "off"
            if "ok" in fields:
                ok = str(row["ok"]).strip() == "1"
            else:
                ok = all((row.get(f"{m}_tok_s") or "").strip() not in ("", "0", "nan") for m in measured)
            key = tuple(config[k] for k in knobs)
            if key not in reps:
                reps[key] = []
                configs.append(config)
            if ok:
                values = {m: float(row[f"{m}_tok_s"]) for m in measured}
                if not all(v > 0 and math.isfinite(v) for v in values.values()):
                    raise ValueError("a successful run needs positive, finite tok/s")
                if "gm" in objectives:
                    values["gm"] = math.sqrt(values["tg"] * values["pp"])
                reps[key].append(values)
            else:
                why = (row.get("error") or "").strip()
                outcome = (row.get("outcome") or "").strip()
                if outcome and outcome not in ("ok", "error") and outcome not in why:
                    why = f"{outcome}: {why}" if why else outcome  # "oom": what the study learns from
                errors.setdefault(key, why or "failed")
            try:
                walls.setdefault(key, []).append(float(row.get("wall_s") or 0.0))
            except ValueError:
                pass
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise SurfaceError(f"{p} line {n}: {exc}") from None
    if not configs:
        raise SurfaceError(f"{p}: no rows")
    failed = {k: errors.get(k, "failed") for k, rows_ in reps.items() if not rows_}
    if len(failed) == len(reps):
        raise SurfaceError(f"{p}: every configuration failed")
    return Surface(p, configs, reps, failed, facts, knobs, {k: statistics.fmean(v) for k, v in walls.items() if v},
                   objectives)


def perturbed(surface: Surface, seed: int, effect: float = 0.06, extra_noise: float = 0.03) -> Surface:
    """A surface the tuner has not seen, with the recorded one's kind of structure: every knob value
    gets a random multiplicative effect (log-normal, sd ``effect``) on tg and on pp separately, so
    the ranking near the top changes, and every rep an extra noise (sd ``extra_noise``), drawn
    once from ``seed``. Failures stay where they were. For checking that the optimiser is not tuned
    to one recording's specifics (``--perturb SEED``)."""
    rng = random.Random(seed)
    factor: dict[tuple[str, str, object], float] = {}
    for config in surface.configs:
        for knob in surface.knobs:
            for obj in ("tg", "pp"):
                factor.setdefault((obj, knob, config[knob]), math.exp(rng.gauss(0.0, effect)))
    reps: dict[tuple, list[dict[str, float]]] = {}
    for config in surface.configs:
        key = surface.key(config)
        out = []
        for rep in surface.reps[key]:
            vals = {}
            for obj in ("tg", "pp"):
                f = math.prod(factor[(obj, knob, config[knob])] for knob in surface.knobs)
                vals[obj] = rep[obj] * f * math.exp(rng.gauss(0.0, extra_noise))
            vals["gm"] = math.sqrt(vals["tg"] * vals["pp"])
            out.append(vals)
        reps[key] = out
    facts = dict(surface.facts, note=f"perturbed copy (seed {seed}) of {surface.path.name}")
    return Surface(surface.path, list(surface.configs), reps, dict(surface.failed), facts, list(surface.knobs),
                   dict(surface.walls))


@dataclass
class Run:
    trials: int  # until the kept best is in the top set; budget + 1 when never
    hit: bool
    at12: float  # true mean of the kept best after AT trials / best true mean
    history: list[tuple[dict, float | None, bool, str]]  # what the study was told
    used: int = 0  # trials run (with plateau stopping: until the study stopped)
    final_top: bool = False  # the kept best when the run ended is in the top set
    wide_trials: int = 0  # as ``trials``, against the recording's contenders (``top_stability``'s wide set)


def preference_for(surface: Surface, objective: str):
    """The prior a real study on the recorded machine would use (its cores from the surface's facts;
    a surface that does not say how many are physical: all of them)."""
    from llmos_tui.tuning.prior import Preference

    recorded = [c["n_threads"] for c in surface.configs if isinstance(c.get("n_threads"), int)]
    logical = int(surface.facts.get("cpu_count") or max(recorded, default=0) or 1)
    physical = surface.facts.get("physical_cores")
    layers = [c["n_gpu_layers"] for c in surface.configs if isinstance(c.get("n_gpu_layers"), int)]
    most = max(layers, default=0)  # the tuner's own: the largest offload in its space (-1: every layer)
    return Preference.for_machine({"gm": "mix"}.get(objective, objective), logical_cores=logical,
                                  physical_cores=int(physical) if physical else None,
                                  gpu=bool(surface.facts.get("gpu")) or most > 0 or -1 in layers,
                                  max_gpu_layers=most if most > 0 else (1 if -1 in layers else None))


def replay(surface: Surface, objective: str, strategy: str, seed: int, budget: int,
           priors: list[tuple[dict, float | None, bool, str]] | None = None, use_prior: bool = True,
           stopping: bool = False, wide: set[tuple] | None = None) -> Run:
    """One seeded study on the surface, ended at the first hit (run on to AT for the at12 fraction).
    ``stopping``: also run on until the study would stop on a plateau (``Study.plateau``, checked
    before each ask as the tuner does): ``used`` is the trials it would have run, and ``final_top``
    whether its kept best then was in the top set. A hit counts without stopping (``trials``); with
    stopping, a hit after ``used`` is a miss (see ``stop_hit``)."""
    from llmos_tui.tuning.space import Space
    from llmos_tui.tuning.study import Study

    space = Space.from_configs(surface.configs)
    pref = preference_for(surface, objective) if use_prior else None
    study = Study(space, strategy=strategy, seed=seed, preference=pref)
    for config, value, ok, _ in priors or []:
        study.prior(config, value, ok=ok)
    rng = random.Random(10_000 + seed)
    means = surface.means(objective)
    best_mean = max(means.values())
    top = surface.top(objective)
    found, at12 = None, 0.0
    wide = (wide or set()) | top
    found_wide: int | None = None
    stop_at: int | None = None
    final_top = False
    history: list[tuple[dict, float | None, bool, str]] = []
    for trial in range(1, budget + 1):
        if stopping and stop_at is None and study.plateau() is not None:
            stop_at = trial - 1
            kept = study.best()
            final_top = kept is not None and surface.key(kept[0]) in top
        if found is not None and trial > AT and (not stopping or stop_at is not None):
            break
        config = study.ask()
        if space.allowed(config) is not None:  # never: the study only proposes allowed ones
            raise AssertionError(f"the study proposed a configuration the space does not allow: {config}")
        key = surface.key(config)
        if key in surface.failed:
            study.tell(config, None, ok=False, reason=surface.failed[key])
            history.append((config, None, False, surface.failed[key]))
        else:
            value = rng.choice(surface.reps[key])[objective]
            study.tell(config, value)
            history.append((config, value, True, ""))
        kept = study.best()
        if trial == AT:
            at12 = means[surface.key(kept[0])] / best_mean if kept else 0.0
        if found is None and kept is not None and surface.key(kept[0]) in top:
            found = trial
        if found_wide is None and kept is not None and surface.key(kept[0]) in wide:
            found_wide = trial
    if stop_at is None:
        kept = study.best()
        final_top = kept is not None and surface.key(kept[0]) in top
    used = stop_at if stop_at is not None else budget
    return Run(found if found is not None else budget + 1, found is not None, at12, history, used, final_top,
               found_wide if found_wide is not None else budget + 1)


def stop_hit(run: Run) -> bool:
    """A hit with plateau stopping on: the kept best reached the top set before the study stopped."""
    return run.hit and run.trials <= run.used


JOBS = 1  # worker processes for the seeds (--jobs)


def _replay_args(args: tuple) -> Run:
    surface, objective, strategy, seed, budget, use_prior, stopping, wide = args
    return replay(surface, objective, strategy, seed, budget, use_prior=use_prior, stopping=stopping, wide=wide)


def run_strategy(surface: Surface, objective: str, strategy: str, seeds: int, budget: int,
                 use_prior: bool = True, stopping: bool = False, wide: set[tuple] | None = None) -> list[Run]:
    """One replay per seed; with ``JOBS`` > 1 in that many processes (the same runs, in seed order)."""
    work = [(surface, objective, strategy, seed, budget, use_prior, stopping, wide) for seed in range(seeds)]
    if JOBS > 1 and seeds > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(JOBS, seeds)) as pool:
            return pool.map(_replay_args, work, chunksize=1)
    return [_replay_args(w) for w in work]


def tenth_worst(ordered: list[int]) -> int:
    """The p90 of sorted trial counts (nearest rank: 90 % of the runs needed at most this many)."""
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def speedup_interval(gp: list[int], rnd: list[int], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """How far the median ratio could move with other seeds: the seeds resampled with replacement
    (paired: one seed is one draw of both), 2.5th and 97.5th percentiles of random's median / GP's."""
    rng = random.Random(seed)
    idx = range(len(gp))
    ratios = []
    for _ in range(n):
        pick = [rng.choice(idx) for _ in idx]
        g = median([gp[i] for i in pick])
        ratios.append(median([rnd[i] for i in pick]) / g if g else float("inf"))
    ratios.sort()
    return ratios[int(0.025 * (n - 1))], ratios[int(0.975 * (n - 1))]


def fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def bench_objective(surface: Surface, objective: str, strategies: list[str], seeds: int, budget: int,
                    warm: bool = True, use_prior: bool = True, compare_prior: bool = True,
                    stopping: bool = True) -> dict:
    from llmos_tui.tuning.space import Space

    means = surface.means(objective)
    top = surface.top(objective)
    space = Space.from_configs(surface.configs)
    static = [c for c in surface.configs if space.allowed(c) is not None]
    failed_run = [k for k in surface.failed if space.allowed(dict(zip(surface.knobs, k))) is None]
    print(f"\n== objective {objective}: {len(surface.configs)} configurations recorded, {len(static)} that "
          f"llama.cpp's static rules refuse (never proposed), {len(failed_run)} that failed when run (a trial); "
          f"top 5 % = {len(top)} configuration(s) >= {min(means[k] for k in top):.2f} tok/s "
          f"(best mean {max(means.values()):.2f}); {seeds} seeds, budget {budget}")
    stable = top_stability(surface, objective)
    if stable is None:
        print("the recording's own noise on the top 5 %: unknown (one rep per configuration)")
    else:
        print(f"the recording's own noise on the top 5 % ({stable['n']} bootstraps of each configuration's reps): "
              f"a member stays in it with probability {stable['stay']:.2f}; {stable['contenders']} configurations "
              f"are in it in >= 20 % of the resamples, for {stable['places']} place(s)")
    held = untouched_effect(surface, objective)
    if held is not None:
        print(f"knobs the real tuner holds for {objective} ({' '.join(held['held'])}): their effect here, "
              f"F={held['F']:.2f} (df {held['df'][0]}, {held['df'][1]}), p={held['p']:.3f}: "
              + ("none beyond the recorded noise" if held["p"] >= 0.01 else
                 "beyond the recorded noise (or reps that understate it; the replay searches them anyway)"))
    if use_prior and any(s in ("gp", "rf", "et") for s in strategies):
        print(f"GP/RF/ET {preference_for(surface, objective).describe()} (random search and grid order: none)")
    print(f"{'strategy':<8} {'median':>6} {'mean':>6} {'p90':>5} {'misses':>6} {'at12':>6}  seconds")
    if "gp" in strategies and "random" not in strategies:
        strategies = [*strategies, "random"]  # the mean target compares with random search
    out: dict = {}
    rows = list(strategies)
    if use_prior and compare_prior and "gp" in rows:
        rows.insert(rows.index("gp") + 1, "gp-noprior")
    for strategy in rows:
        t = time.time()
        runs = run_strategy(surface, objective, strategy.split("-")[0], seeds, budget,
                            use_prior=use_prior and strategy != "gp-noprior", stopping=stopping and strategy == "gp",
                            wide=stable["wide"] if stable else None)
        trials = sorted(r.trials for r in runs)
        p90 = tenth_worst(trials)
        res = {"median": median(trials), "mean": statistics.fmean(trials), "p90": p90,
               "misses": sum(1 for r in runs if not r.hit), "at12": median([r.at12 for r in runs]), "runs": runs}
        out[strategy] = res
        print(f"{strategy:<10} {fmt(res['median']):>4} {res['mean']:>6.1f} {p90:>5} {res['misses']:>6} "
              f"{res['at12']:>6.3f}  {time.time() - t:.1f}")
    if warm and "gp" in out:
        warm_trials = []
        for seed, first in enumerate(out["gp"]["runs"]):
            second = replay(surface, objective, "gp", 1000 + seed, budget, priors=first.history, use_prior=use_prior)
            warm_trials.append(second.trials)
        out["warm"] = {"median": median(warm_trials), "misses": sum(1 for t in warm_trials if t > budget)}
        print(f"{'gp warm':<8} {fmt(out['warm']['median']):>6} {statistics.fmean(warm_trials):>6.1f} "
              f"{'':>5} {out['warm']['misses']:>6}  (second study, prior = the first study's trials)")
    gp = out.get("gp")
    rnd = out.get("random")
    if gp and stopping:
        runs = gp["runs"]
        used = [r.used for r in runs]
        gp["stop_misses"] = sum(1 for r in runs if not stop_hit(r))
        gp["stopped"] = sum(1 for r in runs if r.used < budget)
        print(f"gp with plateau stopping: trials run median {fmt(median(used))}, mean {statistics.fmean(used):.1f} "
              f"of a budget of {budget} (mean saved {budget - statistics.fmean(used):.1f}; {gp['stopped']} of "
              f"{seeds} stopped early); misses {gp['stop_misses']} (without stopping {gp['misses']}); the kept best "
              f"at the end in the top set in {sum(1 for r in runs if r.final_top)} of {seeds}")
    if stable and gp and rnd and stable["contenders"] > stable["places"]:
        wide = sorted(r.wide_trials for r in gp["runs"])
        print(f"against the recording's {stable['contenders']} contenders (reported, not a target): GP median "
              f"{fmt(median(wide))} / mean {statistics.fmean(wide):.1f} / p90 "
              f"{tenth_worst(wide)} / misses {sum(t > budget for t in wide)}; "
              f"random mean {statistics.fmean(r.wide_trials for r in rnd['runs']):.1f}")
    speedup = rnd["median"] / gp["median"] if gp and rnd and gp["median"] else float("nan")
    met = targets(gp, rnd, seeds)
    for line, ok in met:
        print(f"target {line}: {'met' if ok else 'NOT MET'}")
    if gp and rnd:
        lo, hi = speedup_interval([r.trials for r in gp["runs"]], [r.trials for r in rnd["runs"]])
        print(f"GP vs random, median ratio {speedup:.2f}x (95 % bootstrap interval over these seeds {lo:.2f}-{hi:.2f}x)")
    if "warm" in out:
        print(f"warm-started second study: median {fmt(out['warm']['median'])} trials (reported, not a target)")
    out["speedup"] = speedup
    out["targets_met"] = all(ok for _, ok in met)
    print(last_line(objective, gp, rnd))
    return out


def targets(gp: dict | None, rnd: dict | None, seeds: int) -> list[tuple[str, bool]]:
    """Issue 22's short tail, each as (what it says, met)."""
    if not gp:
        return []
    out = [(f"GP median <= 10 trials ({fmt(gp['median'])})", gp["median"] <= 10),
           (f"GP p90 <= 20 trials ({gp['p90']})", gp["p90"] <= 20),
           (f"GP misses <= 1 % of {seeds} seeds ({gp['misses']})", gp["misses"] <= 0.01 * seeds)]
    if rnd:
        out.append((f"GP mean <= half of random's ({gp['mean']:.1f} vs {rnd['mean']:.1f})",
                    gp["mean"] <= 0.5 * rnd["mean"]))
    if "stop_misses" in gp:
        out.append((f"plateau stopping adds no misses ({gp['stop_misses']} vs {gp['misses']})",
                    gp["stop_misses"] <= gp["misses"]))
    return out


def last_line(objective: str, gp: dict | None, rnd: dict | None) -> str:
    nan = float("nan")
    return (f"objective={objective} gp_median={fmt(gp['median']) if gp else 'nan'} "
            f"gp_mean={gp['mean'] if gp else nan:.1f} gp_p90={gp['p90'] if gp else 'nan'} "
            f"gp_misses={gp['misses'] if gp else 0} random_mean={rnd['mean'] if rnd else nan:.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surface", required=True,
                    help="a recorded surface CSV (scripts/record_surface.py), or llama-bench's -o json / jsonl / csv output")
    ap.add_argument("--objective", default="tg", choices=[*OBJECTIVES, "all"])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--strategies", default="gp,rf,random,grid")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-started second study")
    ap.add_argument("--no-prior", action="store_true",
                    help="GP/RF/ET without the llama.cpp prior (tuning.prior) the real tuner uses")
    ap.add_argument("--no-compare-prior", action="store_true", help="skip the extra 'gp-noprior' row")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the seeds (1)")
    ap.add_argument("--no-stopping", action="store_true",
                    help="skip the GP runs' plateau-stopping statistics (each run then ends at its hit)")
    ap.add_argument("--perturb", type=int, default=None, metavar="SEED",
                    help="bench on a perturbed copy of the surface (random per-knob-value effects and extra "
                         "noise from SEED): a surface the optimiser was not tuned on")
    args = ap.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    from llmos_tui.tuning.study import STRATEGIES

    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or args.seeds < 1 or args.budget < 1:
        print(f"bench_tuner: bad arguments: strategies {bad or 'ok'}, seeds {args.seeds}, budget {args.budget}",
              file=sys.stderr)
        return 2
    try:
        surface = load_surface(args.surface)
    except SurfaceError as exc:
        print(f"bench_tuner: {exc}", file=sys.stderr)
        return 2
    if args.perturb is not None:
        surface = perturbed(surface, args.perturb)
    global JOBS
    JOBS = max(1, args.jobs)
    facts = surface.facts
    print(f"surface {surface.path}: model {facts.get('model', '?')}, recorded {facts.get('date', '?')}, "
          f"{facts.get('cpu_count', '?')} cores; {facts.get('note', '')}".rstrip("; "))
    objectives = list(surface.objectives) if args.objective == "all" else [args.objective]
    if args.objective != "all" and args.objective not in surface.objectives:
        print(f"bench_tuner: {surface.path} measured {', '.join(surface.objectives)}, not {args.objective}",
              file=sys.stderr)
        return 2
    all_met = True
    for objective in objectives:
        out = bench_objective(surface, objective, strategies, args.seeds, args.budget, warm=not args.no_warm,
                              use_prior=not args.no_prior, compare_prior=not args.no_compare_prior,
                              stopping=not args.no_stopping)
        all_met &= bool(out.get("targets_met", True))
    return 0 if all_met else 1  # a target it printed as not met is a failed benchmark


if __name__ == "__main__":
    sys.exit(main())
