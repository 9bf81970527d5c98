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
from llmos_tui.tuning.runner import Tuner, learned_rules, parse_budget
from llmos_tui.tuning.verify import judge

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
    assert len(rows) == 3 == len(report.trials)
    assert [r["outcome"] for r in rows] == [t.outcome for t in report.trials]
    assert rows[0]["metrics"]["origin"].startswith("the running configuration")
    for row in rows:
        if row["outcome"] == "ok":
            assert row["value"] > 0 and row["metrics"]["rows"]
        else:
            assert row["reason"]
    assert report.best is not None and report.ranking


def test_a_head_size_refusal_is_infeasible_and_never_proposed_again(serving, journal):
    tuner = make_tuner(serving, journal)
    bad = {"type_v": "q8_0", "flash_attn": "on"}
    report = tuner.run(trials=4, start_points=[bad], baseline=False, **FAST)
    first = journal.trials(report.study_id)[0]
    assert first["outcome"] == "refused"
    assert "does not divide n_embd_head_v=40" in first["reason"]  # llama.cpp's own words
    assert first["value"] is None  # kept out of the surrogate's objective
    assert (("type_v", "q8_0"), ("flash_attn", "on")) in tuner.rules
    assert all((t.config.get("type_v"), t.config.get("flash_attn")) != ("q8_0", "on") for t in report.trials[1:])


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
    assert f"std:{first.study_id}" in second.warm_start or "known infeasible" in second.warm_start
    if any(p["kind"] == "exact" for p in told):  # it starts from the journal's best, not from scratch
        assert second.trials[0].origin.startswith("warm start: trl:")


def test_a_stopped_study_resumes_where_it_stopped(serving, journal):
    tuner = make_tuner(serving, journal)
    tuner.subscribe(lambda ev: ev["kind"] == "trial" and ev["done"] == 2 and tuner.stop())
    stopped = tuner.run(trials=4, **FAST)
    assert stopped.status == "stopped" and stopped.exit_code == 130
    assert journal.get_study(stopped.study_id)["status"] == "stopped"
    assert len(journal.trials(stopped.study_id)) == 2
    assert serving.state == EngineState.READY
    resumed = make_tuner(serving, journal).resume(stopped.study_id, verify=False)
    assert resumed.study_id == stopped.study_id and resumed.status == "done"
    assert [t.index for t in resumed.trials] == [1, 2, 3, 4]
    assert [t.origin for t in resumed.trials[:2]] == ["resumed", "resumed"]
    assert len(journal.trials(stopped.study_id, kind="trial")) == 4
    assert journal.get_study(stopped.study_id)["status"] == "done"


def test_a_verified_gain_is_applied_journaled_and_undone(serving, journal):
    """SYNTHETIC speeds (marked): the double measures for real, then reports n_batch=64 twice as
    fast, so the gain is certain; the apply, reload, canary, journal and undo are real."""

    def synthetic(params, spec, **kw):
        result = measure(params, spec, **kw)
        if result.ok:
            result.rows = [{**r, "tg_tok_s": 200.0 if params.n_batch == 64 else 100.0} for r in result.rows]
            result.tg_tok_s = result.rows[0]["tg_tok_s"]
        return result

    tuner = make_tuner(serving, journal, measure_fn=synthetic)
    report = tuner.run(trials=2, spec=SPEC, strategy="random", vram_budget=None, verify_rounds=2, apply=True,
                       start_points=[{"n_batch": 64, "n_ubatch": 64}])
    assert report.verdict["significant"], report.verdict
    assert report.applied["state"] == "applied", report.applied
    assert serving.params.n_batch == 64 and serving.is_ready
    action = journal.get_action(report.applied["action_id"])
    assert action.kind == "tune" and f"std:{report.study_id}" in action.note
    assert journal.active_config().source == "tuner"
    assert len(journal.trials(report.study_id, kind="verify")) == 4  # A B A B
    undone = Changes(serving, journal).undo(f"act:{action.id}")
    assert undone.state == "applied", undone.message
    assert serving.params.n_batch == BASE.n_batch


def test_verdict_is_significant_only_when_the_interval_clears_one():
    assert judge([1.3, 1.25, 1.35, 1.28]).significant
    assert not judge([1.3, 0.9, 1.2, 1.0]).significant
    assert not judge([1.5]).significant  # one round proves nothing


def test_budgets_and_rules_parse():
    assert parse_budget("90%", 1000) == 900
    assert parse_budget("6GiB", None) == 6144
    assert parse_budget(None, 1000) is None
    reason = "llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=40"
    assert learned_rules(reason, {"type_k": "q8_0", "flash_attn": "on"}) == [(("type_k", "q8_0"),
                                                                              ("flash_attn", "on"))]
    assert TrialResult(False, "oom", "x").summary() == "oom: x"
