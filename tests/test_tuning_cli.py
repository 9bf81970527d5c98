"""`llmos-tui tune` on the demo model: progress lines, the final table, honest exit codes, the journal."""

from __future__ import annotations

import json

from llmos_tui.cli.main import main
from llmos_tui.journal import Journal
from tests.synthetic import synthetic_speeds

FAST = ["--n-ctx", "128", "--n-threads", "2", "--n-threads-batch", "2", "--n-prompt", "16", "--n-gen", "4",
        "--reps", "1", "--strategy", "random", "--no-verify"]


def test_tune_prints_a_line_per_trial_and_a_final_table(capsys, llmos_home):
    code = main(["tune", "--trials", "3", *FAST])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("/3 [") == 3  # one progress line per trial
    assert "the running configuration" in out and "best" in out
    assert "mean" in out and "spread" in out  # the final table
    journal_files = list(llmos_home.rglob("*.db")) + list(llmos_home.rglob("*.sqlite"))
    assert journal_files
    with Journal(journal_files[0]) as j:
        study = j.studies(1)[0]
        extra = out.count(" over [confirm")  # a lucky leader re-measured past the budget
        assert study["status"] == "done" and len(j.trials(study["id"])) == 3 + extra


def test_tune_json_report_matches_the_journal(capsys, llmos_home):
    code = main(["tune", "--trials", "2", "--json", *FAST])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == report["exit_code"] == 0
    assert len(report["trials"]) >= 2 and report["study"].startswith("std:")
    assert all(t["origin"].startswith("confirm") for t in report["trials"][2:])
    assert "/2 [" in captured.err  # progress goes to stderr when stdout is JSON


def test_tune_bad_input_is_one_line_and_exit_1(capsys):
    assert main(["tune", "--trials", "0", *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["llmos-tui: error: --trials must be at least 1, got 0"]
    assert main(["tune", "--resume", "std:x", *FAST]) == 1
    assert "bad study id" in capsys.readouterr().err
    assert main(["tune", "--resume", "std:99", *FAST]) == 1
    assert "no study std:99" in capsys.readouterr().err


VERIFY = [a for a in FAST if a != "--no-verify"]


def journal_of(home):
    files = list(home.rglob("*.db")) + list(home.rglob("*.sqlite"))
    return files[0] if files else None


def synthetic(monkeypatch, faster: bool = True):
    """SYNTHETIC speeds (marked; tests/synthetic.py): each configuration loads and benches the demo
    model for real (once), then reports 100 tok/s for the running configuration (n_batch 512, 2
    threads) and 200 for any other."""
    from llmos_tui.tuning import runner

    def rate(params, n):
        other = (params.n_batch, params.n_threads, params.n_threads_batch) != (512, 2, 2)
        return 200.0 if faster and other else 100.0

    monkeypatch.setattr(runner, "measure", synthetic_speeds(rate, runner.measure))


def test_every_value_is_checked_before_any_work_starts(capsys, llmos_home):
    for args, words in ((["--vram-budget", "garbage"], "bad --vram-budget 'garbage'"),
                        (["--rss-budget", "150%"], "bad --rss-budget '150%'"),
                        (["--ctx", "0"], "--ctx must be at least 1"),
                        (["--min-gain", "150"], "--min-gain must be a percentage"),
                        (["--rounds", "0"], "--rounds must be at least 1"),
                        (["--apply", "--no-verify"], "--apply needs the verification")):
        assert main(["tune", "--trials", "2", *FAST, *args]) == 1, args
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
        assert "starting the engine" not in captured.out, args
    assert journal_of(llmos_home) is None or not Journal(journal_of(llmos_home)).studies()


def test_tune_apply_verifies_then_applies_end_to_end(capsys, llmos_home, monkeypatch):
    synthetic(monkeypatch)
    code = main(["tune", "--trials", "2", "--apply", "--rounds", "4", "--json", *VERIFY])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "verify round 1" in captured.err and "order BA" in captured.err
    assert report["verdict"]["significant"] and report["verdict"]["rounds"] == 4
    assert report["apply_outcome"]["state"] == "applied", report["apply_outcome"]
    assert code == report["exit_code"] == 0
    with Journal(journal_of(llmos_home)) as j:
        study = j.studies(1)[0]
        assert study["result"]["applied"]["state"] == "applied"
        assert j.active_config().source == "tuner"  # the next start runs what was applied
        assert len(j.trials(study["id"], kind="verify")) == 8


def test_tune_apply_exits_non_zero_when_the_change_is_refused(capsys, llmos_home, monkeypatch):
    from llmos_tui.core.changes import Changes

    synthetic(monkeypatch)
    monkeypatch.setattr(Changes, "vet", lambda self, params, check_bad=True: "vetoed by this test")
    code = main(["tune", "--trials", "2", "--apply", "--rounds", "4", *VERIFY])
    out = capsys.readouterr().out
    assert code == 1, out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("apply:"))
    assert line.strip().startswith("apply: refused:") and "vetoed by this test" in line, line
    with Journal(journal_of(llmos_home)) as j:
        assert j.studies(1)[0]["result"]["applied"]["state"] == "refused"


def test_tune_apply_with_nothing_faster_says_so_and_exits_0(capsys, llmos_home, monkeypatch):
    synthetic(monkeypatch, faster=False)
    code = main(["tune", "--trials", "2", "--apply", "--rounds", "4", *VERIFY])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "apply: nothing to apply" in out
    with Journal(journal_of(llmos_home)) as j:
        study = j.studies(1)[0]
        assert study["result"]["applied"]["state"] == "nothing to apply"
        assert j.active_config() is None or j.active_config().source != "tuner"
