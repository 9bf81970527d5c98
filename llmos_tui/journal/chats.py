"""Chats and their messages (with each reply's metrics) in the journal: ``Chats``
(``journal.chats``), given the journal's one connection."""

from __future__ import annotations

import time

from llmos_tui.errors import JournalError
from llmos_tui.journal.db import Database
from llmos_tui.journal.records import MESSAGE_STATUSES, Chat, Json, MessageRecord, _dumps, _loads


class Chats:
    """Chats and messages on the journal's connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.path

    def create_chat(
        self, title: str = "", *, model: str = "", config_id: int | None = None, ts: float | None = None
    ) -> int:
        now = ts or time.time()
        with self.db.write("create a chat") as conn:
            return conn.execute(
                "INSERT INTO chats (created, updated, title, model, config_id) "
                "VALUES (?, ?, ?, ?, COALESCE(?, (SELECT id FROM configs WHERE active = 1)))",
                (now, now, title, model, config_id),
            ).lastrowid

    def rename_chat(self, chat_id: int, title: str) -> None:
        with self.db.write("rename a chat") as conn:
            if conn.execute("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id)).rowcount == 0:
                raise JournalError(f"no chat chat:{chat_id} in journal {self.path}")

    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        *,
        metrics: Json = None,
        status: str = "done",
        ts: float | None = None,
    ) -> int:
        if status not in MESSAGE_STATUSES:
            raise JournalError(f"message status must be one of {', '.join(MESSAGE_STATUSES)}, got {status!r}")
        now = ts or time.time()
        with self.db.write("add a message") as conn:
            if conn.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id)).rowcount == 0:
                raise JournalError(f"no chat chat:{chat_id} in journal {self.path}")
            return conn.execute(
                "INSERT INTO messages (chat_id, ts, role, content, metrics, status) VALUES (?,?,?,?,?,?)",
                (chat_id, now, role, content, _dumps(metrics), status),
            ).lastrowid

    def update_message(
        self, message_id: int, *, content: str | None = None, status: str | None = None, metrics: Json = None
    ) -> None:
        """Finish a streamed reply: its final text, status and metrics."""
        if status is not None and status not in MESSAGE_STATUSES:
            raise JournalError(f"message status must be one of {', '.join(MESSAGE_STATUSES)}, got {status!r}")
        with self.db.write("update a message") as conn:
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
        rows = self.db.query("SELECT * FROM chats ORDER BY updated DESC, id DESC LIMIT ?", (limit,))
        return [Chat(**row) for row in rows]

    def get_chat(self, chat_id: int) -> Chat:
        row = self.db.one("SELECT * FROM chats WHERE id = ?", (chat_id,))
        if row is None:
            raise JournalError(f"no chat chat:{chat_id} in journal {self.path}")
        return Chat(**row)

    def chat_messages(self, chat_id: int) -> list[MessageRecord]:
        """The chat's messages in the order they were written, to reopen and resume it."""
        rows = self.db.query("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [MessageRecord(**{**row, "metrics": _loads(row["metrics"])}) for row in rows]

    def chat_traffic(self, limit: int = 1000) -> dict[str, int]:
        """The prompt and generated tokens of the last ``limit`` finished replies (the traffic the
        operator's chats really put on the engine)."""
        row = self.db.one(
            "SELECT COUNT(*) AS n, SUM(p) AS prompt_tokens, SUM(g) AS gen_tokens FROM ("
            " SELECT COALESCE(json_extract(metrics, '$.prompt_eval_tokens'), json_extract(metrics, '$.prompt_tokens'))"
            " AS p, json_extract(metrics, '$.gen_tokens') AS g FROM messages"
            " WHERE role = 'assistant' AND json_extract(metrics, '$.gen_tokens') > 0"
            " ORDER BY id DESC LIMIT ?)", (limit,))
        row = row or {}
        return {"replies": int(row.get("n") or 0), "prompt_tokens": int(row.get("prompt_tokens") or 0),
                "gen_tokens": int(row.get("gen_tokens") or 0)}

    def request_shapes(self, limit: int = 200) -> list[dict[str, Json]]:
        """The shapes of the last ``limit`` answered requests, oldest first: prompt tokens, generated
        tokens and where they came from (``serve`` for the daemon's API traffic, ``chat`` for the
        cockpit's). The daemon's traffic first (a service-level objective replays what the API
        served); the cockpit's chats only when the daemon has served nothing."""
        rows = self.db.query(
            "SELECT * FROM (SELECT id, COALESCE(json_extract(metrics, '$.prompt_tokens'),"
            " json_extract(metrics, '$.prompt_eval_tokens')) AS p, json_extract(metrics, '$.gen_tokens') AS g,"
            " COALESCE(json_extract(metrics, '$.source'), 'chat') AS source FROM messages"
            " WHERE role = 'assistant' AND json_extract(metrics, '$.gen_tokens') > 0"
            " AND COALESCE(json_extract(metrics, '$.source'), 'chat') = ?"
            " ORDER BY id DESC LIMIT ?) ORDER BY id", ("serve", limit))
        if not rows:
            rows = self.db.query(
                "SELECT * FROM (SELECT id, COALESCE(json_extract(metrics, '$.prompt_tokens'),"
                " json_extract(metrics, '$.prompt_eval_tokens')) AS p, json_extract(metrics, '$.gen_tokens') AS g,"
                " 'chat' AS source FROM messages WHERE role = 'assistant'"
                " AND json_extract(metrics, '$.gen_tokens') > 0 ORDER BY id DESC LIMIT ?) ORDER BY id", (limit,))
        return [{"prompt_tokens": int(r["p"] or 0), "gen_tokens": int(r["g"] or 0), "source": str(r["source"])}
                for r in rows if int(r["g"] or 0) > 0]
