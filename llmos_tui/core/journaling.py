"""Connects a running Operator to the journal: engine events, configuration versions, chats.

Everything goes through the JournalWriter's queue, so nothing here blocks the UI thread or
the supervisor's reader thread; a journal failure never reaches the engine or the chat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from llmos_tui.core.changes import recorded_base
from llmos_tui.core.chat import ChatSession, ChatMessage
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineEvent, Supervisor
from llmos_tui.engine.versions import params_of
from llmos_tui.errors import LlmosError
from llmos_tui.journal.engine_events import attach
from llmos_tui.journal.store import Journal
from llmos_tui.journal.records import CONFIG_SOURCES, ConfigVersion
from llmos_tui.journal.writer import JournalWriter

if TYPE_CHECKING:
    from llmos_tui.telemetry.sample import Sample

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
            source = source if source in CONFIG_SOURCES else "operator"  # a face's restart is the operator's
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


def _params_of(config: ConfigVersion) -> EngineParams | None:
    try:
        return params_of(config)
    except LlmosError:  # written by another release with values this one refuses
        return None


def _same(a: EngineParams | None, b: EngineParams) -> bool:
    return a is not None and a.to_dict() == b.to_dict()


def resume_messages(journal: Journal, chat_id: int) -> list[ChatMessage]:
    """A chat from the journal as ChatSession messages, to reopen and continue it (JournalError: no
    such chat; "resumed chat:99999 (0 messages)" claimed a chat that does not exist)."""
    journal.get_chat(chat_id)
    return [
        ChatMessage(m.role, m.content, status=m.status, metrics=dict(m.metrics or {}), ts=m.ts)
        for m in journal.chat_messages(chat_id)
    ]


def chat_summaries(journal: Journal, limit: int = 50) -> list[dict[str, object]]:
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

    def __call__(self, sample: "Sample") -> None:  # a Sampler subscriber
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


@dataclass(frozen=True)
class Resume:
    """What the engine starts with, and the one line that says why (None: the configured settings,
    nothing to say). ``problem``: the journal's active version was refused (it goes to op.problems)."""

    params: EngineParams
    note: str | None = None
    problem: str | None = None


def resume_params(journal: Journal, configured: EngineParams,
                  fit: Callable[[EngineParams], str | None] | None = None) -> Resume:
    """What the engine should start with.

    The journal's active version, when it was applied on top of exactly what the operator
    configures now (its recorded base, or for older journals its chain of repairs, tuning and
    undo back to an operator version equal to the configured one); otherwise the configured one.
    So an apply, an undo or a repair survives a restart, from a one-shot core too, and an edited
    config file or a command-line option still wins.

    Vetted: an active version that is marked bad, that was never verified (the process ended in
    the middle of the change) or that no longer fits (``fit`` says why not) rolls back to its
    nearest good ancestor (or the configured settings), journaled, with a one-line problem."""
    active = journal.active_config()
    if active is None:
        return Resume(configured)
    base = recorded_base(journal, active.id)
    deferred = bool(base is not None and base.get("deferred"))
    if not ((base is not None and base.get("configured") == configured.to_dict())
            or _grew_from(journal, active, configured)):
        return Resume(configured)
    params = _params_of(active)
    if params is None or _same(params, configured):
        return Resume(configured)
    why = _refusal(journal, active, params, deferred, fit)
    if why is None:
        return Resume(params, f"starting with {active.entry_id} from the journal ({active.source}: "
                              f"{active.note or 'no note'}); your configured settings differ")
    return _roll_back(journal, active, configured, why, fit)


def _grew_from(journal: Journal, active: ConfigVersion, configured: EngineParams) -> bool:
    """Older journals (no recorded base): the chain of non-operator versions leads back to an
    operator version equal to the configured settings."""
    if active.source == "operator":
        return False
    base: ConfigVersion | None = active
    seen: set[int] = set()
    while base is not None and base.source != "operator" and base.id not in seen:
        seen.add(base.id)
        base = journal.get_config(base.parent_id) if base.parent_id is not None else None
    return base is not None and _same(_params_of(base), configured)


def _refusal(journal: Journal, version: ConfigVersion, params: EngineParams, deferred: bool,
             fit: Callable[[EngineParams], str | None] | None) -> str | None:
    if version.standing == "bad":
        return f"it is marked bad ({version.reason or 'no reason given'})"
    if version.standing != "good" and not deferred:
        action = journal.action_for_config(version.id)
        if action is not None and action.state == "applied":
            return "it was never verified (the process ended during the change)"
    return fit(params) if fit is not None else None


def _roll_back(journal: Journal, active: ConfigVersion, configured: EngineParams, why: str,
               fit: Callable[[EngineParams], str | None] | None) -> Resume:
    action = journal.action_for_config(active.id)
    if action is not None and action.state == "applied":
        journal.set_action_state(action.id, "failed", note=f"not resumed: {why}")
    target: ConfigVersion | None = None
    seen = {active.id}
    parent_id = active.parent_id
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        parent = journal.get_config(parent_id)
        params = _params_of(parent)
        if params is not None and parent.standing != "bad" and (
                parent.standing == "good" or _same(params, configured)) and (fit is None or fit(params) is None):
            target = parent
            break
        parent_id = parent.parent_id
    if target is not None and (params := _params_of(target)) is not None:
        journal.activate(target.id)
        journal.record_event("resume_rollback", {"from": active.entry_id, "to": target.entry_id, "why": why},
                             config_id=target.id)
        return Resume(params, problem=f"resume: {active.entry_id} not started, {why}; rolled back to "
                                      f"{target.entry_id} ({params.summary()})")
    journal.record_event("resume_rollback", {"from": active.entry_id, "to": None, "why": why})
    return Resume(configured, problem=f"resume: {active.entry_id} not started, {why}; starting with the "
                                      f"configured settings ({configured.summary()})")
