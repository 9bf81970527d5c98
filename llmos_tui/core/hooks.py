"""Event hooks: an operator's command run on the doctor's findings, its actions and the changes.

``[hooks]`` in the config file (``--on-event CMD`` on the command line adds one command for
every event kind, with the same rate cap and time limit)::

    [hooks]
    on_finding = "/usr/local/bin/page-me"            # a new finding (with its narration)
    on_action = "examples/hooks/webhook.sh"          # a repair applied, verified, failed, rolled back
    on_change = "logger -t llmos"                    # a configuration change came to an end state
    timeout_s = 10                                   # a hook running longer is killed (default 10)
    max_per_min = 20                                 # per event kind; more are dropped and counted

Each event is one JSON object on the command's stdin (``{"event": "action", "ts": ..., ...}``);
the command runs through ``/bin/sh -c`` with ``LLMOS_EVENT`` set to the event kind. Hooks run on
their own thread, one at a time, from a bounded queue: the doctor and the change transaction
only enqueue and never wait. A hook that exits non-zero, times out or cannot start is shown
(a doctor notice) and journaled (an ``hook`` event); so is a burst dropped by the rate cap.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

from llmos_tui.journal.port import JournalPort

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.config import Config
    from llmos_tui.core.changes import ChangeResult, Changes
    from llmos_tui.doctor import Doctor
    from llmos_tui.doctor.book import DoctorEvent
    from llmos_tui.journal import Journal
    from llmos_tui.journal.writer import JournalWriter

log = logging.getLogger(__name__)

EVENTS = ("on_finding", "on_action", "on_change")
QUEUE_SIZE = 64


@dataclass
class HookResult:
    """One run of a hook: what it was given and how it ended."""

    event: str
    command: str
    ok: bool
    rc: int | None
    error: str = ""
    wall_s: float = 0.0
    ts: float = field(default_factory=time.time)


@dataclass
class HookSettings:
    commands: dict[str, str] = field(default_factory=dict)  # on_finding / on_action / on_change -> CMD
    timeout_s: float = 10.0
    max_per_min: int = 20
    every: str | None = None  # --on-event CMD: run for every event kind, beside the per-kind command

    @classmethod
    def from_table(cls, table: Mapping[str, object], where: str = "[hooks]", *,
                   every: str | None = None) -> "HookSettings":
        """From a ``[hooks]`` table; a bad key or value is a ConfigError (config.parse_hooks)."""
        from llmos_tui.config import parse_hooks

        table = parse_hooks(dict(table), where)  # type: ignore[arg-type]
        settings = cls(every=every)
        for key, value in table.items():
            if key in EVENTS:
                settings.commands[key] = str(value)
            elif key == "timeout_s":
                settings.timeout_s = float(value)  # type: ignore[arg-type]
            elif key == "max_per_min":
                settings.max_per_min = int(value)  # type: ignore[arg-type]
        return settings

    @classmethod
    def from_config(cls, config: "Config") -> "HookSettings":
        """The config's ``[hooks]`` (checked when the file was read) and ``--on-event``."""
        where = f"{config.source}: [hooks]" if config.source is not None else "[hooks]"
        return cls.from_table(config.hooks, where, every=config.on_event)

    def commands_for(self, hook: str) -> list[str]:
        """What runs for one event kind: its own command, then the --on-event one."""
        return [c for c in (self.commands.get(hook), self.every) if c]


