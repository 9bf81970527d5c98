"""The journal: configuration versions, events, findings, actions, trials, chats and
telemetry in one SQLite file — the audit log and the undo history.

Entry IDs (what `llmos-tui journal show` / `undo` accept): ``cfg:N`` configuration
version, ``evt:N`` event, ``fnd:N`` finding, ``act:N`` action, ``std:N`` tuning study,
``trl:N`` trial, ``chat:N`` chat, ``msg:N`` message, ``tel:N`` telemetry row.

Shape: ``Journal`` (store.py) is one connection (db.py) holding one repository per record kind
(configs.py ``Versions``, events.py ``EventLog``, chats.py ``Chats``, history.py ``TelemetryLog``,
model_files.py ``ModelFiles``, studies.py ``Studies``, timeline.py ``Timeline``, overview.py
``Overview``); port.py ``JournalPort`` is how every other part reads and writes it. The journal
is a leaf: nothing here imports the engine, telemetry, doctor, tuning or core.
"""

from llmos_tui.journal.migrations import MIGRATIONS, SCHEMA_VERSION
from llmos_tui.journal.model_files import ModelFile
from llmos_tui.journal.overview import JournalCounts, StudyBest
from llmos_tui.journal.port import JournalPort
from llmos_tui.journal.engine_events import RECORDED_KINDS, attach
from llmos_tui.journal.records import ACTION_STATES
from llmos_tui.journal.store import (
    SOURCES,
    Action,
    Chat,
    ConfigVersion,
    Entry,
    Journal,
    JournalDamaged,
    JournalLocked,
    JournalMissing,
    JournalNotSQLite,
    JournalReadOnly,
    JournalTooNew,
    MessageRecord,
    move_aside,
    parse_entry_id,
)
from llmos_tui.journal.timeparse import format_ts, parse_since
from llmos_tui.journal.writer import JournalWriter

__all__ = [
    "ACTION_STATES",
    "Action",
    "Chat",
    "ConfigVersion",
    "Entry",
    "Journal",
    "JournalCounts",
    "JournalDamaged",
    "JournalLocked",
    "JournalMissing",
    "JournalNotSQLite",
    "JournalPort",
    "JournalReadOnly",
    "JournalTooNew",
    "JournalWriter",
    "MIGRATIONS",
    "MessageRecord",
    "ModelFile",
    "RECORDED_KINDS",
    "SCHEMA_VERSION",
    "SOURCES",
    "StudyBest",
    "attach",
    "format_ts",
    "move_aside",
    "parse_entry_id",
    "parse_since",
]
