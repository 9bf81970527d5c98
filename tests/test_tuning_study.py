"""The tuner's space and study: what may be tried, ask/tell with noise, failures as data, warm start."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest

from llmos_tui.engine.gguf_info import read_model_info
from llmos_tui.engine.params import EngineParams
from llmos_tui.tuning.space import Dimension, Space, build_space
from llmos_tui.tuning.study import Study

DEMO = Path(__file__).resolve().parent.parent / "llmos_tui" / "data" / "demo.gguf"


@pytest.fixture(scope="module")
def info():
    return read_model_info(DEMO)


@pytest.fixture(scope="module")
def headless_info(info):
    """The demo model as if its header did not say its head sizes: only a load can tell the cache types."""
    return dataclasses.replace(info, head_dim_k=None, head_dim_v=None)


def test_the_demo_models_header_keeps_quantised_cache_types_out_of_the_space(info):
    """Head size 40, block size 32: no quantised cache type fits, so none is ever a trial."""
    assert info.head_dim_k == info.head_dim_v == 40
    space = build_space(info, cpu_count=2, gpu=None, n_ctx=1024)
    assert "type_k" not in space.names and "type_v" not in space.names
    assert space.fixed["type_k"] == space.fixed["type_v"] == "f16"
    assert {(c.get("type_k", "f16"), c.get("type_v", "f16")) for c in space.configs()} == {("f16", "f16")}


def test_cpu_space_has_no_offload_and_only_what_llama_cpp_accepts(headless_info):
    space = build_space(headless_info, cpu_count=2, gpu=None, n_ctx=1024)
    assert "n_gpu_layers" not in space.names
    assert space.fixed["n_gpu_layers"] == 0 and space.fixed["n_ctx"] == 1024
    assert space.dimension("n_threads").values == [1, 2]
    assert set(space.dimension("type_v").values) == {"f16", "q8_0", "q4_0"}
    for config in space.configs():
        assert config["n_ubatch"] <= config["n_batch"]
        assert not (config["type_v"] != "f16" and config["flash_attn"] == "off")
    bad = dict(next(space.configs()), type_v="q4_0", flash_attn="off")
    assert "flash attention" in space.allowed(bad)
    assert "must not exceed" in space.allowed(dict(next(space.configs()), n_batch=64, n_ubatch=1024))


def test_thread_values_stay_few_on_big_machines(info):
    space = build_space(info, cpu_count=64, n_ctx=2048)
    values = space.dimension("n_threads").values
    assert values[0] == 1 and values[-1] == 64 and len(values) <= 10


def test_gpu_space_starts_from_the_largest_offload_that_fits(info):
    roomy = build_space(info, cpu_count=8, gpu={"name": "X", "vram_total_mib": 24000, "vram_free_mib": 20000}, n_ctx=2048)
    layers = roomy.dimension("n_gpu_layers").values
    assert layers[0] == 0 and layers[-1] == info.n_layer + 1
    assert roomy.defaults(EngineParams(model_path=str(DEMO)))["n_gpu_layers"] == info.n_layer + 1
    # 200 MiB free: the CUDA overhead estimate alone does not fit, so only the CPU remains
    tight = build_space(info, cpu_count=8, gpu={"name": "X", "vram_total_mib": 8000, "vram_free_mib": 200}, n_ctx=2048)
    assert tight.dimension("n_gpu_layers").values == [0]


def test_a_learned_refusal_is_generalised(headless_info):
    space = build_space(headless_info, cpu_count=2, n_ctx=1024)
    first = next(c for c in space.configs() if c["type_k"] == "q8_0" and c["flash_attn"] == "on")
    space.learn_infeasible(first, "llama_init_from_model: K cache type q8_0 with block size 32 does not divide "
                                  "n_embd_head_k=40")
    assert not [c for c in space.configs() if c["type_k"] == "q8_0" and c["flash_attn"] == "on"]
    assert [c for c in space.configs() if c["type_k"] == "q8_0" and c["flash_attn"] == "off"]  # still allowed
    space.learn_infeasible(dict(first, type_k="q4_0"), "type_k=q4_0 refused by the model")
    assert not [c for c in space.configs() if c["type_k"] == "q4_0"]
    # anything else: exactly that configuration
    other = next(space.configs())
    space.learn_infeasible(other, "worker died (SIGSEGV)")
    assert space.allowed(other).startswith("known infeasible")
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.allowed(other) and sum(1 for _ in again.configs()) == sum(1 for _ in space.configs())


def test_defaults_and_to_params_round_trip(info):
    space = build_space(info, cpu_count=2, n_ctx=1024)
    base = EngineParams(model_path=str(DEMO), n_threads=2, n_threads_batch=2, n_batch=512, n_ubatch=512)
    d = space.defaults(base)
    assert space.allowed(d) is None
    assert d["n_threads"] == 2 and d["n_batch"] == 512 and d["flash_attn"] == "on"
    params = space.to_params(dict(d, n_threads=1, type_k="q8_0"), base)
    assert params.n_threads == 1 and params.type_k == "q8_0" and params.n_ctx == 1024 and params.n_gpu_layers == 0


def test_from_configs_allows_exactly_those():
    configs = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 1, "b": "x"}]
    space = Space.from_configs(configs)
    assert space.allowed({"a": 1, "b": "x"}) is None
    assert space.allowed({"a": 1, "b": "y"}) is not None
    assert sorted(map(str, space.configs())) == sorted(map(str, configs[:2]))


# ---- a synthetic noisy objective with an infeasible corner -------------------------------------

def synthetic_space() -> Space:
    dims = [Dimension("x", "int", list(range(8))), Dimension("y", "int", [1, 2, 4, 8, 16, 32]),
            Dimension("mode", "cat", ["a", "b", "c"])]
    configs = [{"x": x, "y": y, "mode": m} for x in dims[0].values for y in dims[1].values for m in dims[2].values]
    return Space.from_configs(configs)


def truth(c: dict) -> float:
    """Peak at x=5, y=8, mode b; tok/s-like (positive)."""
    return 50.0 * math.exp(-((c["x"] - 5) ** 2) / 8 - (math.log2(c["y"]) - 3) ** 2 / 4) * {"a": 0.7, "b": 1.0, "c": 0.85}[c["mode"]] + 5


def infeasible(c: dict) -> str | None:
    return "out of memory" if c["y"] == 32 and c["mode"] != "a" else None


def run(strategy: str, seed: int, budget: int, noise: float = 0.1):
    space = synthetic_space()
    study = Study(space, strategy=strategy, seed=seed)
    rng = random.Random(seed)
    asked = []
    for _ in range(budget):
        c = study.ask()
        assert space.allowed(c) is None
        asked.append(c)
        why = infeasible(c)
        if why:
            study.tell(c, None, ok=False, reason=why)
        else:
            study.tell(c, truth(c) * (1 + rng.gauss(0, noise)))
    return study, asked


def test_gp_finds_the_peak_region_despite_noise_and_failures():
    best_true = max(truth(c) for c in synthetic_space().configs() if not infeasible(c))
    reached = {"gp": [], "random": []}
    for strategy in reached:
        for seed in range(4):
            study, asked = run(strategy, seed, 20)
            config, mean, n = study.best()
            assert n >= 2  # judged on repeated means
            reached[strategy].append(truth(config) / best_true)
            # a failure is never proposed again, and never scored
            failed = [json.dumps(c, sort_keys=True) for c, _ in study.infeasible]
            for c, _ in study.infeasible:
                assert c not in asked[asked.index(c) + 1:]
            assert all(json.dumps(r[0], sort_keys=True) not in failed for r in study.ranking())
    gp, rnd = (sum(v) / len(v) for v in (reached["gp"], reached["random"]))
    assert gp >= 0.8 and gp > rnd, reached


def test_asks_are_plain_python_values():
    study, _ = run("gp", 0, 8)
    c = study.ask()
    assert json.loads(json.dumps(c)) == c
    assert all(type(v) in (int, str) for v in c.values())


def test_a_lucky_single_run_is_repeated_before_it_is_kept():
    space = synthetic_space()
    study = Study(space, strategy="random", seed=1, n_initial=1)
    a = {"x": 5, "y": 8, "mode": "b"}
    b = {"x": 0, "y": 1, "mode": "a"}
    study.tell(a, 40.0)
    study.tell(a, 42.0)
    study.tell(b, 60.0)  # one lucky run
    assert study.best()[0] == a  # the repeated one is kept
    assert study.needs_repeat(b) and study.ask() == b  # a new single-run leader is measured again at once
    study.tell(b, 10.0)
    assert study.best()[0] == a and not study.needs_repeat(b)
    ranking = study.ranking()
    assert ranking[0][0] == a and ranking[0][3] == 2 and ranking[0][2] > 0


def test_warm_start_begins_at_the_best_prior():
    first, _ = run("gp", 0, 15)
    second = Study(synthetic_space(), strategy="gp", seed=5)
    for config, mean, _, n in first.ranking():
        second.prior(config, mean)
    for c, why in first.infeasible:
        second.prior(c, None, ok=False)
    assert second.ask() == first.ranking()[0][0]
    assert second.n_trials == 0


def test_grid_walks_without_repeating_and_random_avoids_measured():
    space = synthetic_space()
    study = Study(space, strategy="grid", seed=0)
    seen = []
    for _ in range(10):
        c = study.ask()
        seen.append(json.dumps(c, sort_keys=True))
        study.tell(c, 1.0 + len(seen) * 0.0)  # flat: the leader never needs a repeat beyond its two
    assert len(set(seen)) >= 9


def test_unknown_strategy_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown strategy"):
        Study(synthetic_space(), strategy="gbrt")


# ---- the llama.cpp prior (tuning.prior) -----------------------------------------------------------

def thread_space() -> Space:
    configs = [{"n_threads": t, "n_threads_batch": tb, "n_batch": b, "flash_attn": fa}
               for t in (1, 2, 4, 8, 16) for tb in (1, 2, 4, 8, 16) for b in (128, 512) for fa in ("on", "off")]
    return Space.from_configs(configs)


def test_the_prior_prefers_physical_cores_for_generation_and_logical_for_prompts():
    from llmos_tui.tuning.prior import Preference

    tg = Preference.for_machine("tg", logical_cores=16, physical_cores=8)
    assert tg.factor("n_threads", 8) == 1.0 > tg.factor("n_threads", 16) > tg.factor("n_threads", 2)
    assert tg.factor("n_threads", 4) == tg.factor("n_threads", 16)  # a halving and a doubling alike
    assert tg.factor("n_threads_batch", 1) == 1.0  # a prompt knob: neutral for generation
    pp = Preference.for_machine("pp", logical_cores=16, physical_cores=8)
    assert pp.factor("n_threads_batch", 16) == 1.0 > pp.factor("n_threads_batch", 8)
    assert pp.factor("n_threads", 1) == 1.0
    mix = Preference.for_machine("mix", logical_cores=16, physical_cores=8)
    assert mix.factor("n_threads", 1) < 1.0 and mix.factor("n_threads_batch", 1) < 1.0
    # a GPU: every layer that fits, flash attention on; never weight 0
    gpu = Preference.for_machine("tg", logical_cores=16, physical_cores=8, gpu=True, max_gpu_layers=33)
    assert gpu.factor("n_gpu_layers", 33) == 1.0 > gpu.factor("n_gpu_layers", 16) > gpu.factor("n_gpu_layers", 0)
    assert gpu.factor("flash_attn", "on") > gpu.factor("flash_attn", "off")
    assert gpu.weight({"n_threads": 1, "n_gpu_layers": 0, "flash_attn": "off"}) >= gpu.floor > 0
    # physical cores never above logical; unknown physical: all of them
    assert Preference.for_machine("tg", logical_cores=4, physical_cores=None).physical_cores == 4
    assert Preference.for_machine("tg", logical_cores=4, physical_cores=9).physical_cores == 4
    assert "8 (physical cores)" in tg.describe() and "prompt threads" not in tg.describe()


def test_the_initial_design_follows_the_prior_and_random_search_ignores_it():
    from llmos_tui.tuning.prior import Preference

    pref = Preference.for_machine("tg", logical_cores=16, physical_cores=8)
    counts = {"gp": 0, "random": 0}
    for strategy in counts:
        for seed in range(40):
            study = Study(thread_space(), strategy=strategy, seed=seed, preference=pref)
            counts[strategy] += study.ask()["n_threads"] == 8
    assert counts["gp"] >= 20  # the prior's mode: ~0.6 of its mass here
    assert counts["random"] <= 16  # 1 in 5 by chance


def test_the_prior_fades_when_the_measurements_disagree():
    """A machine where the prior is wrong (generation best on 2 threads of 8 physical cores): the
    study still gets there, because the prior's weight in the acquisition fades with the trials."""
    from llmos_tui.tuning.prior import Preference

    pref = Preference.for_machine("tg", logical_cores=16, physical_cores=8)
    found = []
    for seed in range(4):
        study = Study(thread_space(), strategy="gp", seed=seed, preference=pref)
        rng = random.Random(seed)
        for _ in range(25):
            c = study.ask()
            rate = {1: 20, 2: 40, 4: 25, 8: 18, 16: 9}[c["n_threads"]] * (1.1 if c["flash_attn"] == "off" else 1.0)
            study.tell(c, rate * (1 + rng.gauss(0, 0.05)))
        found.append(study.best()[0]["n_threads"])
    assert found.count(2) >= 3, found


