"""The digest's reads: what happened in a span of time, for `llmos-tui report`.

Findings (incidents, with the narration the doctor journaled in their evidence), the actions
taken on them with every state they went through, configuration versions, engine life events
(uptime), tuning studies and the generation speed of each reply. Read-only; each query is
bounded by its time index and a limit.
"""

from __future__ import annotations

from llmos_tui.journal.db import Database
from llmos_tui.journal.records import Row, _loads

LIMIT = 5000
LIFE_KINDS = ("loaded", "unloaded", "crashed", "restarting", "error")


class Digest:
    """Rows between ``since`` and ``until`` (epoch seconds), oldest first."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def findings(self, since: float, until: float, limit: int = LIMIT) -> list[Row]:
        rows = self.db.query("SELECT * FROM findings WHERE ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                             (since, until, limit))
        for row in rows:
            row["evidence"] = _loads(row["evidence"])
        return rows

    def actions(self, since: float, until: float, limit: int = LIMIT) -> list[Row]:
        """Actions proposed in the span, each with ``states``: [(ts, state, note)] oldest first."""
        rows = self.db.query("SELECT * FROM actions WHERE ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                             (since, until, limit))
        if rows:
            ids = [r["id"] for r in rows]
            marks = ",".join("?" * len(ids))
            states: dict[int, list[Row]] = {}
            for s in self.db.query(f"SELECT action_id, ts, state, note FROM action_states WHERE action_id IN ({marks}) "
                                   "ORDER BY ts, id", ids):
                states.setdefault(s["action_id"], []).append({"ts": s["ts"], "state": s["state"], "note": s["note"]})
            for row in rows:
                row["params"] = _loads(row["params"])
                row["states"] = states.get(row["id"], [])
        return rows

    def configs(self, since: float, until: float, limit: int = LIMIT) -> list[Row]:
        rows = self.db.query("SELECT id, ts, model_path, params, source, parent_id, active, standing, reason, note "
                             "FROM configs WHERE ts >= ? AND ts < ? ORDER BY ts LIMIT ?", (since, until, limit))
        for row in rows:
            row["params"] = _loads(row["params"])
        return rows

    def life_events(self, since: float, until: float, limit: int = LIMIT) -> list[Row]:
        """Engine life events in the span, and the last one before it (the state it began in)."""
        marks = ",".join("?" * len(LIFE_KINDS))
        before = self.db.query(f"SELECT id, ts, kind FROM events WHERE kind IN ({marks}) AND ts < ? "
                               "ORDER BY ts DESC LIMIT 1", (*LIFE_KINDS, since))
        during = self.db.query(f"SELECT id, ts, kind FROM events WHERE kind IN ({marks}) AND ts >= ? AND ts < ? "
                               "ORDER BY ts LIMIT ?", (*LIFE_KINDS, since, until, limit))
        return before + during

    def events(self, kind: str, since: float, until: float, limit: int = LIMIT) -> list[Row]:
        rows = self.db.query("SELECT * FROM events WHERE kind = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                             (kind, since, until, limit))
        for row in rows:
            row["data"] = _loads(row["data"])
        return rows

    def studies(self, since: float, until: float, limit: int = LIMIT) -> list[Row]:
        rows = self.db.query("SELECT id, started, ended, name, objective FROM studies "
                             "WHERE started < ? AND (ended IS NULL OR ended >= ?) ORDER BY started LIMIT ?",
                             (until, since, limit))
        for row in rows:
            row["trials"] = (self.db.one("SELECT COUNT(*) AS n FROM trials WHERE study_id = ?", (row["id"],))
                             or {"n": 0})["n"]
        return rows

    def reply_speeds(self, since: float, until: float, limit: int = LIMIT) -> list[float]:
        """gen_tps of each finished assistant reply in the span."""
        out = []
        for row in self.db.query("SELECT metrics FROM messages WHERE role = 'assistant' AND status = 'done' "
                                 "AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?", (since, until, limit)):
            metrics = _loads(row["metrics"])
            value = metrics.get("gen_tps") if isinstance(metrics, dict) else None
            if isinstance(value, (int, float)) and value > 0:
                out.append(float(value))
        return out
