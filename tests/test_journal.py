"""The journal: configuration versions and undo, migrations, refusals of bad files, sharing, chats."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.versions import params_of
from llmos_tui.errors import JournalError
from llmos_tui.journal import (
    Journal,
    JournalDamaged,
    JournalLocked,
    JournalNotSQLite,
    JournalReadOnly,
    JournalTooNew,
    JournalWriter,
    attach,
    move_aside,
    parse_entry_id,
    parse_since,
)
from llmos_tui.journal import migrations

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


@pytest.fixture
def journal(jpath: Path):
    j = Journal(jpath)
    yield j
    j.close()


def params(**changes) -> EngineParams:
    return EngineParams(model_path="/models/a.gguf", n_threads=4, n_threads_batch=4, **changes)


def fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


# ---- configuration versions ---------------------------------------------------------
def test_config_versions_have_parents_and_exactly_one_active(journal: Journal) -> None:
    first = journal.record_config(params())
    second = journal.record_config(params(n_ctx=4096), source="tuner", note="best trial")
    assert (first.parent_id, second.parent_id) == (None, first.id)
    assert journal.active_config().id == second.id
    assert journal.get_config(first.id).active is False
    assert journal.connection.query("SELECT COUNT(*) AS n FROM configs WHERE active = 1")[0]["n"] == 1
    assert params_of(second) == params(n_ctx=4096)
    assert second.params["n_ctx"] == 4096 and "model_path" not in second.params
    # The database itself refuses a second active version.
    with pytest.raises(sqlite3.IntegrityError):
        journal.connection.raw.execute("UPDATE configs SET active = 1 WHERE id = ?", (first.id,))
    journal.connection.raw.rollback()
    with pytest.raises(JournalError, match="config source"):
        journal.record_config(params(), source="someone")


def test_standing_good_bad_and_last_known_good(journal: Journal) -> None:
    a = journal.record_config(params())
    journal.mark_good(a.id, ts=100.0)
    b = journal.record_config(params(n_ctx=8192), source="repair")
    assert journal.last_known_good().id == a.id
    assert journal.last_known_good(exclude_active=True).id == a.id
    journal.mark_bad(b.id, "OOM while loading: 8192 ctx needs 3.1 GiB")
    assert journal.get_config(b.id).standing == "bad"
    assert "OOM" in journal.get_config(b.id).reason
    journal.mark_good(b.id, ts=200.0)  # verified after a fix: now it is the newest good one
    assert journal.last_known_good().id == b.id
    labels = {e.id: e.summary for e in journal.timeline(kinds="config")}
    assert "[active,last-known-good]" in labels[f"cfg:{b.id}"]


def test_change_config_then_undo_reverts_and_journals_the_revert(journal: Journal) -> None:
    base = journal.record_config(params())
    finding = journal.record_finding("kv_pressure", "warning", "KV cache full", {"used": 0.98})
    action, changed = journal.change_config(params(n_ctx=1024), source="repair", kind="shrink_ctx",
                                            proposed_by="auto", finding_id=finding)
    assert action.state == "applied" and action.params == {"n_ctx": 1024}
    assert (action.config_before, action.config_after) == (base.id, changed.id)

    restored = journal.undo(f"act:{action.id}")
    assert restored.params == base.params and restored.model_path == base.model_path
    assert restored.parent_id == changed.id and restored.source == "undo" and restored.active
    assert journal.active_config().id == restored.id
    assert journal.get_action(action.id).state == "rolled_back"
    revert = journal.action_for_config(restored.id)
    assert revert.kind == "undo" and revert.state == "applied"
    assert (revert.config_before, revert.config_after) == (changed.id, restored.id)
    assert [h["state"] for h in revert.history] == ["proposed", "applied"]
    with pytest.raises(JournalError, match="rolled back"):
        journal.undo(f"act:{action.id}")
    with pytest.raises(JournalError, match="already undone"):
        journal.undo(f"cfg:{changed.id}")

    # An undo is itself undoable: it brings the change back.
    again = journal.undo(f"act:{revert.id}")
    assert again.params["n_ctx"] == 1024 and again.parent_id == restored.id


def test_undo_by_config_id_and_refusals(journal: Journal) -> None:
    first = journal.record_config(params())
    second = journal.record_config(params(n_batch=256, n_ubatch=256), source="tuner")
    reverted = journal.undo(second.id)  # a bare number is a configuration
    assert reverted.params["n_batch"] == 512 and reverted.parent_id == second.id
    assert journal.action_for_config(reverted.id).params["reverts"] == f"cfg:{second.id}"
    with pytest.raises(JournalError, match="first configuration"):
        journal.undo(f"cfg:{first.id}")
    event = journal.record_event("crashed", {"exit_code": -11})
    with pytest.raises(JournalError, match="not a configuration change"):
        journal.undo(f"evt:{event}")
    restart = journal.propose_action("restart", proposed_by="auto")
    with pytest.raises(JournalError, match="changed no configuration"):
        journal.undo(f"act:{restart}")
    with pytest.raises(JournalError, match="bad journal entry id"):
        journal.undo("xyz:1")


def test_action_states_follow_the_lifecycle(journal: Journal) -> None:
    action = journal.propose_action("restart", {"why": "stalled"}, proposed_by="plugin")
    journal.set_action_state(action, "applied", ts=10.0)
    journal.set_action_state(action, "verified", ts=11.0, note="tokens flow again")
    with pytest.raises(JournalError, match="cannot become applied"):
        journal.set_action_state(action, "applied")
    history = journal.get_action(action).history
    assert [h["state"] for h in history] == ["proposed", "applied", "verified"]
    assert history[-1]["note"] == "tokens flow again"
    with pytest.raises(JournalError, match="proposed_by"):
        journal.propose_action("restart", proposed_by="nobody")


# ---- timeline, show, export ------------------------------------------------------------
def test_timeline_filters_and_show_accepts_its_ids(journal: Journal) -> None:
    journal.record_config(params(), ts=1000.0)
    journal.record_event("loaded", {"load_ms": 812.5}, ts=1001.0)
    crash = journal.record_event("crashed", {"exit_code": -11, "log": ["GGML_ASSERT failed"]}, ts=1002.0)
    journal.record_finding("oom", "critical", "CUDA out of memory", {"free_mib": 12}, ts=1003.0)
    study = journal.start_study({"n_batch": [64, 512]}, "gen_tps", name="batch sweep", ts=1004.0)
    journal.record_trial(study, {"n_batch": 64}, "oom", metrics={"peak_mib": 8100}, ts=1005.0)
    chat = journal.create_chat("hello", model="a.gguf", ts=1006.0)
    journal.add_message(chat, "user", "hi", ts=1007.0)

    entries = journal.timeline()
    assert [e.id for e in entries][:3] == [f"chat:{chat}", "trl:1", f"std:{study}"]
    assert [e.ts for e in entries] == sorted((e.ts for e in entries), reverse=True)
    assert all(e.type != "message" for e in entries)  # messages only when asked for
    assert [e.id for e in journal.timeline(kinds="crashed")] == [f"evt:{crash}"]
    assert {e.type for e in journal.timeline(kinds="event")} == {"event"}
    assert {e.id for e in journal.timeline(kinds="config,crashed")} == {"cfg:1", f"evt:{crash}"}
    assert [e.id for e in journal.timeline(kinds="message")] == ["msg:1"]
    assert [e.id for e in journal.timeline(since=1004.5)] == [f"chat:{chat}", "trl:1"]
    assert [e.id for e in journal.timeline(text="GGML_ASSERT")] == [f"evt:{crash}"]

    shown = journal.show("fnd:1")
    assert shown["evidence"] == {"free_mib": 12} and shown["type"] == "finding"
    assert journal.show(f"evt:{crash}")["data"]["log"] == ["GGML_ASSERT failed"]
    assert journal.show(f"std:{study}")["trials"][0]["outcome"] == "oom"
    for entry in entries:
        assert journal.show(entry.id)["id"] == entry.id
    with pytest.raises(JournalError, match="no entry"):
        journal.show("evt:999")


def test_entry_ids_and_times_parse() -> None:
    assert parse_entry_id("evt:40") == ("evt", 40)
    assert parse_entry_id("event:40") == ("evt", 40)
    assert parse_entry_id("12") == ("cfg", 12)
    with pytest.raises(JournalError):
        parse_entry_id("evt:x")
    assert parse_since("10m", now=10_000.0) == 9_400.0
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1d", now=100_000.0) == 100_000.0 - 86400
    assert parse_since("2025-01-31T14:00:00+00:00") == 1738332000.0
    with pytest.raises(JournalError, match="cannot read time"):
        parse_since("yesterday")


def test_export_holds_every_table_with_json_decoded(journal: Journal) -> None:
    journal.record_config(params())
    journal.record_event("loaded", {"load_ms": 5})
    data = journal.export()
    assert data["schema_version"] == migrations.SCHEMA_VERSION
    assert set(data["tables"]) >= {"configs", "events", "findings", "actions", "action_states", "studies",
                                   "trials", "chats", "messages", "telemetry"}
    assert data["tables"]["events"][0]["data"] == {"load_ms": 5}
    json.dumps(data)  # serialisable as it is


# ---- chats and telemetry -----------------------------------------------------------------
def test_chat_resumes_with_messages_in_order_and_metrics(jpath: Path) -> None:
    with Journal(jpath) as journal:
        older = journal.create_chat("older", model="a.gguf", ts=50.0)
        chat = journal.create_chat("about GPUs", model="a.gguf", ts=100.0)
        journal.add_message(chat, "user", "what is VRAM?", ts=101.0)
        reply = journal.add_message(chat, "assistant", "", status="streaming", ts=101.0)  # same ts: id orders
        journal.update_message(reply, content="Video memory.", status="done",
                               metrics={"gen_tps": 41.5, "tokens": 3})
        journal.add_message(chat, "user", "and more?", ts=102.0)
        journal.add_message(chat, "assistant", "It holds", status="cancelled", ts=103.0)
        with pytest.raises(JournalError, match="no chat"):
            journal.add_message(999, "user", "lost")
    with Journal(jpath) as journal:  # reopened: as after a restart
        assert [c.id for c in journal.list_chats()] == [chat, older]  # the most recent activity first
        messages = journal.chat_messages(chat)
        assert [(m.role, m.content, m.status) for m in messages] == [
            ("user", "what is VRAM?", "done"),
            ("assistant", "Video memory.", "done"),
            ("user", "and more?", "done"),
            ("assistant", "It holds", "cancelled"),
        ]
        assert messages[1].metrics == {"gen_tps": 41.5, "tokens": 3}
        assert journal.get_chat(chat).updated >= 103.0


def test_telemetry_retention_prunes_only_old_rows(jpath: Path) -> None:
    now = 1_000_000.0
    with Journal(jpath, telemetry_retention_days=None) as journal:  # prune by hand only
        for age_days in (30, 8, 6, 0.5):
            journal.record_telemetry({"gpu_util": 50, "age": age_days}, ts=now - age_days * 86400)
        assert journal.prune_telemetry(7, now=now) == 2
        assert sorted(r["data"]["age"] for r in journal.telemetry()) == [0.5, 6]


def test_record_telemetry_prunes_past_retention_by_itself(jpath: Path) -> None:
    with Journal(jpath, telemetry_retention_days=1) as journal:
        journal.record_telemetry({"old": True}, ts=time.time() - 3 * 86400)
        journal.telemetry_log._last_prune = 0.0  # as if the last prune were an hour ago
        journal.record_telemetry({"old": False})
        assert [r["data"] for r in journal.telemetry()] == [{"old": False}]


# ---- migrations ----------------------------------------------------------------------------
def build_v1_journal(path: Path) -> None:
    """A journal as the first release wrote it: schema v1, no chats.updated column."""
    import sqlite_utils

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    migrations.migrate(conn, target=1)
    conn.execute("INSERT INTO chats (created, title, model) VALUES (10.0, 'old chat', 'a.gguf')")
    conn.execute("INSERT INTO chats (created, title, model) VALUES (20.0, 'newer chat', 'a.gguf')")
    conn.execute("INSERT INTO messages (chat_id, ts, role, content) VALUES (1, 500.0, 'user', 'late reply')")
    conn.commit()
    assert "updated" not in sqlite_utils.Database(conn)["chats"].columns_dict
    assert migrations.user_version(conn) == 1
    conn.close()


def test_v1_journal_opens_after_the_v2_migration(jpath: Path) -> None:
    build_v1_journal(jpath)
    with Journal(jpath) as journal:
        assert journal.migrated_from == 1
        assert journal.schema_version == migrations.SCHEMA_VERSION >= 2
        chats = journal.list_chats()  # uses the v2 column, backfilled from the messages
        assert [(c.title, c.updated) for c in chats] == [("old chat", 500.0), ("newer chat", 20.0)]
        assert "idx_chats_updated" in {i.name for i in journal.db["chats"].indexes}
        assert journal.chat_messages(1)[0].content == "late reply"
    with Journal(jpath) as journal:
        assert journal.migrated_from is None  # already current: nothing ran


def test_newer_schema_is_refused_untouched(jpath: Path) -> None:
    Journal(jpath).close()
    conn = sqlite3.connect(jpath)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = fingerprint(jpath)
    with pytest.raises(JournalTooNew, match="newer llmos-tui.*v99"):
        Journal(jpath)
    assert fingerprint(jpath) == before


# ---- refusals: the file is never replaced, deleted or changed --------------------------------
def test_not_sqlite_is_refused_untouched(jpath: Path) -> None:
    jpath.write_text("my shopping list\n" * 20)
    before = fingerprint(jpath)
    with pytest.raises(JournalNotSQLite, match="not an SQLite file.*--journal OTHER"):
        Journal(jpath)
    with pytest.raises(JournalNotSQLite):
        Journal(jpath, readonly=True)
    assert fingerprint(jpath) == before
    assert sorted(p.name for p in jpath.parent.iterdir()) == [jpath.name]


def damage(path: Path) -> None:
    """Scribble over a b-tree page in the middle of the file, as a bad disk would."""
    page_size = 4096
    with open(path, "r+b") as fh:
        fh.seek(page_size * 3)
        fh.write(b"\xde\xad\xbe\xef" * 256)


def test_damaged_journal_is_refused_untouched(jpath: Path) -> None:
    with Journal(jpath) as journal:
        with journal.batch():
            for i in range(2000):
                journal.record_event("loaded", {"i": i, "pad": "x" * 100})
    damage(jpath)
    before = fingerprint(jpath)
    with pytest.raises(JournalDamaged, match="damaged.*repair --move-aside") as refused:
        Journal(jpath)
    assert "\n" not in str(refused.value)  # one line for the operator
    assert fingerprint(jpath) == before
    moved = move_aside(jpath)
    assert not jpath.exists() and moved[0].read_bytes() == before[0]
    with Journal(jpath) as fresh:  # a fresh journal at the old path; the damaged one kept aside
        assert fresh.counts()["events"] == 0


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(30)
"""


def hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_locked_journal_waits_busy_timeout_then_says_so(jpath: Path) -> None:
    Journal(jpath).close()
    holder = hold_lock(jpath)
    try:
        with Journal(jpath, busy_timeout=0.3) as journal:  # WAL: opening and reading still work
            assert journal.timeline() == []
            started = time.monotonic()
            with pytest.raises(JournalLocked, match="locked by another process.*--journal OTHER"):
                journal.record_event("loaded")
            assert 0.25 <= time.monotonic() - started < 3
    finally:
        holder.kill()
        holder.wait()
    with Journal(jpath) as journal:
        journal.record_event("loaded")  # the lock is gone: writes work again


def test_locked_journal_not_yet_in_wal_is_refused_untouched(jpath: Path) -> None:
    conn = sqlite3.connect(jpath)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    before = fingerprint(jpath)
    holder = hold_lock(jpath)
    try:
        with pytest.raises(JournalLocked, match="locked"):
            Journal(jpath, busy_timeout=0.2)
    finally:
        holder.kill()
        holder.wait()
    assert fingerprint(jpath) == before


def make_unwritable(path: Path) -> bool:
    """Really unwritable, even for root: chmod for users, the immutable flag for root."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
        return True
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    return done.returncode == 0


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_journal_says_so_and_opens_read_only(jpath: Path, what: str) -> None:
    with Journal(jpath) as journal:
        journal.record_event("crashed", {"exit_code": 1})
    target = jpath if what == "file" else jpath.parent
    if not make_unwritable(target):
        pytest.skip("cannot make a file unwritable here (root without chattr)")
    try:
        before = fingerprint(jpath)
        with pytest.raises(JournalReadOnly, match="read-only|not writable") as refused:
            Journal(jpath)
        assert "--journal OTHER" in str(refused.value)
        with Journal(jpath, readonly=True) as journal:
            assert [e.id for e in journal.timeline()] == ["evt:1"]
            with pytest.raises(JournalReadOnly, match="read-only"):
                journal.record_event("loaded")
        assert fingerprint(jpath) == before
    finally:
        make_writable(target)


# ---- writer, two processes, recorder ---------------------------------------------------------
def test_writer_batches_and_one_bad_write_spoils_nothing(jpath: Path) -> None:
    errors: list[BaseException] = []
    with Journal(jpath) as journal:
        chat = journal.create_chat("c")
        writer = JournalWriter(journal, on_error=errors.append)
        futures = [writer.record_event("loaded", {"i": i}) for i in range(500)]
        bad = writer.add_message(999, "user", "no such chat")
        good = writer.add_message(chat, "user", "fine")
        assert writer.flush(5)
        assert all(f.done() for f in futures) and good.result() > 0
        with pytest.raises(JournalError, match="no chat"):
            bad.result()
        assert writer.batches < 500  # batched, not one commit per row
        assert errors and "no chat" in str(errors[0])
        writer.record_event("unloaded")
        writer.close()  # drains
        with pytest.raises(JournalError, match="closed"):
            writer.record_event("late")
        assert journal.counts()["events"] == 501
        assert journal.counts()["messages"] == 1


def test_writer_open_errors_reach_the_caller(jpath: Path) -> None:
    jpath.write_text("not a journal")
    with pytest.raises(JournalNotSQLite):
        JournalWriter(jpath)


def test_two_processes_write_and_read_one_journal(jpath: Path) -> None:
    Journal(jpath).close()
    other = python(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from llmos_tui.journal import Journal, JournalWriter
        with JournalWriter({str(jpath)!r}) as w:
            fs = [w.record_event("other", {{"i": i}}) for i in range(300)]
            w.flush()
        with Journal({str(jpath)!r}) as j:
            for i in range(50):
                j.record_event("other-sync", {{"i": i}})
            print(len(j.events("mine", limit=10_000)))
    """)
    with JournalWriter(jpath) as writer:
        for i in range(300):
            writer.record_event("mine", {"i": i})
            if i % 50 == 0:
                time.sleep(0.01)  # interleave with the other process
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    with Journal(jpath) as journal:
        assert len(journal.events("mine", limit=10_000)) == 300
        assert len(journal.events("other", limit=10_000)) == 300
        assert len(journal.events("other-sync", limit=10_000)) == 50
        assert journal.check(full=True) == []
    # the other process read every event of ours committed before it wrote its last sync event
    # (a second of slack for our writer's batching), and nothing that does not exist
    with Journal(jpath) as journal:
        synced = max(e["ts"] for e in journal.events("other-sync", limit=10_000))
        committed = sum(1 for e in journal.events("mine", limit=10_000) if e["ts"] < synced - 1.0)
    assert committed <= int(out.strip()) <= 300, (committed, out)


