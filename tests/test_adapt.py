"""The online learner: live thread changes in a real engine child, and the bandit's guard rails."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmos_tui.engine.params import EngineParams
from llmos_tui.tuning.adapt import KnobBandit, OnlineAdapter, prompt_class, thread_grid
from tests.conftest import wait_for

DEMO = Path(__file__).resolve().parent.parent / "llmos_tui" / "data" / "demo.gguf"


class FakeLoad:
    """Other processes' busy cores, set by the test (the real HostLoad reads psutil)."""

    def __init__(self, other: float = 0.0) -> None:
        self.other = other

    def sample(self) -> float:
        return self.other


class FakeEngine:
    """Stands in for the supervisor in the bandit tests: records set_threads; the reply rates are
    the test's model of the box (the live op is tested against the real child below)."""

    def __init__(self, n: int = 4, nb: int = 4) -> None:
        self.params = EngineParams(model_path=str(DEMO), n_threads=n, n_threads_batch=nb)
        self.calls: list[tuple[int, int]] = []

    def set_threads(self, n: int, nb: int) -> dict[str, int]:
        self.calls.append((n, nb))
        return {"n_threads": n, "n_threads_batch": nb}


def run(adapter: OnlineAdapter, rate_of, n: int, rng: random.Random, **ctx) -> list[tuple[int, int]]:
    chosen = []
    for _ in range(n):
        d = adapter.before_request(**ctx)
        arm = (d.n_threads, d.n_threads_batch) if d.applied else adapter.baseline
        chosen.append(arm)
        rate = rate_of(arm) * math.exp(rng.gauss(0, 0.1))  # about 10 % multiplicative noise
        adapter.after_reply({"gen_tps": rate, "gen_tokens": 32})
    return chosen


def test_set_threads_changes_a_live_engine_without_a_reload():
    from llmos_tui.engine.supervisor import Supervisor

    sup = Supervisor(EngineParams(model_path=str(DEMO), n_ctx=256, n_threads=2, n_threads_batch=2))
    try:
        sup.start(timeout=60)
        pid = sup.pid
        assert sup.set_threads(1, 2) == {"n_threads": 1, "n_threads_batch": 2}
        reply = sup.chat([{"role": "user", "content": "hello"}], max_tokens=8, temperature=0.0).wait(30)
        assert reply.status == "done" and sup.pid == pid  # same child: no reload
        assert sup.params.n_threads == 2  # the journaled configuration is unchanged
        from llmos_tui.errors import EngineError

        with pytest.raises(EngineError, match=">= 1"):
            sup.set_threads(0, 1)
        assert sup.is_ready  # a refused change leaves the engine serving
    finally:
        sup.stop()


def test_it_converges_to_the_fast_setting_with_bounded_exploration():
    engine = FakeEngine(4, 4)
    adapter = OnlineAdapter(engine, mode="on", max_threads=4, max_explore_share=0.15, host_load=FakeLoad(0.0),
                            seed=1)
    rates = {1: 100.0, 2: 180.0, 3: 140.0, 4: 120.0}  # 2 threads is best on this pretend box
    chosen = run(adapter, lambda a: rates[a[0]] * (1.0 if a[1] == 4 else 0.95), 300, random.Random(2))
    assert adapter.explored <= 0.15 * adapter.requests + 1
    tail = chosen[-100:]
    assert sum(1 for a in tail if a[0] == 2) >= 80
    pol = adapter.policy()
    ctx = pol["contexts"]["idle/free4/short"]
    assert ctx["n_threads"] == 2 and ctx["gain"] > 0.3  # 180 vs the baseline's 120


def test_the_context_separates_a_busy_host():
    engine = FakeEngine(2, 2)
    load = FakeLoad(0.0)
    adapter = OnlineAdapter(engine, mode="on", max_threads=2, max_explore_share=0.3, host_load=load, seed=3)

    def rate(arm):  # two threads win on a free box, lose badly when another process holds a core
        return (200.0 if arm[0] == 2 else 120.0) if load.other < 0.5 else (15.0 if arm[0] == 2 else 110.0)

    rng = random.Random(4)
    for _ in range(6):
        load.other = 0.0
        run(adapter, rate, 30, rng)
        load.other = 1.0
        run(adapter, rate, 30, rng)
    pol = adapter.policy()["contexts"]
    assert pol["idle/free2/short"]["n_threads"] == 2
    assert pol["idle/free1/short"]["n_threads"] == 1


