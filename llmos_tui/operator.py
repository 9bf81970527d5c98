"""The headless core: one object that owns the engine, the conversation, telemetry, the journal
and the doctor. Every face (TUI, console, CLI subcommands, plugin scripts) drives this.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from llmos_tui.chat import ChatSession
from llmos_tui.config import Config
from llmos_tui.engine.gguf_info import ModelInfo
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import Supervisor
from llmos_tui.errors import LlmosError


class Operator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.supervisor = Supervisor(config.engine)
        self.chat = ChatSession(self.supervisor, config.chat)
        self.problems: list[str] = []  # non-fatal start-up problems, shown by every face
        self._closers: list[Callable[[], None]] = []

    # ---- engine ---------------------------------------------------------------------
    def start_engine(self, params: EngineParams | None = None) -> ModelInfo:
        return self.supervisor.start(params)

    def try_start_engine(self, params: EngineParams | None = None) -> str | None:
        """Start the engine; return a one-line error instead of raising (for faces)."""
        try:
            self.start_engine(params)
        except LlmosError as exc:
            return str(exc)
        return None

    def restart_engine(self, params: EngineParams | None = None, reason: str = "operator") -> str | None:
        try:
            self.supervisor.restart(params, reason=reason)
        except LlmosError as exc:
            return str(exc)
        return None

    def start_engine_in_background(self, done: Callable[[str | None], Any] | None = None) -> threading.Thread:
        def run() -> None:
            error = self.try_start_engine()
            if done is not None:
                done(error)

        thread = threading.Thread(target=run, name="engine-start", daemon=True)
        thread.start()
        return thread

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                pass
        self._closers.clear()
        self.supervisor.stop()


def build_operator(config: Config, *, replay: str | None = None, replay_speed: float = 1.0) -> Operator:
    """The Operator with every part of the core this build has, wired together."""
    op = Operator(config)
    return op