# ---- the judged best and plateau stopping (issue 22: a short tail) ----------------------------------

def test_the_judged_mean_shrinks_a_single_run_more_than_a_repeated_one():
    """The empirical-Bayes judge: the same observed mean counts for more on four runs than on one,
    and the noise estimate is the repeats' pooled spread."""
    space = synthetic_space()
    study = Study(space, strategy="random", seed=0)
    a, b, c = {"x": 5, "y": 8, "mode": "b"}, {"x": 0, "y": 1, "mode": "a"}, {"x": 1, "y": 1, "mode": "a"}
    for v in (50.0, 51.0, 49.0, 50.0):
        study.tell(a, v)
    study.tell(b, 52.0)  # one run, a little above a's four
    for v in (20.0, 21.0):
        study.tell(c, v)
    judged = study.judged()
    key = study._key
    assert judged[key(b)][1] > judged[key(a)][1]  # one run: the wider standard error
    assert judged[key(b)][0] < math.log(52.0)  # pulled toward the others
    assert abs(judged[key(a)][0] - math.log(50.0)) < abs(judged[key(b)][0] - math.log(52.0))
    assert study.noise() < study.noise_prior  # the repeats agree to ~1 %: the prior gives way
    assert study.best()[0] == a and study.needs_repeat(b) is (judged[key(b)][0] >= judged[key(a)][0])


