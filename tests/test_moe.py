"""Expert offload on a synthetic mixture-of-experts model (scripts/make_moe_model.py), real llama.cpp."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llmos_tui.engine import vram
from llmos_tui.engine.gguf_info import read_model_info
from llmos_tui.engine.loading import expert_patterns
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineState, Supervisor
from llmos_tui.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ASK = [{"role": "user", "content": "Which experts answer this?"}]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"llmos_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def moe_script():
    return _script("make_moe_model")


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory: pytest.TempPathFactory, moe_script) -> Path:
    return moe_script.write_moe_model(tmp_path_factory.mktemp("moe") / "moe.gguf")


def moe_params(path: Path, **kw: object) -> EngineParams:
    return EngineParams(model_path=str(path), n_ctx=512, n_threads=2, n_threads_batch=2, **kw)


def test_the_header_names_the_experts_and_their_bytes(moe_model: Path, moe_script) -> None:
    shape = moe_script.MoeShape()
    info = read_model_info(moe_model)
    assert info.is_moe and info.n_expert == shape.n_expert and info.n_expert_used == shape.n_expert_used
    assert info.expert_layer_bytes == [shape.expert_bytes_per_layer] * shape.n_layer
    assert info.n_expert_layers == shape.n_layer
    demo = read_model_info(ROOT / "llmos_tui" / "data" / "demo.gguf")
    assert not demo.is_moe and demo.n_expert is None and demo.expert_layer_bytes == []


def test_n_cpu_moe_is_validated() -> None:
    assert EngineParams.from_mapping({"n_cpu_moe": "3"}).n_cpu_moe == 3
    with pytest.raises(ConfigError, match="n_cpu_moe must be"):
        EngineParams.from_mapping({"n_cpu_moe": -1})
    assert "cpu_moe=2" in EngineParams(n_cpu_moe=2).summary()
    assert expert_patterns(2) == [r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps",
                                  r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps"]
    import re

    from llmos_tui.engine.gguf_info import _EXPERT_TENSOR

    # as llama.cpp's regex: the experts (fused gate_up and the chunked "chexps" too), never the router
    # or the shared expert, which stay with their layer
    for name in ("blk.1.ffn_up_exps.weight", "blk.1.ffn_gate_up_exps.weight", "blk.1.ffn_down_chexps.weight"):
        assert any(re.search(p, name) for p in expert_patterns(2)) and _EXPERT_TENSOR.search(name), name
    for name in ("blk.1.ffn_gate_inp.weight", "blk.1.ffn_up_shexp.weight", "blk.2.ffn_up_exps.weight"):
        assert not any(re.search(p, name) for p in expert_patterns(2)), name
    assert not _EXPERT_TENSOR.search("blk.1.ffn_gate_inp.weight") and not _EXPERT_TENSOR.search("blk.1.ffn_up_shexp.weight")


def test_the_estimate_drops_by_the_experts_bytes(moe_model: Path, moe_script) -> None:
    info = read_model_info(moe_model)
    per_layer = moe_script.MoeShape().expert_bytes_per_layer
    base = vram.estimate(moe_params(moe_model), info)
    assert base.experts_on_cpu == 0
    for n in range(1, info.n_layer + 1):
        est = vram.estimate(moe_params(moe_model, n_cpu_moe=n), info)
        assert base.total - est.total == n * per_layer, "exactly the moved experts' bytes"
        assert est.experts_on_cpu == n * per_layer and est.kv_cache == base.kv_cache
    assert "experts on the CPU" in vram.estimate(moe_params(moe_model, n_cpu_moe=2), info).summary()
    # blocks that stay on the CPU anyway move nothing: 2 GPU layers of 5 are blocks 3 and the output
    part = vram.estimate(moe_params(moe_model, n_gpu_layers=2, n_cpu_moe=4), info)
    assert part.experts_on_cpu == per_layer


def _reply(params: EngineParams) -> tuple[str, list[str], dict]:
    sup = Supervisor(params)
    try:
        sup.start(timeout=60)
        assert sup.state is EngineState.READY, sup.state
        reply = sup.chat(ASK, max_tokens=40, temperature=0.0, seed=7).wait(30)
        assert reply.status == "done"
        return reply.text, [line.text for line in sup.logs()], dict(sup.runtime)
    finally:
        sup.stop()


def test_it_loads_with_the_overrides_and_generates_the_same_tokens(moe_model: Path) -> None:
    plain_text, plain_logs, plain_rt = _reply(moe_params(moe_model))
    moved_text, moved_logs, moved_rt = _reply(moe_params(moe_model, n_cpu_moe=3))
    assert plain_text and plain_text == moved_text, "greedy decoding: the same tokens with the experts moved"
    overridden = [t for t in moved_logs if "buffer type overridden to CPU" in t]
    assert len(overridden) == 3 * 3, "gate, up and down experts of blocks 0-2, as llama.cpp reports them"
    assert all(f"blk.{i}." in " ".join(overridden) for i in range(3)) and "blk.3." not in " ".join(overridden)
    assert not any("overridden" in t for t in plain_logs)
    assert moved_rt["n_cpu_moe"] == 3 and moved_rt["expert_overrides"] == 3 and plain_rt["expert_overrides"] == 0


def test_expert_offload_on_a_dense_model_is_refused_from_the_header(demo_params: EngineParams) -> None:
    sup = Supervisor(demo_params.replace(n_cpu_moe=1))
    try:
        with pytest.raises(Exception, match="not a mixture-of-experts model"):
            sup.start(timeout=60)
    finally:
        sup.stop()


def test_the_space_gains_the_knob_only_for_a_moe_model_on_a_gpu(moe_model: Path) -> None:
    from llmos_tui.tuning.space import build_space

    info = read_model_info(moe_model)
    big = {"name": "fake", "vram_total_mib": 80_000, "vram_free_mib": 80_000}
    space = build_space(info, cpu_count=2, gpu=big, n_ctx=512)
    assert space.dimension("n_cpu_moe").values == [0, 1, 2, 3, 4], "0 … all expert blocks"
    assert space.defaults(moe_params(moe_model))["n_cpu_moe"] == 0, "everything fits: nothing moved"
    assert build_space(info, cpu_count=2, gpu=None, n_ctx=512).dimension("n_cpu_moe") is None, \
        "without a GPU every expert is in CPU memory anyway"
    demo = read_model_info(ROOT / "llmos_tui" / "data" / "demo.gguf")
    assert build_space(demo, cpu_count=2, gpu=big, n_ctx=512).dimension("n_cpu_moe") is None, "a dense model"


def test_a_tight_gpu_moves_experts_before_it_drops_layers(moe_model: Path) -> None:
    """Free memory for everything but two blocks' experts: the space's default keeps every layer on
    the GPU and moves experts; the refusal of the unmoved configuration names the estimate."""
    from llmos_tui.tuning.space import build_space

    info = read_model_info(moe_model)
    p = moe_params(moe_model, n_batch=64, n_ubatch=32, flash_attn="on")
    est = vram.estimate(p, info)
    free_mib = (est.total - 1.5 * info.expert_layer_bytes[0]) / vram.SAFETY / vram.MIB
    space = build_space(info, cpu_count=2, gpu={"name": "fake", "vram_total_mib": 80_000,
                                                "vram_free_mib": free_mib}, n_ctx=512)
    top = max(space.dimension("n_gpu_layers").values)
    assert top == info.n_layer + 1, "every layer fits once experts move"
    want = space.defaults(p)
    assert want["n_gpu_layers"] == top and want["n_cpu_moe"] == 2, want
    refused = space.allowed(dict(want, n_cpu_moe=0))
    assert refused and "needs about" in refused


def _repair_ctx(model: Path, *, gpu_offload: bool | None, **params: object):
    from types import SimpleNamespace

    return SimpleNamespace(model_info=read_model_info(model), params=moe_params(model, **params),
                           engine=SimpleNamespace(gpu_offload=gpu_offload))


def test_the_oom_ladder_moves_experts_before_whole_layers(moe_model: Path) -> None:
    import llmos_tui.doctor.repairs as R
    from llmos_tui.doctor.api import REGISTRY

    specs = REGISTRY.repairs
    assert specs["engine.experts_to_cpu"].cost == specs["engine.fewer_gpu_layers"].cost - 1
    assert specs["engine.experts_to_cpu"].cost > max(specs[r].cost for r in
                                                     ("engine.kv_quant", "engine.smaller_batch", "engine.smaller_ctx"))
    finding = None
    ok = _repair_ctx(moe_model, gpu_offload=True)
    assert R._experts_pre(ok, finding) is None
    assert R.experts_to_cpu(ok, finding).n_cpu_moe == 2, "half of the 4 expert blocks first"
    assert R.experts_to_cpu(_repair_ctx(moe_model, gpu_offload=True, n_cpu_moe=2), finding).n_cpu_moe == 3
    assert "already on the CPU" in R._experts_pre(_repair_ctx(moe_model, gpu_offload=True, n_cpu_moe=4), finding)
    assert "no GPU" in R._experts_pre(_repair_ctx(moe_model, gpu_offload=False), finding)
    assert "no layers are offloaded" in R._experts_pre(_repair_ctx(moe_model, gpu_offload=True, n_gpu_layers=0),
                                                       finding)
    dense = _repair_ctx(ROOT / "llmos_tui" / "data" / "demo.gguf", gpu_offload=True)
    assert "not a mixture of experts" in R._experts_pre(dense, finding)


# ---- the measured fit (CPU path: the engine child's peak RSS) -------------------------------------

def test_a_load_records_its_real_peak_beside_the_estimate_in_the_journal(moe_model: Path, tmp_path: Path) -> None:
    from llmos_tui.engine import memfit
    from llmos_tui.journal import Journal
    from llmos_tui.journal.engine_events import attach

    journal = Journal(tmp_path / "journal.db")
    sup = Supervisor(moe_params(moe_model))
    detach = attach(sup, journal)
    try:
        sup.start(timeout=60)
        mem = sup.runtime["memory"]
        assert mem["device"] == "cpu" and mem["source"] == "load"
        assert mem["model"] == memfit.model_key(str(moe_model))
        est = memfit.host_estimate(moe_params(moe_model), read_model_info(moe_model)).total / vram.MIB
        assert mem["estimate_mib"] == pytest.approx(est, abs=0.01)
        assert mem["measured_mib"] > mem["estimate_mib"], "the child's RSS holds the runtime besides the model"
    finally:
        sup.stop()
        detach()
    try:
        rows = journal.events("loaded")
        seen = memfit.readings_from_rows(rows)
        assert seen and seen[0]["measured_mib"] == mem["measured_mib"]
        fix = memfit.correction(seen, mem["model"], "cpu")
        assert fix is not None and fix.n == 1
        assert fix.delta_mib == pytest.approx(mem["measured_mib"] - mem["estimate_mib"])
        assert memfit.correction(seen, mem["model"], "gpu") is None, "a correction is per device"
    finally:
        journal.close()


def test_the_preflight_corrects_the_estimate_by_what_ran_and_never_tries_what_it_refuses(tmp_path: Path) -> None:
    """Study 1 measures (real engine, real RSS) and journals each trial's peak beside its estimate.
    Study 2 has an RSS budget that every header estimate of the space passes but the corrected one
    does not: no trial is loaded, each refusal and the report say the estimate was corrected."""
    from llmos_tui.core.changes import Changes
    from llmos_tui.engine import memfit
    from llmos_tui.journal import Journal
    from llmos_tui.paths import DEMO_MODEL
    from llmos_tui.tuning.measure import BenchSpec, measure
    from llmos_tui.tuning.runner import Tuner

    base = EngineParams(model_path=str(DEMO_MODEL), n_ctx=128, n_threads=2, n_threads_batch=2)
    spec = BenchSpec(n_prompt=16, n_gen=4, reps=1)
    loads: list[EngineParams] = []

    def counted(params: EngineParams, *args: object, **kw: object):
        loads.append(params)
        return measure(params, *args, **kw)

    journal = Journal(tmp_path / "journal.db")
    serving = Supervisor(base)
    try:
        serving.start(timeout=60)
        tuner = Tuner(serving, Changes(serving, journal), journal, None, None, measure_fn=counted)
        first = tuner.run(trials=2, spec=spec, verify=False, strategy="random", n_initial=2, vram_budget=None,
                          rss_budget="100000")
        assert loads, "study 1 ran its trials"
        rows = [r for r in journal.trials(first.study_id, kind="trial") if r["outcome"] == "ok"]
        assert rows and all(r["metrics"]["memory"]["measured_mib"] == pytest.approx(r["metrics"]["peak_rss_mb"],
                                                                                     abs=0.01) for r in rows)
        assert all(r["metrics"]["memory"]["estimate_mib"] > 0 for r in rows)
        events = journal.events(memfit.EVENT_KIND)
        assert len(events) == len(rows) and events[0]["data"]["study_id"] == first.study_id

        info = read_model_info(DEMO_MODEL)
        space = tuner._space
        raw = [memfit.estimate_mib(space.to_params(c, base), info, "cpu") for c in space.configs()]
        fix = memfit.correction(memfit.readings_from_rows(events), memfit.model_key(str(DEMO_MODEL)), "cpu")
        budget = max(raw) + 1.0
        assert fix is not None and min(raw) + fix.delta_mib > budget, "the premise: only the correction refuses"

        loads.clear()
        second = Tuner(serving, Changes(serving, journal), journal, None, None, measure_fn=counted).run(
            trials=3, spec=spec, verify=False, strategy="random", n_initial=3, vram_budget=None,
            rss_budget=f"{budget:.1f}")
        assert loads == [], "a configuration the corrected estimate refuses is never loaded"
        assert second.trials and all(t.outcome == "budget" for t in second.trials)
        assert all("estimate corrected by +" in t.reason and "(estimate, not run)" in t.reason
                   for t in second.trials), [t.reason for t in second.trials]
        assert any(n.startswith("pre-flight: estimate corrected by") for n in second.notes), second.notes
    finally:
        serving.stop()
        journal.close()


def test_the_change_transactions_vram_preflight_can_take_the_correction(moe_model: Path) -> None:
    from llmos_tui.engine import memfit

    info = read_model_info(moe_model)
    p = moe_params(moe_model)
    need = vram.estimate(p, info).total
    free = int((need + 2 * vram.MIB) / vram.SAFETY)  # fits by the header alone, 2 MiB to spare
    assert memfit.corrected_vram_refusal(p, info, free, []) is None
    seen = [{"device": "gpu", "model": memfit.model_key(str(moe_model)), "estimate_mib": 100.0,
             "measured_mib": 104.0}]
    why = memfit.corrected_vram_refusal(p, info, free, seen)
    assert why and "corrected by +4 MiB" in why and "VRAM budget" in why
    assert memfit.corrected_vram_refusal(p.replace(n_cpu_moe=4), info, free, seen) is None, \
        "moving every expert (6 MiB) makes room for the correction"


def test_more_expert_blocks_than_the_model_has_are_refused_from_the_header(moe_model: Path) -> None:
    from llmos_tui.engine.worker import expert_offload_refusal

    assert expert_offload_refusal(str(moe_model), 0) is None
    assert expert_offload_refusal(str(moe_model), 4) is None
    assert "exceeds the model's 4 layers" in expert_offload_refusal(str(moe_model), 5)
