"""The journal's one connection: open (create, upgrade), refuse bad files, lock, transactions.

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
names the file and the way out. Every repository of the journal (``journal/configs.py``,
``events.py``, ...) is given this connection in its constructor and runs its SQL through
``write`` / ``query`` / ``one``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator, Mapping, Sequence

from llmos_tui.errors import JournalError
from llmos_tui.journal import migrations
from llmos_tui.journal.records import JSON_COLUMNS, Row, SqlValue, _loads

if TYPE_CHECKING:
    import sqlite_utils

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


# ---- the connection ----------------------------------------------------------------
class Database:
    """One connection to one journal file. Safe to share between threads (one re-entrant lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        readonly: bool = False,
        create: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        check: bool = True,
    ) -> None:
        """Open (and create, upgrade) the journal at ``path`` (None: ``default_paths().journal``).

        ``readonly`` opens without writing anything (a read-only file or folder);
        ``create=False`` raises JournalMissing instead of creating a file; ``check`` runs
        SQLite's quick check before the first write; ``busy_timeout`` is how long a write
        waits for another process's transaction.
        """
        if path is None:
            from llmos_tui.paths import default_paths

            path = default_paths().journal
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self.busy_timeout = float(busy_timeout)
        self._lock = threading.RLock()
        self._savepoints = 0
        self._durable_pending = False  # a nested write asked for a durable commit
        self._conn: sqlite3.Connection | None = None
        self.migrated_from: int | None = None  # schema version before this open upgraded it
        self.readonly_note = ""
        self._utils: sqlite_utils.Database | None = None
        if readonly:
            self._open_readonly(check)
        else:
            self._open_writable(create, check)

    @property
    def utils(self) -> "sqlite_utils.Database":
        """The connection as a ``sqlite_utils.Database`` (schema, export).

        Imported on first use, without numpy (migrations.import_sqlite_utils): a `journal
        list` or a batch of event writes needs neither.
        """
        if self._utils is None:
            sqlite_utils = migrations.import_sqlite_utils()

            self._utils = sqlite_utils.Database(self._require_conn(), execute_plugins=False, recursive_triggers=False)
        return self._utils

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

    @property
    def raw(self) -> sqlite3.Connection:
        """The sqlite3 connection itself (tests and tools; repositories use write/query/one)."""
        return self._require_conn()

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def write(self, what: str, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
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

    def query(self, sql: str, params: Sequence[SqlValue] | Mapping[str, SqlValue] = ()) -> list[Row]:
        """Rows as dicts (column -> value), read under the connection's lock."""
        with self._lock, self._errors("read"):
            cursor = self._require_conn().execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def one(self, sql: str, params: Sequence[SqlValue] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    # ---- export --------------------------------------------------------------------
    def export(self) -> dict[str, object]:
        """Every table, JSON columns decoded: an archive an operator can read or feed to jq."""
        with self._lock, self._errors("export"):
            tables: dict[str, list[Row]] = {}
            for name in self.utils.table_names():
                if name.startswith("sqlite_"):
                    continue
                rows = []
                for row in self.utils[name].rows:
                    for key in JSON_COLUMNS:
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
            return {name: self.utils[name].count for name in self.utils.table_names() if not name.startswith("sqlite_")}

