"""`llmos-tui journal …` handlers, run in-process against a temporary journal."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from llmos_tui.cli import journal as cli_journal
from llmos_tui.engine.params import EngineParams
from llmos_tui.journal import Journal


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Parse as `llmos-tui` does (a top-level --journal, then `journal ...`) and run the handler."""
    parser = argparse.ArgumentParser(prog="llmos-tui")
    parser.add_argument("--journal")
    parser.add_argument("--config")
    cli_journal.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


DEMO = str(Path(__file__).resolve().parents[1] / "llmos_tui" / "data" / "demo.gguf")


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        journal.record_config(EngineParams(model_path=DEMO, n_threads=2, n_threads_batch=2))
        finding = journal.record_finding("oom", "critical", "CUDA out of memory", {"free_mib": 12, "need_mib": 900})
        _action, repaired = journal.change_config(
            EngineParams(model_path=DEMO, n_ctx=1024, n_threads=2, n_threads_batch=2),
            source="repair", kind="shrink_ctx", proposed_by="auto", finding_id=finding)
        journal.mark_good(repaired.id)  # the repair passed its verification
        journal.record_event("crashed", {"signal": "SIGABRT", "log_tail": ["GGML_ASSERT"]})
        journal.record_event("loaded", {"load_ms": 640.0})
    return path


def assert_one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_list_is_the_default_and_filters(populated: Path, capsys) -> None:
    code, out, _ = run(["--journal", str(populated), "journal"], capsys)
    assert code == 0
    ids = [line.split()[0] for line in out.splitlines()]
    assert ids == ["evt:2", "evt:1", "cfg:2", "act:1", "fnd:1", "cfg:1"]
    code, out, _ = run(["--journal", str(populated), "journal", "list", "--kind", "crashed"], capsys)
    assert [line.split()[0] for line in out.splitlines()] == ["evt:1"]
    code, out, _ = run(["--journal", str(populated), "journal", "list", "--kind", "config", "--json"], capsys)
    assert [e["id"] for e in json.loads(out)] == ["cfg:2", "cfg:1"]
    code, out, _ = run(["--journal", str(populated), "journal", "list", "--since", "1h", "--limit", "2"], capsys)
    assert len(out.splitlines()) == 2
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    code, out, _ = run(["--journal", str(populated), "journal", "list", "--since", future], capsys)
    assert code == 0 and out.strip() == "no entries match"


def test_journal_option_after_the_subcommand(populated: Path, capsys) -> None:
    code, out, _ = run(["journal", "--journal", str(populated), "list", "--kind", "finding"], capsys)
    assert code == 0 and out.split()[0] == "fnd:1"


def test_list_without_a_journal_creates_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "absent.sqlite"
    code, out, _ = run(["--journal", str(path), "journal", "list"], capsys)
    assert code == 0 and "no journal" in out
    assert not path.exists()


def test_show_prints_the_entry_with_evidence_and_history(populated: Path, capsys) -> None:
    code, out, _ = run(["--journal", str(populated), "journal", "show", "act:1"], capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown["id"] == "act:1" and shown["kind"] == "shrink_ctx"
    assert shown["finding"]["evidence"] == {"free_mib": 12, "need_mib": 900}
    assert [h["state"] for h in shown["history"]] == ["proposed", "applied"]
    assert shown["changes"] == {"n_ctx": [2048, 1024]}
    code, out, _ = run(["--journal", str(populated), "journal", "show", "evt:1"], capsys)
    assert json.loads(out)["data"]["log_tail"] == ["GGML_ASSERT"]


def test_undo_records_the_revert_and_prints_the_config(populated: Path, capsys) -> None:
    code, out, err = run(["--journal", str(populated), "journal", "undo", "act:1"], capsys)
    assert code == 0, err
    assert "act:2" in out and "cfg:3 is now the active configuration" in out
    assert "n_ctx: 1024 -> 2048" in out
    with Journal(populated) as journal:
        active = journal.active_config()
        assert active.id == 3 and active.params["n_ctx"] == 2048 and active.parent_id == 2
        assert journal.get_action(1).state == "rolled_back"
        assert journal.get_action(2).kind == "undo"
    code, _, err = run(["--journal", str(populated), "journal", "undo", "act:1"], capsys)
    assert code == 1
    assert_one_line_error(err, "rolled back")


@pytest.mark.parametrize("entry, needle", [("evt:1", "not a configuration change"),
                                           ("cfg:1", "no parent"),
                                           ("cfg:99", "no configuration cfg:99"),
                                           ("bogus", "bad journal entry id")])
def test_undo_refusals_are_one_line(populated: Path, capsys, entry: str, needle: str) -> None:
    code, _, err = run(["--journal", str(populated), "journal", "undo", entry], capsys)
    assert code == 1
    assert_one_line_error(err, needle)


def test_export_to_stdout_and_to_a_file(populated: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = run(["--journal", str(populated), "journal", "export", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and len(data["tables"]["events"]) == 2 and len(data["tables"]["configs"]) == 2
    target = tmp_path / "out" / "export.json"
    target.parent.mkdir()
    code, out, _ = run(["--journal", str(populated), "journal", "export", "--out", str(target)], capsys)
    assert code == 0 and str(target) in out
    assert json.loads(target.read_text())["tables"]["findings"][0]["evidence"]["need_mib"] == 900
    assert [p.name for p in target.parent.iterdir()] == ["export.json"]  # no temp file left behind


def test_not_sqlite_journal_gives_a_choice_and_stays(tmp_path: Path, capsys) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_text("notes, not a journal\n")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    for argv in (["list"], ["show", "evt:1"], ["undo", "act:1"], ["export"], ["repair"]):
        code, _, err = run(["--journal", str(path), "journal", *argv], capsys)
        assert code == 1, argv
        assert_one_line_error(err, "not an SQLite file", "--journal OTHER", "repair --move-aside")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_repair_checks_and_moves_aside_without_deleting(populated: Path, capsys) -> None:
    code, out, _ = run(["--journal", str(populated), "journal", "repair", "--full"], capsys)
    assert code == 0 and "healthy" in out
    with open(populated, "r+b") as fh:  # damage a page
        fh.seek(4096 * 2)
        fh.write(b"\x00\xff" * 2048)
    damaged = populated.read_bytes()
    code, _, err = run(["--journal", str(populated), "journal", "repair"], capsys)
    assert code == 1
    assert_one_line_error(err, "damaged", "--move-aside")
    code, out, _ = run(["--journal", str(populated), "journal", "repair", "--move-aside"], capsys)
    assert code == 0 and "nothing was deleted" in out
    aside = [p for p in populated.parent.iterdir() if ".aside-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    assert not populated.exists()
    code, out, _ = run(["--journal", str(populated), "journal", "list"], capsys)
    assert code == 0 and "no journal" in out


def test_journal_path_comes_from_the_config_file(populated: Path, llmos_home: Path, capsys) -> None:
    config = llmos_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[journal]\npath = "{populated}"\n')
    code, out, _ = run(["journal", "list", "--kind", "crashed"], capsys)
    assert code == 0 and out.split()[0] == "evt:1"


def test_through_the_real_command_line(populated: Path, capsys) -> None:
    from llmos_tui.cli import main

    assert main(["--journal", str(populated), "journal", "list", "--kind", "action"]) == 0
    assert capsys.readouterr().out.split()[0] == "act:1"
