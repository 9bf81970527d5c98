"""One owner of the engine's life cycle, vetted resume, and the same undo from anywhere.

Real engine on the demo model throughout: the races end with the journal's active version
running and no good version marked bad; a one-shot apply lasts; `journal undo` is carried out
by the llmos-tui running on that journal (or vetted and deferred when none runs)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from llmos_tui.config import load_config
from llmos_tui.core import build_core
from llmos_tui.core.journaling import resume_params
from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import JournalError
from llmos_tui.journal import Journal
from llmos_tui.engine.versions import params_of
from tests.conftest import cli_env

CLI = [sys.executable, "-m", "llmos_tui.cli"]


def config(tmp_path: Path, **overrides):
    return load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "n_ctx": 2048,
                                  "journal": str(tmp_path / "j.sqlite"), **overrides})


def core(tmp_path: Path, mode: str = "oneshot", **overrides):
    return build_core(config(tmp_path, **overrides), mode, telemetry=False, doctor=False,
                      endpoint=(mode == "live"))


def journal_state(op) -> tuple[dict, list]:
    """The active version's settings and every version marked bad, read after the writes landed."""
    op.journal_writer.flush()

    def read(j):
        active = j.active_config()
        return {**active.params, "model_path": active.model_path}, [c for c in j.configs() if c.standing == "bad"]

    return op.journal_writer.submit(read).result(10)


# ---- races --------------------------------------------------------------------------------
def test_a_restart_during_verification_is_refused_naming_the_holder_or_waits(tmp_path: Path) -> None:
    op = core(tmp_path)
    try:
        op.start_engine()
        verifying, release = threading.Event(), threading.Event()

        def slow_check() -> None:
            verifying.set()
            release.wait(30)  # the change is being verified: the new engine runs its canary

        results = {}
        change = threading.Thread(target=lambda: results.setdefault(
            "change", op.apply({"n_ctx": 1024}, reason="smaller context", verify=slow_check)))
        change.start()
        assert verifying.wait(60)
        refused = op.restart_engine(reason="Ctrl+R")
        assert refused is not None and "busy" in refused and "operator: smaller context" in refused
        waiter = threading.Thread(target=lambda: results.setdefault(
            "restart", op.changes.restart(source="console", reason="/restart", wait_s=60)))
        waiter.start()
        release.set()
        change.join(90)
        waiter.join(90)
        assert results["change"].state == "applied", results["change"].message
        assert results["restart"].ok, results["restart"].message  # it waited, then restarted what runs now
        assert op.supervisor.is_ready and op.supervisor.params.n_ctx == 1024
        active, bad = journal_state(op)
        assert active == op.supervisor.params.to_dict()
        assert bad == []  # the good version was never killed mid-canary
    finally:
        op.close()


def test_a_change_while_a_study_holds_the_engine_is_refused_naming_it(tmp_path: Path) -> None:
    op = core(tmp_path)
    try:
        op.start_engine()
        before = op.supervisor.params.to_dict()
        results = {}
        with op.changes.holding("tuner std:1"):
            assert op.changes.pause(source="tuner", reason="study std:1").ok
            assert op.supervisor.is_paused
            other = threading.Thread(target=lambda: results.setdefault("apply", op.apply({"n_ctx": 1024})))
            other.start()
            other.join(30)
            restart = threading.Thread(target=lambda: results.setdefault("restart", op.restart_engine()))
            restart.start()
            restart.join(30)
            assert op.changes.resume(source="tuner", reason="study std:1 ended").ok
        apply = results["apply"]
        assert apply.state == "refused" and apply.details.get("busy") and "tuner std:1" in apply.message
        assert "tuner std:1" in results["restart"]
        assert op.supervisor.is_ready and op.supervisor.params.to_dict() == before
        active, bad = journal_state(op)
        assert active == before and bad == []
    finally:
        op.close()


