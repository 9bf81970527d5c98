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
        self.sampler: Any = None  # telemetry.Sampler, when telemetry is wired
        self.journal_writer: Any = None  # journal.JournalWriter, when the journal opened
        self.journal_link: Any = None
        self.doctor: Any = None
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

    def undo(self, entry_id: str) -> str:
        """Revert a journaled configuration change and apply the result to the engine."""
        if self.journal_writer is None:
            raise LlmosError("the journal is not open; nothing can be undone")
        config = self.journal_writer.submit(lambda j: j.undo(entry_id)).result(timeout=30)
        params = config.engine_params()
        if self.journal_link is not None:
            self.journal_link.next_source = "undo"
        error = self.restart_engine(params, reason=f"undo {entry_id}")
        if error:
            return f"undone in the journal ({config.entry_id}), but the engine did not start: {error}"
        return f"undone: now running {config.entry_id} ({params.summary()})"

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


def build_operator(config: Config, *, replay: str | None = None, replay_speed: float = 1.0,
                   with_journal: bool = True, with_telemetry: bool = True, with_doctor: bool = True) -> Operator:
    """The Operator with every part of the core wired together.

    A part that cannot start (a locked journal, a trace that cannot be read) is left out
    with a one-line problem that every face shows; the engine and chat still work.
    """
    op = Operator(config)
    if with_journal:
        _attach_journal(op)
    if with_telemetry:
        _attach_telemetry(op, replay, replay_speed)
    if with_doctor:
        _attach_doctor(op)
    return op


def _attach_journal(op: Operator) -> None:
    from llmos_tui.journal.link import JournalLink, resume_params
    from llmos_tui.journal.writer import JournalWriter

    try:
        writer = JournalWriter(op.config.journal_file)
    except LlmosError as exc:
        op.problems.append(f"journal disabled: {exc}")
        return
    op.journal_writer = writer
    try:
        params, note = writer.submit(lambda j: resume_params(j, op.config.engine)).result(timeout=10)
    except Exception as exc:  # an unreadable history must not stop the engine
        params, note = op.config.engine, f"journal: cannot read the active configuration ({exc})"
    if note:
        op.supervisor.params = params
        op.problems.append(note)
    op.journal_link = JournalLink(writer, op.supervisor, op.chat)
    op.on_close(op.journal_link.close)


def _attach_telemetry(op: Operator, replay: str | None, replay_speed: float) -> None:
    from llmos_tui.telemetry.sampler import Sampler

    if replay:
        from llmos_tui.telemetry.replay import ReplaySource

        source = ReplaySource(replay, speed=replay_speed, loop=True)  # TraceError is an LlmosError: fatal, said once
        sampler = Sampler(source, interval=source.interval, engine_stats=None)
    else:
        sampler = Sampler(interval=op.config.telemetry_interval, engine_stats=op.supervisor.stats)
    op.sampler = sampler
    if op.journal_writer is not None and not replay:
        from llmos_tui.journal.link import TelemetryHistory

        sampler.subscribe(TelemetryHistory(op.journal_writer))
    sampler.start()
    op.on_close(sampler.close)


def _attach_doctor(op: Operator) -> None:
    from llmos_tui.doctor import Doctor
    from llmos_tui.doctor.policy import Policy

    try:
        policy = Policy.from_config(op.config.doctor)
    except LlmosError as exc:
        op.problems.append(f"doctor disabled: {exc}")
        return
    doctor = Doctor(op.supervisor, op.sampler, op.journal_writer, policy)
    if op.config.readonly:
        doctor.dry_run = True  # read-only: the doctor says what it would do, and does nothing
    doctor.start()
    doctor.watch_chat(op.chat)
    op.doctor = doctor
    op.on_close(doctor.stop)
