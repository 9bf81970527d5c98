"""The journal's values and vocabulary: record types, entry ids, allowed states, JSON helpers.

Shared by the store and its record-kind modules; imports nothing of the rest of llmos-tui."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, TypeAlias

from llmos_tui.errors import JournalError
from llmos_tui.journal.timeparse import format_ts

# What SQLite hands back (and takes as a parameter) for one column.
SqlValue: TypeAlias = int | float | str | bytes | None
# One row as a dict, column -> value; JSON columns are decoded in place by the repositories,
# so a value is whatever the column holds: SQLite's types or decoded JSON.
Row: TypeAlias = dict[str, Any]
# Decoded JSON (a dict, a list, a string, a number, a bool or None).
Json: TypeAlias = Any
# Columns that hold JSON text, decoded by `show` and `export`.
JSON_COLUMNS = ("params", "data", "evidence", "metrics", "space", "details")

CONFIG_SOURCES = ("operator", "tuner", "repair", "plugin", "undo", "adapt")
PROPOSERS = ("operator", "auto", "plugin")
ACTION_STATES = ("proposed", "applied", "verified", "failed", "rolled_back", "rejected")
# Allowed moves of an action's state; anything else is a bug in the caller.
ACTION_MOVES: dict[str, tuple[str, ...]] = {
    "proposed": ("applied", "rejected", "failed"),
    "applied": ("verified", "failed", "rolled_back"),
    "verified": ("rolled_back",),
    "failed": ("rolled_back",),
    "rolled_back": (),
    "rejected": (),
}
MESSAGE_STATUSES = ("done", "cancelled", "interrupted", "error", "streaming")


# ---- values ----------------------------------------------------------------
@dataclass(frozen=True)
class ConfigVersion:
    id: int
    ts: float
    model_path: str
    params: dict[str, Json]
    source: str
    parent_id: int | None
    active: bool
    standing: str  # unverified | good | bad
    reason: str = ""
    good_ts: float | None = None
    note: str = ""

    @property
    def entry_id(self) -> str:
        return f"cfg:{self.id}"

    def settings(self) -> dict[str, Json]:
        """The parameters with the model path, as plain values: the engine's side turns them into
        its own parameter type (``llmos_tui.engine.versions.params_of``); the journal stays a leaf."""
        return {**self.params, "model_path": self.model_path}

    def summary(self) -> str:
        return _params_summary(self.model_path, self.params)


@dataclass(frozen=True)
class Action:
    id: int
    ts: float
    finding_id: int | None
    kind: str
    params: dict[str, Json]
    proposed_by: str
    state: str
    updated: float
    config_before: int | None
    config_after: int | None
    note: str = ""
    history: tuple[Row, ...] = ()

    @property
    def entry_id(self) -> str:
        return f"act:{self.id}"


@dataclass(frozen=True)
class MessageRecord:
    id: int
    chat_id: int
    ts: float
    role: str
    content: str
    metrics: dict[str, Json]
    status: str


@dataclass(frozen=True)
class Chat:
    id: int
    created: float
    updated: float
    title: str
    model: str
    config_id: int | None


@dataclass(frozen=True)
class Entry:
    """One line of the unified timeline; ``id`` is what `journal show` / `undo` accept."""

    id: str
    type: str
    kind: str
    ts: float
    summary: str
    undoable: bool = False

    @property
    def time(self) -> str:
        return format_ts(self.ts)


@dataclass(frozen=True)
class _Source:
    prefix: str
    type: str
    table: str
    time_col: str
    kind_expr: str
    search_expr: str
    in_timeline: bool = True


SOURCES: tuple[_Source, ...] = (
    _Source("cfg", "config", "configs", "ts", "source", "source||' '||model_path||' '||params||' '||note||' '||standing"),
    _Source("evt", "event", "events", "ts", "kind", "kind||' '||data"),
    _Source("fnd", "finding", "findings", "ts", "detector", "detector||' '||severity||' '||title||' '||evidence"),
    _Source("act", "action", "actions", "ts", "kind", "kind||' '||state||' '||proposed_by||' '||params||' '||note"),
    _Source("std", "study", "studies", "started", "objective", "name||' '||objective||' '||space"),
    _Source("trl", "trial", "trials", "ts", "outcome", "outcome||' '||params||' '||metrics"),
    _Source("chat", "chat", "chats", "created", "model", "title||' '||model"),
    _Source("mdl", "model", "model_files", "ts", "origin", "origin||' '||path||' '||quantization||' '||metrics"),
    _Source("msg", "message", "messages", "ts", "role", "role||' '||content", in_timeline=False),
    _Source("tel", "telemetry", "telemetry", "ts", "'sample'", "data", in_timeline=False),
)
_BY_PREFIX = {s.prefix: s for s in SOURCES}
_BY_NAME = {**_BY_PREFIX, **{s.type: s for s in SOURCES}, **{s.table: s for s in SOURCES}}


def parse_entry_id(entry_id: str | int) -> tuple[str, int]:
    """``"evt:40"`` -> ``("evt", 40)``; type names work too (``event:40``); a bare number is a config."""
    if isinstance(entry_id, int):
        return "cfg", entry_id
    text = str(entry_id).strip()
    prefix, sep, number = text.rpartition(":")
    if not sep:
        prefix, number = "cfg", text
    source = _BY_NAME.get(prefix.lower())
    if source is None or not number.isdigit():
        known = ", ".join(f"{s.prefix}:N" for s in SOURCES)
        raise JournalError(f"bad journal entry id {text!r}: expected one of {known}")
    return source.prefix, int(number)


def _dumps(value: object) -> str:
    # default=str: an odd value in event data (a Path, an exception) is kept as text, never lost.
    return json.dumps(value if value is not None else {}, default=str, separators=(",", ":"))


def _loads(text: object) -> Json:
    if not isinstance(text, str):
        return {} if text is None else text  # already decoded, or NULL
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _params_summary(model_path: str, params: Mapping[str, Json]) -> str:
    parts = []
    if model_path:
        parts.append(os.path.basename(model_path))
    short = {
        "n_gpu_layers": "ngl", "n_ctx": "ctx", "n_batch": "batch", "n_ubatch": "ubatch",
        "n_threads": "threads", "flash_attn": "fa", "type_k": "k", "type_v": "v",
    }
    parts.extend(f"{label}={params[key]}" for key, label in short.items() if key in params)
    return " ".join(parts)


def _short_data(data: Json, limit: int = 90) -> str:
    if not isinstance(data, dict):
        return str(data)[:limit]
    bits = []
    for key, value in data.items():
        if isinstance(value, (list, dict)):
            continue  # log lines and nested evidence belong in `show`, not on one line
        bits.append(f"{key}={value}")
    return " ".join(bits)[:limit]


def _diff(before: Mapping[str, Json], after: Mapping[str, Json]) -> dict[str, list[Json]]:
    keys = sorted(set(before) | set(after))
    return {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}
