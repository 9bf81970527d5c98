"""The journal: configuration versions, events, findings, actions, trials, chats and
telemetry in one SQLite file — the audit log and the undo history.

Entry IDs (what `llmos-tui journal show` / `undo` accept): ``cfg:N`` configuration
version, ``evt:N`` event, ``fnd:N`` finding, ``act:N`` action, ``std:N`` tuning study,
``trl:N`` trial, ``chat:N`` chat, ``msg:N`` message, ``tel:N`` telemetry row.
"""

from llmos_tui.journal.migrations import MIGRATIONS, SCHEMA_VERSION
from llmos_tui.journal.recorder import RECORDED_KINDS, attach
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
    "Action",
    "Chat",
    "ConfigVersion",
    "Entry",
    "Journal",
    "JournalDamaged",
    "JournalLocked",
    "JournalMissing",
    "JournalNotSQLite",
    "JournalReadOnly",
    "JournalTooNew",
    "JournalWriter",
    "MIGRATIONS",
    "MessageRecord",
    "RECORDED_KINDS",
    "SCHEMA_VERSION",
    "SOURCES",
    "attach",
    "format_ts",
    "move_aside",
    "parse_entry_id",
    "parse_since",
]
