"""Model files in the journal: which GGUF came from which, by what quantisation, and how it measured.

``ModelFiles`` is the journal's repository for them (``journal.lineage``), given the journal's
one connection. A quantised file is recorded with its parent, so `journal show` can tell an
operator where a model came from; the measurements of a variant (size, speed, perplexity, KL
divergence against its parent) are kept with it, so the variants table survives a restart.
Writing a model file also writes a ``model_file`` event in the same transaction: it shows up in
the timeline (`llmos-tui journal list --kind model_file`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Mapping

from llmos_tui.errors import JournalError
from llmos_tui.journal.db import Database
from llmos_tui.journal.records import Json, Row, _dumps, _loads

MODEL_ORIGINS = ("quantize", "import")


@dataclass(frozen=True)
class ModelFile:
    id: int
    ts: float
    path: str
    parent_id: int | None
    parent_path: str
    quantization: str  # the target type name (q8_0, q4_k_m, ...) or the file's own type
    origin: str  # quantize | import
    size_bytes: int
    details: dict[str, Json] = field(default_factory=dict)  # how it was made (threads, seconds, tensors)
    metrics: dict[str, Json] = field(default_factory=dict)  # how it measured (filled in later)

    @property
    def entry_id(self) -> str:
        return f"mdl:{self.id}"


def _unjson(text: object) -> dict[str, Json]:
    value = _loads(text)
    return value if isinstance(value, dict) else {}


def _norm(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


class ModelFiles:
    """Model-file records (lineage and measurements) on the journal's connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.path

    def record_model_file(
        self,
        path: str | os.PathLike[str],
        *,
        parent_path: str | os.PathLike[str] | None = None,
        quantization: str = "",
        origin: str = "quantize",
        size_bytes: int | None = None,
        details: Mapping[str, Json] | None = None,
        ts: float | None = None,
    ) -> ModelFile:
        """Journal a model file (a quantised one with its parent). The parent, when it is not
        journaled yet, is recorded first as an ``import`` so that the lineage is a chain of rows."""
        if origin not in MODEL_ORIGINS:
            raise JournalError(f"model origin must be one of {', '.join(MODEL_ORIGINS)}, got {origin!r}")
        path = _norm(path)
        parent = _norm(parent_path) if parent_path else ""
        if size_bytes is None:
            try:
                size_bytes = os.path.getsize(path)
            except OSError:
                size_bytes = 0
        now = ts or time.time()
        with self.db.write("record a model file", durable=True) as conn:
            parent_id = None
            if parent:
                row = conn.execute("SELECT id FROM model_files WHERE path = ? ORDER BY id DESC LIMIT 1",
                                   (parent,)).fetchone()
                if row:
                    parent_id = row[0]
                else:
                    try:
                        parent_size = os.path.getsize(parent)
                    except OSError:
                        parent_size = 0
                    parent_id = conn.execute(
                        "INSERT INTO model_files (ts, path, parent_id, parent_path, quantization, origin, size_bytes,"
                        " details, metrics) VALUES (?,?,?,?,?,?,?,?,?)",
                        (now, parent, None, "", "", "import", parent_size, "{}", "{}"),
                    ).lastrowid
            new_id = conn.execute(
                "INSERT INTO model_files (ts, path, parent_id, parent_path, quantization, origin, size_bytes, details,"
                " metrics) VALUES (?,?,?,?,?,?,?,?,?)",
                (now, path, parent_id, parent, quantization, origin, int(size_bytes), _dumps(dict(details or {})), "{}"),
            ).lastrowid
            conn.execute(
                "INSERT INTO events (ts, kind, config_id, data) "
                "VALUES (?, 'model_file', (SELECT id FROM configs WHERE active = 1), ?)",
                (now, _dumps({"model_file": f"mdl:{new_id}", "path": path, "parent": parent,
                             "quantization": quantization, "origin": origin, "size_bytes": int(size_bytes)})),
            )
        return self.get_model_file(new_id)

    def set_model_metrics(self, model_id: int, metrics: Mapping[str, Json], *, merge: bool = True) -> ModelFile:
        """Keep a variant's measurements (merged into what was measured before, by default)."""
        current = self.get_model_file(model_id)
        values = {**current.metrics, **dict(metrics)} if merge else dict(metrics)
        with self.db.write("record model measurements") as conn:
            conn.execute("UPDATE model_files SET metrics = ? WHERE id = ?", (_dumps(values), model_id))
        return self.get_model_file(model_id)

    def get_model_file(self, model_id: int) -> ModelFile:
        row = self.db.one("SELECT * FROM model_files WHERE id = ?", (model_id,))
        if row is None:
            raise JournalError(f"no model file mdl:{model_id} in journal {self.path}")
        return _model(row)

    def model_file(self, path: str | os.PathLike[str]) -> ModelFile | None:
        """The newest record of the file at ``path``, or None."""
        row = self.db.one("SELECT * FROM model_files WHERE path = ? ORDER BY id DESC LIMIT 1",
                        (_norm(path),))
        return _model(row) if row else None

    def model_files(self, limit: int = 100, *, parent_path: str | os.PathLike[str] | None = None) -> list[ModelFile]:
        if parent_path is not None:
            rows = self.db.query("SELECT * FROM model_files WHERE parent_path = ? ORDER BY id DESC LIMIT ?",
                               (_norm(parent_path), limit))
        else:
            rows = self.db.query("SELECT * FROM model_files ORDER BY id DESC LIMIT ?", (limit,))
        return [_model(r) for r in rows]

    def model_lineage(self, path: str | os.PathLike[str]) -> list[ModelFile]:
        """The file and its ancestors, the file first."""
        chain: list[ModelFile] = []
        current = self.model_file(path)
        seen: set[int] = set()
        while current is not None and current.id not in seen:
            chain.append(current)
            seen.add(current.id)
            current = self.get_model_file(current.parent_id) if current.parent_id is not None else None
        return chain


def _model(row: Row) -> ModelFile:
    return ModelFile(
        id=row["id"], ts=row["ts"], path=row["path"], parent_id=row["parent_id"], parent_path=row["parent_path"],
        quantization=row["quantization"], origin=row["origin"], size_bytes=int(row["size_bytes"] or 0),
        details=_unjson(row["details"]), metrics=_unjson(row["metrics"]),
    )