def test_shadow_mode_shows_but_never_applies():
    engine = FakeEngine(2, 2)
    events = []
    adapter = OnlineAdapter(engine, mode="shadow", max_threads=2, host_load=FakeLoad(), summary_every=10,
                            record_event=lambda k, d: events.append((k, d)))
    run(adapter, lambda a: 100.0, 25, random.Random(5))
    assert engine.calls == []
    assert [k for k, _ in events] == ["adapt_summary", "adapt_summary"]  # summarised, not per request
    assert events[0][1]["requests"] == 10


def test_off_readonly_and_kill_switch_stop_it():
    engine = FakeEngine(2, 2)
    assert OnlineAdapter(engine, host_load=FakeLoad()).before_request() is None  # off by default
    killed = {"on": False}
    adapter = OnlineAdapter(engine, mode="on", max_threads=2, host_load=FakeLoad(), max_explore_share=1.0,
                            stopped=lambda: killed["on"], seed=7)
    run(adapter, lambda a: 200.0 if a == (1, 1) else 50.0, 40, random.Random(6))
    assert adapter.current == (1, 1)
    killed["on"] = True
    d = adapter.before_request()
    assert not d.applied and engine.calls[-1] == (2, 2) and adapter.current is None  # configured threads back
    ro = OnlineAdapter(FakeEngine(2, 2), mode="on", readonly=True, max_threads=2, host_load=FakeLoad())
    assert not ro.before_request().applied and ro.supervisor.calls == []


def test_a_choice_the_journal_marks_bad_is_never_made():
    engine = FakeEngine(2, 2)
    adapter = OnlineAdapter(engine, mode="on", max_threads=2, max_explore_share=1.0, host_load=FakeLoad(),
                            is_bad=lambda n, nb: "cfg:3 marked bad" if n == 1 else None, seed=8)
    chosen = run(adapter, lambda a: 500.0 if a[0] == 1 else 10.0, 60, random.Random(9))
    assert all(a[0] != 1 for a in chosen)


def test_drift_is_proposed_only_when_unexplained():
    engine = FakeEngine(2, 2)
    proposals = []
    explanation = {"why": "gpu.throttle: thermal"}
    adapter = OnlineAdapter(engine, mode="on", max_threads=2, max_explore_share=0.0, host_load=FakeLoad(),
                            baseline_tps=100.0, drift_window=10, explained=lambda: explanation["why"],
                            on_drift=proposals.append)
    run(adapter, lambda a: 60.0, 12, random.Random(10))
    assert proposals == []  # the doctor explains the drop
    explanation["why"] = None
    run(adapter, lambda a: 60.0, 12, random.Random(11))
    assert len(proposals) == 1 and proposals[0]["kind"] == "retune"
    assert proposals[0]["median_tps"] == pytest.approx(60.0, rel=0.3) and proposals[0]["reference_tps"] == 100.0


def test_a_reload_with_other_threads_is_the_new_baseline():
    engine = FakeEngine(2, 2)
    adapter = OnlineAdapter(engine, mode="on", max_threads=4, host_load=FakeLoad(), drift_window=5)
    run(adapter, lambda a: 50.0, 12, random.Random(3))
    adapter.learned_quiet = 50.0
    engine.params = engine.params.replace(n_threads=3, n_threads_batch=3)  # a re-tune applied 3/3
    adapter._on_reload()
    assert adapter.baseline == (3, 3) and (3, 3) in adapter.arms and adapter.learned_quiet is None
    run(adapter, lambda a: 50.0, 5, random.Random(4))  # every context knows the new arm: no KeyError


def test_small_helpers():
    assert thread_grid(2) == [1, 2]
    assert thread_grid(16) == [1, 2, 4, 8, 15, 16]
    assert prompt_class(10) == "short" and prompt_class(100) == "medium" and prompt_class(5000) == "long"
    b = KnobBandit([1, 2], 2)
    assert b.best("x", [1, 2]) == 2  # nothing known: the baseline


