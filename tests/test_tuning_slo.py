"""Service-level objectives (tuning.slo): their spelling, the journal's request shapes, and a replayed
load on the demo model, where a configuration that breaks the TTFT bound is infeasible."""

from __future__ import annotations

import pytest

from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import ConfigError
from llmos_tui.paths import DEMO_MODEL
from llmos_tui.tuning.objective import make_objective
from llmos_tui.tuning.slo import ServiceObjective, measure_service, plan, quantile
from llmos_tui.tuning.space import Space
from llmos_tui.tuning.study import Study
from llmos_tui.tuning.study_config import StudyConfig

BASE = EngineParams(model_path=str(DEMO_MODEL), n_ctx=512, n_threads=2, n_threads_batch=2)
SHAPES = [{"prompt_tokens": 24, "gen_tokens": 4}, {"prompt_tokens": 160, "gen_tokens": 8},
          {"prompt_tokens": 60, "gen_tokens": 6}]


def test_the_spelling_parses_and_a_bad_one_is_one_clear_line():
    slo = ServiceObjective.parse("throughput@4 ttft_p99<=2s")
    assert (slo.metric, slo.clients, slo.quantile, slo.bound_ms) == ("throughput", 4, 0.99, 2000.0)
    assert slo.spelling == "throughput@4 ttft_p99<=2s"
    tg = ServiceObjective.parse("tg  TTFT<=500ms")
    assert (tg.metric, tg.clients, tg.quantile, tg.bound_ms) == ("tg", 1, 0.99, 500.0)
    assert ServiceObjective.parse("tg@2 ttft_p50<=0.25s").bound_ms == 250.0
    assert ServiceObjective.parse("throughput@8").bound_ms is None
    for bad in ("throughput@4 ttft_p99<=2", "latency@2 ttft<=1s", "throughput@0 ttft<=1s", "throughput@4 ttft<2s"):
        with pytest.raises(ConfigError) as err:
            ServiceObjective.parse(bad)
        assert "\n" not in str(err.value) and "throughput@4 ttft_p99<=2s" in str(err.value) or "clients" in str(err.value)
    # a study accepts the spelling, and refuses a bad one before any work
    assert StudyConfig.from_options(objective="throughput@4 ttft_p99<=2s").objective == "throughput@4 ttft_p99<=2s"
    with pytest.raises(ConfigError, match="bad service objective"):
        StudyConfig.from_options(objective="throughput@4 ttft_p99<=fast")
    obj = make_objective("throughput@4 ttft_p99<=2s")
    assert obj.service == slo and obj.maximize and obj.prior_name == "mix"
    assert make_objective("tg ttft<=500ms").prior_name == "tg"


def test_the_journal_gives_the_daemons_request_shapes_first(journal):
    assert journal.request_shapes() == []
    chat = journal.create_chat("cockpit")
    journal.add_message(chat, "assistant", "", metrics={"prompt_tokens": 300, "gen_tokens": 100})
    assert journal.request_shapes() == [{"prompt_tokens": 300, "gen_tokens": 100, "source": "chat"}]
    served = journal.create_chat("serve: API traffic (pid 1)")
    for p, g in ((40, 5), (90, 12)):
        journal.add_message(served, "assistant", "", metrics={"prompt_tokens": p, "gen_tokens": g, "source": "serve"})
    journal.add_message(served, "assistant", "", metrics={"prompt_tokens": 10, "gen_tokens": 0, "source": "serve"})
    assert journal.request_shapes() == [{"prompt_tokens": 40, "gen_tokens": 5, "source": "serve"},
                                        {"prompt_tokens": 90, "gen_tokens": 12, "source": "serve"}]


def test_the_plan_cycles_the_shapes_in_order_and_clips_to_the_context():
    requests = plan(SHAPES, clients=2)
    assert len(requests) == 8 and requests[:4] == [(24, 4), (160, 8), (60, 6), (24, 4)]
    assert max(p + g for p, g in plan(SHAPES, clients=1, max_prompt=100)) <= 100
    with pytest.raises(ConfigError, match="no answered requests"):
        plan([], clients=2)
    assert quantile([5, 1, 3, 2], 0.99) == 5 and quantile([5, 1, 3, 2], 0.5) == 2


def test_a_replayed_load_follows_the_request_shapes_and_a_broken_bound_is_infeasible():
    slo = ServiceObjective.parse("throughput@2 ttft_p99<=60s")
    result = measure_service(BASE, slo, SHAPES, timeout=120)
    assert result.ok, result.reason
    rows = result.rows
    assert [(r["want_prompt"], r["want_gen"]) for r in rows] == plan(SHAPES, clients=2)
    for r in rows:
        assert 0 < r["gen_tokens"] <= r["want_gen"] and r["ttft_ms"] > 0
    by_shape = {r["want_prompt"]: r["prompt_tokens"] for r in rows}
    assert by_shape[24] < by_shape[60] < by_shape[160]  # the prompts the engine saw follow the journal's
    assert 0.5 < by_shape[160] / 160 < 1.6, by_shape
    service = result.facts["service"]
    assert service["requests"] == 8 and service["throughput_tok_s"] > 0
    obj = make_objective(slo.spelling)
    assert obj.value(result) == pytest.approx(service["throughput_tok_s"])
    # with two clients, a request waits for the other's: the queue is in its TTFT
    assert service["ttft_q_ms"] >= service["ttft_p50_ms"]

    tight = ServiceObjective.parse("throughput@2 ttft_p99<=1ms")
    broken = measure_service(BASE, tight, SHAPES, timeout=120)
    assert not broken.ok and broken.outcome == "slo"
    assert "over the bound of 1 ms" in broken.reason and "2 client(s)" in broken.reason
    assert make_objective(tight.spelling).value(broken) is None
    # the study learns it as infeasible: never proposed again, never the kept best
    space = Space.from_configs([{"n_threads": 1}, {"n_threads": 2}])
    study = Study(space, strategy="random", seed=0)
    study.tell({"n_threads": 2}, None, ok=False, reason=broken.reason)
    assert space.allowed({"n_threads": 2}) is not None
    assert all(study.ask() == {"n_threads": 1} for _ in range(3))
