"""The journal read across kinds: the unified timeline (`journal list`) and one entry with what
it links to (`journal show`). ``Timeline`` (``journal.entries``) is given the connection and the
repositories whose values it shows."""

from __future__ import annotations

import contextlib
import heapq
from pathlib import Path
from typing import Sequence

from llmos_tui.errors import JournalError
from llmos_tui.journal.chats import Chats
from llmos_tui.journal.configs import Versions
from llmos_tui.journal.db import Database
from llmos_tui.journal.records import (
    _BY_NAME,
    _BY_PREFIX,
    JSON_COLUMNS,
    SOURCES,
    Entry,
    Row,
    SqlValue,
    _diff,
    _loads,
    _short_data,
    _Source,
    parse_entry_id,
)
from llmos_tui.journal.studies import Studies
from llmos_tui.journal.timeparse import format_ts


class Timeline:
    """Newest-first entries across kinds, and one entry in full."""

    def __init__(self, db: Database, versions: Versions, chats: Chats, studies: Studies) -> None:
        self.db = db
        self.versions = versions
        self.chats = chats
        self.studies = studies

    @staticmethod
    def _resolve_kinds(kinds: Sequence[str] | str | None) -> list[tuple[_Source, list[str]]]:
        """Turn ``--kind`` words into (source, sub-kinds to match) pairs.

        A word naming an entry type (``event``, ``cfg``, ``message``…) takes that whole type;
        any other word is a sub-kind (``crashed``, ``undo``, ``tuner``…) looked for in the
        timeline's types. The two combine with OR: ``config,crashed`` is every configuration
        and every crash.
        """
        if kinds is None:
            return [(s, []) for s in SOURCES if s.in_timeline]
        words = [w.strip() for w in (kinds.split(",") if isinstance(kinds, str) else kinds) if w.strip()]
        named = list(dict.fromkeys(_BY_NAME[w.lower()] for w in words if w.lower() in _BY_NAME))
        subkinds = [w for w in words if w.lower() not in _BY_NAME]
        plan = [(s, []) for s in named]
        if subkinds:
            plan += [(s, subkinds) for s in SOURCES if s.in_timeline and s not in named]
        return plan or [(s, []) for s in SOURCES if s.in_timeline]

    def timeline(
        self,
        *,
        kinds: Sequence[str] | str | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        limit: int = 200,
    ) -> list[Entry]:
        """Newest first, across kinds. Each kind is read by its time index with its own LIMIT and the
        streams are merged, so the cost does not grow with the journal's size."""
        streams = []
        lkg = self.versions.last_known_good()
        for source, subkinds in self._resolve_kinds(kinds):
            where: list[str] = []
            args: list[SqlValue] = []
            if since is not None:
                where.append(f"{source.time_col} >= ?")
                args.append(since)
            if until is not None:
                where.append(f"{source.time_col} < ?")
                args.append(until)
            if subkinds:
                where.append(f"{source.kind_expr} IN ({','.join('?' * len(subkinds))})")
                args.extend(subkinds)
            if text:
                where.append(f"({source.search_expr}) LIKE ?")
                args.append(f"%{text}%")
            sql = f"SELECT * FROM {source.table}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY {source.time_col} DESC, id DESC LIMIT ?"
            rows = self.db.query(sql, (*args, limit))
            streams.append([(row[source.time_col], source, row) for row in rows])
        merged = heapq.merge(*streams, key=lambda item: item[0], reverse=True)
        lkg_id = lkg.id if lkg else None
        # Entries are built only for the rows that made the cut, not for every stream's LIMIT.
        return [self._entry(source, row, lkg_id) for _, (_ts, source, row) in zip(range(limit), merged)]

    def _entry(self, source: _Source, row: Row, lkg_id: int | None) -> Entry:
        p = source.prefix
        ts = row[source.time_col]
        if p == "cfg":
            config = self.versions.from_row(row)
            label = self.versions.standing_label(config, lkg_id)
            summary = f"{config.summary()}{'  [' + label + ']' if label else ''}"
            if config.note:
                summary += f"  {config.note}"
            return Entry(f"cfg:{row['id']}", "config", row["source"], ts, summary, undoable=row["parent_id"] is not None)
        if p == "evt":
            return Entry(f"evt:{row['id']}", "event", row["kind"], ts, _short_data(_loads(row["data"])))
        if p == "fnd":
            return Entry(f"fnd:{row['id']}", "finding", row["detector"], ts, f"[{row['severity']}] {row['title']}")
        if p == "act":
            change = ""
            if row["config_after"] is not None:
                change = f" cfg:{row['config_before']}->cfg:{row['config_after']}"
            summary = f"{row['state']} by {row['proposed_by']}{change}  {row['note']}".rstrip()
            return Entry(f"act:{row['id']}", "action", row["kind"], ts, summary, undoable=row["config_after"] is not None)
        if p == "std":
            state = row.get("status") or ("ended" if row["ended"] else "running")
            return Entry(f"std:{row['id']}", "study", row["objective"], ts, f"{row['name'] or 'study'} ({state})")
        if p == "trl":
            value = "" if row["value"] is None else f" value={row['value']:.4g}"
            why = f" ({row['reason']})" if row.get("reason") else ""
            return Entry(f"trl:{row['id']}", "trial", row["outcome"], ts,
                         f"std:{row['study_id']}{value} {_short_data(_loads(row['params']))}{why}")
        if p == "chat":
            return Entry(f"chat:{row['id']}", "chat", row["model"], ts, row["title"] or "(untitled)")
        if p == "mdl":
            parent = f" from mdl:{row['parent_id']}" if row.get("parent_id") is not None else ""
            size = f" {row['size_bytes'] / 1e6:.1f} MB" if row.get("size_bytes") else ""
            return Entry(f"mdl:{row['id']}", "model", row["origin"], ts,
                         f"{Path(row['path']).name} {row['quantization'] or '?'}{size}{parent}")
        if p == "msg":
            text = " ".join(row["content"].split())[:90]
            return Entry(f"msg:{row['id']}", "message", row["role"], ts, f"chat:{row['chat_id']} [{row['status']}] {text}")
        return Entry(f"tel:{row['id']}", "telemetry", "sample", ts, _short_data(_loads(row["data"])))

    def show(self, entry_id: str) -> Row:
        """Everything about one entry, JSON columns decoded, with what it links to."""
        prefix, number = parse_entry_id(entry_id)
        source = _BY_PREFIX[prefix]
        row = self.db.one(f"SELECT * FROM {source.table} WHERE id = ?", (number,))
        if row is None:
            raise JournalError(f"no entry {prefix}:{number} in journal {self.db.path}")
        for key in JSON_COLUMNS:
            if key in row and isinstance(row[key], str):
                row[key] = _loads(row[key])
        out: Row = {
            "id": f"{prefix}:{number}",
            "type": source.type,
            "time": format_ts(row.get(source.time_col)),
            **{key: value for key, value in row.items() if key != "id"},
        }
        if prefix == "cfg":
            config = self.versions.from_row(row)
            lkg = self.versions.last_known_good()
            out["standing_label"] = self.versions.standing_label(config, lkg.id if lkg else None)
            if config.parent_id is not None:
                parent = self.db.one("SELECT params, model_path FROM configs WHERE id = ?", (config.parent_id,))
                if parent:
                    out["changes_from_parent"] = _diff(
                        {**_loads(parent["params"]), "model_path": parent["model_path"]},
                        {**config.params, "model_path": config.model_path},
                    )
            out["actions"] = [f"act:{r['id']}" for r in self.db.query(
                "SELECT id FROM actions WHERE config_after = ? OR config_before = ? ORDER BY id", (number, number))]
            out["children"] = [f"cfg:{r['id']}" for r in self.db.query("SELECT id FROM configs WHERE parent_id = ? ORDER BY id", (number,))]
        elif prefix == "act":
            out["history"] = [
                {**h, "time": format_ts(h["ts"])}
                for h in self.db.query("SELECT ts, state, note FROM action_states WHERE action_id = ? ORDER BY id", (number,))
            ]
            if row["finding_id"] is not None:
                with contextlib.suppress(JournalError):
                    out["finding"] = self.versions.get_finding(row["finding_id"])
            if row["config_before"] is not None and row["config_after"] is not None:
                before, after = self.versions.get_config(row["config_before"]), self.versions.get_config(row["config_after"])
                out["changes"] = _diff({**before.params, "model_path": before.model_path},
                                       {**after.params, "model_path": after.model_path})
        elif prefix == "fnd":
            out["actions"] = [f"act:{r['id']}" for r in self.db.query("SELECT id FROM actions WHERE finding_id = ? ORDER BY id", (number,))]
        elif prefix == "std":
            out["trials"] = [
                {"id": f"trl:{t['id']}", "outcome": t["outcome"], "value": t["value"], "params": t["params"],
                 "kind": t.get("kind", "trial"), "reason": t.get("reason", "")}
                for t in self.studies.trials(number)
            ]
        elif prefix == "mdl":
            if row.get("parent_id") is not None:
                out["parent"] = f"mdl:{row['parent_id']}"
            out["children"] = [f"mdl:{r['id']}" for r in self.db.query(
                "SELECT id FROM model_files WHERE parent_id = ? ORDER BY id", (number,))]
            out["configs"] = [f"cfg:{r['id']}" for r in self.db.query(
                "SELECT id FROM configs WHERE model_path = ? ORDER BY id", (row["path"],))]
        elif prefix == "chat":
            out["messages"] = [
                {"id": f"msg:{m.id}", "role": m.role, "status": m.status, "content": m.content, "metrics": m.metrics}
                for m in self.chats.chat_messages(number)
            ]
        return out
