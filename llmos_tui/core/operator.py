"""The headless core's facade, and the public scripting API.

An :class:`Operator` owns the engine, the conversation, telemetry, the journal, the doctor
and the change transaction. Every face (TUI, console, CLI subcommands, plugin scripts)
drives one, built by :func:`llmos_tui.core.wiring.build_core`::

    from llmos_tui.core import build_core, load_config

    op = build_core(load_config(), mode="oneshot")
    op.start_engine()
    reply = op.send("What is VRAM?")
    print(reply.wait(60).text, reply.metrics["gen_tps"])
    print(op.apply({"n_ctx": 1024}, reason="smaller context").message)
    print(op.undo(f"cfg:{op.snapshot()['journal']['active_config']}").message)
    op.close()

Verbs: :meth:`start_engine`, :meth:`send`, :meth:`cancel`, :meth:`apply`, :meth:`undo`,
:meth:`restart_engine`, :meth:`snapshot`, :meth:`subscribe`, :meth:`tune`, :meth:`close`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from llmos_tui.config import Config
from llmos_tui.core.changes import Changes
from llmos_tui.core.chat import ChatSession
from llmos_tui.engine.gguf_info import ModelInfo
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import Reply, Supervisor
from llmos_tui.errors import LlmosError

__all__ = ["Operator", "build_operator"]


class Operator:
    """The wired core. Build it with ``build_core``; the attributes are the parts."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.mode = "live"
        self.supervisor = Supervisor(config.engine)
        self.chat = ChatSession(self.supervisor, config.chat)
        self.problems: list[str] = []  # non-fatal start-up problems, shown by every face
        self.sampler: Any = None  # telemetry.Sampler, when telemetry is wired
        self.journal_writer: Any = None  # journal.JournalWriter, when the journal opened
        self.journal_link: Any = None
        self.doctor: Any = None
        # the one path for configuration changes (build_core rewires it with the journal)
        self.changes: Any = Changes(self.supervisor, None, readonly=config.readonly)
        self.endpoint: Any = None
        self.replay: dict[str, Any] | None = None  # the trace when telemetry is replayed
        self.started = time.time()
        self._tuner: Any = None
        self.adapter: Any = None  # tuning.adapt.OnlineAdapter once the operator turns it on
        self.face = "script"  # tui, console or script: what streams the replies (the learner's context)
        self._closers: list[Callable[[], None]] = []
        self._closed = False

    # ---- engine ---------------------------------------------------------------------
    def start_engine(self, params: EngineParams | None = None) -> ModelInfo:
        """Start the engine (blocking) on its configured parameters."""
        if params is not None and params.to_dict() != self.supervisor.params.to_dict():
            raise LlmosError("new parameters go through apply() (the change transaction), not start_engine()")
        with self.changes.holding(f"{self.face}: start"):
            return self.supervisor.start()

    def try_start_engine(self, params: EngineParams | None = None) -> str | None:
        """Start the engine; return a one-line error instead of raising (for faces)."""
        try:
            self.start_engine(params)
        except LlmosError as exc:
            return str(exc)
        return None

    def restart_engine(self, params: EngineParams | None = None, reason: str = "operator") -> str | None:
        """Restart on the same parameters (after a crash, say); None or a one-line error.
        A restart with other parameters is a configuration change: it goes through apply()."""
        if params is not None and params.to_dict() != self.supervisor.params.to_dict():
            result = self.apply(params, reason=reason)
            return None if result.ok else result.message
        if self.config.readonly:
            return "read-only mode: restarting the engine is disabled"
        result = self.changes.restart(source=self.face, reason=reason)
        return None if result.ok else result.message

    def start_engine_in_background(self, done: Callable[[str | None], Any] | None = None) -> threading.Thread:
        def run() -> None:
            error = self.try_start_engine()
            if done is not None:
                done(error)

        thread = threading.Thread(target=run, name="engine-start", daemon=True)
        thread.start()
        return thread

    # ---- chat -----------------------------------------------------------------------
    def send(self, prompt: str, **sampling: Any) -> Reply:
        """Send a prompt in the current conversation; returns a streaming Reply at once."""
        return self.chat.send(prompt, **sampling)

    def cancel(self) -> None:
        """Stop the reply being streamed."""
        self.supervisor.cancel()

    # ---- configuration changes (all through the change transaction) ------------------
    def apply(self, changes: EngineParams | dict[str, Any], *, reason: str = "", source: str = "operator",
              verify: Callable[[], str | None] | None = None) -> Any:
        """Change the engine's configuration: vetted, journaled, reloaded, verified, rolled back
        on failure. Blocking. Returns a ChangeResult (``.ok``, ``.state``, ``.message``)."""
        return self.changes.propose(changes, source=source, reason=reason or "operator change", verify=verify)

    def undo(self, entry_id: str) -> Any:
        """Revert a journaled configuration change (``cfg:N`` / ``act:N``); a ChangeResult."""
        return self.changes.undo(entry_id)

    # ---- observation ----------------------------------------------------------------
    def subscribe(self, *, samples: Callable[[Any], Any] | None = None,
                  findings: Callable[[Any], Any] | None = None,
                  events: Callable[[Any], Any] | None = None,
                  changes: Callable[[Any], Any] | None = None) -> Callable[[], None]:
        """Call back on telemetry samples, doctor events, engine events, configuration
        changes (on the core's threads). Returns one function that unsubscribes them all."""
        undo: list[Callable[[], Any]] = []
        if samples is not None:
            if self.sampler is None:
                raise LlmosError("telemetry is not wired in this core")
            undo.append(self.sampler.subscribe(samples))
        if findings is not None:
            if self.doctor is None:
                raise LlmosError("the doctor is not wired in this core")
            undo.append(self.doctor.subscribe(findings))
        if events is not None:
            undo.append(self.supervisor.subscribe(events))
        if changes is not None:
            undo.append(self.changes.subscribe(changes))

        def unsubscribe() -> None:
            for fn in undo:
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    pass

        return unsubscribe

    def snapshot(self) -> dict[str, Any]:
        """The live state as plain data: engine, doctor, telemetry, journal, mode."""
        from llmos_tui import __version__

        sup = self.supervisor
        info = sup.model_info
        engine = sup.stats()
        engine["model_info"] = info.to_dict() if info is not None else None
        engine["summary"] = sup.params.summary()
        doctor: dict[str, Any] | None = None
        if self.doctor is not None:
            d = self.doctor
            doctor = {
                "open": [f.to_dict() for f in d.findings(open_only=True)],
                "kill_switch": bool(d.kill_switch),
                "busy": bool(d.busy),
                "dry_run": bool(d.dry_run),
                "start_limit_hit": bool(d.start_limit_hit),
                "replayed": bool(d.replayed),
            }
        sample = self.sampler.latest if self.sampler is not None else None
        journal = None
        if self.journal_writer is not None:
            journal = {"path": str(self.config.journal_file),
                       "active_config": self.journal_link.config_id if self.journal_link else None}
        change = self.changes.last.to_dict() if self.changes is not None and self.changes.last else None
        return {
            "version": __version__, "pid": os.getpid(), "mode": self.mode, "started": self.started,
            "readonly": bool(self.config.readonly), "replay": self.replay, "engine": engine, "doctor": doctor,
            "telemetry": sample.to_dict() if sample is not None else None, "journal": journal,
            "last_change": change, "problems": list(self.problems),
            "adapt": self.adapter.policy() if self.adapter is not None else {"mode": "off"},
        }

    # ---- online adaptation (live threads, no reload) ----------------------------------
    def set_adapt_mode(self, mode: str) -> str:
        """Turn the online learner ``off``, to ``shadow`` (it shows what it would do) or ``on``.
        Returns one line saying what it does now. Refused in replay: a replayed trace is not this
        engine, and the live learner never reads a replay's findings."""
        if mode not in ("off", "shadow", "on"):
            raise LlmosError(f"adapt mode must be off, shadow or on, got {mode!r}")
        if self.mode == "replay":
            raise LlmosError("online adaptation is not available in replay: a replayed trace is not this engine")
        if self.adapter is None:
            if mode == "off":
                return "online adaptation is off"
            from llmos_tui.tuning.learner import build_learner

            doctor = self.doctor
            live_doctor = doctor is not None and not doctor.replayed
            self.adapter = build_learner(
                self.supervisor, changes=self.changes, journal=self.journal_writer,
                findings=(lambda: doctor.findings(open_only=True)) if live_doctor else None,
                kill_switch=(lambda: bool(doctor.kill_switch)) if live_doctor else (lambda: False),
                readonly=bool(self.config.readonly), mode=mode)
            adapter = self.adapter

            def before_send(prompt: str, history: list[Any]) -> None:
                chars = len(prompt) + sum(len(m.content) for m in history)
                adapter.before_request(streaming=self.face == "tui", prompt_tokens=chars // 4)

            self.chat.before_send = before_send
            self.on_close(lambda: adapter.set_mode("off", reason="closing"))
        else:
            self.adapter.set_mode(mode, reason="operator")
        if self.config.readonly and mode == "on":
            return "online adaptation: read-only mode, so it only watches (shadow)"
        return {"off": "online adaptation is off; the configured threads serve",
                "shadow": "online adaptation in shadow mode: it shows what it would choose and changes nothing",
                "on": "online adaptation is on: it picks the threads of each request (bounded exploration)"}[mode]

    # ---- tuning ---------------------------------------------------------------------
    @property
    def tuner(self) -> Any:
        """The tuner of this core (built on first use: scikit-optimize loads then), given its parts."""
        if self._tuner is None:
            from llmos_tui.tuning.runner import Tuner

            self._tuner = Tuner(self.supervisor, self.changes, self.journal_writer, self.sampler, self.config)
        return self._tuner

    def tune(self, **options: Any) -> Any:
        """Run a tuning study (blocking); see llmos_tui.tuning.runner.Tuner.run."""
        return self.tuner.run(**options)

    # ---- life -------------------------------------------------------------------------
    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: BLE001
                pass
        self._closers.clear()
        self.changes.stop(source=self.face, reason="closing", wait_s=5.0)
        self.supervisor.stop()  # whatever held the engine, closing ends the child

    def __enter__(self) -> "Operator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_operator(config: Config, *, replay: str | None = None, replay_speed: float = 1.0,
                   with_journal: bool = True, with_telemetry: bool = True, with_doctor: bool = True) -> Operator:
    """Compatibility name for :func:`llmos_tui.core.wiring.build_core` (live or replay mode)."""
    from llmos_tui.core.wiring import build_core

    return build_core(config, "replay" if replay else "live", replay=replay, replay_speed=replay_speed,
                      journal=with_journal, telemetry=with_telemetry, doctor=with_doctor, endpoint=False)
