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


def test_inject_oom_tries_the_next_repair_at_once_and_reports_the_journal_state(capsys, tmp_path: Path) -> None:
    from llmos_tui.journal import Journal

    jpath = tmp_path / "j.sqlite"
    rc = main(["inject", "oom", "--n-threads", "2", "--n-ctx", "1024", "--journal", str(jpath), "--timeout", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "engine.kv_quant verification failed" in out and "rolled back" in out
    assert "trying the next repair at once: engine.smaller_batch" in out
    assert "result: repaired after 2 repair(s)" in out
    with Journal(jpath) as journal:
        active = journal.active_config()
        assert active.standing == "good" and active.params["n_batch"] == 256
        assert f"active cfg:{active.id} (good)" in out
        bad = [c for c in journal.configs() if c.standing == "bad"]
        assert len(bad) == 1 and bad[0].params["type_k"] == "q8_0"
