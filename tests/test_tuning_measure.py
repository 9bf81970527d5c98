"""The bench command of the engine child, the supervisor's pause/resume, and one trial (measure)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineState, Supervisor
from llmos_tui.errors import EngineError
from llmos_tui.paths import DEMO_MODEL
from llmos_tui.tuning.measure import BenchSpec, llama_reason, measure

BASE = EngineParams(model_path=str(DEMO_MODEL), n_ctx=256, n_threads=2, n_threads_batch=2)
SPEC = BenchSpec(n_prompt=32, n_gen=8, reps=2)


@pytest.fixture
def sup():
    s = Supervisor(BASE)
    s.start()
    yield s
    s.stop()


def test_bench_measures_reps_and_leaves_the_engine_usable(sup):
    result = sup.bench(n_prompt=32, n_gen=8, depth=16, reps=3, timeout=60)
    assert result["status"] == "done"
    assert len(result["rows"]) == 3
    for row in result["rows"]:
        assert row["pp_tok_s"] > 0 and row["tg_tok_s"] > 0 and row["ttft_ms"] > 0
        assert row["ttft_ms"] >= row["pp_ms"]  # the first token comes after the prompt
    assert result["tg_tok_s"] == pytest.approx(sum(r["tg_tok_s"] for r in result["rows"]) / 3)
    assert result["peak_rss_mb"] > 10
    assert result["n_threads"] == 2 and result["n_ctx"] == 256
    assert result["llama_cpp_version"]
    assert sup.state == EngineState.READY
    reply = sup.chat([{"role": "user", "content": "hi"}], max_tokens=4).wait(30)
    assert reply.status == "done"


def test_bench_that_does_not_fit_the_context_is_an_error_and_the_engine_stays_ready(sup):
    with pytest.raises(EngineError, match="tokens of context"):
        sup.bench(n_prompt=200, n_gen=100, reps=1, timeout=30)
    assert sup.state == EngineState.READY


def test_pause_refuses_chat_and_resume_loads_the_same_params(sup):
    before = sup.params
    sup.pause("tuning study std:1")
    assert sup.state == EngineState.PAUSED and sup.pid is None
    with pytest.raises(EngineError, match="paused"):
        sup.chat([{"role": "user", "content": "hi"}])
    sup.resume()
    assert sup.state == EngineState.READY and sup.params == before


def test_measure_ok():
    result = measure(BASE, SPEC, timeout=60)
    assert result.ok and result.outcome == "ok"
    assert len(result.rows) == 2 and result.tg_tok_s > 0 and result.pp_tok_s > 0
    assert result.load_ms and result.load_ms > 0
    assert result.metrics()["llama_cpp_version"]


def test_measure_head_size_refusal_is_a_result_with_llamas_reason():
    result = measure(BASE.replace(type_k="q8_0"), SPEC, timeout=60)
    assert not result.ok and result.outcome == "refused"
    assert "does not divide n_embd_head_k=40" in result.reason  # llama.cpp's own line


def test_measure_quantised_v_without_flash_attention_is_refused_before_loading():
    unchecked = EngineParams(**{**BASE.to_dict(), "type_v": "q8_0", "flash_attn": "off"})  # not validated
    result = measure(unchecked, SPEC, timeout=60)
    assert not result.ok and result.outcome == "refused" and "flash_attn" in result.reason


def test_measure_timeout_is_a_result():
    result = measure(BASE, BenchSpec(n_prompt=32, n_gen=64, reps=100000), timeout=4)
    assert not result.ok and result.outcome == "timeout", result


def test_measure_crash_is_a_result():
    def killer(child):
        def run():
            deadline = time.monotonic() + 30
            while child.state != EngineState.GENERATING and time.monotonic() < deadline:
                time.sleep(0.005)
            child.kill(signal.SIGKILL)
        threading.Thread(target=run, daemon=True).start()

    result = measure(BASE, BenchSpec(n_prompt=32, n_gen=64, reps=100000), timeout=60, on_child=killer)
    assert not result.ok and result.outcome == "crash"
    assert "SIGKILL" in result.reason


def test_llama_reason_prefers_the_refusal_over_warnings():
    lines = ["done_getting_tensors: tensor 'x' cannot be used with preferred buffer type CPU_REPACK, using CPU instead",
             "llama_init_from_model: V cache type q8_0 with block size 32 does not divide n_embd_head_v=40",
             "llmos-worker: something"]
    assert "does not divide" in llama_reason(lines)
    assert llama_reason([], "fallback") == "fallback"
