"""The journal: one SQLite file holding every configuration version, engine event,
finding, action, tuning trial, chat and telemetry summary.

It is the audit log and the undo history. ``Journal`` is the synchronous API
(the CLI, tests, and the writer thread use it); the UI writes through
``JournalWriter`` so that no write ever runs on the UI thread.

Durability: WAL mode with ``synchronous=NORMAL``. In WAL mode a commit is a
``write()`` of the transaction's frames into the ``-wal`` file; once ``write()``
returns the bytes belong to the operating system, so a SIGKILL of this process
(or a crash of Python, or of llama.cpp in our process) cannot lose a committed
row and cannot corrupt the file — the next open replays or ignores the WAL
frames by their checksums. What NORMAL gives up is only the last commits on an
OS crash or power cut (never consistency). Configuration changes and undo are
the undo history itself, so those transactions are committed with
``synchronous=FULL`` (fsync of the WAL at commit) — or, when one rides in a
writer batch, the WAL is fsynced right after that batch commits — and they
survive a power cut too.
``busy_timeout`` lets two llmos-tui processes share one journal: a writer waits
for the other's transaction instead of failing at once.

The file is never replaced or deleted here: a journal that is locked, read-only,
not SQLite, too new, or damaged raises a ``JournalError`` subclass whose message
names the file and the way out.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Sequence

from llmos_tui.errors import JournalError
from llmos_tui.journal import migrations
from llmos_tui.journal.chats import ChatRecords
from llmos_tui.journal.configs import ConfigRecords
from llmos_tui.journal.events import EventRecords
from llmos_tui.journal.history import TelemetryRecords
from llmos_tui.journal.models import ModelFilesMixin
from llmos_tui.journal.records import (  # noqa: F401 - the values, re-exported here
    _BY_NAME,
    _BY_PREFIX,
    ACTION_MOVES,
    ACTION_STATES,
    CONFIG_SOURCES,
    MESSAGE_STATUSES,
    PROPOSERS,
    SOURCES,
    Action,
    Chat,
    ConfigVersion,
    Entry,
    MessageRecord,
    _diff,
    _loads,
    _short_data,
    _Source,
    parse_entry_id,
)
from llmos_tui.journal.timeparse import format_ts
from llmos_tui.journal.tuning import TuningRecords

SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT = 5.0
# SQLite's quick check on open reads the whole file (about 30 ms for 100 000 rows / 15 MB).
# Past this size it is skipped at open; damage then surfaces as JournalDamaged on the first
# read that meets it, and `llmos-tui journal repair` runs the check on demand.
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024
WAY_OUT = (
    "use --journal OTHER to work with another file, or `llmos-tui journal repair --move-aside` "
    "to rename this one aside (nothing is deleted)"
)



# ---- errors ----------------------------------------------------------------
class JournalLocked(JournalError):
    """Another process holds the journal's lock longer than busy_timeout."""


class JournalReadOnly(JournalError):
    """The file or its folder is not writable; a read-only open may still work."""


class JournalNotSQLite(JournalError):
    """The path holds something that is not an SQLite database."""


class JournalDamaged(JournalError):
    """SQLite's integrity check fails, or SQLite reports the file malformed."""


class JournalTooNew(JournalError):
    """Written by a newer llmos-tui whose schema this release does not know."""


class JournalMissing(JournalError):
    """No journal at that path (and the caller asked not to create one)."""


