"""The fleet in the journal: each box's entries copied to the head, with per-box cursors.

Two sides, one module (the journal knows nothing of Ray or of the network):

- on a box, :func:`entries_after` reads the box's own journal (read-only) from a cursor: every
  configuration, event, finding, action, study and trial after the last id the head has, as
  timeline entries with their rows;
- on the head, :class:`FleetLog` (``journal.fleet``) stores them box-tagged in the head's own
  journal, and moves that box's cursor **in the same transaction**: a head that restarts (or is
  killed) reads its cursors back and asks for what comes next, so nothing is lost and nothing is
  copied twice (the ``(box, entry_id)`` unique index makes a repeat harmless too). The head also
  keeps each box's last state (alive, unavailable, dead, stale), since when, and what it last
  knew of it, so `journal list --box NAME` and the fleet view show a box that is down.

Chats, messages and telemetry samples stay on their box (private text, and volume); a
configuration's or an action's later state changes (marked good, verified) are copied as they
were when the entry was first copied.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping, Sequence

from llmos_tui.journal.db import Database
from llmos_tui.journal.records import _BY_NAME, _BY_PREFIX, JSON_COLUMNS, Entry, Json, Row, _dumps, _loads

if TYPE_CHECKING:
    from llmos_tui.journal.store import Journal

__all__ = ["FLEET_SOURCES", "BOX_STATES", "entries_after", "FleetLog"]

FLEET_SOURCES = ("cfg", "evt", "fnd", "act", "std", "trl")  # what a box's journal gives the head
BOX_STATES = ("alive", "unavailable", "dead", "stale")
BATCH = 500  # rows of one kind in one pull


def entries_after(journal: "Journal", cursors: Mapping[str, int], limit: int = BATCH
                  ) -> tuple[list[dict[str, Json]], dict[str, int], bool]:
    """(entries, the cursors after them, whether more remain) — a box's side of a pull.

    Each entry: ``id`` (``cfg:12``: the box's own id), ``type``, ``kind``, ``ts``, ``summary``,
    ``undoable`` and ``data`` (the row, JSON columns decoded)."""
    out: list[dict[str, Json]] = []
    after = {p: int(cursors.get(p) or 0) for p in FLEET_SOURCES}
    more = False
    lkg = journal.versions.last_known_good()
    lkg_id = lkg.id if lkg else None
    for prefix in FLEET_SOURCES:
        source = _BY_PREFIX[prefix]
        rows = journal.connection.query(f"SELECT * FROM {source.table} WHERE id > ? ORDER BY id LIMIT ?",
                                        (after[prefix], limit))
        more = more or len(rows) >= limit
        for row in rows:
            entry = journal.entries._entry(source, row, lkg_id)
            data = {k: (_loads(v) if k in JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}
            out.append({"id": entry.id, "type": entry.type, "kind": entry.kind, "ts": entry.ts,
                        "summary": entry.summary, "undoable": entry.undoable, "data": data})
            after[prefix] = int(row["id"])
    return out, after, more


class FleetLog:
    """The head's copy of every box's journal, and what it knows of each box."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- cursors and copies -------------------------------------------------------------
    def cursors(self, box: str) -> dict[str, int]:
        row = self.db.one("SELECT cursors FROM fleet_boxes WHERE box = ?", (box,))
        data = _loads(row["cursors"]) if row else {}
        return {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def store(self, box: str, entries: Sequence[Mapping[str, Json]], cursors: Mapping[str, int],
              *, now: float | None = None) -> int:
        """Copy ``entries`` of ``box`` and move its cursors, in one transaction; returns how many
        were new."""
        now = time.time() if now is None else now
        added = 0
        with self.db.write(f"copy the journal of box {box}") as conn:
            for e in entries:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO fleet_entries (box, entry_id, type, kind, ts, summary, undoable, data, "
                    "copied) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (box, str(e.get("id")), str(e.get("type")), str(e.get("kind") or ""), float(e.get("ts") or now),
                     str(e.get("summary") or ""), 1 if e.get("undoable") else 0, _dumps(e.get("data")), now))
                added += cursor.rowcount
            conn.execute(
                "INSERT INTO fleet_boxes (box, cursors, copied) VALUES (?, ?, ?) "
                "ON CONFLICT(box) DO UPDATE SET cursors = excluded.cursors, copied = excluded.copied",
                (box, _dumps(dict(cursors)), now))
        return added

    # ---- what the head knows of each box -------------------------------------------------
    def set_state(self, box: str, state: str, *, info: Mapping[str, Json] | None = None, why: str = "",
                  now: float | None = None) -> float:
        """Record ``box``'s state; a change of state is an entry of that box too (kind = the new
        state). Returns since when the box is in that state."""
        if state not in BOX_STATES:
            raise ValueError(f"box state must be one of {', '.join(BOX_STATES)}, got {state!r}")
        now = time.time() if now is None else now
        with self.db.write(f"record the state of box {box}") as conn:
            row = conn.execute("SELECT state, since FROM fleet_boxes WHERE box = ?", (box,)).fetchone()
            changed = row is None or row[0] != state
            since = now if changed or row[1] is None else float(row[1])
            conn.execute(
                "INSERT INTO fleet_boxes (box, state, since, seen, info) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(box) DO UPDATE SET state = excluded.state, since = excluded.since, "
                "seen = CASE WHEN excluded.state = 'alive' THEN excluded.seen ELSE fleet_boxes.seen END, "
                "info = CASE WHEN excluded.info = '{}' THEN fleet_boxes.info ELSE excluded.info END",
                (box, state, since, now if state == "alive" else None, _dumps(dict(info or {}))))
            if changed:
                before = (row[0] if row is not None else None) or "new"
                conn.execute(
                    "INSERT OR IGNORE INTO fleet_entries (box, entry_id, type, kind, ts, summary, undoable, data, "
                    "copied) VALUES (?, ?, 'box', ?, ?, ?, 0, ?, ?)",
                    (box, f"box@{now:.6f}", state, now, f"{before} -> {state}" + (f": {why}" if why else ""),
                     _dumps({"from": before, "to": state, "why": why}), now))
        return since

    def boxes(self) -> list[Row]:
        """Every box the head has known: box, state, since, seen (last alive), info, cursors."""
        rows = self.db.query("SELECT * FROM fleet_boxes ORDER BY box")
        for row in rows:
            for key in ("info", "cursors"):
                row[key] = _loads(row[key]) if isinstance(row.get(key), str) else {}
        return rows

    def entries(self, box: str | None = None, *, kinds: Sequence[str] | str | None = None,
                since: float | None = None, limit: int = 50) -> list[tuple[str, Entry]]:
        """(box, entry) newest first; ``kinds`` as for `journal list` (types or sub-kinds)."""
        where: list[str] = []
        args: list[Json] = []
        if box is not None:
            where.append("box = ?")
            args.append(box)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if kinds:
            words = [w.strip() for w in (kinds.split(",") if isinstance(kinds, str) else kinds) if w.strip()]
            types = [_BY_NAME[w.lower()].type if w.lower() in _BY_NAME else w for w in words]
            where.append(f"(type IN ({','.join('?' * len(types))}) OR kind IN ({','.join('?' * len(words))}))")
            args.extend(types)
            args.extend(words)
        sql = "SELECT * FROM fleet_entries" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.query(sql + " ORDER BY ts DESC, id DESC LIMIT ?", (*args, limit))  # type: ignore[arg-type]
        return [(r["box"], Entry(r["entry_id"], r["type"], r["kind"], r["ts"], r["summary"], bool(r["undoable"])))
                for r in rows]
