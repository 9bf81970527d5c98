"""`llmos-tui doctor`, `plugins` and `inject` on the demo model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmos_tui.cli import main


def test_doctor_json_on_a_healthy_engine(capsys, tmp_path: Path) -> None:
    rc = main(["doctor", "--json", "--n-threads", "2", "--n-ctx", "1024", "--journal", str(tmp_path / "j.sqlite")])
    out = json.loads(capsys.readouterr().out)
    assert out["canary"]["ok"] is True
    # a healthy engine: nothing worse than info, and the exit code says so
    assert out["worst"] in (None, "info"), [(f["detector"], f["severity"], f["title"]) for f in out["findings"]]
    assert rc == 0
    assert any(p["name"] == "builtin" for p in out["plugins"])


def test_doctor_exits_critical_when_the_engine_cannot_start(capsys, bad_models) -> None:
    rc = main(["doctor", "--model", str(bad_models["refused"]), "--no-journal"])
    out = capsys.readouterr().out
    assert rc == 3 and "engine failed to start" in out


def test_plugins_lists_refused_ones_with_the_reason(capsys, llmos_home: Path) -> None:
    folder = llmos_home / "config" / "plugins"
    folder.mkdir(parents=True)
    (folder / "unsafe.py").write_text("x = 1\n")
    os.chmod(folder, 0o777)
    try:
        assert main(["plugins"]) == 0
    finally:
        os.chmod(folder, 0o755)
    out = capsys.readouterr().out
    assert "example_slow_reply" in out and "loaded" in out
    assert "unsafe" in out and "refused" in out and "world-writable" in out


def test_inject_abort_is_repaired(capsys, tmp_path: Path) -> None:
    rc = main(["inject", "abort", "--n-threads", "2", "--n-ctx", "1024", "--journal", str(tmp_path / "j.sqlite"),
               "--timeout", "40"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "engine.crashed" in out and "verified" in out and "result: repaired" in out
    assert "journal: act:" in out and " verified; active cfg:" in out, "the end state is the journal's"


def test_inject_oom_on_the_demo_model_raises_one_finding_and_tries_no_repair_the_header_rules_out(
        capsys, tmp_path: Path) -> None:
    from llmos_tui.journal import Journal

    jpath = tmp_path / "j.sqlite"
    rc = main(["inject", "oom", "--n-threads", "2", "--n-ctx", "1024", "--journal", str(jpath), "--timeout", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("finding #") == 1 and "engine.oom" in out, out
    assert "crash" not in out.replace("engine: crashed", ""), "no crash or crash-loop finding: " + out
    assert "engine.kv_quant" not in out, "the q8_0 cache the header refuses is neither proposed nor tried"
    assert "proposed: engine.smaller_batch" in out
    assert "result: repaired after 1 repair(s) (engine.smaller_batch); engine ready" in out
    with Journal(jpath) as journal:
        active = journal.active_config()
        assert active.standing == "good" and active.params["n_batch"] == 256
        assert f"active cfg:{active.id} (good)" in out
        assert not [c for c in journal.configs() if c.standing == "bad" or c.params["type_k"] == "q8_0"]


class _FailingWriter:
    def submit(self, fn):
        raise OSError("disk full")


def test_inject_says_repaired_only_with_exit_0_and_a_verified_journal_action() -> None:
    from llmos_tui.cli.doctor import JournalRecord, _journal_record, end_state

    verified = JournalRecord("verified", "journal: act:1 engine.restart verified")
    cases = {
        ("repaired", "ready", "verified"): 0,
        ("repaired", "ready", "applied"): 1,       # the journal never heard it was verified
        ("repaired", "ready", None): 1,            # a journal write or read failed
        ("repaired", "crashed", "verified"): 1,    # verified, then the engine died again
        ("failed", "ready", "failed"): 1,
        ("gave_up", "crashed", "rejected"): 1,
    }
    for (finding, engine, action), want in cases.items():
        record = JournalRecord(action, "journal: ...")
        code, line = end_state(finding, engine, record, ["engine.restart"])
        assert code == want, (finding, engine, action, line)
        assert ("repaired" in line) == (code == 0), line
    assert end_state("repaired", "ready", verified, ["engine.restart"])[1] == \
        "result: repaired after 1 repair(s) (engine.restart); engine ready"
    assert end_state("repaired", "ready", None, ["engine.restart"])[0] == 0, "--no-journal: the doctor's word"
    # a failed journal write or read is never counted as verified
    assert _journal_record(_FailingWriter(), None).action_state is None
    unreadable = _journal_record(_FailingWriter(), 7)
    assert unreadable.action_state is None and "disk full" in unreadable.line
    assert end_state("repaired", "ready", unreadable, ["engine.restart"])[0] == 1
