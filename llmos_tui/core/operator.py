"""The headless core's facade, and the public scripting API.

An :class:`Operator` holds the engine, the conversation, telemetry, the journal, the doctor
and the change transaction. Every face (TUI, console, CLI subcommands, plugin scripts)
drives one, built by :func:`llmos_tui.core.wiring.build_core` (the one composition root: it
constructs every part with its collaborators and hands the finished set to ``Operator``)::

    from llmos_tui.core import build_core, load_config

    op = build_core(load_config(), mode="oneshot")
    op.start_engine()
    reply = op.send("What is VRAM?")
    print(reply.wait(60).text, reply.metrics["gen_tps"])
    print(op.apply({"n_ctx": 1024}, reason="smaller context").message)
    print(op.undo(f"cfg:{op.snapshot()['journal']['active_config']}").message)
    op.close()

Verbs: :meth:`start_engine`, :meth:`send`, :meth:`cancel`, :meth:`apply`, :meth:`undo`,
:meth:`restart_engine`, :meth:`reset_start_limit`, :meth:`set_adapt_mode`, :meth:`snapshot`,
:meth:`subscribe`, :meth:`tune`, :meth:`close`. Every start, restart and stop of the engine
goes through the change transaction's lock (:class:`~llmos_tui.core.changes.Changes`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from llmos_tui.config import Config
from llmos_tui.core.changes import ChangeResult, Changes, Json
from llmos_tui.core.chat import ChatSession
from llmos_tui.core.cockpit import SharedVerbs
from llmos_tui.engine.gguf_info import ModelInfo
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineEvent, EngineState, Supervisor
from llmos_tui.errors import LlmosError

if TYPE_CHECKING:
    from llmos_tui.core.endpoint import StatusEndpoint
    from llmos_tui.core.journaling import JournalLink
    from llmos_tui.doctor import Doctor
    from llmos_tui.doctor.loop import DoctorEvent
    from llmos_tui.journal.writer import JournalWriter
    from llmos_tui.telemetry.sample import Sample
    from llmos_tui.telemetry.sampler import Sampler

__all__ = ["Operator"]

UNDO_WAIT_S = 5.0  # how long an undo sent by another process waits for the engine's holder


class Operator(SharedVerbs):
    """The wired core. Build it with ``build_core``; the attributes are the parts it was given."""

    attached: str | None = None  # an embedded core; a face of a daemon says which (serve.attached)

    def __init__(self, config: Config, *, supervisor: Supervisor, chat: ChatSession, changes: Changes,
                 mode: str = "live", face: str = "script", journal_writer: JournalWriter | None = None,
                 journal_link: JournalLink | None = None, sampler: Sampler | None = None,
                 doctor: Doctor | None = None, endpoint: StatusEndpoint | None = None,
                 replay: dict[str, Json] | None = None, problems: list[str] | None = None,
                 closers: list[Callable[[], None]] | None = None) -> None:
        self.config = config
        self.mode = mode
        self.face = face  # tui, console or script: what streams the replies (the learner's context)
        self.supervisor = supervisor
        self.chat = chat
        self.changes = changes  # the one path for configuration changes and the engine's life cycle
        self.journal_writer = journal_writer
        self.journal_link = journal_link
        self.sampler = sampler
        self.doctor = doctor
        self.replay = replay  # the trace when telemetry is replayed
        self.problems: list[str] = list(problems or [])  # non-fatal start-up problems, shown by every face
        self.started = time.time()
        self._tuner: Any = None
        self.adapter: Any = None  # tuning.adapt.OnlineAdapter once the operator turns it on
        self.exporter: object | None = None  # the /metrics server, when one is attached
        self._closers: list[Callable[[], None]] = list(closers or [])
        self._closed = False
        self.endpoint: StatusEndpoint | None = None
        if endpoint is not None:
            try:
                endpoint.start(self.snapshot, self.handle_request)
            except OSError as exc:
                self.problems.append(f"status endpoint disabled: {exc}")
            else:
                self.endpoint = endpoint
                self._closers.append(endpoint.close)

    # ---- engine ---------------------------------------------------------------------
    def start_engine(self, params: EngineParams | None = None) -> ModelInfo:
        """Start the engine (blocking) on its configured parameters (through the change lock)."""
        if params is not None and params.to_dict() != self.supervisor.params.to_dict():
            raise LlmosError("new parameters go through apply() (the change transaction), not start_engine()")
        result = self.changes.start(source=self.face)
        if not result.ok:
            raise LlmosError(result.message.removeprefix("start failed: "))
        info = self.supervisor.model_info
        if info is None:  # pragma: no cover - a started engine always read its model
            raise LlmosError("the engine started without model information")
        return info

    def try_start_engine(self, params: EngineParams | None = None) -> str | None:
        """Start the engine; return a one-line error instead of raising (for faces)."""
        try:
            self.start_engine(params)
        except LlmosError as exc:
            return str(exc)
        return None

    def restart_engine(self, params: EngineParams | None = None, reason: str = "operator") -> str | None:
        """Restart on the same parameters (after a crash, say); None or a one-line error (a
        change in progress: the line names who holds the engine). A restart with other
        parameters is a configuration change: it goes through apply()."""
        if params is not None and params.to_dict() != self.supervisor.params.to_dict():
            result = self.apply(params, reason=reason)
            return None if result.ok else result.message
        if self.config.readonly:
            return "read-only mode: restarting the engine is disabled"
        result = self.changes.restart(source=self.face, reason=reason)
        return None if result.ok else result.message

    # ---- chat: send and cancel are SharedVerbs (core/cockpit.py) ---------------------------
    # ---- configuration changes (all through the change transaction) ------------------
    def apply(self, changes: EngineParams | dict[str, object], *, reason: str = "", source: str = "operator",
              verify: Callable[[], str | None] | None = None) -> ChangeResult:
        """Change the engine's configuration: vetted, journaled, reloaded, verified, rolled back
        on failure. Blocking. Returns a ChangeResult (``.ok``, ``.state``, ``.message``)."""
        return self.changes.propose(changes, source=source, reason=reason or "operator change", verify=verify)

    def undo(self, entry_id: str, *, wait_s: float = 0.0) -> ChangeResult:
        """Revert a journaled configuration change (``cfg:N`` / ``act:N``); a ChangeResult.
        In a one-shot core whose engine was never started (`journal undo` with no llmos-tui
        running), the undo is vetted and journaled for the next start (state ``deferred``)."""
        never_started = self.mode == "oneshot" and self.supervisor.state == EngineState.STOPPED \
            and self.supervisor.model_info is None
        return self.changes.undo(entry_id, wait_s=wait_s, run=not never_started)

    def reset_start_limit(self) -> str:
        """Let the doctor restart the engine automatically again after its start limit stopped it.
        Returns one line saying what happened."""
        doctor = self.doctor
        if doctor is None:
            return "the doctor is not running in this core: there is no start limit to reset"
        return doctor.reset_start_limit()

    # ---- requests from other processes (the status endpoint) --------------------------
    def handle_request(self, request: dict[str, Json]) -> dict[str, Json]:
        """One request from the owner-only socket: ``{"op": "status"}`` or ``{"op": "undo",
        "entry": "cfg:N", "journal": PATH}``. The undo runs here, through this core's change
        transaction (so another process's `journal undo` is this core's undo)."""
        op = request.get("op", "status")
        if op == "status":
            return self.snapshot()
        if op == "undo":
            entry = request.get("entry")
            if not isinstance(entry, str):
                return {"ok": False, "pid": os.getpid(), "error": "undo needs an entry (cfg:N or act:N)"}
            journal = request.get("journal")
            if isinstance(journal, str) and not self._runs_journal(journal):
                return {"ok": False, "pid": os.getpid(), "error": f"this llmos-tui does not use journal {journal}"}
            result = self.undo(entry, wait_s=UNDO_WAIT_S)
            return {"ok": result.ok, "pid": os.getpid(), "result": result.to_dict(),
                    "engine": self.supervisor.params.to_dict(), "state": self.supervisor.state.value}
        if op == "reset_start_limit":
            return {"ok": True, "pid": os.getpid(), "message": self.reset_start_limit()}
        return {"ok": False, "pid": os.getpid(), "error": f"unknown request {op!r}"}

    def _runs_journal(self, path: str) -> bool:
        if self.journal_writer is None:
            return False
        try:
            return Path(path).resolve() == Path(self.config.journal_file).resolve()
        except OSError:
            return False

    # ---- observation ----------------------------------------------------------------
    def subscribe(self, *, samples: Callable[[Sample], object] | None = None,
                  findings: Callable[[DoctorEvent], object] | None = None,
                  events: Callable[[EngineEvent], object] | None = None,
                  changes: Callable[[ChangeResult], object] | None = None) -> Callable[[], None]:
        """Call back on telemetry samples, doctor events, engine events, configuration
        changes (on the core's threads). Returns one function that unsubscribes them all."""
        undo: list[Callable[[], object]] = []
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

    def snapshot(self) -> dict[str, Json]:
        """The live state as plain data: engine, doctor, telemetry, journal, mode."""
        from llmos_tui import __version__

        sup = self.supervisor
        info = sup.model_info
        engine = sup.stats()
        engine["model_info"] = info.to_dict() if info is not None else None
        engine["summary"] = sup.params.summary()
        doctor: dict[str, Json] | None = None
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
        change = self.changes.last.to_dict() if self.changes.last else None
        return {
            "version": __version__, "pid": os.getpid(), "mode": self.mode, "face": self.face,
            "started": self.started, "readonly": bool(self.config.readonly), "replay": self.replay,
            "engine": engine, "doctor": doctor, "telemetry": sample.to_dict() if sample is not None else None,
            "journal": journal, "last_change": change, "problems": list(self.problems),
            "engine_holder": self.changes.holder,
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
        result = self.changes.stop(source=self.face, reason="closing", wait_s=5.0)
        if not result.ok:  # a holder that did not let go in 5 s: closing still ends the child
            self.supervisor.stop()
        if self.journal_link is not None:
            self.journal_link.close()  # last: the engine's stop is journaled too

    def __enter__(self) -> "Operator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
