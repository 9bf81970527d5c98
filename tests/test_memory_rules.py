"""A configuration that ran out of memory rules out every configuration that needs at least its
memory (memory use is monotone in the offload, the batch, the cache types and flash attention),
so a study near a GPU's memory edge does not spend its budget on the same failure again."""

from __future__ import annotations

import itertools
import json

from llmos_tui.tuning.space import Space, memory_failure, rule_from_reason, uses_at_least
from llmos_tui.tuning.study import Study

CUDA_OOM = ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 2048.00 MiB on device 0: "
            "cudaMalloc failed: out of memory")


def gpu_space() -> Space:
    configs = [{"n_threads": t, "n_ubatch": ub, "flash_attn": fa, "type_k": tk, "n_gpu_layers": ngl, "n_cpu_moe": moe}
               for t, ub, fa, tk, ngl, moe in itertools.product([4, 8], [256, 512, 1024], ["on", "off"],
                                                                ["f16", "q8_0", "q4_0"], [16, 32, -1], [0, 8, 16])]
    return Space.from_configs(configs)


FAILED = {"n_threads": 8, "n_ubatch": 512, "flash_attn": "on", "type_k": "q8_0", "n_gpu_layers": 32, "n_cpu_moe": 8}


def test_where_a_memory_failure_happened_is_read_from_its_reason():
    assert memory_failure(FAILED, CUDA_OOM) == "gpu"
    assert memory_failure(FAILED, "peak VRAM 9000 MiB over the budget of 8000 MiB") == "gpu"
    assert memory_failure(FAILED, "peak RSS 900 MiB over the budget of 800 MiB") == "host"
    assert memory_failure({"n_gpu_layers": 0}, "oom") == "host"
    assert memory_failure(FAILED, "oom") == "gpu"  # layers were offloaded
    for other in ("type_k=q8_0 refused by the model", "worker died (SIGSEGV)", "a room with a zoom", ""):
        assert memory_failure(FAILED, other) is None
        assert rule_from_reason(FAILED, other).get("memory>=") is None


def test_a_gpu_out_of_memory_rules_out_every_configuration_that_needs_more_and_only_those():
    space = gpu_space()
    before = list(space.configs())
    space.learn_infeasible(FAILED, CUDA_OOM)
    after = list(space.configs())
    gone = [c for c in before if c not in after]
    assert FAILED not in after
    assert dict(FAILED, n_threads=4) in gone  # threads do not move memory
    for more in ({"n_ubatch": 1024}, {"flash_attn": "off"}, {"type_k": "f16"}, {"n_gpu_layers": -1},
                 {"n_cpu_moe": 0}, {"n_ubatch": 1024, "type_k": "f16", "n_gpu_layers": -1, "n_cpu_moe": 0}):
        assert dict(FAILED, **more) in gone, more
        assert space.allowed(dict(FAILED, **more)).startswith("known infeasible (needs at least the memory of")
    for less in ({"n_ubatch": 256}, {"type_k": "q4_0"}, {"n_gpu_layers": 16}, {"n_cpu_moe": 16},
                 {"n_ubatch": 1024, "n_cpu_moe": 16}):  # less of one, even with more of another
        assert dict(FAILED, **less) in after, less
    # every configuration ruled out needs at least the failed one's memory on every knob
    assert all(uses_at_least(c, FAILED, "gpu") for c in gone)
    assert len(gone) == sum(1 for c in before if uses_at_least(c, FAILED, "gpu"))
    # the rule survives the journal (a resumed study's space)
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert list(again.configs()) == after


def test_a_memory_failure_from_another_study_rules_out_only_its_own_configuration():
    space = gpu_space()
    space.learn_infeasible(FAILED, CUDA_OOM, memory_cone=False)  # its context and free VRAM were not ours
    assert space.allowed(FAILED).startswith("known infeasible")
    assert space.allowed(dict(FAILED, n_ubatch=1024)) is None and space.allowed(dict(FAILED, n_threads=4)) is None


def test_host_memory_runs_the_other_way_for_the_offload():
    space = gpu_space()
    space.learn_infeasible(FAILED, "peak RSS 900 MiB over the budget of 800 MiB")
    assert space.allowed(dict(FAILED, n_gpu_layers=16)) is not None  # fewer layers on the GPU: more in RAM
    assert space.allowed(dict(FAILED, n_cpu_moe=16)) is not None  # more experts in RAM
    assert space.allowed(dict(FAILED, n_gpu_layers=-1)) is None
    assert space.allowed(dict(FAILED, n_cpu_moe=0)) is None


def test_a_study_at_the_memory_edge_never_proposes_what_an_earlier_failure_rules_out():
    space = gpu_space()

    def needs(c: dict) -> float:  # MiB on the GPU of a made-up model: 48 layers, 8000 MiB free
        layers = 48 if c["n_gpu_layers"] < 0 else c["n_gpu_layers"]
        kv = {"f16": 40, "q8_0": 21, "q4_0": 11}[c["type_k"]]
        return layers * (60 + kv) + max(0, layers - c["n_cpu_moe"]) * 150 + c["n_ubatch"] * (1.2 if c["flash_attn"] == "off" else 0.5)

    def speed(c: dict) -> float:  # faster with more on the GPU
        layers = 48 if c["n_gpu_layers"] < 0 else c["n_gpu_layers"]
        return 10 + layers - 0.5 * c["n_cpu_moe"]

    study = Study(space, strategy="gp", seed=3)
    failures: list[dict] = []
    for _ in range(30):
        c = study.ask()
        assert not any(uses_at_least(c, f, "gpu") for f in failures), (c, failures)
        if needs(c) > 8000:
            failures.append(c)
            study.tell(c, None, ok=False, reason=CUDA_OOM)
        else:
            study.tell(c, speed(c))
    assert failures  # the edge was met
    kept, _, _ = study.best()
    assert needs(kept) <= 8000
