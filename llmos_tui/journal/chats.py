"""Chats and their messages (with each reply's metrics) in the journal.

A mixin of :class:`~llmos_tui.journal.store.Journal`: it uses the journal's own transaction
and query helpers (``_write``, ``_query``, ``_one``)."""

from __future__ import annotations

import time
from typing import Any

from llmos_tui.errors import JournalError
from llmos_tui.journal.records import (
    MESSAGE_STATUSES,
    Chat,
    MessageRecord,
    _dumps,
    _loads,
)


class ChatRecords:
    # ---- chats ---------------------------------------------------------------------
    def create_chat(
        self, title: str = "", *, model: str = "", config_id: int | None = None, ts: float | None = None
    ) -> int:
        now = ts or time.time()
        with self._write("create a chat") as conn:
            return conn.execute(
                "INSERT INTO chats (created, updated, title, model, config_id) "
                "VALUES (?, ?, ?, ?, COALESCE(?, (SELECT id FROM configs WHERE active = 1)))",
                (now, now, title, model, config_id),
            ).lastrowid

    def rename_chat(self, chat_id: int, title: str) -> None:
        with self._write("rename a chat") as conn:
            if conn.execute("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id)).rowcount == 0:
                raise JournalError(f"no chat chat:{chat_id} in journal {self.path}")

    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        *,
        metrics: Any = None,
        status: str = "done",
        ts: float | None = None,
    ) -> int:
        if status not in MESSAGE_STATUSES:
            raise JournalError(f"message status must be one of {', '.join(MESSAGE_STATUSES)}, got {status!r}")
        now = ts or time.time()
        with self._write("add a message") as conn:
            if conn.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id)).rowcount == 0:
                raise JournalError(f"no chat chat:{chat_id} in journal {self.path}")
            return conn.execute(
                "INSERT INTO messages (chat_id, ts, role, content, metrics, status) VALUES (?,?,?,?,?,?)",
                (chat_id, now, role, content, _dumps(metrics), status),
            ).lastrowid

    def update_message(
        self, message_id: int, *, content: str | None = None, status: str | None = None, metrics: Any = None
    ) -> None:
        """Finish a streamed reply: its final text, status and metrics."""
        if status is not None and status not in MESSAGE_STATUSES:
            raise JournalError(f"message status must be one of {', '.join(MESSAGE_STATUSES)}, got {status!r}")
        with self._write("update a message") as conn:
            cursor = conn.execute(
                "UPDATE messages SET content = COALESCE(?, content), status = COALESCE(?, status), "
                "metrics = COALESCE(?, metrics) WHERE id = ?",
                (content, status, None if metrics is None else _dumps(metrics), message_id),
            )
            if cursor.rowcount == 0:
                raise JournalError(f"no message msg:{message_id} in journal {self.path}")
            conn.execute(
                "UPDATE chats SET updated = ? WHERE id = (SELECT chat_id FROM messages WHERE id = ?)",
                (time.time(), message_id),
            )

    def list_chats(self, limit: int = 50) -> list[Chat]:
        rows = self._query("SELECT * FROM chats ORDER BY updated DESC, id DESC LIMIT ?", (limit,))
        return [Chat(**row) for row in rows]

    def get_chat(self, chat_id: int) -> Chat:
        row = self._one("SELECT * FROM chats WHERE id = ?", (chat_id,))
        if row is None:
            raise JournalError(f"no chat chat:{chat_id} in journal {self.path}")
        return Chat(**row)

    def chat_messages(self, chat_id: int) -> list[MessageRecord]:
        """The chat's messages in the order they were written, to reopen and resume it."""
        rows = self._query("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [MessageRecord(**{**row, "metrics": _loads(row["metrics"])}) for row in rows]