def test_journaled_is_false_when_any_journal_write_of_the_change_failed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    op = core(tmp_path)
    try:
        op.start_engine()
        first = op.apply({"n_ctx": 1024})
        assert first.state == "applied" and first.journaled

        def broken(self, config_id, **kw):
            raise JournalError("disk I/O error")

        monkeypatch.setattr(Journal, "mark_good", broken)
        second = op.apply({"n_ctx": 768})
        assert second.state == "applied"  # the engine changed and passed verification ...
        assert second.journaled is False  # ... but the journal does not say it is good
        assert second.to_dict()["journaled"] is False
    finally:
        op.close()


# ---- resume ------------------------------------------------------------------------------
def first_run(tmp_path: Path) -> tuple[Path, int]:
    """One start on the configured settings: the journal holds them as the active version."""
    op = core(tmp_path)
    op.start_engine()
    op.journal_writer.flush()
    op.close()
    with Journal(tmp_path / "j.sqlite") as j:
        return tmp_path / "j.sqlite", j.active_config().id


def test_a_one_shot_apply_lasts_and_an_edited_setting_still_wins(tmp_path: Path) -> None:
    op = core(tmp_path)
    op.start_engine()
    result = op.apply({"n_ctx": 1024}, reason="a script's apply")  # source operator, from a one-shot core
    assert result.state == "applied"
    op.close()
    again = core(tmp_path)
    try:
        assert again.supervisor.params.n_ctx == 1024
        assert any(f"cfg:{result.config_id}" in line for line in again.problems)
    finally:
        again.close()
    edited = core(tmp_path, n_ctx=768)
    try:
        assert edited.supervisor.params.n_ctx == 768 and not edited.problems
    finally:
        edited.close()


def test_resume_rolls_back_a_never_verified_or_bad_version(tmp_path: Path) -> None:
    path, base_id = first_run(tmp_path)
    with Journal(path) as j:
        base = j.get_config(base_id)
        _action, pending = j.change_config(params_of(base).replace(n_ctx=1024), source="tuner",
                                           note="the process died while verifying it")
    op = core(tmp_path)
    try:
        assert op.supervisor.params.n_ctx == 2048
        assert any("never verified" in p and pending.entry_id in p for p in op.problems), op.problems
    finally:
        op.close()
    with Journal(path) as j:
        assert j.active_config().id == base_id  # rolled back, journaled
        assert j.action_for_config(pending.id).state == "failed"
        _action, bad = j.change_config(params_of(base).replace(n_ctx=512), source="repair")
        j.mark_bad(bad.id, "canary failed")
    op = core(tmp_path)
    try:
        assert op.supervisor.params.n_ctx == 2048
        assert any("marked bad" in p and bad.entry_id in p for p in op.problems), op.problems
    finally:
        op.close()


def test_resume_rolls_back_a_version_that_no_longer_fits(tmp_path: Path) -> None:
    path, base_id = first_run(tmp_path)
    with Journal(path) as j:
        base = j.get_config(base_id)
        j.mark_good(base_id)
        _action, bigger = j.change_config(params_of(base).replace(n_ctx=4096), source="tuner")
        j.mark_good(bigger.id)
        configured = params_of(base)

        def fit(params: EngineParams) -> str | None:
            return "it no longer fits: needs 900 MiB, 100 MiB free" if params.n_ctx == 4096 else None

        assert resume_params(j, configured).params.n_ctx == 4096  # fits: the tuner's version runs
        resume = resume_params(j, configured, fit)
        assert resume.params.to_dict() == configured.to_dict()
        assert resume.problem and "no longer fits" in resume.problem and f"cfg:{base_id}" in resume.problem
        assert j.active_config().id == base_id


