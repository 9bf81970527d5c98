"""Ordered schema migrations for the journal, keyed on ``PRAGMA user_version``.

``MIGRATIONS[i]`` upgrades a journal from schema ``i`` to ``i + 1``; the file's
``user_version`` is the number of migrations already applied. A journal written
by an older release therefore opens in a newer one: the missing steps run, in
order, inside one write transaction, and ``user_version`` moves with them (it
lives in the database header, so it commits or rolls back with the steps).

Rules for adding a step: append, never edit or reorder a released step; a step
receives a ``sqlite_utils.Database`` already inside the transaction and must not
commit.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import sqlite_utils

Migration = Callable[["sqlite_utils.Database"], None]


def v1_core_tables(db: "sqlite_utils.Database") -> None:
    """Configuration versions, events, findings, actions, tuning, chats, telemetry."""
    text_default = lambda *cols: {c: "" for c in cols}  # noqa: E731

    db["configs"].create(
        {
            "id": int,
            "ts": float,
            "model_path": str,
            "params": str,  # JSON: EngineParams.to_dict() without model_path
            "source": str,  # operator | tuner | repair | plugin | undo
            "parent_id": int,
            "active": int,  # exactly one row has 1 (partial unique index below)
            "standing": str,  # unverified | good | bad
            "reason": str,
            "good_ts": float,  # when it was last verified good: picks the last-known-good
            "note": str,
        },
        pk="id",
        not_null=["ts", "model_path", "params", "source", "active", "standing", "reason", "note"],
        defaults={**text_default("model_path", "reason", "note"), "params": "{}", "source": "operator",
                  "active": 0, "standing": "unverified"},
    )
    db["configs"].create_index(["ts"])
    db["configs"].create_index(["good_ts"])
    # The database itself guarantees "exactly one active": a second active row is refused.
    db.execute("CREATE UNIQUE INDEX idx_configs_one_active ON configs(active) WHERE active = 1")

    db["events"].create(
        {"id": int, "ts": float, "kind": str, "config_id": int, "data": str},
        pk="id",
        not_null=["ts", "kind", "data"],
        defaults={"data": "{}"},
    )
    db["events"].create_index(["ts"])
    db["events"].create_index(["kind", "ts"])

    db["findings"].create(
        {
            "id": int,
            "ts": float,
            "detector": str,
            "severity": str,
            "title": str,
            "evidence": str,  # JSON
            "fingerprint": str,  # same trouble, same fingerprint: lets the doctor de-duplicate
        },
        pk="id",
        not_null=["ts", "detector", "severity", "title", "evidence", "fingerprint"],
        defaults={**text_default("fingerprint"), "evidence": "{}"},
    )
    db["findings"].create_index(["ts"])
    db["findings"].create_index(["fingerprint", "ts"])

    db["actions"].create(
        {
            "id": int,
            "ts": float,
            "finding_id": int,
            "kind": str,
            "params": str,  # JSON
            "proposed_by": str,  # operator | auto | plugin
            "state": str,  # proposed -> applied -> verified | failed | rolled_back | rejected
            "updated": float,
            "config_before": int,
            "config_after": int,
            "note": str,
        },
        pk="id",
        not_null=["ts", "kind", "params", "proposed_by", "state", "updated", "note"],
        defaults={"params": "{}", "note": ""},
    )
    db["actions"].create_index(["ts"])
    db["actions"].create_index(["finding_id"])
    db["actions"].create_index(["config_after"])

    db["action_states"].create(
        {"id": int, "action_id": int, "ts": float, "state": str, "note": str},
        pk="id",
        not_null=["action_id", "ts", "state", "note"],
        defaults={"note": ""},
        foreign_keys=[("action_id", "actions", "id")],
    )
    db["action_states"].create_index(["action_id"])

    db["studies"].create(
        {"id": int, "started": float, "ended": float, "name": str, "objective": str, "space": str},
        pk="id",
        not_null=["started", "name", "objective", "space"],
        defaults={"name": "", "space": "{}"},
    )
    db["studies"].create_index(["started"])

    db["trials"].create(
        {
            "id": int,
            "study_id": int,
            "ts": float,
            "params": str,
            "value": float,
            "metrics": str,
            "outcome": str,  # ok | oom | crash | timeout | error
            "config_id": int,
        },
        pk="id",
        not_null=["study_id", "ts", "params", "metrics", "outcome"],
        defaults={"params": "{}", "metrics": "{}"},
        foreign_keys=[("study_id", "studies", "id")],
    )
    db["trials"].create_index(["ts"])
    db["trials"].create_index(["study_id"])

    db["chats"].create(
        {"id": int, "created": float, "title": str, "model": str, "config_id": int},
        pk="id",
        not_null=["created", "title", "model"],
        defaults={"title": "", "model": ""},
    )
    db["chats"].create_index(["created"])

    db["messages"].create(
        {
            "id": int,
            "chat_id": int,
            "ts": float,
            "role": str,
            "content": str,
            "metrics": str,
            "status": str,  # done | cancelled | interrupted | error | streaming
        },
        pk="id",
        not_null=["chat_id", "ts", "role", "content", "metrics", "status"],
        defaults={"content": "", "metrics": "{}", "status": "done"},
        foreign_keys=[("chat_id", "chats", "id")],
    )
    db["messages"].create_index(["ts"])
    # (chat_id) also orders by rowid inside a chat: a resumed chat reads in order from the index.
    db["messages"].create_index(["chat_id"])

    db["telemetry"].create(
        {"id": int, "ts": float, "data": str},
        pk="id",
        not_null=["ts", "data"],
        defaults={"data": "{}"},
    )
    db["telemetry"].create_index(["ts"])


def v2_chat_activity(db: "sqlite_utils.Database") -> None:
    """Chats remember their last activity, so the chat list shows the most recent first."""
    db["chats"].add_column("updated", float)
    db.execute(
        "UPDATE chats SET updated = COALESCE("
        "(SELECT MAX(ts) FROM messages WHERE messages.chat_id = chats.id), created)"
    )
    db["chats"].create_index(["updated"])


def v3_model_files(db: "sqlite_utils.Database") -> None:
    """Model files and their lineage: a quantised GGUF with its parent, and how it measured."""
    db["model_files"].create(
        {
            "id": int,
            "ts": float,
            "path": str,
            "parent_id": int,  # the parent's row (None for an imported file)
            "parent_path": str,
            "quantization": str,
            "origin": str,  # quantize | import
            "size_bytes": int,
            "details": str,  # JSON: how it was made
            "metrics": str,  # JSON: how it measured (size, speed, perplexity, KLD)
        },
        pk="id",
        not_null=["ts", "path", "parent_path", "quantization", "origin", "size_bytes", "details", "metrics"],
        defaults={"parent_path": "", "quantization": "", "origin": "import", "size_bytes": 0,
                  "details": "{}", "metrics": "{}"},
    )
    db["model_files"].create_index(["path"])
    db["model_files"].create_index(["parent_path"])


def v4_tuning_fingerprints(db: "sqlite_utils.Database") -> None:
    """Studies remember what they tuned (model file, llama.cpp build, machine), their status and
    result, so a later study warm-starts and a stopped one resumes; trials keep llama.cpp's reason
    for a failure and whether they searched or verified."""
    studies = db["studies"]
    studies.add_column("status", str, not_null_default="running")
    for column in ("model_path", "model_key", "build"):
        studies.add_column(column, str, not_null_default="")
    for column in ("machine", "settings", "result"):
        studies.add_column(column, str, not_null_default="{}")
    db.execute("UPDATE studies SET status = CASE WHEN ended IS NULL THEN 'stopped' ELSE 'done' END")
    studies.create_index(["model_key"])
    trials = db["trials"]
    trials.add_column("reason", str, not_null_default="")
    trials.add_column("kind", str, not_null_default="trial")  # trial | verify


def v5_rollups(db: "sqlite_utils.Database") -> None:
    """Telemetry rollups, the flight recorder: the mean of each series per ``res`` seconds (10 s
    kept 48 h, 1 min kept 30 days by default; ``journal/rollups.py`` prunes them)."""
    db["rollups"].create(
        {"id": int, "ts": float, "res": int, "data": str},
        pk="id",
        not_null=["ts", "res", "data"],
        defaults={"data": "{}"},
    )
    db["rollups"].create_index(["res", "ts"])


def v6_fleet(db: "sqlite_utils.Database") -> None:
    """The head's fleet journal (``journal/fleet.py``): each box's entries, box-tagged, and per box
    its copy cursors, its last state and since when (so a box that is down still has a history)."""
    db["fleet_entries"].create(
        {
            "id": int,
            "box": str,
            "entry_id": str,  # the box's own id (cfg:12), or box@TS for a change of the box's state
            "type": str,
            "kind": str,
            "ts": float,
            "summary": str,
            "undoable": int,
            "data": str,  # JSON: the box's row
            "copied": float,
        },
        pk="id",
        not_null=["box", "entry_id", "type", "kind", "ts", "summary", "undoable", "data", "copied"],
        defaults={"kind": "", "summary": "", "undoable": 0, "data": "{}"},
    )
    db["fleet_entries"].create_index(["box", "entry_id"], unique=True)
    db["fleet_entries"].create_index(["box", "ts"])
    db["fleet_entries"].create_index(["ts"])
    db["fleet_boxes"].create(
        {
            "box": str,
            "cursors": str,  # JSON: {"cfg": last id copied, "evt": ..., ...}
            "copied": float,
            "state": str,  # alive | unavailable | dead | stale
            "since": float,
            "seen": float,  # last time it was alive
            "info": str,  # JSON: what the head last knew (GPUs, engine, model, tok/s, ...)
        },
        pk="box",
        not_null=["cursors", "info"],
        defaults={"cursors": "{}", "info": "{}"},
    )


MIGRATIONS: list[Migration] = [v1_core_tables, v2_chat_activity, v3_model_files, v4_tuning_fingerprints,
                               v5_rollups, v6_fleet]
SCHEMA_VERSION = len(MIGRATIONS)


def import_sqlite_utils():  # noqa: ANN201 - the module
    """``import sqlite_utils`` without numpy: sqlite-utils imports numpy, when installed, only to
    map numpy values it is asked to insert; the journal inserts none (the tuner converts its
    points first). Left to itself, creating the schema on a first start would keep ~15 MB of
    numpy in the cockpit's process for its whole life. Where numpy is already imported, nothing
    changes; meanwhile a ``None`` entry makes its optional import fail, as if not installed."""
    import sys

    if "sqlite_utils" in sys.modules or "numpy" in sys.modules:
        import sqlite_utils

        return sqlite_utils
    sys.modules["numpy"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        if sys.modules.get("numpy", 0) is None:
            del sys.modules["numpy"]
    return sqlite_utils


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the journal up to ``target`` in one write transaction; return (from, to).

    An up-to-date journal is left alone without taking the write lock (so opening never
    waits on another process's transaction). Otherwise ``BEGIN IMMEDIATE`` takes the
    lock before ``user_version`` is read again, so two processes opening an old journal
    at once do not both run the same step.
    """
    current = user_version(conn)
    if current >= target:
        return current, current  # the common case: no write lock needed
    sqlite_utils = import_sqlite_utils()  # only here and for export
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = user_version(conn)
        for step in MIGRATIONS[start:target]:
            step(db)
        if start < target:
            conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return start, max(start, target)
