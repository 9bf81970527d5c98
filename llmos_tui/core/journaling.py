"""Connects a running Operator to the journal: engine events, configuration versions, chats.

Everything goes through the JournalWriter's queue, so nothing here blocks the UI thread or
the supervisor's reader thread; a journal failure never reaches the engine or the chat.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from llmos_tui.core.chat import ChatSession, ChatMessage
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineEvent, Supervisor
from llmos_tui.engine.versions import params_of
from llmos_tui.errors import LlmosError
from llmos_tui.journal.recorder import attach
from llmos_tui.journal.store import Journal
from llmos_tui.journal.writer import JournalWriter

log = logging.getLogger("llmos_tui.journal")


class JournalLink:
    def __init__(self, writer: JournalWriter, supervisor: Supervisor, chat: ChatSession) -> None:
        self.writer = writer
        self.supervisor = supervisor
        self.chat = chat
        self.config_id: int | None = None  # the version the engine runs now
        self._good_marked: set[int] = set()
        self.next_source = "operator"  # who asked for the next load (repair, tuner, undo...)
        self._detach: list[Callable[[], None]] = [
            attach(supervisor, writer),
            supervisor.subscribe(self._on_engine_event),
        ]
        chat.add_listener(self._on_message)

    # ---- configuration versions ------------------------------------------------------
    def _on_engine_event(self, event: EngineEvent) -> None:
        if event.kind == "loaded":
            params = self.supervisor.params
            source, self.next_source = self.next_source, "operator"
            self.writer.submit(lambda j: self._record_loaded(j, params, source))
        elif event.kind == "request_done" and event.data.get("status") == "done":
            config_id = self.config_id
            if config_id is not None and config_id not in self._good_marked:
                self._good_marked.add(config_id)  # served a full reply: the last-known-good
                self.writer.submit(lambda j: j.mark_good(config_id))

    def _record_loaded(self, journal: Journal, params: EngineParams, source: str) -> int:
        active = journal.active_config()
        if active is not None and _same(_params_of(active), params):
            self.config_id = active.id
        else:
            self.config_id = journal.record_config(params, source=source).id
        return self.config_id

    # ---- chats -----------------------------------------------------------------------
    def _on_message(self, session: ChatSession, message: ChatMessage) -> None:
        model = self.supervisor.model_info.name if self.supervisor.model_info else ""

        def write(j: Journal) -> None:
            if session.chat_id is None:
                title = message.content.strip().splitlines()[0][:60] if message.content.strip() else "chat"
                session.chat_id = j.create_chat(title, model=model, config_id=self.config_id)
            j.add_message(session.chat_id, message.role, message.content, metrics=message.metrics or None,
                          status=message.status, ts=message.ts)

        self.writer.submit(write)

    def close(self) -> None:
        for detach in self._detach:
            detach()
        self._detach.clear()
        self.writer.close()


def _params_of(config: Any) -> EngineParams | None:
    try:
        return params_of(config)
    except LlmosError:  # written by another release with values this one refuses
        return None


def _same(a: EngineParams | None, b: EngineParams) -> bool:
    return a is not None and a.to_dict() == b.to_dict()


def resume_messages(journal: Journal, chat_id: int) -> list[ChatMessage]:
    """A chat from the journal as ChatSession messages, to reopen and continue it."""
    return [
        ChatMessage(m.role, m.content, status=m.status, metrics=dict(m.metrics or {}), ts=m.ts)
        for m in journal.chat_messages(chat_id)
    ]


def chat_summaries(journal: Journal, limit: int = 50) -> list[dict[str, Any]]:
    return [{"id": c.id, "title": c.title or f"chat {c.id}", "model": c.model, "updated": c.updated}
            for c in journal.list_chats(limit)]


class TelemetryHistory:
    """Keeps telemetry at a lower rate: the mean of each series over every `period` seconds
    becomes one journal row (older rows are pruned by the journal's retention)."""

    def __init__(self, writer: JournalWriter, period: float = 60.0) -> None:
        self.writer = writer
        self.period = period
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._started: float | None = None

    def __call__(self, sample: Any) -> None:  # a Sampler subscriber
        from llmos_tui.telemetry.series import sample_values

        if self._started is None:
            self._started = sample.ts
        for name, value in sample_values(sample).items():
            if name == "ts" or value is None or value != value:  # None or NaN: not measured
                continue
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1
        if sample.ts - self._started >= self.period:
            summary = {name: self._sums[name] / self._counts[name] for name in self._sums}
            summary["samples"] = max(self._counts.values(), default=0)
            self.writer.record_telemetry(summary, ts=sample.ts)
            self._sums.clear()
            self._counts.clear()
            self._started = sample.ts


def resume_params(journal: Journal, configured: EngineParams) -> tuple[EngineParams, str | None]:
    """What the engine should start with: the journal's active configuration when it grew
    (by repairs, tuning or undo) out of exactly what the operator configures now; otherwise
    the configured one. So an undo or a repair survives a restart, and an edited config file
    or a command-line option still wins."""
    active = journal.active_config()
    if active is None or active.source == "operator":
        return configured, None
    base, seen = active, set()
    while base is not None and base.source != "operator" and base.id not in seen:
        seen.add(base.id)
        base = journal.get_config(base.parent_id) if base.parent_id is not None else None
    if base is None or not _same(_params_of(base), configured):
        return configured, None
    params = _params_of(active)
    if params is None or _same(params, configured):
        return configured, None
    return params, (f"starting with {active.entry_id} from the journal ({active.source}: {active.note or 'no note'}); "
                    f"your configured settings are {base.entry_id}")
