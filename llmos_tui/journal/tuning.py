"""Tuning studies and their trials in the journal.

A mixin of :class:`~llmos_tui.journal.store.Journal` (it uses the journal's own transaction and
query helpers). A study remembers what it tuned — the model file (path and a key of its name
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
from typing import Any, Mapping

from llmos_tui.errors import JournalError
from llmos_tui.journal.records import _dumps, _loads

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


def _study(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("space", "machine", "settings", "result"):
        if key in row:
            row[key] = _loads(row[key])
    return row


def _trial(row: dict[str, Any]) -> dict[str, Any]:
    row["params"], row["metrics"] = _loads(row["params"]), _loads(row["metrics"])
    return row


class TuningRecords:
    """Studies and trials (mixed into Journal)."""

    # ---- studies -----------------------------------------------------------------
    def start_study(self, space: Any, objective: str, *, name: str = "", ts: float | None = None,
                    model_path: str = "", model_key: str = "", build: str = "",
                    machine: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None) -> int:
        with self._write("start a study") as conn:  # type: ignore[attr-defined]
            return conn.execute(
                "INSERT INTO studies (started, name, objective, space, status, model_path, model_key, build, "
                "machine, settings, result) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (ts or time.time(), name, objective, _dumps(space), "running", model_path, model_key, build,
                 _dumps(machine), _dumps(settings), "{}"),
            ).lastrowid

    def end_study(self, study_id: int, *, status: str = "done", result: Any = None, ts: float | None = None) -> None:
        """Close a study: ``done`` (its trials ran), ``stopped`` (interrupted, resumable) or ``failed``."""
        if status not in STUDY_STATUSES or status == "running":
            raise JournalError(f"a study ends as one of done, stopped, failed, got {status!r}")
        with self._write("end a study") as conn:  # type: ignore[attr-defined]
            cursor = conn.execute(
                "UPDATE studies SET ended = ?, status = ?, result = COALESCE(?, result) WHERE id = ?",
                (ts or time.time(), status, None if result is None else _dumps(result), study_id))
            if cursor.rowcount == 0:
                raise JournalError(f"no study std:{study_id} in journal {self.path}")  # type: ignore[attr-defined]

    def resume_study(self, study_id: int) -> dict[str, Any]:
        """Mark a study running again and return it (its trials are read with ``trials``)."""
        study = self.get_study(study_id)
        with self._write("resume a study") as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE studies SET status = 'running', ended = NULL WHERE id = ?", (study_id,))
        study.update(status="running", ended=None)
        return study

    def set_study_result(self, study_id: int, result: Any) -> None:
        with self._write("record a study's result") as conn:  # type: ignore[attr-defined]
            if conn.execute("UPDATE studies SET result = ? WHERE id = ?", (_dumps(result), study_id)).rowcount == 0:
                raise JournalError(f"no study std:{study_id} in journal {self.path}")  # type: ignore[attr-defined]

    def get_study(self, study_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM studies WHERE id = ?", (int(study_id),))  # type: ignore[attr-defined]
        if row is None:
            raise JournalError(f"no study std:{study_id} in journal {self.path}")  # type: ignore[attr-defined]
        return _study(row)

    def studies(self, limit: int = 50, *, model_key: str | None = None) -> list[dict[str, Any]]:
        if model_key:
            rows = self._query("SELECT * FROM studies WHERE model_key = ? ORDER BY id DESC LIMIT ?",  # type: ignore[attr-defined]
                               (model_key, limit))
        else:
            rows = self._query("SELECT * FROM studies ORDER BY id DESC LIMIT ?", (limit,))  # type: ignore[attr-defined]
        return [_study(r) for r in rows]

    # ---- trials ------------------------------------------------------------------
    def record_trial(self, study_id: int, params: Any, outcome: str, *, value: float | None = None,
                     metrics: Any = None, config_id: int | None = None, ts: float | None = None,
                     reason: str = "", kind: str = "trial") -> int:
        if outcome not in TRIAL_OUTCOMES:
            raise JournalError(f"trial outcome must be one of {', '.join(TRIAL_OUTCOMES)}, got {outcome!r}")
        if kind not in TRIAL_KINDS:
            raise JournalError(f"trial kind must be one of {', '.join(TRIAL_KINDS)}, got {kind!r}")
        if value is not None:
            value = float(value)  # a numpy scalar never reaches SQLite
        with self._write("record a trial") as conn:  # type: ignore[attr-defined]
            if not conn.execute("SELECT 1 FROM studies WHERE id = ?", (study_id,)).fetchone():
                raise JournalError(f"no study std:{study_id} in journal {self.path}")  # type: ignore[attr-defined]
            return conn.execute(
                "INSERT INTO trials (study_id, ts, params, value, metrics, outcome, config_id, reason, kind) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (study_id, ts or time.time(), _dumps(params), value, _dumps(metrics), outcome, config_id,
                 reason or "", kind),
            ).lastrowid

    def trials(self, study_id: int, *, kind: str | None = None) -> list[dict[str, Any]]:
        if kind:
            rows = self._query("SELECT * FROM trials WHERE study_id = ? AND kind = ? ORDER BY id",  # type: ignore[attr-defined]
                               (study_id, kind))
        else:
            rows = self._query("SELECT * FROM trials WHERE study_id = ? ORDER BY id", (study_id,))  # type: ignore[attr-defined]
        return [_trial(r) for r in rows]

    def tuning_history(self, *, exclude_study: int | None = None, limit: int = 5000) -> list[dict[str, Any]]:
        """Every search trial with its study's fingerprints (model key, build, machine, objective):
        what the warm start reads. Newest first."""
        rows = self._query(  # type: ignore[attr-defined]
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

    def chat_traffic(self, limit: int = 1000) -> dict[str, Any]:
        """The prompt and generated tokens of the last ``limit`` finished replies (the traffic the
        operator's chats really put on the engine)."""
        row = self._one(  # type: ignore[attr-defined]
            "SELECT COUNT(*) AS n, SUM(p) AS prompt_tokens, SUM(g) AS gen_tokens FROM ("
            " SELECT COALESCE(json_extract(metrics, '$.prompt_eval_tokens'), json_extract(metrics, '$.prompt_tokens'))"
            " AS p, json_extract(metrics, '$.gen_tokens') AS g FROM messages"
            " WHERE role = 'assistant' AND json_extract(metrics, '$.gen_tokens') > 0"
            " ORDER BY id DESC LIMIT ?)", (limit,))
        row = row or {}
        return {"replies": int(row.get("n") or 0), "prompt_tokens": int(row.get("prompt_tokens") or 0),
                "gen_tokens": int(row.get("gen_tokens") or 0)}
