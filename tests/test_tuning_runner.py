"""The tuner on the real engine child and the demo model: studies journal their trials, failures
are infeasible and never re-proposed, the warm start reads earlier studies, a stopped study
resumes, and an applied winner is journaled and undone through the change transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_tui.core.changes import Changes
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineState, Supervisor
from llmos_tui.journal import Journal
from llmos_tui.paths import DEMO_MODEL
from llmos_tui.tuning.measure import BenchSpec, TrialResult, measure
from llmos_tui.tuning.runner import Tuner, learned_rules, parse_budget, trial_budget
from llmos_tui.tuning.study_config import StudyConfig

from tests.synthetic import synthetic_speeds

SPEC = BenchSpec(n_prompt=16, n_gen=4, reps=1)
BASE = EngineParams(model_path=str(DEMO_MODEL), n_ctx=128, n_threads=2, n_threads_batch=2)
FAST = dict(spec=SPEC, verify=False, strategy="random", n_initial=2, vram_budget=None)


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


@pytest.fixture
def serving():
    sup = Supervisor(BASE)
    sup.start(timeout=60)
    yield sup
    sup.stop()


def make_tuner(serving, journal, **kw) -> Tuner:
    return Tuner(serving, Changes(serving, journal), journal, None, None, **kw)


def test_a_short_study_journals_its_trials_and_pauses_the_serving_engine(serving, journal):
    states: list[str] = []
    serving.subscribe(lambda ev: ev.kind == "state" and states.append(ev.data["state"]))
    tuner = make_tuner(serving, journal)
    report = tuner.run(trials=3, **FAST)
    assert report.status == "done" and report.exit_code == 0
    assert "paused" in states  # a clear state while the study ran, not "stopped"
    assert serving.state == EngineState.READY and serving.params == BASE  # back with its own params
    study = journal.get_study(report.study_id)
    assert study["status"] == "done" and study["model_key"].startswith("demo.gguf:")
    assert study["build"] and study["machine"]["cpu_count"] >= 1
    rows = journal.trials(report.study_id, kind="trial")
    assert len(rows) == len(report.trials) >= 3  # the budget, then any re-measure of a lucky leader
    assert all(t.origin.startswith("confirm") for t in report.trials[3:])
    assert [r["outcome"] for r in rows] == [t.outcome for t in report.trials]
    assert rows[0]["metrics"]["origin"].startswith("the running configuration")
    for row in rows:
        if row["outcome"] == "ok":
            assert row["value"] > 0 and row["metrics"]["rows"]
        else:
            assert row["reason"]
    assert report.best is not None and report.ranking


def test_the_header_refuses_a_cache_type_before_any_load_and_no_trial_is_refused_for_one(serving, journal):
    """Head size 40 and block size 32: the space holds no quantised cache type, and a start point
    asking for one is refused from the header (never loaded, so never a crash or a failed load)."""
    tuner = make_tuner(serving, journal)
    bad = {"type_v": "q8_0", "flash_attn": "on"}
    report = tuner.run(trials=4, start_points=[bad], baseline=False, **FAST)
    first = journal.trials(report.study_id)[0]
    assert first["outcome"] == "refused" and "head size of 40" in first["reason"] and "not run" in first["reason"]
    assert first["value"] is None and first["metrics"]["wall_s"] < 1.0  # no child was started
    # a refusal took no time, so it does not count: the budget's 4 trials all ran an engine
    assert first["metrics"]["ran"] is False and not report.trials[0].ran
    searched = [t for t in report.trials if not t.origin.startswith("confirm")]  # a confirm run may follow
    assert sum(t.ran for t in searched) == 4 and len(searched) == 5
    for row in journal.trials(report.study_id)[1:]:  # the search itself: nothing refused for a cache type
        assert "cache" not in (row["reason"] or "") and row["outcome"] != "refused", row


def test_refusals_before_loading_stop_at_their_cap_with_a_reason_and_nothing_loaded(serving, journal):
    """Refusals do not count against the budget, so a pre-flight that refuses everything it is shown
    must still end the study: at ``refusal_cap`` refusals, saying so, with no engine loaded."""
    loads: list[EngineParams] = []

    def counted(params: EngineParams, *args: object, **kw: object):
        loads.append(params)
        return measure(params, *args, **kw)

    tuner = make_tuner(serving, journal, measure_fn=counted)
    tuner._refusal = lambda prep, params: TrialResult(False, "refused", "refused by the test (not run)")  # type: ignore[method-assign]
    report = tuner.run(trials=3, **dict(FAST, baseline=False, objective="pp"))  # a space of more than the cap
    cap = tuner.refusal_cap(3)
    assert len(report.trials) == cap and not any(t.ran for t in report.trials)
    assert report.message.startswith(f"stopped after {cap} configurations refused before loading"), report.message
    assert loads == [] and report.best is None
    assert [r["metrics"]["ran"] for r in journal.trials(report.study_id, kind="trial")] == [False] * cap


def test_a_learned_rule_generalises_llamas_refusal():
    reason = "llama_init_from_model: V cache type q8_0 with block size 32 does not divide n_embd_head_v=40"
    assert learned_rules(reason, {"type_v": "q8_0", "flash_attn": "on"}) == [(("type_v", "q8_0"),
                                                                              ("flash_attn", "on"))]


def test_the_warm_start_reads_earlier_trials_of_this_model(serving, journal):
    first = make_tuner(serving, journal).run(trials=3, **FAST)
    proposed = [t for t in first.trials if t.origin == "optimiser"]  # points of the space, surely
    events: list[dict] = []
    tuner = make_tuner(serving, journal)
    tuner.subscribe(events.append)
    second = tuner.run(trials=1, **FAST)
    warm = next(e for e in events if e["kind"] == "warmstart")
    told = warm["told"]  # measured ones as observations (exact), failed ones as infeasible (bad)
    assert len(told) >= len({tuple(sorted(t.config.items())) for t in proposed}) > 0
    assert all(f"std:{first.study_id}" in p["origin"] for p in told)
    for p in told:
        assert p["kind"] == ("exact" if p["ok"] else "bad")
    assert f"std:{first.study_id}" in second.warm_start
    assert any(p["kind"] == "exact" for p in told), told  # the first study measured the running configuration
    assert second.trials[0].origin.startswith("warm start: trl:")  # from the journal's best, not from scratch


def test_a_stopped_study_resumes_where_it_stopped(serving, journal):
    tuner = make_tuner(serving, journal)
    tuner.subscribe(lambda ev: ev["kind"] == "trial" and ev["done"] == 2 and tuner.stop())
    stopped = tuner.run(trials=4, **FAST)
    assert stopped.status == "stopped" and stopped.exit_code == 130
    assert journal.get_study(stopped.study_id)["status"] == "stopped"
    stored = StudyConfig.from_row(journal.get_study(stopped.study_id))  # what the resume starts from
    assert (stored.trials, stored.strategy, stored.spec, stored.verify) == (4, "random", SPEC, False)
    assert len(journal.trials(stopped.study_id)) == 2
    assert serving.state == EngineState.READY
    resumed = make_tuner(serving, journal).resume(stopped.study_id, verify=False)
    assert resumed.study_id == stopped.study_id and resumed.status == "done"
    assert [t.index for t in resumed.trials] == list(range(1, len(resumed.trials) + 1))
    assert [t.origin for t in resumed.trials[:2]] == ["resumed", "resumed"]
    assert all(t.origin.startswith("confirm") for t in resumed.trials[4:])
    assert len(journal.trials(stopped.study_id, kind="trial")) == len(resumed.trials) >= 4
    assert journal.get_study(stopped.study_id)["status"] == "done"


def test_a_resumed_study_still_does_not_count_its_refusals(serving, journal):
    tuner = make_tuner(serving, journal)
    tuner.subscribe(lambda ev: ev["kind"] == "trial" and ev["done"] == 1 and tuner.stop())
    refused = {"type_v": "q8_0", "flash_attn": "on"}  # head size 40: refused from the header
    stopped = tuner.run(trials=3, start_points=[refused], **dict(FAST, baseline=False))
    assert [t.ran for t in stopped.trials] == [False, True]
    resumed = make_tuner(serving, journal).resume(stopped.study_id, verify=False)
    assert [t.ran for t in resumed.trials[:2]] == [False, True]  # read back from the journal
    searched = [t for t in resumed.trials if not t.origin.startswith("confirm")]
    assert sum(t.ran for t in searched) == 3 and len(searched) == 4


def test_a_verified_gain_is_applied_journaled_and_undone(serving, journal):
    """SYNTHETIC speeds: n_batch=64 twice as fast, so the gain is certain; the apply, reload,
    canary, journal and undo are real. A two-round cap is raised to the first look (4 rounds). The
    objective is a mix (a tg study does not search n_batch: a one-token decode has no batch)."""
    fast = synthetic_speeds(lambda p, n: 200.0 if p.n_batch == 64 else 100.0)
    tuner = make_tuner(serving, journal, measure_fn=fast)
    report = tuner.run(trials=2, spec=SPEC, strategy="random", vram_budget=None, verify_rounds=2, apply=True,
                       start_points=[{"n_batch": 64, "n_ubatch": 64}], objective="mix")
    assert report.verdict["significant"] and report.verdict["rounds"] == 4, report.verdict
    assert report.verdict["orders"] == ["AB", "BA", "BA", "AB"]
    assert report.applied["state"] == "applied", report.applied
    assert report.exit_code == 0
    assert serving.params.n_batch == 64 and serving.is_ready
    action = journal.get_action(report.applied["action_id"])
    assert action.kind == "tune" and f"std:{report.study_id}" in action.note
    assert journal.active_config().source == "tuner"
    arms = [r["metrics"]["arm"][0] for r in journal.trials(report.study_id, kind="verify")]
    assert "".join(arms) == "ABBABAAB"  # ABBA order, 4 rounds
    assert journal.get_study(report.study_id)["result"]["applied"]["state"] == "applied"
    undone = Changes(serving, journal).undo(f"act:{action.id}")
    assert undone.state == "applied", undone.message
    assert serving.params.n_batch == BASE.n_batch


def test_a_lucky_run_is_re_measured_before_the_study_ends_whatever_the_budget(serving, journal):
    """SYNTHETIC: one thread measures 300 tok/s once (a lucky run), then 100 like everything else.
    The budget of 2 trials is spent, yet the study re-measures it, verifies it, and does not call
    the running configuration "as good as any tried" while it stands unconfirmed."""
    fast = synthetic_speeds(lambda p, n: 300.0 if p.n_threads == 1 and n == 1 else 100.0)
    tuner = make_tuner(serving, journal, measure_fn=fast)
    report = tuner.run(trials=2, spec=SPEC, strategy="random", vram_budget=None, apply=True,
                       start_points=[{"n_threads": 1, "n_threads_batch": 1}])
    origins = [t.origin for t in report.trials]
    assert len(report.trials) == 3 and origins[2].startswith("confirm"), origins
    # a tg study holds the prompt's threads at the running value, and says it left that out
    assert any(n.startswith("start point: n_threads_batch=1 left out") for n in report.notes), report.notes
    assert all("n_threads_batch" not in t.config for t in report.trials)
    assert report.trials[2].config["n_threads"] == 1
    assert report.best["config"]["n_threads"] == 1 and report.best["n"] == 2 and report.best["unconfirmed_faster"] == 0
    assert report.verdict is not None and report.verdict["rounds"] >= 4 and not report.verdict["significant"]
    assert "as good as any tried" not in report.message
    assert report.applied is None and report.apply_outcome["state"] == "nothing to apply" and report.exit_code == 0
    assert journal.get_study(report.study_id)["result"]["applied"]["state"] == "nothing to apply"
    assert serving.params == BASE and serving.is_ready


def test_apply_re_verifies_when_the_verdicts_baseline_no_longer_runs(serving, journal):
    """The running parameters differ from the verdict's A at apply time (forced here, SYNTHETIC
    speeds): the tuner verifies again against what runs now before it applies."""
    fast = synthetic_speeds(lambda p, n: 200.0 if p.n_batch == 64 else 100.0)
    tuner = make_tuner(serving, journal, measure_fn=fast)
    notes: list[str] = []

    def on_event(ev):
        if ev["kind"] == "verdict":
            serving.params = serving.params.replace(n_threads=1)  # what runs is no longer the verdict's A
        elif ev["kind"] == "note":
            notes.append(ev["text"])

    tuner.subscribe(on_event)
    report = tuner.run(trials=2, spec=SPEC, strategy="random", vram_budget=None, verify_rounds=4, apply=True,
                       start_points=[{"n_batch": 64, "n_ubatch": 64}], objective="mix")
    assert any("verifying again" in n for n in notes), notes
    verify_rows = journal.trials(report.study_id, kind="verify")
    assert len(verify_rows) == 16  # two verifications of 4 rounds
    assert all(r["params"]["n_threads"] == 1 for r in verify_rows[8:] if r["metrics"]["arm"].startswith("A"))
    assert report.applied["state"] == "applied" and serving.params.n_batch == 64


def test_a_change_proposed_during_a_study_is_refused_naming_the_tuner(serving, journal):
    changes = Changes(serving, journal)
    tuner = Tuner(serving, changes, journal, None, None)
    seen: dict = {}

    def on_event(ev):
        if ev["kind"] == "trial" and "result" not in seen:
            import threading

            def other():
                seen["result"] = changes.propose({"n_ctx": 256}, source="operator", reason="meanwhile")
                seen["restart"] = changes.restart(source="doctor", reason="meanwhile")

            t = threading.Thread(target=other)
            t.start()
            t.join(30)

    tuner.subscribe(on_event)
    report = tuner.run(trials=2, **FAST)
    for what in ("result", "restart"):
        result = seen[what]
        assert result.state == "refused" and result.details.get("busy"), result
        assert f"tuner std:{report.study_id}" in result.message
    assert serving.params == BASE and serving.state == EngineState.READY


def test_without_a_change_transaction_the_tuner_refuses_to_pause_a_serving_engine(serving, journal):
    report = Tuner(serving, None, journal, None, None).run(trials=1, **FAST)
    assert report.status == "failed" and "will not pause a serving engine" in report.message
    assert report.trials == [] and serving.state == EngineState.READY


def test_the_trial_budget_comes_from_the_model_then_the_first_rate_and_a_timed_out_baseline_says_so(
        serving, journal):
    """SYNTHETIC results (no child runs): the running configuration times out once, then runs."""
    calls: list[float] = []

    def fake(params, spec, *, timeout, on_child=None):
        calls.append(timeout)
        if len(calls) == 1:
            return TrialResult(False, "timeout", f"the trial ran past its {timeout:.0f} s", wall_s=timeout)
        return TrialResult(True, "ok", tg_tok_s=100.0, rows=[{"tg_tok_s": 100.0}], wall_s=2.0)

    tuner = make_tuner(serving, journal, measure_fn=fake)
    report = tuner.run(trials=3, **FAST)
    first = trial_budget(SPEC, DEMO_MODEL.stat().st_size)
    assert calls[0] == first and calls[1] == 2 * first  # doubled after the timeout
    assert calls[2] == trial_budget(SPEC, DEMO_MODEL.stat().st_size, 2.0) != first  # from the measured run
    assert any("the running configuration itself ran past" in n for n in report.notes), report.notes
    assert journal.get_study(report.study_id)["result"]["notes"] == report.notes


def test_budgets_and_rules_parse():
    assert parse_budget("90%", 1000) == 900
    assert parse_budget("6GiB", None) == 6144
    assert parse_budget(None, 1000) is None
    reason = "llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=40"
    assert learned_rules(reason, {"type_k": "q8_0", "flash_attn": "on"}) == [(("type_k", "q8_0"),
                                                                              ("flash_attn", "on"))]
    assert TrialResult(False, "oom", "x").summary() == "oom: x"


def test_apply_best_later_applies_only_against_the_verdicts_baseline_and_journals_it(serving, journal):
    """The tuning screen's "apply best": SYNTHETIC speeds (n_batch=64 twice as fast), a study
    without apply; applying later is refused while another configuration runs, applied once the
    verdict's baseline runs again, and the study's journal result says so each time."""
    fast = synthetic_speeds(lambda p, n: 200.0 if p.n_batch == 64 else 100.0)
    tuner = make_tuner(serving, journal, measure_fn=fast)
    report = tuner.run(trials=2, spec=SPEC, strategy="random", vram_budget=None, verify_rounds=4,
                       start_points=[{"n_batch": 64, "n_ubatch": 64}], objective="mix").to_dict()
    assert report["verdict"]["significant"] and report["applied"] is None
    serving.params = serving.params.replace(n_threads=1)  # another configuration runs now
    refused = tuner.apply_best(report)
    assert refused["state"] == "refused" and "baseline no longer runs" in refused["message"]
    assert journal.get_study(report["study_id"])["result"]["applied"]["state"] == "refused"
    serving.params = BASE
    applied = tuner.apply_best(report)
    assert applied["state"] == "applied", applied
    assert serving.params.n_batch == 64 and journal.active_config().source == "tuner"
    assert journal.get_study(report["study_id"])["result"]["applied"]["state"] == "applied"


def test_a_memory_failure_rules_out_what_needs_more_and_a_study_with_nothing_left_says_so(serving, journal):
    """On the real tuner: an RSS budget no configuration meets. Each refusal ("over the budget")
    rules out every configuration that needs at least its memory (Space.learn_infeasible's memory
    rule), so the study ends when nothing is left, with the reason, instead of trying the rest one
    by one; nothing it refused was loaded."""
    loads: list[EngineParams] = []

    def counted(params: EngineParams, *args: object, **kw: object):
        loads.append(params)
        return measure(params, *args, **kw)

    tuner = make_tuner(serving, journal, measure_fn=counted)
    report = tuner.run(trials=40, **dict(FAST, baseline=False), rss_budget="1")
    assert next(iter(tuner._space.configs()), None) is None  # every configuration ruled out
    assert report.trials and all(t.outcome == "budget" for t in report.trials)
    assert all("over the" in t.reason and "budget" in t.reason for t in report.trials)
    assert len(report.trials) < 40
    assert report.message.startswith("nothing left to try: every configuration of the space is ruled out")
    assert any("memory>=" in rule for rule in tuner._space.rules)
    assert loads == [], "a configuration the estimate refuses is never loaded"
    rows = journal.trials(report.study_id, kind="trial")
    assert [r["outcome"] for r in rows] == ["budget"] * len(report.trials)
    assert serving.state == EngineState.READY and serving.params == BASE


def test_a_study_does_not_search_the_knobs_its_objective_never_touches(serving, journal):
    """A one-token decode runs on n_threads and has no batch to split; a prompt runs on
    n_threads_batch. So a tg study keeps the prompt's knobs at the running values, and a pp study
    the generation threads: every trial (journal rows too) has them as the engine ran them."""
    untouched = {"tg": ("n_threads_batch", "n_batch", "n_ubatch"), "pp": ("n_threads",)}
    for objective, knobs in untouched.items():
        loads: list[EngineParams] = []

        def counted(params: EngineParams, *args: object, **kw: object):
            loads.append(params)
            return measure(params, *args, **kw)

        tuner = make_tuner(serving, journal, measure_fn=counted)
        report = tuner.run(trials=2, objective=objective, **FAST)
        assert report.status == "done", report.message
        names = tuner._space.names
        assert not set(knobs) & set(names), names
        assert "flash_attn" in names  # what the objective depends on is still searched (the demo: f16 caches only)
        searched = {"tg": "n_threads", "pp": "n_threads_batch"}[objective]
        assert searched in names or searched in tuner._space.fixed  # one core: a single value, fixed
        assert len(loads) >= 2 and all(getattr(p, k) == getattr(BASE, k) for p in loads for k in knobs), loads
        fixed = journal.get_study(report.study_id)["space"]["fixed"]  # the journal says what was held
        assert {k: fixed[k] for k in knobs} == {k: getattr(BASE, k) for k in knobs}
        assert journal.get_study(report.study_id)["settings"]["held"] == {k: getattr(BASE, k) for k in knobs}
        said = [n for n in report.notes if n.startswith("held at the running values")]  # and the operator is told
        assert len(said) == 1 and all(f"{k}={getattr(BASE, k)}" in said[0] for k in knobs), report.notes
    # a mix depends on everything: nothing is held back
    tuner = make_tuner(serving, journal)
    mixed = tuner.run(trials=1, objective="mix", **FAST)
    assert mixed.status == "done" and not any(n.startswith("held") for n in mixed.notes)
    assert {"n_batch", "n_ubatch"} <= set(tuner._space.names)
