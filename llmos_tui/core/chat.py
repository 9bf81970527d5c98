"""A conversation with the engine: the message list, sampling settings, and what each reply measured.

Shared by the TUI and the console; a listener hook lets the journal persist every message.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from llmos_tui.config import ChatSettings
from llmos_tui.engine.supervisor import Reply, Supervisor


@dataclass
class ChatMessage:
    role: str  # system, user, assistant
    content: str
    status: str = "done"  # done, cancelled, interrupted, error
    metrics: dict[str, object] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


log = logging.getLogger("llmos_tui.core.chat")
MessageListener = Callable[["ChatSession", ChatMessage], None]


class ChatSession:
    def __init__(self, supervisor: Supervisor, settings: ChatSettings | None = None) -> None:
        self.supervisor = supervisor
        self.settings = settings or ChatSettings()
        self.messages: list[ChatMessage] = []
        self.chat_id: int | None = None  # set by the journal when it records this chat
        self._listeners: list[MessageListener] = []
        self.before_send: Callable[[str, list[ChatMessage]], None] | None = None
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reset/load: a reply still streaming then is not recorded

    def add_listener(self, listener: MessageListener) -> None:
        self._listeners.append(listener)

    def _record(self, message: ChatMessage) -> None:
        with self._lock:
            self.messages.append(message)
        for listener in self._listeners:
            try:
                listener(self, message)
            except Exception:  # persisting must never break chatting; say so in the log
                log.exception("chat listener %r failed", listener)

    def wire_messages(self) -> list[dict[str, str]]:
        """What the model sees: system prompt, then every completed turn (partial replies included)."""
        out: list[dict[str, str]] = []
        if self.settings.system_prompt:
            out.append({"role": "system", "content": self.settings.system_prompt})
        for m in self.messages:
            if m.role in ("user", "assistant") and (m.content or m.role == "user"):
                out.append({"role": m.role, "content": m.content})
        return out

    def send(self, prompt: str, *, on_piece: Callable[[str], None] | None = None, **sampling: float | int | None) -> Reply:
        """Ask the engine. The user message is recorded once the engine took the request (a
        refused send leaves no trace to repeat), the reply when it ends."""
        user = ChatMessage("user", prompt)
        args = {**self.settings.sampling(), **sampling}
        if self.before_send is not None:  # the online adapter picks this request's threads
            try:
                self.before_send(prompt, self.messages)
            except Exception:  # noqa: BLE001 - a learner must never stop a chat
                log.exception("before_send hook failed")
        # a conversation longer than the context keeps going: the engine leaves out the oldest turns
        # (the journal and this session keep them all) and the reply's metrics say how many
        reply = self.supervisor.chat(self.wire_messages() + [{"role": "user", "content": prompt}],
                                     on_piece=on_piece, fit_context=True, **args)
        self._record(user)
        generation = self._generation
        reply.add_done_callback(lambda r: self._on_reply_done(r, generation))
        return reply

    def _on_reply_done(self, reply: Reply, generation: int) -> None:
        if generation != self._generation:  # the conversation was reset or replaced meanwhile
            return
        self._record(ChatMessage("assistant", reply.text, status=reply.status, metrics=dict(reply.metrics)))

    def reset(self) -> None:
        """Start a fresh conversation; the engine forgets its KV cache too."""
        with self._lock:
            self._generation += 1
            self.messages.clear()
        self.chat_id = None
        if self.supervisor.is_ready:
            try:
                self.supervisor.reset_context()
            except Exception:
                pass

    def load(self, messages: list[ChatMessage], chat_id: int | None = None) -> None:
        """Resume an earlier conversation (from the journal)."""
        with self._lock:
            self._generation += 1
            self.messages = list(messages)
        self.chat_id = chat_id
