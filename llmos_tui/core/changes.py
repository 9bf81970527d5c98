"""The change transaction: the one path by which the engine's configuration changes.

Every caller — the operator (TUI, console `/params`, scripts), undo, the doctor's repairs and
their rollback, the tuner's "apply best", the online learner — goes through
:meth:`Changes.propose` (or :meth:`Changes.undo`):

    vet       read-only, the journal's bad-list, the VRAM fit, the context requirement
              -> refused with one line, nothing journaled as applied, the engine untouched
    journal   the new version (parent = the active one, source, reason) and its action
    reload    the engine restarts with the new parameters
    verify    liveness (the canary) + the caller's own check (the metric that asked for it)
    settle    mark good | mark bad, roll back to the parent (journaled), reload, canary

One change at a time: a second caller while one runs is refused with a line that says who
holds it. Without a journal (it could not be opened) the engine still changes and the
result says that nothing was journaled.

The same lock owns the engine's whole life cycle: :meth:`Changes.start`, :meth:`restart`,
:meth:`pause`, :meth:`resume` and :meth:`stop` take it too, and :meth:`holding` keeps it for
a span (a tuning study pauses the engine, measures, applies or resumes: one holder from end
to end). The lock is re-entrant for the thread that holds it, so a holder may call any verb
inside its span; any other caller is refused with a line that names the holder, or waits up
to ``wait_s`` for it. Nothing else touches the supervisor's life cycle.

Hold listeners (:meth:`Changes.on_hold`) hear when a caller takes the engine and when it lets
go: a daemon that serves requests drains them first (``before`` may block while it does) and
tells waiting clients to come back (``after``: the engine is free again).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, TypeVar, Union

from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.versions import params_of
from llmos_tui.errors import LlmosError
from llmos_tui.journal.port import JournalPort

if TYPE_CHECKING:
    from llmos_tui.engine.supervisor import Supervisor
    from llmos_tui.journal.records import ConfigVersion
    from llmos_tui.journal.store import Journal
    from llmos_tui.journal.writer import JournalWriter
    from llmos_tui.telemetry.sampler import Sampler

    JournalTarget = Union[Journal, JournalWriter]

T = TypeVar("T")

log = logging.getLogger("llmos_tui.changes")

Verifier = Callable[[], "str | None"]  # None: verified; else why not
HoldListener = Callable[[str, str], None]  # (kind, who): kind is change, undo, start, restart, pause, resume, stop, hold
Json = Union[str, int, float, bool, None, list["Json"], dict[str, "Json"]]

RESUME_EVENT = "config_resume_base"  # the configured settings a version was applied on top of


class LoadSource(Protocol):
    """Told which source asks for the next load (the JournalLink: it journals the version)."""

    next_source: str


class EngineBusy(LlmosError):
    """The engine's life cycle is held by another caller (the message names it)."""


@dataclass
class ChangeResult:
    """What a change came to. ``state``:

    - ``applied``: the engine runs the new parameters and they passed verification
    - ``unchanged``: the parameters are what already runs; nothing was done
    - ``refused``: vetting refused it; nothing changed (``message`` says why)
    - ``rolled_back``: it ran and failed verification; the parent runs again
    - ``failed``: it failed and the rollback failed too (the engine may be down)
    - ``deferred``: vetted and journaled with no engine running (a one-shot ``journal undo``):
      the next start runs it (the resume rule honours it)

    ``journaled`` is False when any journal write inside the change failed.
    """

    state: str
    message: str
    params: EngineParams | None = None  # what the engine runs now (or was asked to run)
    config_id: int | None = None  # the journal version active now
    action_id: int | None = None
    journaled: bool = True
    details: dict[str, Json] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state in ("applied", "unchanged", "deferred")

    def to_dict(self) -> dict[str, Json]:
        return {"state": self.state, "ok": self.ok, "message": self.message,
                "params": self.params.to_dict() if self.params else None,
                "config_id": self.config_id, "action_id": self.action_id, "journaled": self.journaled,
                **({"details": self.details} if self.details else {})}