class Hooks:
    """Runs the configured commands for events, off the caller's thread."""

    def __init__(self, settings: HookSettings, journal: "Journal | JournalWriter | None" = None, *,
                 notice: Callable[[str], object] | None = None) -> None:
        self.settings = settings
        self.journal = JournalPort(journal, "hooks")
        self.notice = notice
        self.results: deque[HookResult] = deque(maxlen=100)
        self.dropped: dict[str, int] = {}
        self._sent: dict[str, deque[float]] = {}
        self._queue: queue.Queue[tuple[str, str, dict[str, object]] | None] = queue.Queue(QUEUE_SIZE)
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unsubscribe: list[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        return bool(self.settings.commands or self.settings.every)

    # ---- wiring -------------------------------------------------------------------------------
    def attach(self, doctor: "Doctor | None", changes: "Changes | None") -> "Hooks":
        if doctor is not None and (self.settings.commands_for("on_finding") or self.settings.commands_for("on_action")):
            self._unsubscribe.append(doctor.subscribe(self._on_doctor))
        if changes is not None and self.settings.commands_for("on_change"):
            self._unsubscribe.append(changes.subscribe(self._on_change))
        return self

    def _on_doctor(self, event: "DoctorEvent") -> None:
        finding = event.finding.to_dict() if event.finding is not None else None
        if finding is not None:
            finding.pop("history", None)
        if event.kind == "finding":
            self.fire("on_finding", {"event": "finding", "ts": event.ts, "message": event.message,
                                     "finding": finding})
        elif event.kind in ("action", "settled"):
            self.fire("on_action", {"event": event.kind, "ts": event.ts, "message": event.message,
                                    **{k: v for k, v in event.data.items() if isinstance(v, (str, int, float, bool))
                                       or v is None},
                                    "finding": finding})

    def _on_change(self, result: "ChangeResult") -> None:
        self.fire("on_change", {"event": "change", "ts": time.time(), "state": result.state, "ok": result.ok,
                                "message": result.message, "config_id": result.config_id,
                                "action_id": result.action_id,
                                "params": result.params.to_dict() if result.params is not None else None,
                                "details": result.details})

    # ---- firing -------------------------------------------------------------------------------
    def fire(self, hook: str, payload: dict[str, object]) -> bool:
        """Queue ``payload`` for ``hook``'s commands (its own, and --on-event's); never blocks.
        False when there is no such hook, or it was dropped (the rate cap, a full queue)."""
        commands = self.settings.commands_for(hook)
        if not commands:
            return False
        now = time.monotonic()
        with self._lock:
            sent = self._sent.setdefault(hook, deque())
            while sent and sent[0] < now - 60:
                sent.popleft()
            capped = len(sent) >= self.settings.max_per_min
            if not capped:
                sent.append(now)
        if capped:
            return self._drop(hook, f"more than {self.settings.max_per_min} a minute")
        self._idle.clear()
        queued = 0
        for command in commands:
            try:
                self._queue.put_nowait((hook, command, payload))
                queued += 1
            except queue.Full:
                break
        if queued:
            self._ensure_thread()
        if queued < len(commands):
            return self._drop(hook, f"{QUEUE_SIZE} events already waiting")
        return True

    def _drop(self, hook: str, why: str) -> bool:
        count = self.dropped.get(hook, 0) + 1
        self.dropped[hook] = count
        if count == 1 or count % 50 == 0:  # said once per burst, not once per event
            self._tell(f"hook {hook} dropped an event ({why}); {count} dropped so far",
                       {"hook": hook, "dropped": count, "why": why})
        return False

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="llmos-hooks", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=5.0)
            except queue.Empty:
                if self._queue.empty():
                    self._idle.set()
                continue
            if item is None:
                self._idle.set()
                return
            hook, command, payload = item
            self.results.append(self._run(hook, command, payload))
            if self._queue.empty():
                self._idle.set()

    def _run(self, hook: str, command: str, payload: dict[str, object]) -> HookResult:
        data = json.dumps(payload, default=str)
        env = {**os.environ, "LLMOS_EVENT": str(payload.get("event", hook))}
        started = time.monotonic()
        try:
            done = subprocess.run(["/bin/sh", "-c", command], input=data, text=True, capture_output=True,
                                  timeout=self.settings.timeout_s, env=env)
        except subprocess.TimeoutExpired:
            result = HookResult(hook, command, False, None, f"killed after {self.settings.timeout_s:.0f} s",
                                time.monotonic() - started)
        except OSError as exc:
            result = HookResult(hook, command, False, None, f"cannot run: {exc}", time.monotonic() - started)
        else:
            err = (done.stderr or "").strip().splitlines()[-1:] or [""]
            result = HookResult(hook, command, done.returncode == 0, done.returncode,
                                "" if done.returncode == 0 else f"exit {done.returncode}: {err[0][:200]}",
                                time.monotonic() - started)
        if not result.ok:
            self._tell(f"hook {hook} failed: {result.error}", {"hook": hook, "command": command, "rc": result.rc,
                                                              "error": result.error})
        return result

    def _tell(self, text: str, data: dict[str, object]) -> None:
        log.warning("%s", text)
        self.journal.safe(lambda j: j.record_event("hook", data))
        if self.notice is not None:
            try:
                self.notice(text)
            except Exception:  # noqa: BLE001 - telling must never fail the hook thread
                log.exception("hook notice failed")

    # ---- ending -------------------------------------------------------------------------------
    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every queued event has run (tests, a one-shot command before it exits)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self.wait_idle(self.settings.timeout_s + 1 if timeout is None else timeout)
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            thread.join(1.0)


def attach_hooks(config: "Config", doctor: "Doctor | None", changes: "Changes | None",
                 journal: "Journal | JournalWriter | None", closers: list[Callable[[], None]]) -> Hooks | None:
    """The composition root's one call: hooks from the config, attached, closed with the core.
    A bad ``[hooks]`` table is one line in the doctor's notices, never a failed start."""
    from llmos_tui.errors import LlmosError

    try:
        settings = HookSettings.from_config(config)
    except LlmosError as exc:
        if doctor is not None:
            doctor.book.notice(str(exc))
        return None
    if not (settings.commands or settings.every):
        return None
    hooks = Hooks(settings, journal, notice=doctor.book.notice if doctor is not None else None)
    hooks.attach(doctor, changes)
    closers.append(hooks.close)
    return hooks
