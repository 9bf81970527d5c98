"""Telemetry history in the journal: one row a minute, kept for a while.

A mixin of :class:`~llmos_tui.journal.store.Journal`: it uses the journal's own transaction
and query helpers (``_write``, ``_query``, ``_one``)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from llmos_tui.journal.records import (
    _dumps,
    _loads,
)


class TelemetryRecords:
    # ---- telemetry history -----------------------------------------------------------
    def record_telemetry(self, summary: Mapping[str, Any], *, ts: float | None = None) -> int:
        """One low-rate summary row (e.g. per minute); rows past the retention are pruned hourly."""
        with self._write("record telemetry") as conn:
            row_id = conn.execute("INSERT INTO telemetry (ts, data) VALUES (?, ?)", (ts or time.time(), _dumps(summary))).lastrowid
            if self.telemetry_retention_days is not None and time.time() - self._last_prune > 3600:
                self.prune_telemetry(self.telemetry_retention_days)
            return row_id

    def prune_telemetry(self, max_age_days: float, *, now: float | None = None) -> int:
        """Delete telemetry rows older than ``max_age_days``; return how many went."""
        cutoff = (now or time.time()) - max_age_days * 86400.0
        with self._write("prune telemetry") as conn:
            self._last_prune = time.time()
            return conn.execute("DELETE FROM telemetry WHERE ts < ?", (cutoff,)).rowcount

    def telemetry(self, *, since: float | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM telemetry WHERE ts >= ? ORDER BY ts LIMIT ?", (since or 0.0, limit))
        for row in rows:
            row["data"] = _loads(row["data"])
        return rows
