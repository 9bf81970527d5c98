"""scripts/bench_tuner.py on a small shipped surface: its line format and that misses are counted."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SURFACE = ROOT / "tests" / "data" / "surface_demo_2core.csv"
LINE = re.compile(r"^objective=tg gp_median=(\d+(\.\d)?) gp_mean=(\d+\.\d) gp_p90=(\d+) gp_misses=(\d+) "
                  r"random_mean=(\d+\.\d)$")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_tuner", ROOT / "scripts" / "bench_tuner.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_tuner"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_last_line_has_the_exact_format():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tuner.py"), "--surface", str(SURFACE),
                          "--seeds", "2", "--budget", "6", "--strategies", "gp,random", "--no-warm"],
                         capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    m = LINE.match(lines[-1])
    assert m, lines[-1]
    targets = [ln for ln in lines if ln.startswith("target ")]
    assert [re.sub(r" \(.*", "", t) for t in targets] == [
        "target GP median <= 10 trials", "target GP p90 <= 20 trials", "target GP misses <= 1 % of 2 seeds",
        "target GP mean <= half of random's", "target plateau stopping adds no misses"], targets
    not_met = [ln for ln in targets if ln.endswith(": NOT MET")]
    assert all(ln.endswith((": met", ": NOT MET")) for ln in targets), targets
    assert out.returncode == (1 if not_met else 0), (out.returncode, not_met, out.stderr)
    # the numbers of the last line are the table's
    gp_row = next(ln for ln in lines if ln.startswith("gp "))
    assert gp_row.split()[1:5] == [m.group(1), m.group(3), m.group(4), m.group(5)], (gp_row, lines[-1])


def test_the_targets_judge_the_tail_not_only_the_median():
    bt = load_bench()
    good = {"median": 6, "p90": 15, "misses": 0, "mean": 8.0}
    assert all(ok for _, ok in bt.targets(good, {"mean": 20.0}, seeds=100))
    long_tail = dict(good, p90=40)
    assert [ok for _, ok in bt.targets(long_tail, {"mean": 20.0}, seeds=100)] == [True, False, True, True]
    assert [ok for _, ok in bt.targets(dict(good, misses=2), {"mean": 20.0}, seeds=100)][2] is False
    assert [ok for _, ok in bt.targets(good, {"mean": 15.0}, seeds=100)][3] is False, "8 > 15 / 2"
    assert bt.last_line("pp", good, {"mean": 20.04}) == \
        "objective=pp gp_median=6 gp_mean=8.0 gp_p90=15 gp_misses=0 random_mean=20.0"


def test_a_run_that_never_gets_there_counts_as_budget_plus_one_and_a_miss():
    bt = load_bench()
    surface = bt.load_surface(SURFACE)
    top = surface.top("tg")
    assert 1 <= len(top) <= max(1, round(0.05 * len(surface.reps)) + 1)
    runs = bt.run_strategy(surface, "tg", "random", seeds=4, budget=2)  # two trials: mostly never
    misses = [r for r in runs if not r.hit]
    assert misses, "a budget of 2 on this surface should miss at least once"
    assert all(r.trials == 3 for r in misses) and all(r.trials <= 2 for r in runs if r.hit)
    # failures recorded in the surface are trials too, told as failures
    failed_told = [h for r in runs for h in r.history if not h[2]]
    assert all(h[1] is None and h[3] for h in failed_told)


def test_a_bad_surface_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("n_threads,ok\n1,1\n")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tuner.py"), "--surface", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.strip().startswith("bench_tuner:") and "missing columns" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_speedup_interval_is_a_point_when_every_seed_agrees_and_follows_the_evidence():
    bt = load_bench()
    assert bt.speedup_interval([4] * 10, [8] * 10) == (2.0, 2.0)
    # random needed more trials than GP on every seed: the whole interval says "GP is faster"
    gp, rnd = [3, 5, 8, 4, 12, 6, 5, 9, 4, 7], [9, 20, 30, 15, 40, 30, 11, 27, 17, 21]
    lo, hi = bt.speedup_interval(gp, rnd)
    assert 1.0 < lo <= hi
    # the same trials for both, seed by seed: no side wins, whatever the resampling
    lo, hi = bt.speedup_interval(gp, list(gp))
    assert lo == hi == 1.0
    mixed = [2, 20, 9, 15, 6, 30, 11, 4, 17, 8]
    lo, hi = bt.speedup_interval(gp, mixed)
    assert lo < hi and lo < 2.5 < hi  # these seeds cannot tell 2x from 2.5x: the interval is wide
    # swapping the strategies turns the interval over (its ends become the reciprocals, within resampling)
    rlo, rhi = bt.speedup_interval(mixed, gp)
    assert rlo == pytest.approx(1 / hi, rel=0.15) and rhi == pytest.approx(1 / lo, rel=0.15)


def test_the_replayed_prior_comes_from_the_surface_machine_facts():
    bt = load_bench()
    surface = bt.load_surface(SURFACE)
    pref = bt.preference_for(surface, "gm")
    assert pref.objective == "mix"  # the geometric mean weighs both: every knob is relevant
    assert pref.logical_cores == int(surface.facts.get("cpu_count") or max(c["n_threads"] for c in surface.configs))
    assert pref.physical_cores <= pref.logical_cores and not pref.gpu


def test_a_surface_that_measured_one_speed_and_has_no_ok_column_replays_that_objective(tmp_path):
    """A measured surface from elsewhere may hold only generation speed, and an empty cell for a run
    that failed: it replays tg (``all`` means tg alone), and asking for pp says what it measured.
    The values are SYNTHETIC, made up for the test."""
    bt = load_bench()
    path = tmp_path / "tg_only.csv"
    rows = ["n_gpu_layers,flash_attn,rep,tg_tok_s"]
    for ngl in (0, 16, 33):
        for fa in (0, 1):
            for rep in range(2):
                rows.append(f"{ngl},{fa},{rep},{'' if (ngl, fa) == (33, 0) else 10 + ngl + 3 * fa + rep}")
    path.write_text("\n".join(rows) + "\n")
    surface = bt.load_surface(path)
    assert surface.objectives == ("tg",) and surface.knobs == ["n_gpu_layers", "flash_attn"]
    assert surface.failed == {(33, "off"): "failed"} and surface.top("tg") == {(33, "on")}
    script = [sys.executable, str(ROOT / "scripts" / "bench_tuner.py"), "--surface", str(path), "--seeds", "3",
              "--strategies", "gp,random", "--no-warm", "--no-compare-prior", "--no-stopping"]
    every = subprocess.run([*script, "--objective", "all"], capture_output=True, text=True, timeout=120)
    assert every.returncode in (0, 1), every.stderr
    assert [ln.split()[0] for ln in every.stdout.splitlines() if ln.startswith("objective=")] == ["objective=tg"]
    pp = subprocess.run([*script, "--objective", "pp"], capture_output=True, text=True, timeout=60)
    assert pp.returncode == 2 and "measured tg, not pp" in pp.stderr


def test_a_surface_of_other_knobs_replays_with_its_own_columns(tmp_path):
    """A GPU box's surface (n_gpu_layers, expert offload, micro-batch; no thread columns) replays
    with exactly its knobs: the columns before ``rep``. The values here are SYNTHETIC, made up for
    the test: a smooth bowl over the knobs, best at 33 GPU layers, 4 expert blocks on the CPU."""
    bt = load_bench()
    path = tmp_path / "surface_gpu.csv"
    lines = ['# {"kind": "llmos-tui response surface", "note": "SYNTHETIC test surface", "gpu": true}',
             "n_gpu_layers,n_cpu_moe,n_ubatch,flash_attn,rep,ok,error,pp_tok_s,tg_tok_s,wall_s"]
    for ngl in (0, 8, 16, 24, 33):
        for moe in (0, 4, 8):
            for ub in (128, 512):
                for fa in (0, 1):
                    if ngl == 33 and moe == 0 and ub == 512:  # "out of memory", every rep
                        lines.append(f"{ngl},{moe},{ub},{fa},0,0,cudaMalloc failed: out of memory,,,1.0")
                        continue
                    for rep in range(3):
                        tg = 20 + ngl - 2 * abs(moe - 4) + fa + 0.3 * rep
                        lines.append(f"{ngl},{moe},{ub},{fa},{rep},1,,{5 * tg + ub / 64:.2f},{tg:.2f},2.5")
    path.write_text("\n".join(lines) + "\n")
    surface = bt.load_surface(path)
    assert surface.knobs == ["n_gpu_layers", "n_cpu_moe", "n_ubatch", "flash_attn"]
    assert len(surface.configs) == 60 and len(surface.failed) == 2
    assert surface.configs[0] == {"n_gpu_layers": 0, "n_cpu_moe": 0, "n_ubatch": 128, "flash_attn": "off"}
    assert surface.top("tg") == {(33, 4, 128, "on"), (33, 4, 512, "on"), (33, 4, 128, "off")}
    assert surface.walls[(0, 0, 128, "off")] == 2.5
    runs = bt.run_strategy(surface, "tg", "gp", seeds=2, budget=30)
    assert all(r.hit for r in runs), [r.trials for r in runs]
    told = {tuple(c[k] for k in surface.knobs) for r in runs for c, *_ in r.history}
    assert told <= set(surface.reps), "only recorded configurations are proposed"
    pref = bt.preference_for(surface, "tg")
    assert pref.logical_cores >= 1  # no thread column: the prior still builds
    # the real tuner's prior on a GPU: every layer of its space offloaded (its largest value; -1 is all)
    assert pref.gpu and pref.max_gpu_layers == 33
    assert pref.factor("n_gpu_layers", 33) == pref.factor("n_gpu_layers", -1) == 1.0 > pref.factor("n_gpu_layers", 16)
    # a recorded out-of-memory (its reason) rules out every later proposal that needs at least its memory
    from llmos_tui.tuning.space import uses_at_least

    for r in runs:
        for i, (config, _, ok, why) in enumerate(r.history):
            if not ok:
                assert "out of memory" in why
                assert not any(uses_at_least(later, config, "gpu") for later, *_ in r.history[i + 1:])


def test_the_shipped_moe_surface_replays_expert_offload_as_a_knob():
    bt = load_bench()
    surface = bt.load_surface(ROOT / "tests" / "data" / "surface_moe_2core.csv")
    assert surface.knobs[-1] == "n_cpu_moe" and {c["n_cpu_moe"] for c in surface.configs} == {0, 12}
    assert surface.facts["model"].startswith("llmos moe") and surface.facts["physical_cores"] >= 1
    assert len(surface.configs) == 96 and len(surface.top("tg")) == 4
    # recorded in interleaved passes (one run per child): each configuration's runs span the recording
    assert surface.facts["bench"]["passes"] == 4 and surface.facts["bench"]["reps_per_child"] == 1
    assert all(len(rows) == 4 for rows in surface.reps.values() if rows)


def test_the_shipped_surfaces_in_passes_hold_each_configuration_from_every_pass():
    import csv

    for name in ("surface_moe_2core.csv", "surface_bench_2core_passes.csv", "surface_bench_2core_trials.csv"):
        path = ROOT / "tests" / "data" / name
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(line for line in fh if not line.startswith("#")) if r["ok"] == "1"]
        passes: dict[str, set[int]] = {}
        for r in rows:
            passes.setdefault(r["config"], set()).add(int(r["pass"]))
        assert passes and all(p == {0, 1, 2, 3} for p in passes.values()), name
        assert "pass" not in load_bench().load_surface(path).knobs
        if name.endswith("_trials.csv"):  # one row per child: a trial's mean, as the tuner is told
            assert all(len([r for r in rows if r["config"] == c]) == 4 for c in passes), name


def llama_bench_records(model: str = "models/qwen3-30b-a3b-Q4_K_M.gguf") -> list[dict]:
    """Records shaped as llama-bench's ``-o json`` writes them (its fields; SYNTHETIC values made up
    for the test: faster with more layers on the GPU and flash attention on)."""
    out = []
    for ngl in (0, 24, 99):
        for fa in (False, True):
            for n_prompt, n_gen in ((512, 0), (0, 128)):
                base = 100.0 + ngl + (10 if fa else 0)
                samples = [base * (5 if n_prompt else 1) + i for i in range(3)]
                out.append({"build_commit": "8cf427ff", "cpu_info": "AMD EPYC", "gpu_info": "NVIDIA H100",
                            "backends": "CUDA", "model_filename": model, "model_type": "qwen3moe 30B.A3B Q4_K - Medium",
                            "n_batch": 2048, "n_ubatch": 512, "n_threads": 8, "type_k": "f16", "type_v": "f16",
                            "n_gpu_layers": ngl, "split_mode": "layer", "main_gpu": 0, "no_kv_offload": False,
                            "flash_attn": fa, "tensor_split": "0.00", "use_mmap": True, "embeddings": False,
                            "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0, "test_time": "2026-12-06T12:00:00Z",
                            "avg_ts": sum(samples) / 3, "stddev_ts": 1.0, "samples_ts": samples})
    return out


def test_llama_benchs_own_json_and_jsonl_output_is_a_surface(tmp_path):
    import json

    bt = load_bench()
    records = llama_bench_records()
    as_json, as_jsonl = tmp_path / "bench.json", tmp_path / "bench.jsonl"
    as_json.write_text(json.dumps(records, indent=2))
    as_jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for path in (as_json, as_jsonl):
        surface = bt.load_surface(path)
        assert surface.knobs == ["flash_attn", "n_gpu_layers"]  # the parameters that vary, in llama-bench's order
        assert {"flash_attn": "on", "n_gpu_layers": 99} in surface.configs and len(surface.configs) == 6
        reps = surface.reps[("on", 99)]
        assert [r["pp"] for r in reps] == [1045.0, 1046.0, 1047.0] and [r["tg"] for r in reps] == [209.0, 210.0, 211.0]
        assert surface.top("tg") == {("on", 99)} and surface.facts["gpu"] and not surface.failed
        assert bt.preference_for(surface, "tg").max_gpu_layers == 99
    # the bench runs on it, end to end
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tuner.py"), "--surface", str(as_jsonl),
                          "--seeds", "3", "--budget", "8", "--strategies", "gp,random", "--no-warm", "--no-stopping"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1), out.stderr
    assert LINE.match(out.stdout.strip().splitlines()[-1]), out.stdout[-300:]
    assert "llama-bench" in out.stdout.splitlines()[0]


def test_llama_bench_output_that_is_not_one_tunable_model_is_one_clear_line(tmp_path):
    import json

    bt = load_bench()
    cases = {
        "records of 2 models": llama_bench_records() + llama_bench_records("models/other.gguf"),
        "no parameter varies": [r for r in llama_bench_records() if r["n_gpu_layers"] == 99 and r["flash_attn"]],
        "need both a prompt": [r for r in llama_bench_records() if r["n_gen"]],
        "not llama-bench JSON": None,
        "not llama-bench records": [{"a": 1}, {"a": 2}],
        "not a whole number": [dict(r, n_prompt="a") if i == 0 else r for i, r in enumerate(llama_bench_records())],
        "are not numbers": [dict(r, samples_ts=7) if i == 0 else r for i, r in enumerate(llama_bench_records())],
        "without positive, finite": [dict(r, samples_ts=[-1.0]) if i == 0 else r for i, r in enumerate(llama_bench_records())],
    }
    for words, records in cases.items():
        path = tmp_path / "bench.json"
        path.write_text(json.dumps(records) if records is not None else "[{not json")
        with pytest.raises(bt.SurfaceError, match=words):
            bt.load_surface(path)


def test_the_synthetic_gpu_surface_says_so_and_has_a_memory_edge(tmp_path):
    bt = load_bench()
    path = tmp_path / "synthetic.csv"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_surface.py"), "--out", str(path),
                          "--vram", "18000", "--reps", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "SYNTHETIC" in out.stdout, out.stderr
    surface = bt.load_surface(path)
    assert surface.facts["synthetic"] is True and "SYNTHETIC" in surface.facts["note"]
    assert "n_cpu_moe" in surface.knobs and "n_gpu_layers" in surface.knobs
    assert surface.failed and all(why.startswith("oom: ") and "out of memory" in why for why in surface.failed.values())
    # the edge: every failure needs more memory than some configuration that ran, and the best runs sit just inside
    from llmos_tui.tuning.space import uses_at_least

    knobs = surface.knobs
    ran = [dict(zip(knobs, k)) for k, reps in surface.reps.items() if reps]
    assert all(any(uses_at_least(dict(zip(knobs, bad)), ok, "gpu") for ok in ran) for bad in surface.failed)
    best = max(surface.means("tg"), key=surface.means("tg").get)
    assert any(uses_at_least(dict(zip(knobs, bad)), dict(zip(knobs, best)), "gpu") for bad in surface.failed)
    bad_args = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_surface.py"), "--out",
                               str(tmp_path / "x.csv"), "--reps", "0"], capture_output=True, text=True, timeout=60)
    assert bad_args.returncode == 2 and not (tmp_path / "x.csv").exists()


def _surface_of(bt, reps_by_config: dict[int, list[float]]):
    """A one-knob surface (``n_ubatch``) whose configurations have exactly these tg runs (pp = 2 tg)."""
    configs = [{"n_ubatch": k} for k in reps_by_config]
    reps = {(k,): [{"tg": v, "pp": 2 * v, "gm": v * 2 ** 0.5} for v in vals] for k, vals in reps_by_config.items()}
    return bt.Surface(Path("made-up.csv"), configs, reps, {}, {}, ["n_ubatch"])


def test_the_recordings_own_noise_on_its_top_set_is_measured():
    """The top 5 % is itself a measurement: with reps that cannot be told apart (two configurations
    whose runs overlap completely), the bootstrap says a member stays in it about half the time, and
    widens the contenders to both; with reps far apart, it stays every time and nothing widens."""
    bt = load_bench()
    apart = _surface_of(bt, {k: [100.0 + k, 100.5 + k, 99.5 + k, 100.2 + k] for k in range(0, 2000, 100)})
    assert apart.top("tg") == {(1900,)}
    st = bt.top_stability(apart, "tg")
    assert st["stay"] == 1.0 and st["contenders"] == st["places"] == 1 and st["wide"] == {(1900,)}
    # the two best overlap: 150, 80, 120, 90 against 95, 140, 85, 125; the rest far below
    overlap = _surface_of(bt, {**{k: [10.0 + k / 100] * 4 for k in range(0, 1800, 100)},
                               1800: [150.0, 80.0, 120.0, 90.0], 1900: [95.0, 140.0, 85.0, 125.0]})
    st = bt.top_stability(overlap, "tg", n=400)
    assert 0.3 < st["stay"] < 0.7, st
    assert st["wide"] == {(1800,), (1900,)} and st["contenders"] == 2 > st["places"] == 1
    # one run per configuration: nothing to resample, so it is not claimed either way
    assert bt.top_stability(_surface_of(bt, {1: [5.0], 2: [6.0]}), "tg") is None
    # a replay counts its hit against the contenders too (never later than against the top set)
    runs = bt.run_strategy(overlap, "tg", "random", seeds=30, budget=12, wide=st["wide"])
    assert all(r.wide_trials <= r.trials for r in runs)
    assert any(r.wide_trials < r.trials for r in runs), [(r.wide_trials, r.trials) for r in runs]


def test_llama_benchs_csv_output_is_a_surface_too(tmp_path):
    """``llama-bench -o csv``: every value quoted text, no samples (a record's avg_ts is one rep);
    two runs written one after the other (each with its header) are two reps. A field a newer
    llama-bench adds (here ``fit_target``) is a knob when it varies; measurements never are."""
    import csv
    import io

    bt = load_bench()
    records = [dict(r, fit_target=1024 if r["flash_attn"] else 2048) for r in llama_bench_records()]
    fields = [f for f in records[0] if f != "samples_ts"]

    def one_run(bump: float) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, quoting=csv.QUOTE_ALL)
        w.writerow(fields)
        for r in records:
            w.writerow([int(r[f]) if isinstance(r[f], bool) else r[f] + bump if f == "avg_ts" else r[f] for f in fields])
        return buf.getvalue()

    path = tmp_path / "bench.csv"
    path.write_text(one_run(0.0) + one_run(2.0))
    surface = bt.load_surface(path)
    assert surface.knobs == ["flash_attn", "n_gpu_layers", "fit_target"]
    assert {"flash_attn": "on", "n_gpu_layers": 99, "fit_target": 1024} in surface.configs and len(surface.configs) == 6
    reps = surface.reps[("on", 99, 1024)]
    assert [r["tg"] for r in reps] == [210.0, 212.0] and [r["pp"] for r in reps] == [1046.0, 1048.0]
    assert surface.facts["gpu"] and "without samples" in surface.facts["note"]
    assert bt.top_stability(surface, "tg")["stay"] == 1.0
    one = tmp_path / "once.csv"
    one.write_text(one_run(0.0))
    assert bt.top_stability(bt.load_surface(one), "tg") is None  # one rep each: the noise is not known
    bad = tmp_path / "short.csv"
    bad.write_text(one_run(0.0).rstrip("\n") + '\n"1","2"\n')
    with pytest.raises(bt.SurfaceError, match="line 14: 2 fields"):
        bt.load_surface(bad)


def test_the_knobs_a_study_holds_are_checked_against_the_recording():
    """tg does not depend on the prompt's knobs in a recording whose runs are fresh children (F near
    1); a made-up surface where n_batch doubles tg is flagged (a tiny p); a surface without those
    knobs has nothing to check."""
    bt = load_bench()
    trials = bt.load_surface(ROOT / "tests" / "data" / "surface_bench_2core_trials.csv")
    tg = bt.untouched_effect(trials, "tg")
    assert tg["held"] == ["n_threads_batch", "n_batch", "n_ubatch"] and tg["p"] > 0.05 and 0.3 < tg["F"] < 2, tg
    assert bt.untouched_effect(trials, "pp")["held"] == ["n_threads"]
    reps = {}
    for key, rows in trials.reps.items():
        batch = key[trials.knobs.index("n_batch")]
        reps[key] = [dict(r, tg=r["tg"] * (2.0 if batch == max(k[trials.knobs.index("n_batch")] for k in trials.reps)
                                           else 1.0)) for r in rows]
    made_up = bt.Surface(trials.path, trials.configs, reps, {}, {}, trials.knobs)
    assert bt.untouched_effect(made_up, "tg")["p"] < 1e-6
    one = bt.untouched_effect(_surface_of(bt, {1: [5.0, 5.1], 2: [6.0, 6.1]}), "tg")  # n_ubatch alone: one group
    assert one["held"] == ["n_ubatch"] and one["df"] == (1, 2) and one["p"] < 0.05
    assert bt.untouched_effect(trials, "gm") is None  # a mix holds nothing
