"""Tuning studies and their trials in the journal.

``Studies`` is the journal's repository for them (``journal.tuning``), given the journal's one
connection. A study remembers what it tuned — the model file (path and a key of its name
and size), the llama.cpp build, the machine (CPU cores, GPU name and memory) — so that a later
study warm-starts from the trials that apply to it. A trial keeps its outcome (``ok`` or why
not), llama.cpp's reason for a failure, the measured metrics and whether it belonged to the
search or to the winner's verification (``kind``: ``trial`` | ``verify``).

Study status: ``running`` -> ``stopped`` (interrupted; ``resume_study`` makes it running again)
| ``done`` | ``failed``.
"""

from __future__ import annotations

import os
import time
from typing import Mapping

from llmos_tui.errors import JournalError
from llmos_tui.journal.db import Database
from llmos_tui.journal.records import Json, Row, _dumps, _loads

TRIAL_OUTCOMES = ("ok", "oom", "crash", "timeout", "error", "refused", "budget")
TRIAL_KINDS = ("trial", "verify")
STUDY_STATUSES = ("running", "stopped", "done", "failed")


def model_key(path: str | os.PathLike[str], size_bytes: int | None = None) -> str:
    """The same model file, wherever it lies: its name and size (``demo.gguf:1234567``)."""
    path = os.fspath(path)
    if size_bytes is None:
        try:
            size_bytes = os.path.getsize(path)
        except OSError:
            size_bytes = 0
    return f"{os.path.basename(path)}:{int(size_bytes)}"


def _study(row: Row) -> Row:
    for key in ("space", "machine", "settings", "result"):
        if key in row:
            row[key] = _loads(row[key])
    return row


def _trial(row: Row) -> Row:
    row["params"], row["metrics"] = _loads(row["params"]), _loads(row["metrics"])
    return row


class Studies:
    """Tuning studies and their trials on the journal's connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.path

    # ---- studies -----------------------------------------------------------------
    def start_study(self, space: Json, objective: str, *, name: str = "", ts: float | None = None,
                    model_path: str = "", model_key: str = "", build: str = "",
                    machine: Mapping[str, Json] | None = None, settings: Mapping[str, Json] | None = None) -> int:
        with self.db.write("start a study") as conn:
            return conn.execute(
                "INSERT INTO studies (started, name, objective, space, status, model_path, model_key, build, "
                "machine, settings, result) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (ts or time.time(), name, objective, _dumps(space), "running", model_path, model_key, build,
                 _dumps(machine), _dumps(settings), "{}"),
            ).lastrowid

    def end_study(self, study_id: int, *, status: str = "done", result: Json = None, ts: float | None = None) -> None:
        """Close a study: ``done`` (its trials ran), ``stopped`` (interrupted, resumable) or ``failed``."""
        if status not in STUDY_STATUSES or status == "running":
            raise JournalError(f"a study ends as one of done, stopped, failed, got {status!r}")
        with self.db.write("end a study") as conn:
            cursor = conn.execute(
                "UPDATE studies SET ended = ?, status = ?, result = COALESCE(?, result) WHERE id = ?",
                (ts or time.time(), status, None if result is None else _dumps(result), study_id))
            if cursor.rowcount == 0:
                raise JournalError(f"no study std:{study_id} in journal {self.path}")

    def resume_study(self, study_id: int) -> Row:
        """Mark a study running again and return it (its trials are read with ``trials``)."""
        study = self.get_study(study_id)
        with self.db.write("resume a study") as conn:
            conn.execute("UPDATE studies SET status = 'running', ended = NULL WHERE id = ?", (study_id,))
        study.update(status="running", ended=None)
        return study

    def set_study_result(self, study_id: int, result: Json) -> None:
        with self.db.write("record a study's result") as conn:
            if conn.execute("UPDATE studies SET result = ? WHERE id = ?", (_dumps(result), study_id)).rowcount == 0:
                raise JournalError(f"no study std:{study_id} in journal {self.path}")

    def get_study(self, study_id: int) -> Row:
        row = self.db.one("SELECT * FROM studies WHERE id = ?", (int(study_id),))
        if row is None:
            raise JournalError(f"no study std:{study_id} in journal {self.path}")
        return _study(row)

    def studies(self, limit: int = 50, *, model_key: str | None = None) -> list[Row]:
        if model_key:
            rows = self.db.query("SELECT * FROM studies WHERE model_key = ? ORDER BY id DESC LIMIT ?",
                               (model_key, limit))
        else:
            rows = self.db.query("SELECT * FROM studies ORDER BY id DESC LIMIT ?", (limit,))
        return [_study(r) for r in rows]

    # ---- trials ------------------------------------------------------------------
    def record_trial(self, study_id: int, params: Json, outcome: str, *, value: float | None = None,
                     metrics: Json = None, config_id: int | None = None, ts: float | None = None,
                     reason: str = "", kind: str = "trial") -> int:
        if outcome not in TRIAL_OUTCOMES:
            raise JournalError(f"trial outcome must be one of {', '.join(TRIAL_OUTCOMES)}, got {outcome!r}")
        if kind not in TRIAL_KINDS:
            raise JournalError(f"trial kind must be one of {', '.join(TRIAL_KINDS)}, got {kind!r}")
        if value is not None:
            value = float(value)  # a numpy scalar never reaches SQLite
        with self.db.write("record a trial") as conn:
            if not conn.execute("SELECT 1 FROM studies WHERE id = ?", (study_id,)).fetchone():
                raise JournalError(f"no study std:{study_id} in journal {self.path}")
            return conn.execute(
                "INSERT INTO trials (study_id, ts, params, value, metrics, outcome, config_id, reason, kind) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (study_id, ts or time.time(), _dumps(params), value, _dumps(metrics), outcome, config_id,
                 reason or "", kind),
            ).lastrowid

    def trials(self, study_id: int, *, kind: str | None = None) -> list[Row]:
        if kind:
            rows = self.db.query("SELECT * FROM trials WHERE study_id = ? AND kind = ? ORDER BY id",
                               (study_id, kind))
        else:
            rows = self.db.query("SELECT * FROM trials WHERE study_id = ? ORDER BY id", (study_id,))
        return [_trial(r) for r in rows]

    def tuning_history(self, *, exclude_study: int | None = None, limit: int = 5000) -> list[Row]:
        """Every search trial with its study's fingerprints (model key, build, machine, objective):
        what the warm start reads. Newest first."""
        rows = self.db.query(
            "SELECT t.*, s.model_path AS study_model_path, s.model_key, s.build, s.machine, s.objective, "
            "s.settings FROM trials t JOIN studies s ON s.id = t.study_id "
            "WHERE t.kind = 'trial' AND s.id != ? ORDER BY t.id DESC LIMIT ?",
            (exclude_study if exclude_study is not None else -1, limit))
        out = []
        for row in rows:
            row = _trial(row)
            row["machine"], row["settings"] = _loads(row["machine"]), _loads(row["settings"])
            out.append(row)
        return out
