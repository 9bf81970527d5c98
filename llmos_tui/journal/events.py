"""Engine and box events in the journal: ``EventLog`` (``journal.event_log``), given the
journal's one connection."""

from __future__ import annotations

import time

from llmos_tui.journal.db import Database
from llmos_tui.journal.records import Json, Row, _dumps, _loads


class EventLog:
    """Engine and box events on the journal's connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record_event(
        self, kind: str, data: Json = None, *, ts: float | None = None, config_id: int | None = None
    ) -> int:
        """An engine or box event; ``config_id`` defaults to the version active when it is written."""
        with self.db.write("record an event") as conn:
            cursor = conn.execute(
                "INSERT INTO events (ts, kind, config_id, data) "
                "VALUES (?, ?, COALESCE(?, (SELECT id FROM configs WHERE active = 1)), ?)",
                (ts or time.time(), kind, config_id, _dumps(data)),
            )
            return cursor.lastrowid

    def events(self, kind: str | None = None, *, since: float | None = None, limit: int = 200) -> list[Row]:
        where: list[str] = ["ts >= ?"]
        args: list[float | str] = [since or 0.0]
        if kind:
            where.append("kind = ?")
            args.append(kind)
        rows = self.db.query(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY ts DESC, id DESC LIMIT ?", (*args, limit))
        for row in rows:
            row["data"] = _loads(row["data"])
        return rows
