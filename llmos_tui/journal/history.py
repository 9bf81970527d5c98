"""Telemetry history in the journal: one row a minute, kept for a while. ``TelemetryLog``
(``journal.telemetry_log``), given the journal's one connection."""

from __future__ import annotations

import time
from typing import Mapping

from llmos_tui.journal.db import Database
from llmos_tui.journal.records import Json, Row, _dumps, _loads


class TelemetryLog:
    """Low-rate telemetry summaries on the journal's connection; rows past ``retention_days``
    (None: kept for ever) are pruned at most once an hour."""

    def __init__(self, db: Database, retention_days: float | None = 7.0) -> None:
        self.db = db
        self.retention_days = retention_days
        self._last_prune = 0.0

    def record_telemetry(self, summary: Mapping[str, Json], *, ts: float | None = None) -> int:
        """One low-rate summary row (e.g. per minute); rows past the retention are pruned hourly."""
        with self.db.write("record telemetry") as conn:
            row_id = conn.execute("INSERT INTO telemetry (ts, data) VALUES (?, ?)", (ts or time.time(), _dumps(summary))).lastrowid
            if self.retention_days is not None and time.time() - self._last_prune > 3600:
                self.prune_telemetry(self.retention_days)
            return row_id

    def prune_telemetry(self, max_age_days: float, *, now: float | None = None) -> int:
        """Delete telemetry rows older than ``max_age_days``; return how many went."""
        cutoff = (now or time.time()) - max_age_days * 86400.0
        with self.db.write("prune telemetry") as conn:
            self._last_prune = time.time()
            return conn.execute("DELETE FROM telemetry WHERE ts < ?", (cutoff,)).rowcount

    def telemetry(self, *, since: float | None = None, limit: int = 10_000) -> list[Row]:
        rows = self.db.query("SELECT * FROM telemetry WHERE ts >= ? ORDER BY ts LIMIT ?", (since or 0.0, limit))
        for row in rows:
            row["data"] = _loads(row["data"])
        return rows
