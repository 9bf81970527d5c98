"""Engine and box events in the journal.

A mixin of :class:`~llmos_tui.journal.store.Journal`: it uses the journal's own transaction
and query helpers (``_write``, ``_query``, ``_one``)."""

from __future__ import annotations

import time
from typing import Any

from llmos_tui.journal.records import (
    _dumps,
    _loads,
)


class EventRecords:
    # ---- engine and box events -----------------------------------------------------
    def record_event(
        self, kind: str, data: Any = None, *, ts: float | None = None, config_id: int | None = None
    ) -> int:
        """An engine or box event; ``config_id`` defaults to the version active when it is written."""
        with self._write("record an event") as conn:
            cursor = conn.execute(
                "INSERT INTO events (ts, kind, config_id, data) "
                "VALUES (?, ?, COALESCE(?, (SELECT id FROM configs WHERE active = 1)), ?)",
                (ts or time.time(), kind, config_id, _dumps(data)),
            )
            return cursor.lastrowid

    def events(self, kind: str | None = None, *, since: float | None = None, limit: int = 200) -> list[dict[str, Any]]:
        where, args = ["ts >= ?"], [since or 0.0]
        if kind:
            where.append("kind = ?")
            args.append(kind)
        rows = self._query(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY ts DESC, id DESC LIMIT ?", (*args, limit))
        for row in rows:
            row["data"] = _loads(row["data"])
        return rows