# ---- undo from anywhere ------------------------------------------------------------------
def test_journal_undo_is_carried_out_by_the_running_core(tmp_path: Path) -> None:
    live = core(tmp_path, mode="live")  # a console-like core, publishing on its endpoint
    journal = str(tmp_path / "j.sqlite")
    try:
        live.start_engine()
        applied = live.apply({"n_ctx": 1024}, reason="/params n_ctx=1024")
        assert applied.state == "applied" and live.supervisor.params.n_ctx == 1024
        done = subprocess.run(CLI + ["--journal", journal, "journal", "undo", f"cfg:{applied.config_id}"],
                              capture_output=True, text=True, timeout=120, env=cli_env())
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"pid {live.snapshot()['pid']}" in done.stdout and "undone" in done.stdout
        assert live.supervisor.params.n_ctx == 2048 and live.supervisor.is_ready
        status = subprocess.run(CLI + ["status", "--json"], capture_output=True, text=True, timeout=60,
                                env=cli_env())
        instance = json.loads(status.stdout)["instances"][0]
        active, bad = journal_state(live)
        assert instance["engine"]["params"] == active == live.supervisor.params.to_dict()
        with Journal(journal, readonly=True) as j:
            assert instance["journal"]["active_config"] == j.active_config().id
        assert bad == []

        with live.changes.holding("tuner std:2"):  # it cannot: the command names it, exit 1
            refused = subprocess.run(CLI + ["--journal", journal, "journal", "undo", f"act:{applied.action_id}"],
                                     capture_output=True, text=True, timeout=120, env=cli_env())
        assert refused.returncode == 1
        assert f"pid {live.snapshot()['pid']}" in refused.stdout + refused.stderr
        assert "tuner std:2" in refused.stdout + refused.stderr
    finally:
        live.close()


def test_journal_undo_with_none_running_is_vetted_and_is_what_the_next_start_runs(tmp_path: Path) -> None:
    op = core(tmp_path)
    op.start_engine()
    first = op.apply({"n_ctx": 1024})
    applied = op.apply({"n_ctx": 768})
    assert first.state == applied.state == "applied"
    op.close()
    journal = str(tmp_path / "j.sqlite")
    with Journal(journal) as j:  # a version with the settings the undo would run is on the bad-list
        _action, bad = j.change_config(params_of(j.get_config(first.config_id)), source="repair")
        j.mark_bad(bad.id, "canary failed")
        j.activate(applied.config_id)
    refused = subprocess.run(CLI + ["--journal", journal, "journal", "undo", f"cfg:{applied.config_id}"],
                             capture_output=True, text=True, timeout=120, env=cli_env())
    assert refused.returncode == 1 and "marked bad" in refused.stderr, refused.stdout + refused.stderr
    with Journal(journal) as j:
        assert j.active_config().id == applied.config_id  # nothing journaled
        j.mark_good(bad.id)  # (its cause fixed: the operator cleared it)
    done = subprocess.run(CLI + ["--journal", journal, "journal", "undo", f"cfg:{applied.config_id}"],
                          capture_output=True, text=True, timeout=120, env=cli_env())
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line for line in done.stdout.splitlines() if "the next start runs" in line]
    nxt = core(tmp_path)  # the CLI read the default config: the undo kept the base it reverts on
    try:
        assert nxt.supervisor.params.n_ctx == 1024
        assert said and said[0].endswith(nxt.supervisor.params.summary())
    finally:
        nxt.close()


# ---- the rails can be operated -----------------------------------------------------------------
def test_the_start_limit_can_be_reset_and_says_what_happened(tmp_path: Path) -> None:
    bare = core(tmp_path)
    try:
        assert "no start limit" in bare.reset_start_limit()
    finally:
        bare.close()
    op = build_core(config(tmp_path), "oneshot", telemetry=False, endpoint=False)
    try:
        assert op.doctor is not None
        assert "not reached" in op.reset_start_limit()
        op.doctor.runner.start_limit_hit = True  # as after start_limit_burst automatic restarts in the window
        line = op.reset_start_limit()
        assert line.startswith("start limit reset") and not op.doctor.start_limit_hit
        assert op.snapshot()["doctor"]["start_limit_hit"] is False
    finally:
        op.close()
