"""The doctor's traffic detectors on synthetic ``serve_request`` events (what the daemon publishes)."""

from __future__ import annotations

from llmos_tui.doctor.context import DetectorContext, JournalView
from llmos_tui.doctor.detectors.traffic import queue_growth, tps_under_concurrency, ttft_long_prompt
from llmos_tui.engine.supervisor import EngineEvent


def served(ts: float, **data: object) -> EngineEvent:
    base = {"route": "chat", "status": 200, "outcome": "done", "stream": True, "queued_ms": 0.0, "wall_ms": 500.0,
            "prompt_tokens": 20, "prompt_eval_tokens": 20, "gen_tokens": 32, "ttft_ms": 40.0, "gen_tps": 50.0,
            "queue_depth": 0}
    return EngineEvent("serve_request", {**base, **data}, ts=ts)


def context(detector_id: str, events: list[EngineEvent], *, state: str = "generating",
            now: float | None = None) -> DetectorContext:
    now = now if now is not None else (events[-1].ts if events else 0.0)
    return DetectorContext(detector_id, "warning", now, None, None, None, None, state, None, events, events, [],
                           None, JournalView(None), {})


def narrated(finding) -> None:
    assert finding.narration_kind in ("fact", "likely") and finding.narration
    assert any(ch.isdigit() for ch in finding.narration)


def test_tps_drop_under_concurrency_is_found_and_steady_rates_are_not() -> None:
    alone = [served(i, gen_tps=50.0 + i % 3, queue_depth=0) for i in range(8)]
    slow = [served(10 + i, gen_tps=30.0 + i % 3, queue_depth=3) for i in range(8)]
    (f,) = tps_under_concurrency(context("serve.tps_concurrency", alone + slow))
    assert f.evidence["alone_median_tps"] > 49 and f.evidence["busy_median_tps"] < 32
    assert "while other clients waited" in f.narration and f.narration_kind == "fact"
    narrated(f)
    same = [served(10 + i, gen_tps=50.0 + i % 3, queue_depth=3) for i in range(8)]
    assert tps_under_concurrency(context("serve.tps_concurrency", alone + same)) == []
    assert tps_under_concurrency(context("serve.tps_concurrency", slow)) == [], "nothing served alone: no baseline"


def test_ttft_is_judged_per_prompt_token() -> None:
    usual = [served(i, prompt_eval_tokens=100 + 10 * i, ttft_ms=(100 + 10 * i) * 1.0) for i in range(10)]
    # a prompt ten times longer with a TTFT ten times longer is not a spike
    longer = [served(20 + i, prompt_eval_tokens=1000, ttft_ms=1000.0) for i in range(3)]
    assert ttft_long_prompt(context("serve.ttft_long_prompt", usual + longer)) == []
    spiked = [served(20 + i, prompt_eval_tokens=1000, ttft_ms=5000.0) for i in range(3)]
    (f,) = ttft_long_prompt(context("serve.ttft_long_prompt", usual + spiked))
    assert f.evidence["median_ms_per_token"] == 1.0 and f.evidence["last"][-1]["ms_per_token"] == 5.0
    narrated(f)
    short = [served(20 + i, prompt_eval_tokens=10, ttft_ms=500.0) for i in range(3)]
    assert ttft_long_prompt(context("serve.ttft_long_prompt", usual + short)) == [], "short prompts are not judged"


def test_a_growing_queue_is_found_while_the_engine_is_up() -> None:
    growing = [served(100 + 10 * i, queue_depth=i) for i in range(12)]
    (f,) = queue_growth(context("serve.queue_growth", growing))
    assert f.evidence["last_depth"] == 11 and f.evidence["slope_per_min"] > 0
    assert f.narration_kind == "likely"
    narrated(f)
    assert queue_growth(context("serve.queue_growth", growing, state="crashed")) == [], "a down engine: not this"
    steady = [served(100 + 10 * i, queue_depth=3 + i % 2) for i in range(12)]
    assert queue_growth(context("serve.queue_growth", steady)) == []


def test_refused_and_cancelled_requests_are_not_read_as_served() -> None:
    events = [served(i, outcome="refused", gen_tps=0.0, queue_depth=5) for i in range(20)]
    assert tps_under_concurrency(context("serve.tps_concurrency", events)) == []
    assert ttft_long_prompt(context("serve.ttft_long_prompt", events)) == []