class Changes:
    """The change transaction over one supervisor, one journal (a JournalWriter, a Journal or None).

    ``journaling``: told which source asks for each load (the JournalLink). ``configured``: the
    settings the operator configured (config file, command line); each applied version records
    them as its base, so the resume rule keeps an explicit apply until the configuration changes.
    """

    def __init__(self, supervisor: "Supervisor", journal: "JournalTarget | None" = None, *,
                 readonly: bool = False, sampler: "Sampler | None" = None, min_ctx: int = 0,
                 ready_timeout_s: float = 120.0, canary: Callable[[], object] | None = None,
                 journaling: LoadSource | None = None, configured: EngineParams | None = None) -> None:
        self.supervisor = supervisor
        self._port = JournalPort(journal, "change transaction")
        self.readonly = readonly
        self.sampler = sampler
        self.min_ctx = int(min_ctx or 0)  # the operator's context requirement (tokens)
        self.ready_timeout_s = ready_timeout_s
        self._canary = canary
        self._lock = threading.RLock()
        self._depth = 0  # re-entries of the holding thread
        self.holder: str | None = None  # who holds the engine now (for the "busy" line)
        self.listeners: list[Callable[[ChangeResult], None]] = []
        self.last: ChangeResult | None = None
        self.journaling = journaling
        self.configured = configured if configured is not None else (
            supervisor.params if supervisor is not None else None)
        self._failures = threading.local()  # journal writes that failed, per thread (see _writes_ok)
        self._hold_listeners: list[tuple[HoldListener, HoldListener]] = []
        self._held: tuple[str, str] | None = None  # (kind, who) told to the hold listeners

    # ---- the journal -------------------------------------------------------------
    @property
    def journal(self) -> "JournalTarget | None":
        return self._port.target

    def _call(self, fn: "Callable[[Journal], T]") -> "T | None":
        try:
            return self._port.call(fn)
        except Exception:
            self._failed()
            raise

    def _safe(self, fn: "Callable[[Journal], T]", default: "T | None" = None) -> "T | None":
        try:
            return self._port.call(fn)
        except Exception as exc:  # noqa: BLE001 - a journal problem must not stop the change
            log.warning("change transaction could not use the journal: %s", exc)
            self._failed()
            return default

    def _failed(self) -> None:
        self._failures.count = getattr(self._failures, "count", 0) + 1

    def _mark(self) -> int:
        """The failure count now; compare with :meth:`_writes_ok` at the end of a change."""
        return int(getattr(self._failures, "count", 0))

    def _writes_ok(self, mark: int) -> bool:
        return self._mark() == mark

    def set_canary(self, canary: Callable[[], object]) -> None:
        """The liveness probe (the doctor's, so its result is the doctor's last canary too)."""
        self._canary = canary

    # ---- vetting -----------------------------------------------------------------
    def vet(self, params: EngineParams, *, check_bad: bool = True) -> str | None:
        """Why ``params`` must not be applied, or None."""
        if self.readonly:
            return "read-only mode: configuration changes are disabled"
        try:
            params.validate()
        except LlmosError as exc:
            return str(exc)
        if self.min_ctx and params.n_ctx and params.n_ctx < self.min_ctx:
            return (f"n_ctx={params.n_ctx} is below the required context of {self.min_ctx} tokens "
                    f"(the operator's --ctx requirement)")
        if check_bad:
            bad = self.bad_reason(params)
            if bad:
                return bad
        return self.vram_refusal(params)

    def bad_reason(self, params: EngineParams) -> str | None:
        if self.journal is None:
            return None
        wanted = params.to_dict()

        def find(j: "Journal") -> str | None:
            for cfg in j.configs(500):
                if cfg.standing == "bad" and {**cfg.params, "model_path": cfg.model_path} == wanted:
                    return f"cfg:{cfg.id} with these settings is marked bad ({cfg.reason})"
            return None

        return self._safe(find)

    def vram_refusal(self, params: EngineParams) -> str | None:
        from llmos_tui.engine import vram

        sup = self.supervisor
        info = sup.model_info if sup is not None else None
        if info is None or params.model_path != sup.params.model_path:
            try:
                from llmos_tui.engine.gguf_info import read_model_info

                info = read_model_info(params.model_path)
            except LlmosError as exc:
                return f"model: {exc}"
        sample = None
        if self.sampler is not None:  # a one-shot core samples on demand: read the GPU once now
            sample = self.sampler.latest if self.sampler.running else self.sampler.poll_once()
        free = vram.free_gpu_memory(sample, sup.pid if sup is not None else None)
        if free is None:  # no GPU known: nothing to correct
            return vram.refusal(params, info, None)
        from llmos_tui.engine import memfit  # the estimate corrected by what the journal measured

        readings = memfit.readings_from_journal(lambda kind, n: self._safe(lambda j: j.events(kind, limit=n), []))
        return memfit.corrected_vram_refusal(params, info, free, readings)

    # ---- the transaction -----------------------------------------------------------
    def propose(self, params: "EngineParams | dict[str, object]", *, source: str = "operator", reason: str = "",
                kind: str = "reconfigure", proposed_by: str = "operator", finding_id: int | None = None,
                action_id: int | None = None, verify: Verifier | None = None, check_bad: bool = True,
                rollback: bool = True, wait_s: float = 0.0) -> ChangeResult:
        """Vet, journal, reload, verify; roll back when verification fails. Blocking (a reload):
        call it from a worker thread, never a UI thread. ``params`` may be a mapping of changes
        to the running parameters (``{"n_ctx": 4096}``)."""
        sup = self.supervisor
        if isinstance(params, dict):
            try:
                params = EngineParams.from_mapping(params, sup.params)
            except LlmosError as exc:
                return self._done(ChangeResult("refused", str(exc), sup.params, journaled=False))
        if self.readonly:  # before the lock, as undo: "busy" would invite a retry that is refused anyway
            return self._done(ChangeResult("refused", "read-only mode: configuration changes are disabled",
                                           sup.params, journaled=False))
        busy = self._acquire(f"{source}: {reason or kind}", wait_s, kind="change")
        if busy:
            return ChangeResult("refused", busy, sup.params, journaled=False, details={"busy": True})
        mark = self._mark()
        try:
            result = self._propose(params, source, reason, kind, proposed_by, finding_id, action_id,
                                   verify, check_bad, rollback)
            result.journaled = result.journaled and self._writes_ok(mark)
            return self._done(result)
        finally:
            self._release()

    def _propose(self, params: EngineParams, source: str, reason: str, kind: str, proposed_by: str,
                 finding_id: int | None, action_id: int | None, verify: Verifier | None,
                 check_bad: bool, rollback: bool) -> ChangeResult:
        sup = self.supervisor
        before = sup.params
        if params.to_dict() == before.to_dict() and sup.is_ready:
            if action_id is not None:
                self._safe(lambda j: j.set_action_state(action_id, "rejected", note="no parameter change"))
            return ChangeResult("unchanged", f"already running these settings ({params.summary()})", params,
                                self.active_id(), action_id, journaled=self.journal is not None)
        refusal = self.vet(params, check_bad=check_bad)
        if refusal:
            if action_id is not None:
                self._safe(lambda j: j.set_action_state(action_id, "failed", note=f"refused: {refusal}"))
            return ChangeResult("refused", f"refused: {refusal}", before, self.active_id(), action_id,
                                journaled=self.journal is not None)
        self._ensure_active(before)
        note = reason or kind
        journaled = self.journal is not None
        config_id = None
        try:
            result = self._call(lambda j: j.change_config(params, source=source, kind=kind,
                                                          proposed_by=proposed_by, finding_id=finding_id,
                                                          action_id=action_id, note=note))
        except Exception as exc:  # noqa: BLE001 - a journal that fails does not stop the operator
            log.warning("change not journaled: %s", exc)
            result, journaled = None, False
        if result is not None:
            action, config = result
            action_id, config_id = action.id, config.id
        return self._reload_and_verify(params, before, source, note, action_id, config_id, verify, journaled,
                                       rollback)

    def _settled(self, config_id: int, *, deferred: bool = False, parent_id: int | None = None) -> None:
        """``config_id`` is verified (or, deferred, vetted for the next start): it is the last-known-good
        (verified only) and it records the configured settings it was applied on top of (the resume
        rule). A deferred undo inherits its parent's base: it reverts a change made on that base."""
        if not deferred:
            self._safe(lambda j: j.mark_good(config_id))
        configured: Json = self.configured.to_dict() if self.configured else None
        if parent_id is not None:
            inherited = self._safe(lambda j: recorded_base(j, parent_id))
            if inherited is not None:
                configured = inherited.get("configured")
        data: dict[str, Json] = {"config_id": config_id, "configured": configured, "deferred": deferred}
        self._safe(lambda j: j.record_event(RESUME_EVENT, data, config_id=config_id))

    def _tell_source(self, source: str) -> None:
        if self.journaling is not None:
            self.journaling.next_source = source

    def _reload_and_verify(self, params: EngineParams, before: EngineParams, source: str, note: str,
                           action_id: int | None, config_id: int | None, verify: Verifier | None,
                           journaled: bool, rollback: bool) -> ChangeResult:
        sup = self.supervisor
        self._tell_source(source)
        try:
            sup.restart(params, reason=f"{source}: {note}")
            verdict = self._verify(verify)
        except LlmosError as exc:
            verdict = f"the engine did not start: {exc}"
        if verdict is None:
            if action_id is not None:
                self._safe(lambda j: j.set_action_state(action_id, "verified", note="canary passed"
                                                        + (" and the change's own check" if verify else "")))
            if config_id is not None:
                self._settled(config_id)
            label = f"cfg:{config_id}" if config_id is not None else "not journaled"
            return ChangeResult("applied", f"applied ({label}): {params.summary()}", params, config_id, action_id,
                                journaled)
        if config_id is not None:
            self._safe(lambda j: j.mark_bad(config_id, verdict))
        if not rollback:
            if action_id is not None:
                self._safe(lambda j: j.set_action_state(action_id, "failed", note=verdict))
            return ChangeResult("failed", f"failed: {verdict}", params, config_id, action_id, journaled)
        return self._rollback(before, verdict, action_id, config_id, journaled)

    def _rollback(self, before: EngineParams, verdict: str, action_id: int | None, config_id: int | None,
                  journaled: bool) -> ChangeResult:
        sup = self.supervisor
        restore_id = None
        if action_id is not None:
            self._safe(lambda j: j.set_action_state(action_id, "failed", note=verdict))
            restore = self._safe(lambda j: j.undo(f"act:{action_id}", proposed_by="auto",
                                                  note=f"rollback: {verdict}"))
            if restore is not None:
                restore_id = restore.id
                before = params_of(restore)
        self._tell_source("undo")
        try:
            sup.restart(before, reason=f"rollback: {verdict}")
            back = self._verify(None)
        except LlmosError as exc:
            back = f"the engine did not start: {exc}"
        undo_action = self._safe(lambda j: j.action_for_config(restore_id)) if restore_id is not None else None
        if undo_action is not None:
            self._safe(lambda j: j.set_action_state(undo_action.id, "verified" if back is None else "failed",
                                                    note="canary " + ("passed" if back is None else back)))
        if back is None:
            if restore_id is not None:
                self._settled(restore_id)
            where = f"cfg:{restore_id}" if restore_id is not None else "the previous settings"
            return ChangeResult("rolled_back", f"rolled back to {where}: the change failed verification ({verdict})",
                                before, restore_id, action_id, journaled, {"verdict": verdict})
        return ChangeResult("failed", f"failed ({verdict}) and the rollback failed too ({back})", before,
                            restore_id, action_id, journaled, {"verdict": verdict, "rollback": back})

    def _verify(self, verify: Verifier | None) -> str | None:
        from llmos_tui.engine.probe import run_canary, verify_live

        canary = self._canary or (lambda: run_canary(self.supervisor))
        return verify_live(self.supervisor, self.ready_timeout_s, canary, verify)

    # ---- undo ---------------------------------------------------------------------
    def undo(self, entry_id: str, *, proposed_by: str = "operator", wait_s: float = 0.0,
             run: bool = True) -> ChangeResult:
        """Revert a journaled change (``cfg:N`` or ``act:N``) and run the result, verified.

        Vetted like any change (read-only, the bad-list, the VRAM fit) before anything is
        journaled. ``run=False`` (no engine runs: a one-shot ``journal undo``): vetted and
        journaled as ``deferred``; the next start runs it (the resume rule honours it)."""
        sup = self.supervisor
        if self.readonly:
            return self._done(ChangeResult("refused", "read-only mode: undo is disabled", sup.params, journaled=False))
        if self.journal is None:
            return self._done(ChangeResult("refused", "the journal is not open; nothing can be undone", sup.params,
                                           journaled=False))
        busy = self._acquire(f"undo {entry_id}", wait_s, kind="undo")
        if busy:
            return ChangeResult("refused", busy, sup.params, journaled=False, details={"busy": True})
        mark = self._mark()
        try:
            result = self._undo(entry_id, proposed_by, run)
            result.journaled = result.journaled and self._writes_ok(mark)
            return self._done(result)
        finally:
            self._release()

    def _undo(self, entry_id: str, proposed_by: str, run: bool) -> ChangeResult:
        sup = self.supervisor
        before = sup.params
        try:
            target = self._call(lambda j: undo_target(j, entry_id))
        except LlmosError as exc:
            return ChangeResult("refused", str(exc), before, journaled=False)
        assert target is not None
        params = params_of(target)
        refusal = self.bad_reason(params) or self.vram_refusal(params)
        if refusal:
            return ChangeResult("refused", f"refused: undo {entry_id} would run {target.entry_id}'s settings, "
                                f"but {refusal}", before, self.active_id(), journaled=False)
        if run:
            self._ensure_active(before)
        try:
            config = self._call(lambda j: j.undo(entry_id, proposed_by=proposed_by))
        except LlmosError as exc:
            return ChangeResult("refused", str(exc), before, journaled=False)
        assert config is not None
        action = self._safe(lambda j: j.action_for_config(config.id))
        action_id = action.id if action is not None else None
        if not run:
            self._settled(config.id, deferred=True, parent_id=config.parent_id)
            return ChangeResult("deferred", f"undone in the journal: the next start runs cfg:{config.id} "
                                f"({params.summary()})", params, config.id, action_id)
        result = self._reload_and_verify(params, before, "undo", f"undo {entry_id}", action_id, config.id,
                                         None, True, True)
        if result.state == "applied":
            result.message = f"undone: now running cfg:{config.id} ({params.summary()})"
        return result

    # ---- the lock, and the engine's life cycle ----------------------------------------
    def _acquire(self, who: str, wait_s: float = 0.0, *, kind: str = "hold") -> str | None:
        """Take the lock for ``who``; None when taken, else the line that says who holds it."""
        if not self._lock.acquire(blocking=False):
            if wait_s <= 0 or not self._lock.acquire(timeout=wait_s):
                holder = self.holder or "another caller"
                waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                return f"the engine is busy: {holder} holds it{waited}; try again when it ends"
        first = self._depth == 0
        if first:
            self.holder = who
        self._depth += 1
        if first and self._hold_listeners:
            self._held = (kind, who)
            for before, _after in list(self._hold_listeners):
                self._tell(before, kind, who)
        return None

    def _release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.holder = None
            held, self._held = self._held, None
            if held is not None:
                for _before, after in list(self._hold_listeners):
                    self._tell(after, *held)
        self._lock.release()

    @staticmethod
    def _tell(listener: HoldListener, kind: str, who: str) -> None:
        try:
            listener(kind, who)
        except Exception:  # noqa: BLE001 - a listener never stops the engine's owner
            log.exception("hold listener failed")

    def on_hold(self, before: HoldListener, after: HoldListener) -> Callable[[], None]:
        """Call ``before(kind, who)`` when a caller takes the engine (on its thread, holding the
        lock: it may block while in-flight work drains) and ``after(kind, who)`` when it lets go.
        Returns the function that removes them."""
        pair = (before, after)
        self._hold_listeners.append(pair)
        return lambda: self._hold_listeners.remove(pair) if pair in self._hold_listeners else None

    @contextmanager
    def holding(self, who: str, *, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the engine's life cycle for a span (``with changes.holding("tuner std:4"): ...``).
        Raises EngineBusy (naming the holder) when another caller has it after ``wait_s``."""
        busy = self._acquire(who, wait_s, kind="hold")
        if busy:
            raise EngineBusy(busy)
        try:
            yield
        finally:
            self._release()

    @property
    def busy(self) -> bool:
        return self.holder is not None

    def _lifecycle(self, verb: str, who: str, wait_s: float, act: Callable[[], object]) -> ChangeResult:
        sup = self.supervisor
        if self.readonly and verb not in ("start", "stop"):
            return ChangeResult("refused", f"read-only mode: {verb} of the engine is disabled", sup.params,
                                journaled=False)
        busy = self._acquire(who, wait_s, kind=verb)
        if busy:
            return ChangeResult("refused", busy, sup.params, journaled=False, details={"busy": True})
        mark = self._mark()
        try:
            try:
                act()
            except LlmosError as exc:
                return ChangeResult("failed", f"{verb} failed: {exc}", sup.params, self.active_id(),
                                    journaled=self.journal is not None and self._writes_ok(mark))
            return ChangeResult("applied", f"{verb}: {sup.params.summary()}", sup.params, self.active_id(),
                                journaled=self.journal is not None and self._writes_ok(mark))
        finally:
            self._release()

    def start(self, *, source: str = "operator", wait_s: float = 0.0,
              timeout: float | None = None) -> ChangeResult:
        """Start the engine on what the journal holds active (the supervisor's parameters)."""
        return self._lifecycle("start", f"{source}: start", wait_s, lambda: self.supervisor.start(timeout=timeout))

    def restart(self, *, source: str = "operator", reason: str = "", wait_s: float = 0.0) -> ChangeResult:
        """Restart on the parameters that run now (never ones captured earlier: a change that
        landed meanwhile is what restarts)."""
        why = reason or "restart"

        def act() -> None:
            self._tell_source(source)
            self.supervisor.restart(reason=f"{source}: {why}")

        return self._lifecycle("restart", f"{source}: {why}", wait_s, act)

    def pause(self, *, source: str = "operator", reason: str = "", wait_s: float = 0.0) -> ChangeResult:
        """Stop the engine and stay paused (its parameters unchanged)."""
        why = reason or "pause"
        return self._lifecycle("pause", f"{source}: {why}", wait_s, lambda: self.supervisor.pause(why))

    def resume(self, *, source: str = "operator", reason: str = "", wait_s: float = 0.0) -> ChangeResult:
        """Load the paused engine again with the parameters it had."""
        return self._lifecycle("resume", f"{source}: {reason or 'resume'}", wait_s, self.supervisor.resume)

    def stop(self, *, source: str = "operator", reason: str = "", wait_s: float = 0.0) -> ChangeResult:
        """Stop the engine (the operator's session ends, or a face asks)."""
        return self._lifecycle("stop", f"{source}: {reason or 'stop'}", wait_s, self.supervisor.stop)

    # ---- helpers -------------------------------------------------------------------
    def active_id(self) -> int | None:
        active = self._safe(lambda j: j.active_config())
        return active.id if active is not None else None

    def _ensure_active(self, params: EngineParams) -> None:
        """The journal's active version must be what the engine runs: changes build on it."""
        if self.journal is None:
            return

        def ensure(j: "Journal") -> None:
            active = j.active_config()
            if active is not None and {**active.params, "model_path": active.model_path} == params.to_dict():
                return
            j.record_config(params, source="operator", note="the configuration found running")

        self._safe(ensure)

    def subscribe(self, listener: Callable[[ChangeResult], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def _done(self, result: ChangeResult) -> ChangeResult:
        self.last = result
        for listener in list(self.listeners):
            try:
                listener(result)
            except Exception:  # noqa: BLE001
                log.exception("change listener failed")
        return result


def recorded_base(journal: "Journal", config_id: int) -> "dict[str, Json] | None":
    """What :meth:`Changes._settled` recorded for ``config_id`` (the newest), or None."""
    for event in journal.events(RESUME_EVENT, limit=500):
        data = event.get("data")
        if isinstance(data, dict) and data.get("config_id") == config_id:
            return data
    return None


def undo_target(journal: "Journal", entry_id: str) -> "ConfigVersion":
    """The version whose settings an undo of ``entry_id`` (``cfg:N`` / ``act:N``) would run, read
    before anything is journaled so the undo is vetted first (the journal's undo says the rest:
    an entry already undone, a first version, an action that changed nothing)."""
    from llmos_tui.journal.records import parse_entry_id

    prefix, number = parse_entry_id(entry_id)
    if prefix == "act":
        action = journal.get_action(number)
        if action.config_after is None:
            raise LlmosError(f"act:{number} ({action.kind}, {action.state}) changed no configuration; "
                             "there is nothing to undo")
        restore = action.config_before if action.config_before is not None else \
            journal.get_config(action.config_after).parent_id
    elif prefix == "cfg":
        restore = journal.get_config(number).parent_id
    else:
        raise LlmosError(f"{prefix}:{number} is not a configuration change; undo takes a cfg:N or act:N entry")
    if restore is None:
        raise LlmosError(f"cfg:{number} is the first configuration; it has no parent to revert to")
    return journal.get_config(restore)

