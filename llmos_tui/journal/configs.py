"""Configuration versions, findings and actions, and undo: the journal as the undo history.

``Versions`` is the journal's repository for them (``journal.versions``): it is given the
journal's one connection and runs its SQL through it."""

from __future__ import annotations

import time
from typing import Mapping, Protocol, Union

from llmos_tui.errors import JournalError
from llmos_tui.journal.db import Database
from llmos_tui.journal.records import (
    ACTION_MOVES,
    ACTION_STATES,
    CONFIG_SOURCES,
    PROPOSERS,
    Action,
    ConfigVersion,
    Json,
    Row,
    _diff,
    _dumps,
    _loads,
    parse_entry_id,
)


class ParamsLike(Protocol):
    """A parameter set that can say itself as plain values (the engine's ``EngineParams``)."""

    def to_dict(self) -> dict[str, Json]: ...


Params = Union[ParamsLike, Mapping[str, Json]]


def plain(params: Params) -> dict[str, Json]:
    """Parameters as a plain dict, whether given as a mapping or as an ``EngineParams``."""
    return dict(params) if isinstance(params, Mapping) else dict(params.to_dict())


class Versions:
    """Configuration versions, findings and actions on the journal's connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.path

    # ---- configuration versions -------------------------------------------------
    def record_config(
        self,
        params: Params,
        *,
        source: str = "operator",
        parent_id: int | None = None,
        model_path: str | None = None,
        note: str = "",
        activate: bool = True,
        ts: float | None = None,
    ) -> ConfigVersion:
        """Journal a configuration version; by default it becomes the one active version.

        ``params`` is an EngineParams (anything with ``to_dict``) or a mapping; ``parent_id`` defaults to the active version.
        """
        if source not in CONFIG_SOURCES:
            raise JournalError(f"config source must be one of {', '.join(CONFIG_SOURCES)}, got {source!r}")
        values = plain(params)
        path = values.pop("model_path", "")
        model_path = path if model_path is None else model_path
        with self.db.write("record a configuration", durable=True) as conn:
            if parent_id is None:
                row = conn.execute("SELECT id FROM configs WHERE active = 1").fetchone()
                parent_id = row[0] if row else None
            elif not conn.execute("SELECT 1 FROM configs WHERE id = ?", (parent_id,)).fetchone():
                raise JournalError(f"parent configuration cfg:{parent_id} does not exist")
            if activate:
                conn.execute("UPDATE configs SET active = 0 WHERE active = 1")
            cursor = conn.execute(
                "INSERT INTO configs (ts, model_path, params, source, parent_id, active, note) VALUES (?,?,?,?,?,?,?)",
                (ts or time.time(), model_path or "", _dumps(values), source, parent_id, int(activate), note),
            )
            new_id = cursor.lastrowid
        return self.get_config(new_id)

    def get_config(self, config_id: int) -> ConfigVersion:
        row = self.db.one("SELECT * FROM configs WHERE id = ?", (config_id,))
        if row is None:
            raise JournalError(f"no configuration cfg:{config_id} in journal {self.path}")
        return self.from_row(row)

    @staticmethod
    def from_row(row: Row) -> ConfigVersion:
        return ConfigVersion(
            id=row["id"], ts=row["ts"], model_path=row["model_path"], params=_loads(row["params"]),
            source=row["source"], parent_id=row["parent_id"], active=bool(row["active"]),
            standing=row["standing"], reason=row["reason"], good_ts=row["good_ts"], note=row["note"],
        )

    def active_config(self) -> ConfigVersion | None:
        row = self.db.one("SELECT * FROM configs WHERE active = 1")
        return self.from_row(row) if row else None

    def configs(self, limit: int = 100) -> list[ConfigVersion]:
        return [self.from_row(r) for r in self.db.query("SELECT * FROM configs ORDER BY id DESC LIMIT ?", (limit,))]

    def activate(self, config_id: int) -> ConfigVersion:
        """Make an existing version the active one (no new version; prefer undo or record_config)."""
        with self.db.write("activate a configuration", durable=True) as conn:
            if not conn.execute("SELECT 1 FROM configs WHERE id = ?", (config_id,)).fetchone():
                raise JournalError(f"no configuration cfg:{config_id} in journal {self.path}")
            conn.execute("UPDATE configs SET active = 0 WHERE active = 1 AND id != ?", (config_id,))
            conn.execute("UPDATE configs SET active = 1 WHERE id = ?", (config_id,))
        return self.get_config(config_id)

    def mark_good(self, config_id: int, *, ts: float | None = None) -> None:
        """The version ran and passed verification: it becomes the last-known-good."""
        with self.db.write("mark a configuration good", durable=True) as conn:
            cursor = conn.execute(
                "UPDATE configs SET standing = 'good', reason = '', good_ts = ? WHERE id = ?",
                (ts or time.time(), config_id),
            )
            if cursor.rowcount == 0:
                raise JournalError(f"no configuration cfg:{config_id} in journal {self.path}")

    def mark_bad(self, config_id: int, reason: str) -> None:
        """The version failed (crash, OOM, failed verification); it is never the last-known-good again."""
        with self.db.write("mark a configuration bad", durable=True) as conn:
            cursor = conn.execute("UPDATE configs SET standing = 'bad', reason = ? WHERE id = ?", (reason, config_id))
            if cursor.rowcount == 0:
                raise JournalError(f"no configuration cfg:{config_id} in journal {self.path}")

    def last_known_good(self, *, exclude_active: bool = False) -> ConfigVersion | None:
        sql = "SELECT * FROM configs WHERE standing = 'good'"
        if exclude_active:
            sql += " AND active = 0"
        row = self.db.one(sql + " ORDER BY good_ts DESC, id DESC LIMIT 1")
        return self.from_row(row) if row else None

    @staticmethod
    def standing_label(config: ConfigVersion, lkg_id: int | None) -> str:
        """"active", "last-known-good", "bad" (or a combination), as the operator reads it."""
        labels = []
        if config.active:
            labels.append("active")
        if config.standing == "bad":
            labels.append("bad")
        elif lkg_id == config.id:
            labels.append("last-known-good")
        elif config.standing == "good":
            labels.append("good")
        return ",".join(labels)

    # ---- findings and actions ----------------------------------------------------
    def record_finding(
        self,
        detector: str,
        severity: str,
        title: str,
        evidence: Json = None,
        *,
        fingerprint: str = "",
        ts: float | None = None,
    ) -> int:
        with self.db.write("record a finding") as conn:
            cursor = conn.execute(
                "INSERT INTO findings (ts, detector, severity, title, evidence, fingerprint) VALUES (?,?,?,?,?,?)",
                (ts or time.time(), detector, severity, title, _dumps(evidence), fingerprint or ""),
            )
            return cursor.lastrowid

    def get_finding(self, finding_id: int) -> Row:
        row = self.db.one("SELECT * FROM findings WHERE id = ?", (finding_id,))
        if row is None:
            raise JournalError(f"no finding fnd:{finding_id} in journal {self.path}")
        row["evidence"] = _loads(row["evidence"])
        return row

    def propose_action(
        self,
        kind: str,
        params: Json = None,
        *,
        proposed_by: str = "operator",
        finding_id: int | None = None,
        note: str = "",
        ts: float | None = None,
    ) -> int:
        if proposed_by not in PROPOSERS:
            raise JournalError(f"proposed_by must be one of {', '.join(PROPOSERS)}, got {proposed_by!r}")
        now = ts or time.time()
        with self.db.write("record an action") as conn:
            cursor = conn.execute(
                "INSERT INTO actions (ts, finding_id, kind, params, proposed_by, state, updated, note) "
                "VALUES (?,?,?,?,?,'proposed',?,?)",
                (now, finding_id, kind, _dumps(params), proposed_by, now, note),
            )
            action_id = cursor.lastrowid
            conn.execute(
                "INSERT INTO action_states (action_id, ts, state, note) VALUES (?,?,'proposed',?)",
                (action_id, now, note),
            )
            return action_id

    def set_action_state(
        self,
        action_id: int,
        state: str,
        *,
        note: str = "",
        config_before: int | None = None,
        config_after: int | None = None,
        ts: float | None = None,
    ) -> None:
        """Move an action along proposed -> applied -> verified | failed | rolled_back | rejected."""
        if state not in ACTION_STATES:
            raise JournalError(f"action state must be one of {', '.join(ACTION_STATES)}, got {state!r}")
        now = ts or time.time()
        with self.db.write("update an action", durable=True) as conn:
            row = conn.execute("SELECT state FROM actions WHERE id = ?", (action_id,)).fetchone()
            if row is None:
                raise JournalError(f"no action act:{action_id} in journal {self.path}")
            if state not in ACTION_MOVES[row[0]]:
                raise JournalError(f"action act:{action_id} is {row[0]}; it cannot become {state}")
            conn.execute(
                "UPDATE actions SET state = ?, updated = ?, config_before = COALESCE(?, config_before), "
                "config_after = COALESCE(?, config_after) WHERE id = ?",
                (state, now, config_before, config_after, action_id),
            )
            conn.execute(
                "INSERT INTO action_states (action_id, ts, state, note) VALUES (?,?,?,?)", (action_id, now, state, note)
            )

    def get_action(self, action_id: int) -> Action:
        row = self.db.one("SELECT * FROM actions WHERE id = ?", (action_id,))
        if row is None:
            raise JournalError(f"no action act:{action_id} in journal {self.path}")
        history = self.db.query(
            "SELECT ts, state, note FROM action_states WHERE action_id = ? ORDER BY id", (action_id,)
        )
        row["params"] = _loads(row["params"])
        return Action(**row, history=tuple(history))

    def change_config(
        self,
        params: Params,
        *,
        source: str = "operator",
        kind: str = "reconfigure",
        proposed_by: str = "operator",
        finding_id: int | None = None,
        action_id: int | None = None,
        note: str = "",
    ) -> tuple[Action, ConfigVersion]:
        """A configuration change as one journaled action: the new version becomes active.

        With ``action_id`` (an action proposed earlier) that action is marked applied;
        otherwise a new action is recorded. The caller applies the returned config to the
        engine and later calls ``set_action_state(…, "verified" | "failed")``.
        """
        with self.db.write("change the configuration", durable=True) as conn:
            row = conn.execute("SELECT id, params, model_path FROM configs WHERE active = 1").fetchone()
            before = row[0] if row else None
            if action_id is None:
                # The action's params are what changes (key -> new value); the full settings
                # live in the two configuration versions it links.
                values = plain(params)
                old = {**_loads(row[1]), "model_path": row[2]} if row else {}
                changes = {k: v for k, (_, v) in _diff(old, values).items() if k in values}
                action_id = self.propose_action(
                    kind, changes, proposed_by=proposed_by, finding_id=finding_id, note=note
                )
            config = self.record_config(params, source=source, note=note)
            self.set_action_state(action_id, "applied", note=note, config_before=before, config_after=config.id)
        return self.get_action(action_id), self.get_config(config.id)

    def undo(self, entry_id: str | int, *, proposed_by: str = "operator", note: str = "") -> ConfigVersion:
        """Revert a configuration change; return the configuration to apply to the engine.

        ``cfg:N`` reverts version N to its parent; ``act:N`` reverts the change that action made
        (back to its ``config_before``). The revert is itself an action (kind ``undo``, state
        applied) and creates a new active version whose parent is the reverted one, so an undo
        can be undone too. The action that produced the reverted version is marked rolled_back.
        """
        prefix, number = parse_entry_id(entry_id)
        with self.db.write("undo a change", durable=True) as conn:
            if prefix == "act":
                action = self.get_action(number)
                if action.config_after is None:
                    raise JournalError(
                        f"act:{number} ({action.kind}, {action.state}) changed no configuration; there is nothing to undo"
                    )
                if "rolled_back" not in ACTION_MOVES[action.state]:
                    raise JournalError(f"act:{number} is {action.state.replace('_', ' ')}; there is nothing to undo")
                reverted = self.get_config(action.config_after)
                restore_id = action.config_before if action.config_before is not None else reverted.parent_id
                producers = [number]
            elif prefix == "cfg":
                reverted = self.get_config(number)
                restore_id = reverted.parent_id
                producers = [r[0] for r in conn.execute("SELECT id FROM actions WHERE config_after = ?", (number,))]
            else:
                raise JournalError(
                    f"{prefix}:{number} is not a configuration change; undo takes a cfg:N or act:N entry"
                )
            if restore_id is None:
                raise JournalError(f"cfg:{reverted.id} is the first configuration; it has no parent to revert to")
            earlier = conn.execute(
                "SELECT id FROM actions WHERE kind = 'undo' AND state IN ('applied', 'verified') "
                "AND json_extract(params, '$.reverts') = ? ORDER BY id DESC LIMIT 1",
                (f"cfg:{reverted.id}",),
            ).fetchone()
            if earlier:
                raise JournalError(
                    f"cfg:{reverted.id} was already undone by act:{earlier[0]}; undo act:{earlier[0]} to bring it back"
                )
            restore = self.get_config(restore_id)
            label = f"act:{number}" if prefix == "act" else f"cfg:{number}"
            text = note or f"undo {label}: back to the settings of cfg:{restore.id}"
            action_id = self.propose_action(
                "undo", {"undo_of": label, "reverts": f"cfg:{reverted.id}", "restores": f"cfg:{restore.id}"},
                proposed_by=proposed_by, note=text,
            )
            active = conn.execute("SELECT id FROM configs WHERE active = 1").fetchone()
            config = self.record_config(
                restore.params, model_path=restore.model_path, source="undo", parent_id=reverted.id, note=text
            )
            self.set_action_state(
                action_id, "applied", note=text,
                config_before=active[0] if active else None, config_after=config.id,
            )
            for producer in producers:
                state = conn.execute("SELECT state FROM actions WHERE id = ?", (producer,)).fetchone()[0]
                if "rolled_back" in ACTION_MOVES[state]:
                    self.set_action_state(producer, "rolled_back", note=f"undone by act:{action_id}")
        return config

    def action_for_config(self, config_id: int) -> Action | None:
        """The action that produced this version, if any (the newest when several)."""
        row = self.db.one("SELECT id FROM actions WHERE config_after = ? ORDER BY id DESC LIMIT 1", (config_id,))
        return self.get_action(row["id"]) if row else None