@dataclass
class FakeEvent:
    kind: str
    data: dict = field(default_factory=dict)
    ts: float = 0.0


class FakeSupervisor:
    def __init__(self) -> None:
        self.callbacks: list = []

    def subscribe(self, callback):
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def emit(self, event: FakeEvent) -> None:
        for callback in list(self.callbacks):
            callback(event)


def test_recorder_journals_engine_events_and_skips_chatter(jpath: Path) -> None:
    supervisor = FakeSupervisor()
    with Journal(jpath) as journal:
        config = journal.record_config(params())
        with JournalWriter(journal) as writer:
            unsubscribe = attach(supervisor, writer)
            supervisor.emit(FakeEvent("state", {"state": "loading"}, 1.0))
            supervisor.emit(FakeEvent("loaded", {"load_ms": 812.5}, 2.0))
            supervisor.emit(FakeEvent("request_done", {"tokens": 12}, 3.0))
            supervisor.emit(FakeEvent("crashed", {"exit_code": None, "signal": "SIGSEGV",
                                                  "log_tail": ["ggml.c:1234: GGML_ASSERT"]}, 4.0))
            supervisor.emit(FakeEvent("restarting", {"attempt": 1, "delay_s": 0.5, "path": Path("/x")}, 5.0))
            unsubscribe()
            supervisor.emit(FakeEvent("loaded", {"load_ms": 1.0}, 6.0))
            writer.flush()
        events = journal.events()
        assert [(e["kind"], e["ts"]) for e in events] == [("restarting", 5.0), ("crashed", 4.0), ("loaded", 2.0)]
        assert events[1]["data"]["log_tail"] == ["ggml.c:1234: GGML_ASSERT"]
        assert events[0]["data"]["path"] == "/x"  # odd values are kept as text
        assert {e["config_id"] for e in events} == {config.id}