# ---- the journal ---------------------------------------------------------------
class Journal(ConfigRecords, EventRecords, ChatRecords, TelemetryRecords, ModelFilesMixin, TuningRecords):
    """Synchronous access to one journal file. Safe to share between threads (one lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        readonly: bool = False,
        create: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        check: bool = True,
        telemetry_retention_days: float | None = 7.0,
    ) -> None:
        """Open (and create, upgrade) the journal at ``path`` (None: ``default_paths().journal``).

        ``readonly`` opens without writing anything (a read-only file or folder);
        ``create=False`` raises JournalMissing instead of creating a file; ``check`` runs
        SQLite's quick check before the first write; ``busy_timeout`` is how long a write
        waits for another process's transaction; telemetry rows older than
        ``telemetry_retention_days`` are pruned (None: kept).
        """
        if path is None:
            from llmos_tui.paths import default_paths

            path = default_paths().journal
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self.busy_timeout = float(busy_timeout)
        self.telemetry_retention_days = telemetry_retention_days
        self._lock = threading.RLock()
        self._last_prune = 0.0
        self._savepoints = 0
        self._durable_pending = False  # a nested write asked for a durable commit
        self._conn: sqlite3.Connection | None = None
        self.migrated_from: int | None = None  # schema version before this open upgraded it
        self.readonly_note = ""
        self._db = None
        if readonly:
            self._open_readonly(check)
        else:
            self._open_writable(create, check)

    @property
    def db(self):
        """The connection as a ``sqlite_utils.Database`` (schema, export, ad-hoc queries).

        Imported on first use: sqlite-utils pulls in numpy when it is installed, which a
        `journal list` or a batch of event writes does not need.
        """
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self._require_conn(), execute_plugins=False, recursive_triggers=False)
        return self._db

    # ---- opening -----------------------------------------------------------
    def _sniff(self) -> None:
        """Refuse a file that is not SQLite before SQLite touches it."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(100)
        except PermissionError:
            raise JournalReadOnly(f"journal {self.path} cannot be read (permission denied); {WAY_OUT}") from None
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc.strerror}") from None
        if head and not head.startswith(SQLITE_MAGIC):
            raise JournalNotSQLite(
                f"journal {self.path} is not an SQLite file (it starts with {head[:16]!r}); "
                f"it was left as it is: {WAY_OUT}"
            )
        if head and len(head) < 100:
            raise JournalDamaged(f"journal {self.path} is truncated ({len(head)} bytes); it was left as it is: {WAY_OUT}")

    def _open_writable(self, create: bool, check: bool) -> None:
        path = self.path
        if path.is_dir():
            raise JournalError(f"journal path {path} is a folder, not a file; use --journal FILE")
        exists = path.exists()
        if exists:
            self._sniff()
        elif not create:
            raise JournalMissing(f"no journal at {path} yet (llmos-tui creates it on first use)")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalReadOnly(
                    f"cannot create the journal's folder {path.parent}: {exc.strerror}; use --journal OTHER"
                ) from None
        if exists and not os.access(path, os.W_OK):
            raise JournalReadOnly(
                f"journal {path} is read-only (the file is not writable); open it read-only "
                f"(`llmos-tui journal list` does so by itself) or use --journal OTHER"
            )
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise JournalReadOnly(
                f"journal folder {path.parent} is not writable (SQLite keeps {path.name}-wal beside the file); "
                f"open it read-only or use --journal OTHER"
            )
        conn = sqlite3.connect(str(path), timeout=self.busy_timeout, check_same_thread=False)
        self._conn = conn
        try:
            with self._errors("open"):
                if exists:
                    # Before anything writes (even switching to WAL rewrites the header):
                    # a damaged or too-new file must be refused untouched.
                    if check:
                        self._integrity_or_raise()
                    self._version_or_raise()
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise JournalError(f"journal {path} could not switch to WAL mode (it stays {mode!r})")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                start, end = migrations.migrate(conn)
                if start != end:
                    self.migrated_from = start
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def _open_readonly(self, check: bool) -> None:
        path = self.path.resolve()
        if not path.is_file():
            raise JournalMissing(f"no journal at {self.path}")
        self._sniff()
        attempts = [("mode=ro", "")]
        # A WAL journal in a folder we cannot write has no -shm to share; read it as a
        # snapshot instead (changes made by others while we read are not seen).
        attempts.append(("immutable=1", " (as a snapshot: the folder is not writable)"))
        last: Exception | None = None
        for query, note in attempts:
            conn = sqlite3.connect(f"{path.as_uri()}?{query}", uri=True, timeout=self.busy_timeout, check_same_thread=False)
            self._conn = conn
            try:
                with self._errors("open read-only"):
                    if check:
                        self._integrity_or_raise()
                    version = self._version_or_raise()
                    if version == 0:
                        raise JournalMissing(f"journal {self.path} is empty")
                    if version < migrations.SCHEMA_VERSION:
                        raise JournalError(
                            f"journal {self.path} has schema v{version}, older than this release's "
                            f"v{migrations.SCHEMA_VERSION}, and a read-only open cannot upgrade it; "
                            f"open it once with write access"
                        )
                    conn.execute("PRAGMA query_only=ON")
                self.readonly_note = note
                return
            except JournalError as exc:
                conn.close()
                self._conn = None
                last = exc
                if not isinstance(exc, JournalReadOnly) and "cannot open" not in str(exc):
                    raise
        assert last is not None
        raise last

    def _version_or_raise(self) -> int:
        version = migrations.user_version(self._conn)
        if version > migrations.SCHEMA_VERSION:
            raise JournalTooNew(
                f"journal {self.path} was written by a newer llmos-tui (schema v{version}; this release "
                f"knows up to v{migrations.SCHEMA_VERSION}); open it with that release, or use --journal OTHER"
            )
        return version

    def _integrity_or_raise(self) -> None:
        if self.path.stat().st_size > QUICK_CHECK_MAX_BYTES:
            return
        problems = self.check()
        if problems:
            raise JournalDamaged(
                f"journal {self.path} is damaged (integrity check: {problems[0]}); "
                f"it was left as it is: {WAY_OUT}"
            )

    def check(self, full: bool = False) -> list[str]:
        """SQLite's own check of the file; [] when healthy. ``full`` also checks index contents."""
        pragma = "integrity_check" if full else "quick_check"
        with self._lock:
            try:
                rows = self._conn.execute(f"PRAGMA {pragma}(20)").fetchall()
            except sqlite3.DatabaseError as exc:
                if "not a database" in str(exc) or "malformed" in str(exc):
                    return [str(exc)]
                raise
        # One line per problem; SQLite prefixes the first with "*** in database main ***".
        problems = [" ".join(str(r[0]).replace("*** in database main ***", "").split()) for r in rows]
        return [] if problems == ["ok"] else [p for p in problems if p]

    # ---- plumbing ----------------------------------------------------------
    @property
    def schema_version(self) -> int:
        with self._lock:
            return migrations.user_version(self._conn)

    @property
    def in_transaction(self) -> bool:
        return self._conn is not None and self._conn.in_transaction

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}{', readonly' if self.readonly else ''})"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except JournalError:
            raise
        except sqlite3.Error as exc:
            raise self._translate(exc, what) from exc

    def _translate(self, exc: sqlite3.Error, what: str) -> JournalError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        lower = text.lower()
        p = self.path
        if primary in (5, 6) or "locked" in lower:
            return JournalLocked(
                f"journal {p} is locked by another process (waited {self.busy_timeout:g} s to {what}); "
                f"close the other program using it, or use --journal OTHER"
            )
        if primary == 8 or "readonly" in lower or "read-only" in lower:
            return JournalReadOnly(f"journal {p} is read-only ({what} refused); make it writable or use --journal OTHER")
        if primary == 26 or "not a database" in lower:
            return JournalNotSQLite(f"journal {p} is not an SQLite file; it was left as it is: {WAY_OUT}")
        if primary == 11 or "malformed" in lower:
            return JournalDamaged(f"journal {p} is damaged ({text}); it was left as it is: {WAY_OUT}")
        if primary == 13:
            return JournalError(f"the disk holding journal {p} is full ({what} failed)")
        if primary == 14:
            return JournalReadOnly(f"cannot open journal {p} ({text}); check the file and folder permissions")
        return JournalError(f"journal {p}: {what} failed: {text}")

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self, what: str, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), or a savepoint inside the caller's batch."""
        with self._lock, self._errors(what):
            conn = self._require_conn()
            if self.readonly:
                raise JournalReadOnly(f"journal {self.path} is open read-only; cannot {what}")
            if conn.in_transaction:
                # Nested (inside a batch or a bigger change): a savepoint, so one failed
                # write is undone alone and the rest of the batch still commits.
                # Named by depth, not by a counter: the same few statements stay in the
                # connection's statement cache instead of being compiled for every write.
                self._savepoints += 1
                name = f"w{self._savepoints}"
                try:
                    conn.execute(f"SAVEPOINT {name}")
                    try:
                        yield conn
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute(f"ROLLBACK TO {name}")
                            conn.execute(f"RELEASE {name}")
                        raise
                    else:
                        conn.execute(f"RELEASE {name}")
                        self._durable_pending |= durable
                finally:
                    self._savepoints -= 1
                return
            if durable:
                conn.execute("PRAGMA synchronous=FULL")  # cannot change inside a transaction
            self._durable_pending = False
            try:
                # IMMEDIATE takes the write lock up front (waiting busy_timeout for another
                # process); a deferred BEGIN could fail later without waiting, mid-transaction.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                if self._durable_pending and not durable:
                    # A configuration change rode in a batch committed at NORMAL: make the
                    # WAL durable now, as FULL would have at its commit.
                    self._sync_wal()
            finally:
                self._durable_pending = False
                if durable:
                    conn.execute("PRAGMA synchronous=NORMAL")

    def _sync_wal(self) -> None:
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed away already: the main file was synced by the checkpoint
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def batch(self) -> Iterator["Journal"]:
        """Group many writes into one transaction (the writer thread uses this)."""
        with self._write("write a batch"):
            yield self

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock, self._errors("read"):
            cursor = self._require_conn().execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    # ---- tuning: studies and trials live in journal/tuning.py (TuningRecords) ----------

    # ---- queries across kinds ------------------------------------------------------
    @staticmethod
    def _resolve_kinds(kinds: Sequence[str] | str | None) -> list[tuple[_Source, list[str]]]:
        """Turn ``--kind`` words into (source, sub-kinds to match) pairs.

        A word naming an entry type (``event``, ``cfg``, ``message``…) takes that whole type;
        any other word is a sub-kind (``crashed``, ``undo``, ``tuner``…) looked for in the
        timeline's types. The two combine with OR: ``config,crashed`` is every configuration
        and every crash.
        """
        if kinds is None:
            return [(s, []) for s in SOURCES if s.in_timeline]
        words = [w.strip() for w in (kinds.split(",") if isinstance(kinds, str) else kinds) if w.strip()]
        named = list(dict.fromkeys(_BY_NAME[w.lower()] for w in words if w.lower() in _BY_NAME))
        subkinds = [w for w in words if w.lower() not in _BY_NAME]
        plan = [(s, []) for s in named]
        if subkinds:
            plan += [(s, subkinds) for s in SOURCES if s.in_timeline and s not in named]
        return plan or [(s, []) for s in SOURCES if s.in_timeline]

    def timeline(
        self,
        *,
        kinds: Sequence[str] | str | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        limit: int = 200,
    ) -> list[Entry]:
        """Newest first, across kinds. Each kind is read by its time index with its own LIMIT and the
        streams are merged, so the cost does not grow with the journal's size."""
        streams = []
        lkg = self.last_known_good()
        for source, subkinds in self._resolve_kinds(kinds):
            where, args = [], []
            if since is not None:
                where.append(f"{source.time_col} >= ?")
                args.append(since)
            if until is not None:
                where.append(f"{source.time_col} < ?")
                args.append(until)
            if subkinds:
                where.append(f"{source.kind_expr} IN ({','.join('?' * len(subkinds))})")
                args.extend(subkinds)
            if text:
                where.append(f"({source.search_expr}) LIKE ?")
                args.append(f"%{text}%")
            sql = f"SELECT * FROM {source.table}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY {source.time_col} DESC, id DESC LIMIT ?"
            rows = self._query(sql, (*args, limit))
            streams.append([(row[source.time_col], source, row) for row in rows])
        merged = heapq.merge(*streams, key=lambda item: item[0], reverse=True)
        lkg_id = lkg.id if lkg else None
        # Entries are built only for the rows that made the cut, not for every stream's LIMIT.
        return [self._entry(source, row, lkg_id) for _, (_ts, source, row) in zip(range(limit), merged)]

    def _entry(self, source: _Source, row: dict[str, Any], lkg_id: int | None) -> Entry:
        p = source.prefix
        ts = row[source.time_col]
        if p == "cfg":
            config = self._config(row)
            label = self.standing_label(config, lkg_id)
            summary = f"{config.summary()}{'  [' + label + ']' if label else ''}"
            if config.note:
                summary += f"  {config.note}"
            return Entry(f"cfg:{row['id']}", "config", row["source"], ts, summary, undoable=row["parent_id"] is not None)
        if p == "evt":
            return Entry(f"evt:{row['id']}", "event", row["kind"], ts, _short_data(_loads(row["data"])))
        if p == "fnd":
            return Entry(f"fnd:{row['id']}", "finding", row["detector"], ts, f"[{row['severity']}] {row['title']}")
        if p == "act":
            change = ""
            if row["config_after"] is not None:
                change = f" cfg:{row['config_before']}->cfg:{row['config_after']}"
            summary = f"{row['state']} by {row['proposed_by']}{change}  {row['note']}".rstrip()
            return Entry(f"act:{row['id']}", "action", row["kind"], ts, summary, undoable=row["config_after"] is not None)
        if p == "std":
            state = row.get("status") or ("ended" if row["ended"] else "running")
            return Entry(f"std:{row['id']}", "study", row["objective"], ts, f"{row['name'] or 'study'} ({state})")
        if p == "trl":
            value = "" if row["value"] is None else f" value={row['value']:.4g}"
            why = f" ({row['reason']})" if row.get("reason") else ""
            return Entry(f"trl:{row['id']}", "trial", row["outcome"], ts,
                         f"std:{row['study_id']}{value} {_short_data(_loads(row['params']))}{why}")
        if p == "chat":
            return Entry(f"chat:{row['id']}", "chat", row["model"], ts, row["title"] or "(untitled)")
        if p == "mdl":
            parent = f" from mdl:{row['parent_id']}" if row.get("parent_id") is not None else ""
            size = f" {row['size_bytes'] / 1e6:.1f} MB" if row.get("size_bytes") else ""
            return Entry(f"mdl:{row['id']}", "model", row["origin"], ts,
                         f"{Path(row['path']).name} {row['quantization'] or '?'}{size}{parent}")
        if p == "msg":
            text = " ".join(row["content"].split())[:90]
            return Entry(f"msg:{row['id']}", "message", row["role"], ts, f"chat:{row['chat_id']} [{row['status']}] {text}")
        return Entry(f"tel:{row['id']}", "telemetry", "sample", ts, _short_data(_loads(row["data"])))

    def show(self, entry_id: str) -> dict[str, Any]:
        """Everything about one entry, JSON columns decoded, with what it links to."""
        prefix, number = parse_entry_id(entry_id)
        source = _BY_PREFIX[prefix]
        row = self._one(f"SELECT * FROM {source.table} WHERE id = ?", (number,))
        if row is None:
            raise JournalError(f"no entry {prefix}:{number} in journal {self.path}")
        for key in ("params", "data", "evidence", "metrics", "space", "details"):
            if key in row and isinstance(row[key], str):
                row[key] = _loads(row[key])
        out: dict[str, Any] = {
            "id": f"{prefix}:{number}",
            "type": source.type,
            "time": format_ts(row.get(source.time_col)),
            **{key: value for key, value in row.items() if key != "id"},
        }
        if prefix == "cfg":
            config = self._config(row)
            lkg = self.last_known_good()
            out["standing_label"] = self.standing_label(config, lkg.id if lkg else None)
            if config.parent_id is not None:
                parent = self._one("SELECT params, model_path FROM configs WHERE id = ?", (config.parent_id,))
                if parent:
                    out["changes_from_parent"] = _diff(
                        {**_loads(parent["params"]), "model_path": parent["model_path"]},
                        {**config.params, "model_path": config.model_path},
                    )
            out["actions"] = [f"act:{r['id']}" for r in self._query(
                "SELECT id FROM actions WHERE config_after = ? OR config_before = ? ORDER BY id", (number, number))]
            out["children"] = [f"cfg:{r['id']}" for r in self._query("SELECT id FROM configs WHERE parent_id = ? ORDER BY id", (number,))]
        elif prefix == "act":
            out["history"] = [
                {**h, "time": format_ts(h["ts"])}
                for h in self._query("SELECT ts, state, note FROM action_states WHERE action_id = ? ORDER BY id", (number,))
            ]
            if row["finding_id"] is not None:
                with contextlib.suppress(JournalError):
                    out["finding"] = self.get_finding(row["finding_id"])
            if row["config_before"] is not None and row["config_after"] is not None:
                before, after = self.get_config(row["config_before"]), self.get_config(row["config_after"])
                out["changes"] = _diff({**before.params, "model_path": before.model_path},
                                       {**after.params, "model_path": after.model_path})
        elif prefix == "fnd":
            out["actions"] = [f"act:{r['id']}" for r in self._query("SELECT id FROM actions WHERE finding_id = ? ORDER BY id", (number,))]
        elif prefix == "std":
            out["trials"] = [
                {"id": f"trl:{t['id']}", "outcome": t["outcome"], "value": t["value"], "params": t["params"],
                 "kind": t.get("kind", "trial"), "reason": t.get("reason", "")}
                for t in self.trials(number)
            ]
        elif prefix == "mdl":
            if row.get("parent_id") is not None:
                out["parent"] = f"mdl:{row['parent_id']}"
            out["children"] = [f"mdl:{r['id']}" for r in self._query(
                "SELECT id FROM model_files WHERE parent_id = ? ORDER BY id", (number,))]
            out["configs"] = [f"cfg:{r['id']}" for r in self._query(
                "SELECT id FROM configs WHERE model_path = ? ORDER BY id", (row["path"],))]
        elif prefix == "chat":
            out["messages"] = [
                {"id": f"msg:{m.id}", "role": m.role, "status": m.status, "content": m.content, "metrics": m.metrics}
                for m in self.chat_messages(number)
            ]
        return out

    # ---- export --------------------------------------------------------------------
    _JSON_COLUMNS = ("params", "data", "evidence", "metrics", "space", "details")

    def export(self) -> dict[str, Any]:
        """Every table, JSON columns decoded: an archive an operator can read or feed to jq."""
        with self._lock, self._errors("export"):
            tables: dict[str, list[dict[str, Any]]] = {}
            for name in self.db.table_names():
                if name.startswith("sqlite_"):
                    continue
                rows = []
                for row in self.db[name].rows:
                    for key in self._JSON_COLUMNS:
                        if isinstance(row.get(key), str):
                            row[key] = _loads(row[key])
                    rows.append(row)
                tables[name] = rows
            return {
                "journal": str(self.path),
                "schema_version": migrations.user_version(self._conn),
                "exported_at": time.time(),
                "tables": tables,
            }

    def export_json(self, fh: IO[str]) -> None:
        json.dump(self.export(), fh, indent=1, default=str)
        fh.write("\n")

    def counts(self) -> dict[str, int]:
        with self._lock, self._errors("count"):
            return {name: self.db[name].count for name in self.db.table_names() if not name.startswith("sqlite_")}


def move_aside(path: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """Rename a journal (and its -wal / -shm) to ``NAME.aside-YYYYmmdd-HHMMSS``; never deletes.

    Returns the new paths. The next open starts a fresh journal at the old path.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise JournalMissing(f"no journal at {path}; nothing to move aside")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    suffix = f".aside-{stamp}"
    n = 1
    while any(Path(f"{path}{extra}{suffix}").exists() for extra in ("", "-wal", "-shm")):
        n += 1
        suffix = f".aside-{stamp}-{n}"
    moved = []
    for extra in ("", "-wal", "-shm"):
        src = Path(f"{path}{extra}")
        if src.exists():
            dst = Path(f"{path}{suffix}{extra}")
            try:
                os.rename(src, dst)
            except OSError as exc:
                raise JournalError(f"cannot move {src} aside to {dst}: {exc.strerror}") from None
            moved.append(dst)
    return moved