def test_a_busy_context_expects_less_of_threads_it_cannot_run():
    engine = FakeEngine(2, 2)
    load = FakeLoad(0.0)
    adapter = OnlineAdapter(engine, mode="on", max_threads=2, host_load=load)
    run(adapter, lambda a: 100.0 if a[0] == 2 else 70.0, 40, random.Random(5))  # a quiet box: 2 threads win
    quiet = adapter.context(streaming=False, prompt_tokens=10).key
    assert adapter.bandit.best(quiet, adapter.arms)[0] == 2
    load.other = 1.0  # another process takes a core: one is free
    busy = adapter.context(streaming=False, prompt_tokens=10).key
    assert busy != quiet and "free1" in busy
    # nothing tried there yet: 2 threads on 1 free core expect half their quiet rate, 1 thread its own
    assert adapter.bandit.best(busy, adapter.arms)[0] == 1
    assert adapter._arm_prior(busy, (2, 2)) == pytest.approx(math.log(100.0 * 0.5), abs=0.15)


def test_host_load_counts_a_spinning_process_and_not_its_own_threads():
    import subprocess
    import sys
    import threading
    import time

    from llmos_tui.telemetry.hostload import HostLoad

    host = HostLoad(2)
    stop = threading.Event()
    own = threading.Thread(target=lambda: [None for _ in iter(lambda: stop.is_set(), True)], daemon=True)
    own.start()  # one of our own threads spinning: ours, not load
    try:
        time.sleep(0.1)
        assert wait_for(lambda: host.sample() < 1, 2), "our own running threads are not other processes' load"
        spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
        try:
            time.sleep(0.5)
            # a process we started ourselves (a load generator, a tuner's trial) still competes
            # (>= 0.8: the CPU-time view, used where a scan is too slow, sees about one core, not exactly)
            assert wait_for(lambda: host.sample() >= 0.8, 2)
        finally:
            spinner.kill()
            spinner.wait()
    finally:
        stop.set()
        own.join(2)


def test_a_host_load_scan_over_budget_gives_up_at_once_and_is_tried_again_later():
    import os
    import time

    from llmos_tui.telemetry.hostload import HostLoad

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("no Linux /proc here")
    host = HostLoad(2)
    host.scan_budget_s = 0.0  # every scan is over budget at its first process
    started = time.perf_counter()
    assert host._runnable() is None  # given up, not finished
    assert time.perf_counter() - started < 0.5
    assert host._runnable() is None  # the CPU-time view until the retry time
    assert isinstance(host.sample(), float)
    host.scan_budget_s = 5.0
    host._scan_retry_at = time.monotonic() - 1  # the retry time has come: a full scan again
    assert isinstance(host._runnable(), float)


def test_adapt_is_refused_in_replay_and_the_learner_never_reads_replayed_findings(tmp_path):
    """A replayed trace is not this engine: `:adapt` / set_adapt_mode is refused, no learner is built
    (so nothing reads the replay doctor's findings), and the core's learner module needs no operator."""
    from llmos_tui.config import load_config
    from llmos_tui.core import build_core
    from llmos_tui.errors import LlmosError
    from llmos_tui.tuning import adapt, learner

    trace = Path(__file__).parent / "data" / "trace_throttle.jsonl"
    cfg = load_config(overrides={"n_ctx": 256, "journal": str(tmp_path / "j.sqlite")})
    op = build_core(cfg, "replay", replay=str(trace), replay_speed=0, endpoint=False)
    try:
        assert op.mode == "replay"
        for mode in ("shadow", "on"):
            with pytest.raises(LlmosError, match="not available in replay"):
                op.set_adapt_mode(mode)
        assert op.adapter is None
    finally:
        op.close()
    assert not hasattr(adapt, "for_operator") and not hasattr(learner, "for_operator")


def test_the_learner_built_from_parts_ignores_findings_it_is_not_given():
    """``findings=None`` (no doctor, or a replayed one): a drop is not explained away by a trace."""
    from llmos_tui.tuning.learner import build_learner

    engine = FakeEngine(2, 2)
    engine.subscribe = lambda listener: (lambda: None)
    engine.publish = lambda kind, /, **data: published.append((kind, data))
    published: list = []
    adapter = build_learner(engine, changes=None, journal=None, findings=None, kill_switch=lambda: False,
                            readonly=False, mode="shadow", host_load=FakeLoad(), max_threads=2)
    assert adapter.explained() is None
    adapter.on_drift({"kind": "retune"})
    assert published == [("adapt_drift", {"kind": "retune"})]
    gpu = SimpleNamespace(detector="gpu.throttle", title="thermal")
    given = build_learner(engine, changes=None, journal=None, findings=lambda: [gpu], kill_switch=lambda: False,
                          readonly=False, mode="shadow", host_load=FakeLoad(), max_threads=2)
    assert given.explained() == "gpu.throttle: thermal"