def test_recorder_never_raises_into_the_supervisor() -> None:
    class BrokenSink:
        def record_event(self, *a, **k):
            raise RuntimeError("disk on fire")

    supervisor = FakeSupervisor()
    attach(supervisor, BrokenSink())
    supervisor.emit(FakeEvent("crashed", {"exit_code": 1}, 1.0))  # logged, not raised


def test_journal_is_safe_to_share_between_threads(journal: Journal) -> None:
    def write(n: int) -> None:
        for i in range(100):
            journal.record_event("t", {"n": n, "i": i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.counts()["events"] == 400


def test_config_changes_through_the_writer_are_synced_to_disk(jpath: Path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with JournalWriter(jpath) as writer:
        writer.record_event("loaded").result()
        assert not any(p.endswith("-wal") for p in synced)  # plain events: NORMAL, no fsync
        writer.submit(lambda j: j.record_config(params())).result()
        writer.submit(lambda j: j.record_config(params(n_ctx=512))).result()
        restored = writer.submit(lambda j: j.undo("cfg:2")).result()  # as the Operator does
        assert restored.params["n_ctx"] == 2048
        assert sum(p.endswith("-wal") for p in synced) >= 3


def test_the_journal_is_a_leaf_function_level_imports_included() -> None:
    """Nothing in journal/ imports the layers above it, not even inside a function."""
    import ast

    above = ("llmos_tui.engine", "llmos_tui.telemetry", "llmos_tui.doctor", "llmos_tui.tuning", "llmos_tui.core",
             "llmos_tui.cli", "llmos_tui.ui", "llmos_tui.console", "llmos_tui.exporters", "llmos_tui.compress")
    found = []
    for path in sorted((REPO / "llmos_tui" / "journal").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith(above)]
    assert found == []


def test_the_journal_is_one_connection_with_repositories(journal: Journal) -> None:
    """Each repository is given the one connection; the facade's methods are its repositories' work."""
    from llmos_tui.journal.db import Database

    repos = [journal.versions, journal.event_log, journal.chats, journal.telemetry_log, journal.lineage,
             journal.tuning, journal.entries, journal.overview]
    assert isinstance(journal.connection, Database)
    assert all(repo.db is journal.connection for repo in repos)
    assert not any(base is not object for base in type(journal).__mro__[1:])  # no mixins
    version = journal.versions.record_config(params(n_ctx=1024))
    assert journal.active_config() == version == journal.get_config(version.id)
    journal.event_log.record_event("crashed", {"exit": 9})
    counts = journal.overview.counts()
    assert (counts.active_config, counts.crashes) == (version.id, 1)
    assert version.settings()["model_path"] == "/models/a.gguf" and version.settings()["n_ctx"] == 1024


def test_the_port_is_one_interface_over_a_journal_a_writer_or_none(jpath: Path) -> None:
    from llmos_tui.journal import JournalPort

    none = JournalPort(None, "test")
    assert not none.available and none.call(lambda j: 1) is None and none.submit(lambda j: 1).result() is None
    with Journal(jpath) as journal:
        port = JournalPort(journal, "test")
        assert JournalPort.of(port) is port and JournalPort(port).target is journal
        event = port.call(lambda j: j.record_event("x"))
        assert port.submit(lambda j: j.events("x")[0]["id"]).result(5) == event
        assert port.safe(lambda j: j.get_config(999), default="missing") == "missing"
        with JournalWriter(journal) as writer:
            via_writer = JournalPort(writer, "test")
            written = via_writer.call(lambda j: j.record_event("y"))
            assert via_writer.submit(lambda j: j.events("y")[0]["id"]).result(5) == written
