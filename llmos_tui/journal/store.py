"""The journal: one SQLite file holding every configuration version, engine event,
finding, action, tuning trial, chat and telemetry summary.

It is the audit log and the undo history. ``Journal`` is one connection
(:class:`~llmos_tui.journal.db.Database`: open, refuse, lock, transactions) holding one
repository per record kind, each a plain class given that connection in its constructor:

- ``journal.versions``       configuration versions, findings, actions, undo (``configs.py``)
- ``journal.event_log``      engine and box events (``events.py``)
- ``journal.chats``          chats and messages (``chats.py``)
- ``journal.telemetry_log``  the low-rate telemetry history (``history.py``)
- ``journal.lineage``        GGUF model files and their lineage (``model_files.py``)
- ``journal.tuning``         tuning studies and trials (``studies.py``)
- ``journal.entries``        the timeline across kinds and one entry in full (``timeline.py``)
- ``journal.overview``       totals for the exporter (``overview.py``)

The methods on ``Journal`` itself are one-line delegations kept for the callers (the CLI,
the core, scripts, ``JournalWriter`` batches). ``Journal`` is the synchronous API; the UI
writes through ``JournalWriter`` so that no write ever runs on the UI thread. The journal is a
leaf: it imports nothing of the engine, telemetry, doctor, tuning or core.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator, Mapping, Sequence

from llmos_tui.errors import JournalError
from llmos_tui.journal.chats import Chats
from llmos_tui.journal.configs import Params, Versions
from llmos_tui.journal.db import (  # noqa: F401 - the errors, re-exported here
    DEFAULT_BUSY_TIMEOUT,
    Database,
    JournalDamaged,
    JournalLocked,
    JournalMissing,
    JournalNotSQLite,
    JournalReadOnly,
    JournalTooNew,
)
from llmos_tui.journal.events import EventLog
from llmos_tui.journal.history import TelemetryLog
from llmos_tui.journal.model_files import ModelFile, ModelFiles
from llmos_tui.journal.overview import Overview
from llmos_tui.journal.records import (  # noqa: F401 - the values, re-exported here
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
    Json,
    MessageRecord,
    Row,
    parse_entry_id,
)
from llmos_tui.journal.digest import Digest
from llmos_tui.journal.fleet import FleetLog
from llmos_tui.journal.rollups import Rollups
from llmos_tui.journal.studies import Studies
from llmos_tui.journal.timeline import Timeline

if TYPE_CHECKING:
    import sqlite_utils

PathLike = str | os.PathLike[str]


class Journal:
    """Synchronous access to one journal file: one connection and its repositories.
    Safe to share between threads (the connection's one re-entrant lock)."""

    def __init__(
        self,
        path: PathLike | None = None,
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
        self.connection = Database(path, readonly=readonly, create=create, busy_timeout=busy_timeout, check=check)
        self.versions = Versions(self.connection)
        self.event_log = EventLog(self.connection)
        self.chats = Chats(self.connection)
        self.telemetry_log = TelemetryLog(self.connection, telemetry_retention_days)
        self.lineage = ModelFiles(self.connection)
        self.tuning = Studies(self.connection)
        self.entries = Timeline(self.connection, self.versions, self.chats, self.tuning)
        self.overview = Overview(self.connection)
        self.digest = Digest(self.connection)  # `report`: what happened in a span
        self.rollups = Rollups(self.connection)  # the flight recorder: 10 s / 1 min means
        self.fleet = FleetLog(self.connection)  # the head's copy of every box's journal (fleet)

    # ---- the connection ---------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.connection.path

    @property
    def readonly(self) -> bool:
        return self.connection.readonly

    @property
    def busy_timeout(self) -> float:
        return self.connection.busy_timeout

    @property
    def telemetry_retention_days(self) -> float | None:
        return self.telemetry_log.retention_days

    @property
    def migrated_from(self) -> int | None:
        """The schema version before this open upgraded it (None: no upgrade)."""
        return self.connection.migrated_from

    @property
    def readonly_note(self) -> str:
        return self.connection.readonly_note

    @property
    def schema_version(self) -> int:
        return self.connection.schema_version

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    @property
    def db(self) -> "sqlite_utils.Database":
        """The connection as a ``sqlite_utils.Database`` (schema, export)."""
        return self.connection.utils

    @property
    def _conn(self) -> "sqlite3.Connection":
        """The raw sqlite3 connection (kept for tests that read it; prefer ``connection.raw``)."""
        return self.connection.raw

    def check(self, full: bool = False) -> list[str]:
        return self.connection.check(full)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}{', readonly' if self.readonly else ''})"

    @contextlib.contextmanager
    def batch(self) -> Iterator["Journal"]:
        """Group many writes into one transaction (the writer thread uses this)."""
        with self.connection.write("write a batch"):
            yield self

    def export(self) -> dict[str, object]:
        return self.connection.export()

    def export_json(self, fh: IO[str]) -> None:
        self.connection.export_json(fh)

    def counts(self) -> dict[str, int]:
        return self.connection.counts()

    # ---- configuration versions, findings, actions (journal.versions) -----------------
    def record_config(self, params: Params, *, source: str = "operator", parent_id: int | None = None,
                      model_path: str | None = None, note: str = "", activate: bool = True,
                      ts: float | None = None) -> ConfigVersion:
        return self.versions.record_config(params, source=source, parent_id=parent_id, model_path=model_path,
                                           note=note, activate=activate, ts=ts)

    def get_config(self, config_id: int) -> ConfigVersion:
        return self.versions.get_config(config_id)

    def active_config(self) -> ConfigVersion | None:
        return self.versions.active_config()

    def configs(self, limit: int = 100) -> list[ConfigVersion]:
        return self.versions.configs(limit)

    def activate(self, config_id: int) -> ConfigVersion:
        return self.versions.activate(config_id)

    def mark_good(self, config_id: int, *, ts: float | None = None) -> None:
        self.versions.mark_good(config_id, ts=ts)

    def mark_bad(self, config_id: int, reason: str) -> None:
        self.versions.mark_bad(config_id, reason)

    def last_known_good(self, *, exclude_active: bool = False) -> ConfigVersion | None:
        return self.versions.last_known_good(exclude_active=exclude_active)

    @staticmethod
    def standing_label(config: ConfigVersion, lkg_id: int | None) -> str:
        return Versions.standing_label(config, lkg_id)

    def record_finding(self, detector: str, severity: str, title: str, evidence: Json = None, *,
                       fingerprint: str = "", ts: float | None = None) -> int:
        return self.versions.record_finding(detector, severity, title, evidence, fingerprint=fingerprint, ts=ts)

    def get_finding(self, finding_id: int) -> Row:
        return self.versions.get_finding(finding_id)

    def propose_action(self, kind: str, params: Json = None, *, proposed_by: str = "operator",
                       finding_id: int | None = None, note: str = "", ts: float | None = None) -> int:
        return self.versions.propose_action(kind, params, proposed_by=proposed_by, finding_id=finding_id,
                                            note=note, ts=ts)

    def set_action_state(self, action_id: int, state: str, *, note: str = "", config_before: int | None = None,
                         config_after: int | None = None, ts: float | None = None) -> None:
        self.versions.set_action_state(action_id, state, note=note, config_before=config_before,
                                       config_after=config_after, ts=ts)

    def get_action(self, action_id: int) -> Action:
        return self.versions.get_action(action_id)

    def change_config(self, params: Params, *, source: str = "operator", kind: str = "reconfigure",
                      proposed_by: str = "operator", finding_id: int | None = None, action_id: int | None = None,
                      note: str = "") -> tuple[Action, ConfigVersion]:
        return self.versions.change_config(params, source=source, kind=kind, proposed_by=proposed_by,
                                           finding_id=finding_id, action_id=action_id, note=note)

    def undo(self, entry_id: str | int, *, proposed_by: str = "operator", note: str = "") -> ConfigVersion:
        return self.versions.undo(entry_id, proposed_by=proposed_by, note=note)

    def action_for_config(self, config_id: int) -> Action | None:
        return self.versions.action_for_config(config_id)

    # ---- events (journal.event_log) ----------------------------------------------------
    def record_event(self, kind: str, data: Json = None, *, ts: float | None = None,
                     config_id: int | None = None) -> int:
        return self.event_log.record_event(kind, data, ts=ts, config_id=config_id)

    def events(self, kind: str | None = None, *, since: float | None = None, limit: int = 200) -> list[Row]:
        return self.event_log.events(kind, since=since, limit=limit)

    # ---- chats (journal.chats) ---------------------------------------------------------
    def create_chat(self, title: str = "", *, model: str = "", config_id: int | None = None,
                    ts: float | None = None) -> int:
        return self.chats.create_chat(title, model=model, config_id=config_id, ts=ts)

    def rename_chat(self, chat_id: int, title: str) -> None:
        self.chats.rename_chat(chat_id, title)

    def add_message(self, chat_id: int, role: str, content: str, *, metrics: Json = None, status: str = "done",
                    ts: float | None = None) -> int:
        return self.chats.add_message(chat_id, role, content, metrics=metrics, status=status, ts=ts)

    def update_message(self, message_id: int, *, content: str | None = None, status: str | None = None,
                       metrics: Json = None) -> None:
        self.chats.update_message(message_id, content=content, status=status, metrics=metrics)

    def list_chats(self, limit: int = 50) -> list[Chat]:
        return self.chats.list_chats(limit)

    def get_chat(self, chat_id: int) -> Chat:
        return self.chats.get_chat(chat_id)

    def chat_messages(self, chat_id: int) -> list[MessageRecord]:
        return self.chats.chat_messages(chat_id)

    def chat_traffic(self, limit: int = 1000) -> dict[str, int]:
        return self.chats.chat_traffic(limit)

    def request_shapes(self, limit: int = 200) -> list[dict[str, Json]]:
        return self.chats.request_shapes(limit)

    # ---- telemetry history (journal.telemetry_log) --------------------------------------
    def record_telemetry(self, summary: Mapping[str, Json], *, ts: float | None = None) -> int:
        return self.telemetry_log.record_telemetry(summary, ts=ts)

    def prune_telemetry(self, max_age_days: float, *, now: float | None = None) -> int:
        return self.telemetry_log.prune_telemetry(max_age_days, now=now)

    def telemetry(self, *, since: float | None = None, limit: int = 10_000) -> list[Row]:
        return self.telemetry_log.telemetry(since=since, limit=limit)

    # ---- model files (journal.lineage) ----------------------------------------------------
    def record_model_file(self, path: PathLike, *, parent_path: PathLike | None = None, quantization: str = "",
                          origin: str = "quantize", size_bytes: int | None = None,
                          details: Mapping[str, Json] | None = None, ts: float | None = None) -> ModelFile:
        return self.lineage.record_model_file(path, parent_path=parent_path, quantization=quantization,
                                              origin=origin, size_bytes=size_bytes, details=details, ts=ts)

    def set_model_metrics(self, model_id: int, metrics: Mapping[str, Json], *, merge: bool = True) -> ModelFile:
        return self.lineage.set_model_metrics(model_id, metrics, merge=merge)

    def get_model_file(self, model_id: int) -> ModelFile:
        return self.lineage.get_model_file(model_id)

    def model_file(self, path: PathLike) -> ModelFile | None:
        return self.lineage.model_file(path)

    def model_files(self, limit: int = 100, *, parent_path: PathLike | None = None) -> list[ModelFile]:
        return self.lineage.model_files(limit, parent_path=parent_path)

    def model_lineage(self, path: PathLike) -> list[ModelFile]:
        return self.lineage.model_lineage(path)

    # ---- tuning studies and trials (journal.tuning) ---------------------------------------
    def start_study(self, space: Json, objective: str, *, name: str = "", ts: float | None = None,
                    model_path: str = "", model_key: str = "", build: str = "",
                    machine: Mapping[str, Json] | None = None, settings: Mapping[str, Json] | None = None) -> int:
        return self.tuning.start_study(space, objective, name=name, ts=ts, model_path=model_path,
                                       model_key=model_key, build=build, machine=machine, settings=settings)

    def end_study(self, study_id: int, *, status: str = "done", result: Json = None, ts: float | None = None) -> None:
        self.tuning.end_study(study_id, status=status, result=result, ts=ts)

    def resume_study(self, study_id: int) -> Row:
        return self.tuning.resume_study(study_id)

    def set_study_result(self, study_id: int, result: Json) -> None:
        self.tuning.set_study_result(study_id, result)

    def get_study(self, study_id: int) -> Row:
        return self.tuning.get_study(study_id)

    def studies(self, limit: int = 50, *, model_key: str | None = None) -> list[Row]:
        return self.tuning.studies(limit, model_key=model_key)

    def record_trial(self, study_id: int, params: Json, outcome: str, *, value: float | None = None,
                     metrics: Json = None, config_id: int | None = None, ts: float | None = None,
                     reason: str = "", kind: str = "trial") -> int:
        return self.tuning.record_trial(study_id, params, outcome, value=value, metrics=metrics,
                                        config_id=config_id, ts=ts, reason=reason, kind=kind)

    def trials(self, study_id: int, *, kind: str | None = None) -> list[Row]:
        return self.tuning.trials(study_id, kind=kind)

    def tuning_history(self, *, exclude_study: int | None = None, limit: int = 5000) -> list[Row]:
        return self.tuning.tuning_history(exclude_study=exclude_study, limit=limit)

    # ---- across kinds (journal.entries) ---------------------------------------------------
    def timeline(self, *, kinds: Sequence[str] | str | None = None, since: float | None = None,
                 until: float | None = None, text: str | None = None, limit: int = 200) -> list[Entry]:
        return self.entries.timeline(kinds=kinds, since=since, until=until, text=text, limit=limit)

    def show(self, entry_id: str) -> Row:
        return self.entries.show(entry_id)




def move_aside(path: PathLike, *, now: float | None = None) -> list[Path]:
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
