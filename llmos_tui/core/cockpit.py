"""What a face drives: the surface the TUI and the console use of the core.

Two things satisfy it: :class:`~llmos_tui.core.operator.Operator` (the embedded core, built by
``build_core``) and :class:`~llmos_tui.serve.attached.AttachedOperator` (a running daemon's core,
over its control socket). A face written against this surface works on both; whatever is not
here (the change transaction itself, the journal writer's writes) stays inside the core that
owns the engine.

The parts are read, never replaced: ``supervisor`` (state, model_info, params, stats(),
subscribe, last_error), ``chat`` (a ChatSession: send, reset, load), ``doctor`` (findings,
subscribe, accept/reject/silence, kill_switch), ``sampler`` (latest, subscribe, series),
``journal_writer`` (``submit(fn)`` reads the journal on its thread, ``flush``). Every change
goes through a verb.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from llmos_tui.config import Config
    from llmos_tui.core.changes import ChangeResult
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.supervisor import Json, Reply

__all__ = ["Cockpit", "SharedVerbs"]


class Cockpit(Protocol):
    config: "Config"
    mode: str
    face: str
    problems: list[str]
    replay: "dict[str, Json] | None"
    supervisor: Any
    chat: Any
    doctor: Any
    sampler: Any
    journal_writer: Any
    adapter: Any
    attached: str | None  # None: an embedded core; else which daemon this face drives (one line)

    # ---- verbs ------------------------------------------------------------------------------------
    def start_engine_in_background(self, done: Callable[[str | None], object] | None = None) -> threading.Thread: ...

    def try_start_engine(self) -> str | None: ...

    def restart_engine(self, params: "EngineParams | None" = None, reason: str = "operator") -> str | None: ...

    def send(self, prompt: str, **sampling: float | int | None) -> "Reply": ...

    def cancel(self) -> None: ...

    def apply(self, changes: "EngineParams | dict[str, object]", *, reason: str = "", source: str = "operator",
              verify: Callable[[], str | None] | None = None) -> "ChangeResult": ...

    def undo(self, entry_id: str, *, wait_s: float = 0.0) -> "ChangeResult": ...

    def reset_start_limit(self) -> str: ...

    def set_adapt_mode(self, mode: str) -> str: ...

    def snapshot(self) -> "dict[str, Json]": ...

    def subscribe(self, *, samples: Callable[[Any], object] | None = None,
                  findings: Callable[[Any], object] | None = None,
                  events: Callable[[Any], object] | None = None,
                  changes: Callable[[Any], object] | None = None) -> Callable[[], None]: ...

    @property
    def tuner(self) -> Any: ...

    def close(self) -> None: ...


class SharedVerbs:
    """The verbs that read the same on an embedded core and an attached one: both hold a
    ``chat`` session and a ``supervisor`` view, and start the engine through their own
    ``try_start_engine`` (the attached one has nothing to start: the daemon runs the engine)."""

    chat: Any
    supervisor: Any

    def try_start_engine(self) -> str | None:  # pragma: no cover - each core has its own
        raise NotImplementedError

    def start_engine_in_background(self, done: Callable[[str | None], object] | None = None) -> threading.Thread:
        def run() -> None:
            error = self.try_start_engine()
            if done is not None:
                done(error)

        thread = threading.Thread(target=run, name="engine-start", daemon=True)
        thread.start()
        return thread

    def send(self, prompt: str, **sampling: float | int | None) -> "Reply":
        """Send a prompt in the current conversation; returns a streaming Reply at once."""
        return self.chat.send(prompt, **sampling)

    def cancel(self) -> None:
        """Stop this face's reply (an attached face's: other clients' replies are theirs)."""
        self.supervisor.cancel()