def test_the_study_stops_on_a_plateau_not_before_its_minimum_and_random_search_never():
    """A clear peak with 1 % noise: once the peak is found and repeated, nothing promises a gain and
    nothing measured is likely to beat it: the study stops, after its minimum; random never does."""
    rng = random.Random(0)
    stopped = {}
    for strategy in ("gp", "random"):
        study = Study(synthetic_space(), strategy=strategy, seed=0)
        for n in range(60):
            if study.plateau() is not None:
                stopped[strategy] = (n, study.plateau(), study.challenger_p())
                break
            c = study.ask()
            study.tell(c, truth(c) * (1 + rng.gauss(0, 0.01)))
        if strategy == "gp":
            assert study.best()[2] >= study.min_reps
    n, why, p = stopped["gp"]
    assert Study(synthetic_space()).plateau_min <= n < 60 and "expected improvement under" in why
    assert p < Study(synthetic_space()).plateau_challenger_p
    assert "random" not in stopped


def test_contenders_the_runs_cannot_tell_apart_keep_the_study_going():
    """A flat space (every configuration 20 tok/s, 1 % noise): the surrogate expects nothing, but
    the kept best is one of many equals that its few runs cannot rank: a challenger has about even
    odds, and the study does not stop at its minimum (on the recorded bench surface this rule kept
    stopping from adding misses)."""
    rng = random.Random(0)
    study = Study(synthetic_space(), strategy="gp", seed=0)
    for _ in range(study.plateau_min + study.plateau_patience + 2):
        c = study.ask()
        study.tell(c, 20.0 * (1 + rng.gauss(0, 0.01)))
    assert study.best()[2] >= study.min_reps
    assert 0.3 < study.challenger_p() <= 0.5 + 1e-9
    assert study.plateau() is None
