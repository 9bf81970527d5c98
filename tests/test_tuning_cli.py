"""`llmos-tui tune` on the demo model: progress lines, the final table, honest exit codes, the journal."""

from __future__ import annotations

import json

from llmos_tui.cli.main import main
from llmos_tui.journal import Journal

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
        assert study["status"] == "done" and len(j.trials(study["id"])) == 3


def test_tune_json_report_matches_the_journal(capsys, llmos_home):
    code = main(["tune", "--trials", "2", "--json", *FAST])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == report["exit_code"] == 0
    assert len(report["trials"]) == 2 and report["study"].startswith("std:")
    assert "/2 [" in captured.err  # progress goes to stderr when stdout is JSON


def test_tune_bad_input_is_one_line_and_exit_1(capsys):
    assert main(["tune", "--trials", "0", *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["llmos-tui: error: --trials must be at least 1, got 0"]
    assert main(["tune", "--resume", "std:x", *FAST]) == 1
    assert "bad study id" in capsys.readouterr().err
    assert main(["tune", "--resume", "std:99", *FAST]) == 1
    assert "no study std:99" in capsys.readouterr().err
