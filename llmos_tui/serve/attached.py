"""A face attached to a running daemon: the Operator's surface, over the daemon's control socket.

``llmos-tui`` and ``llmos-tui chat`` find a daemon serving this journal (or take ``--attach
SOCKET``) and drive an :class:`AttachedOperator` instead of an embedded core. It has the
surface the faces use of :class:`~llmos_tui.core.operator.Operator` — the verbs (``apply``,
``undo``, ``restart_engine``, ``reset_start_limit``, ``set_adapt_mode``, ``send``, ``cancel``,
``snapshot``, ``subscribe``, ``tune``, ``close``) and the parts the screens read (``supervisor``,
``chat``, ``doctor``, ``sampler``, ``journal_writer``, ``config``) — each backed by the daemon:

- every verb is one request on the socket, so the daemon's own change transaction (with the
  drain of its API's requests) is behind it; ``readonly`` refuses the changing ones here;
- one background thread reads the daemon's event stream (``/v1/llmos/events``) and hands each
  item to the part it belongs to, which updates its mirror and tells the face's subscribers:
  engine events (:class:`RemoteEngine`), telemetry samples (a :class:`Sampler` fed with the
  daemon's samples), doctor events (:class:`RemoteDoctor`), changes, tuner events
  (:class:`RemoteTuner`);
- the chat is a :class:`~llmos_tui.core.chat.ChatSession` over :class:`RemoteEngine`, whose
  ``chat`` streams ``/v1/chat/completions`` from the socket: one more client of the daemon's
  queue (a full queue or a change in progress is a reply that ends in an error line);
- the journal is read read-only from its file (the same box): :class:`JournalReader`.

Quitting the face closes this object: the stream, the HTTP client. The daemon keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from llmos_tui.config import Config
from llmos_tui.core.changes import ChangeResult
from llmos_tui.core.chat import ChatSession
from llmos_tui.core.cockpit import SharedVerbs
from llmos_tui.doctor.api import Finding
from llmos_tui.doctor.book import DoctorEvent
from llmos_tui.engine.gguf_info import ModelInfo
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.probe import CanaryResult
from llmos_tui.engine.supervisor import EngineEvent, EngineState, Json, Reply
from llmos_tui.errors import LlmosError
from llmos_tui.observers import Observers
from llmos_tui.serve.client import DaemonClient, DaemonReadOnly
from llmos_tui.serve.sockets import find_daemons
from llmos_tui.telemetry.sample import Sample
from llmos_tui.telemetry.sampler import Sampler

if TYPE_CHECKING:
    from llmos_tui.journal import Journal

__all__ = ["AttachedOperator", "JournalReader", "RemoteDoctor", "RemoteEngine", "RemoteTuner", "find_daemon",
           "attach"]

log = logging.getLogger("llmos_tui.serve.attached")

RECONNECT_S = 1.0  # how often a face whose daemon went away tries its socket again
HISTORY_SAMPLES = 120  # samples fetched on attach: the dashboard's sparklines start full


def find_daemon(runtime_dir: Path, journal: Path) -> Path | None:
    """The control socket of this user's daemon that serves ``journal``, or None."""
    want = _resolved(journal)
    for path in find_daemons(runtime_dir):
        try:
            with DaemonClient(path, timeout=3.0) as client:
                snap = client.snapshot()
        except LlmosError:
            continue
        info = snap.get("journal")
        where = info.get("path") if isinstance(info, dict) else None
        if isinstance(where, str) and _resolved(Path(where)) == want:
            return path
    return None


def _resolved(path: Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except OSError:
        return Path(path)


def attach(config: Config, *, socket: str | None, face: str, readonly: bool = False) -> "AttachedOperator | None":
    """The daemon a face attaches to: ``socket`` when given (an error when it does not answer),
    else the daemon serving this config's journal, else None (the face embeds its own core)."""
    if socket:
        path = Path(socket).expanduser()
        if not path.exists():
            raise LlmosError(f"--attach {socket}: no such socket (is `llmos-tui serve` running?)")
        return AttachedOperator(path, config, face=face, readonly=readonly)
    found = find_daemon(config.paths.runtime_dir, config.journal_file)
    return AttachedOperator(found, config, face=face, readonly=readonly) if found is not None else None


# ---- the engine -------------------------------------------------------------------------------------
class RemoteEngine:
    """The daemon's engine as the faces read a :class:`~llmos_tui.engine.supervisor.Supervisor`:
    ``state``, ``model_info``, ``params``, ``stats()``, ``subscribe``, ``last_error`` — kept by the
    event stream — and ``chat``, which streams a reply from the daemon's queue."""

    def __init__(self, client: DaemonClient, engine: Mapping[str, Json]) -> None:
        self._client = client
        self._observers: Observers[EngineEvent] = Observers("attached engine")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._active: tuple[Reply, threading.Event] | None = None
        self.paused_reason: str | None = None
        self.update(engine)

    def update(self, engine: Mapping[str, Json]) -> None:
        """Take the engine's part of a snapshot (``Operator.snapshot()["engine"]``)."""
        self._stats = {k: v for k, v in engine.items() if k not in ("model_info", "summary")}
        try:
            self.state = EngineState(str(engine.get("state")))
        except ValueError:
            self.state = EngineState.STOPPED
        info = engine.get("model_info")
        self.model_info = _model_info(info) if isinstance(info, dict) else None
        params = engine.get("params")
        if isinstance(params, dict):
            try:
                self.params = EngineParams(**params)  # type: ignore[arg-type]
            except (TypeError, LlmosError):
                pass
        if not hasattr(self, "params"):
            self.params = EngineParams(model_path=str(engine.get("model_path") or ""))
        error = engine.get("last_error")
        self.last_error = str(error) if error else None

    def stats(self) -> dict[str, Json]:
        return {**self._stats, "state": self.state.value, "last_error": self.last_error}

    @property
    def is_ready(self) -> bool:
        return self.state == EngineState.READY

    @property
    def pid(self) -> int | None:
        pid = self._stats.get("pid")
        return pid if isinstance(pid, int) else None

    def subscribe(self, listener: Callable[[EngineEvent], None]) -> Callable[[], None]:
        return self._observers.subscribe(listener)

    def publish(self, event: EngineEvent) -> None:
        self._observers.publish(event)

    def on_event(self, kind: str, data: Mapping[str, Json], ts: float) -> None:
        """One engine event from the daemon: the mirror first, then the face's subscribers."""
        if kind == "state":
            try:
                self.state = EngineState(str(data.get("state")))
            except ValueError:
                pass
            self.paused_reason = str(data.get("reason") or "") or None if self.state == EngineState.PAUSED else None
        elif kind == "crashed":
            self.last_error = str(data.get("signal") and f"engine killed by {data['signal']}"
                                  or f"engine exited with code {data.get('exit_code')}")
        elif kind in ("loaded", "load_failed"):
            try:
                self.update(self._client.snapshot()["engine"])  # type: ignore[arg-type]
            except (LlmosError, KeyError, TypeError):
                pass
        self._observers.publish(EngineEvent(kind, dict(data), ts))

    def on_sample_engine(self, engine: Mapping[str, Json]) -> None:
        """The engine's numbers in a telemetry sample (tok/s, context used) between events."""
        self._stats.update({k: v for k, v in engine.items() if k != "state"})
        error = engine.get("last_error")
        self.last_error = str(error) if error else None

    # ---- the chat: one client of the daemon's queue ---------------------------------------------------
    def chat(self, messages: list[dict[str, str]], *, on_piece: Callable[[str], None] | None = None,
             **sampling: Json) -> Reply:
        """A streamed reply from the daemon (it returns at once; a thread reads the stream)."""
        reply = Reply(next(self._ids), on_piece)
        stop = threading.Event()
        with self._lock:
            self._active = (reply, stop)
        args = {k: v for k, v in sampling.items() if v is not None}
        n_ctx = self._stats.get("n_ctx")
        wanted = args.get("max_tokens")
        if isinstance(n_ctx, int) and n_ctx > 0 and isinstance(wanted, int) and wanted >= n_ctx:
            args["max_tokens"] = max(1, n_ctx // 2)  # the daemon refuses a reply as long as the context
        threading.Thread(target=self._stream, args=(reply, stop, messages, args), name="attached-chat",
                         daemon=True).start()
        return reply

    def _stream(self, reply: Reply, stop: threading.Event, messages: list[dict[str, str]],
                sampling: dict[str, Json]) -> None:
        # Reply's _piece/_finish are the engine reader's side of a reply: this thread is that reader.
        started = time.perf_counter()
        first: float | None = None
        finish: str | None = None
        usage: dict[str, Json] = {}
        chunks = self._client.stream_chat(messages, **sampling)
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                error = chunk.get("error")
                if isinstance(error, dict):
                    reply._finish("interrupted", error=str(error.get("message")), metrics=self._metrics(
                        usage, started, first))
                    return
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]  # type: ignore[assignment]
                for choice in chunk.get("choices") or []:  # type: ignore[union-attr]
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if text:
                        first = first or time.perf_counter()
                        reply._piece(str(text))
                    finish = str(choice["finish_reason"]) if choice.get("finish_reason") else finish
        except LlmosError as exc:
            reply._finish("error", error=str(exc))
            return
        finally:
            chunks.close()  # an early stop disconnects: the daemon cancels the reply
            with self._lock:
                if self._active is not None and self._active[0] is reply:
                    self._active = None
        metrics = self._metrics(usage, started, first)
        if stop.is_set():
            reply._finish("cancelled", metrics=metrics, finish_reason="cancelled")
        else:
            reply._finish("done", metrics=metrics, finish_reason=finish)

    def _metrics(self, usage: Mapping[str, Json], started: float, first: float | None) -> dict[str, Json]:
        """What the client saw: tokens from the daemon's usage, TTFT and tok/s measured here."""
        end = time.perf_counter()
        gen = usage.get("completion_tokens")
        metrics: dict[str, Json] = {"prompt_tokens": usage.get("prompt_tokens", 0), "gen_tokens": gen or 0}
        if usage.get("dropped_messages"):
            metrics["dropped_messages"] = usage["dropped_messages"]
        if first is not None:
            metrics["ttft_ms"] = round((first - started) * 1000, 1)
            if isinstance(gen, int) and gen > 1 and end > first:
                metrics["gen_tps"] = round((gen - 1) / (end - first), 1)
        return metrics

    def cancel(self) -> None:
        """Stop this face's reply (its stream closes; the daemon cancels it on the disconnect)."""
        with self._lock:
            active = self._active
        if active is not None:
            active[1].set()

    def reset_context(self) -> None:
        """Nothing to forget: every request to the daemon carries its whole conversation."""


def _model_info(data: Mapping[str, Json]) -> ModelInfo | None:
    names = {f.name for f in dataclasses.fields(ModelInfo)}
    try:
        return ModelInfo(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
    except TypeError:
        return None


# ---- the doctor -------------------------------------------------------------------------------------
class RemoteDoctor:
    """The daemon's doctor as the doctor screen and the commands read a Doctor: its findings,
    actions, notices and switches (refreshed on each of its events), and its verbs (accept,
    reject, silence, the kill switch, the canary, the start limit), each a request."""

    def __init__(self, client: DaemonClient, engine: RemoteEngine) -> None:
        self._client = client
        self._engine = engine
        self._observers: Observers[DoctorEvent] = Observers("attached doctor")
        self._state: dict[str, Json] = {}
        self._findings: dict[int, Finding] = {}
        self._open: set[int] = set()
        self.refresh()

    def refresh(self) -> None:
        state = self._client.doctor()
        found: dict[int, Finding] = {}
        for item in state.get("findings") or []:  # type: ignore[union-attr]
            finding = _finding(item)
            if finding is not None:
                found[finding.id] = finding
        self._state = state
        self._findings = found
        self._open = {int(i) for i in state.get("open") or [] if isinstance(i, int)}  # type: ignore[union-attr]

    # ---- what the screens read ----------------------------------------------------------------------
    def findings(self, *, open_only: bool = False) -> list[Finding]:
        items = list(self._findings.values())
        return [f for f in items if f.id in self._open] if open_only else items

    def get(self, finding_id: int) -> Finding:
        try:
            return self._findings[finding_id]
        except KeyError:
            raise LlmosError(f"no finding #{finding_id}") from None

    @property
    def notices(self) -> list[str]:
        return [str(n) for n in self._state.get("notices") or []]  # type: ignore[union-attr]

    @property
    def actions(self) -> list[dict[str, Any]]:
        return [a for a in self._state.get("actions") or [] if isinstance(a, dict)]  # type: ignore[union-attr]

    @property
    def kill_switch(self) -> bool:
        return bool(self._state.get("kill_switch"))

    @kill_switch.setter
    def kill_switch(self, on: bool) -> None:
        self._state["kill_switch"] = self._client.set_kill_switch(bool(on))

    @property
    def dry_run(self) -> bool:
        return bool(self._state.get("dry_run"))

    @property
    def busy(self) -> bool:
        return bool(self._state.get("busy"))

    @property
    def start_limit_hit(self) -> bool:
        return bool(self._state.get("start_limit_hit"))

    @property
    def replayed(self) -> bool:
        return bool(self._state.get("replayed"))

    @property
    def last_canary(self) -> CanaryResult | None:
        data = self._state.get("last_canary")
        return _canary(data) if isinstance(data, dict) else None

    @property
    def supervisor(self) -> RemoteEngine | None:
        return self._engine if self._state.get("engine") else None

    @property
    def policy(self) -> SimpleNamespace:
        return SimpleNamespace(silence_s=float(self._state.get("silence_s") or 1800.0))  # type: ignore[arg-type]

    @property
    def registry(self) -> SimpleNamespace:
        repairs = self._state.get("repairs") or {}
        return SimpleNamespace(repairs={name: SimpleNamespace(changes=str(changes))
                                        for name, changes in repairs.items()})  # type: ignore[union-attr]

    # ---- verbs ----------------------------------------------------------------------------------------
    def _decide(self, verb: str, finding_id: int, seconds: float | None = None) -> str | None:
        try:
            error = self._client.decide(verb, finding_id, seconds)
        except DaemonReadOnly as exc:
            return str(exc)
        self.refresh()
        return error

    def accept(self, finding_id: int) -> str | None:
        return self._decide("accept", finding_id)

    def reject(self, finding_id: int) -> str | None:
        return self._decide("reject", finding_id)

    def silence(self, finding_id: int, seconds: float | None = None) -> str | None:
        return self._decide("silence", finding_id, seconds)

    def run_canary(self) -> CanaryResult:
        result = _canary(self._client.canary())
        return result if result is not None else CanaryResult(False, "the daemon's canary answered nothing readable")

    def reset_start_limit(self) -> str:
        return self._client.reset_start_limit()

    # ---- events ----------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[DoctorEvent], object]) -> Callable[[], None]:
        return self._observers.subscribe(callback)

    def on_event(self, data: Mapping[str, Json]) -> None:
        try:
            self.refresh()
        except LlmosError:
            pass
        finding = data.get("finding")
        event = DoctorEvent(str(data.get("kind")), _finding(finding) if isinstance(finding, dict) else None,
                            str(data.get("message") or ""), dict(data.get("data") or {}),  # type: ignore[arg-type]
                            float(data.get("ts") or time.time()))  # type: ignore[arg-type]
        self._observers.publish(event)


def _finding(data: object) -> Finding | None:
    if not isinstance(data, dict):
        return None
    names = {f.name for f in dataclasses.fields(Finding)}
    try:
        return Finding(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError):
        return None


def _canary(data: Mapping[str, Json]) -> CanaryResult | None:
    names = {f.name for f in dataclasses.fields(CanaryResult)}
    try:
        return CanaryResult(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
    except TypeError:
        return None


# ---- the tuner --------------------------------------------------------------------------------------
class RemoteTuner:
    """The daemon's tuner as the tuning screen reads a Tuner: a study starts and runs in the
    daemon (the engine it tunes is there); its events come from the daemon's stream."""

    def __init__(self, client: DaemonClient) -> None:
        self._client = client
        self._observers: Observers[dict[str, Any]] = Observers("attached tuner")
        self.report = None  # the screen reads a finished study's report from its "done" event
        self.study_id: int | None = None
        self.state = "idle"
        try:
            state = client.tune_state()
        except LlmosError:
            state = {}
        self.state = str(state.get("state") or "idle")
        sid = state.get("study_id")
        self.study_id = sid if isinstance(sid, int) else None

    @property
    def running(self) -> bool:
        return self.state != "idle"

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        return self._observers.subscribe(listener)

    def on_event(self, event: Mapping[str, Json]) -> None:
        kind = event.get("kind")
        if kind == "state":
            self.state = str(event.get("state") or "idle")
        elif kind == "study" and isinstance(event.get("study_id"), int):
            self.study_id = event["study_id"]  # type: ignore[assignment]
        self._observers.publish(dict(event))

    def start_in_background(self, **options: Json) -> None:
        """Ask the daemon to start a study; a refusal (read-only, one already runs, a bad option)
        comes back as the study's end, which the tuning screen shows as one line."""
        try:
            answer = self._client.tune(**options)
        except LlmosError as exc:
            message = str(exc)
        else:
            if answer.get("ok"):
                return
            message = str(answer.get("error"))
        self._observers.publish({"kind": "state", "state": "idle"})
        self._observers.publish({"kind": "done", "report": {"study_id": None, "status": "not started",
                                                            "message": message}})

    def run(self, **options: Json) -> dict[str, Json]:
        """Start a study in the daemon (it does not block: the study's events say how it goes)."""
        return self._client.tune(**options)

    def stop(self) -> None:
        self._client.tune_stop()

    def apply_best(self, report: Mapping[str, object]) -> dict[str, Json]:
        try:
            return self._client.tune_apply_best(dict(report))  # type: ignore[arg-type]
        except LlmosError as exc:
            return {"ok": False, "state": "refused", "message": str(exc)}


# ---- the journal --------------------------------------------------------------------------------------
class JournalReader:
    """The daemon's journal, read read-only from its file on this box, through the same port the
    faces read a JournalWriter by (``submit(fn)`` runs ``fn(journal)`` on its own thread; ``flush``).
    The daemon is the only writer; this face never writes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="attached-journal")
        self._journal: "Journal | None" = None

    def _open(self) -> "Journal":
        if self._journal is None:
            from llmos_tui.journal import Journal

            self._journal = Journal(self.path, readonly=True)
        return self._journal

    def submit(self, fn: Callable[["Journal"], Any]) -> "concurrent.futures.Future[Any]":
        return self._pool.submit(lambda: fn(self._open()))

    def flush(self, timeout: float | None = None) -> bool:
        """The daemon's writer commits on its own; what it committed is what a read sees."""
        return True

    def close(self) -> None:
        def shut() -> None:
            if self._journal is not None:
                self._journal.close()

        try:
            self._pool.submit(shut).result(5)
        except Exception:  # noqa: BLE001 - closing a reader never fails a face's exit
            pass
        self._pool.shutdown(wait=False)


class _MirrorSource:
    """A sampler source that adds nothing: the attached face's sampler is fed, never polled."""

    def collect(self, sample: Sample) -> None:
        return None


class _AdaptView:
    def __init__(self, policy: Mapping[str, Json]) -> None:
        self._policy = dict(policy)

    def policy(self) -> dict[str, Json]:
        return dict(self._policy)


# ---- the operator -------------------------------------------------------------------------------------
class AttachedOperator(SharedVerbs):
    """The Operator surface over a running daemon (see the module's docstring)."""

    mode = "attached"

    def __init__(self, socket: Path, config: Config, *, face: str = "tui", readonly: bool = False) -> None:
        self.socket = Path(socket)
        self.face = face
        self.client = DaemonClient(self.socket, readonly=readonly)
        try:
            snap = self.client.snapshot()
        except LlmosError:
            self.client.close()
            raise
        journal = snap.get("journal")
        journal_path = Path(str(journal["path"])) if isinstance(journal, dict) and journal.get("path") else None
        # the face's own settings (chat sampling, theme, keys), the daemon's journal, --readonly
        self.config = dataclasses.replace(config, readonly=bool(readonly or snap.get("readonly")),
                                          journal_path=journal_path or config.journal_path)
        self.readonly_attach = readonly
        self.daemon: dict[str, Json] = {"pid": snap.get("pid"), "url": (snap.get("serve") or {}).get("url"),  # type: ignore[union-attr]
                                        "socket": str(self.socket)}
        self.replay = snap.get("replay") if isinstance(snap.get("replay"), dict) else None
        self.started = time.time()
        self.problems: list[str] = [f"the daemon: {p}" for p in snap.get("problems") or []]  # type: ignore[union-attr]
        self.supervisor = RemoteEngine(self.client, snap["engine"])  # type: ignore[arg-type]
        self.chat = ChatSession(self.supervisor, config.chat)  # type: ignore[arg-type]
        self.sampler: Sampler | None = Sampler(_MirrorSource(), interval=max(0.1, config.telemetry_interval),
                                               engine_stats=None)
        for item in self.client.samples(HISTORY_SAMPLES):
            self._feed(item)
        self.doctor = RemoteDoctor(self.client, self.supervisor) if snap.get("doctor") is not None else None
        self.journal_writer = JournalReader(journal_path) if journal_path is not None else None
        adapt = snap.get("adapt")
        self.adapter = _AdaptView(adapt) if isinstance(adapt, dict) and adapt.get("mode") != "off" else None
        self.exporter = None
        self._tuner: RemoteTuner | None = None
        self._changes: Observers[ChangeResult] = Observers("attached changes")
        self._closers: list[Callable[[], None]] = []
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._events_client: DaemonClient | None = None
        self._thread = threading.Thread(target=self._listen, name="attached-events", daemon=True)
        self._thread.start()
        self._connected.wait(5)

    @property
    def attached(self) -> str:
        """One line for the faces' status bars: which daemon this face drives."""
        where = self.daemon.get("url") or self.socket
        return f"attached to the daemon pid {self.daemon.get('pid')} ({where})" + (
            ", read-only" if self.readonly_attach else "")

    # ---- the event stream ---------------------------------------------------------------------------
    def _listen(self) -> None:
        told_gone = False

        def opened() -> None:
            nonlocal told_gone
            self._connected.set()
            if told_gone:  # back: read the state afresh, then the events
                told_gone = False
                self.supervisor.on_event("loaded", {}, time.time())

        while not self._closed.is_set():
            client = DaemonClient(self.socket)
            self._events_client = client
            try:
                for item in client.events(on_open=opened):
                    if self._closed.is_set():
                        break
                    if item.get("type") == "bye":
                        raise LlmosError(f"the daemon stopped ({item.get('reason')})")
                    self._dispatch(item)
                raise LlmosError("the daemon ended the event stream")
            except Exception as exc:  # noqa: BLE001 - a daemon that went away is said, then retried
                if not self._closed.is_set() and not told_gone:
                    told_gone = True
                    self.supervisor.last_error = f"{exc}: this face waits for it at {self.socket}"
                    self.supervisor.on_event("state", {"state": EngineState.STOPPED.value,
                                                       "reason": "daemon gone"}, time.time())
            finally:
                client.close()
                self._connected.set()
            self._closed.wait(RECONNECT_S)
            if told_gone and not self._closed.is_set():
                self._follow_restarted_daemon()

    def _follow_restarted_daemon(self) -> None:
        """The socket is gone for good (its daemon ended) and another daemon now serves the same
        journal (restarted by systemd, say, under a new pid): attach to that one."""
        runtime_dir = self.socket.parent  # where this user's daemons put their sockets
        if self.socket in find_daemons(runtime_dir):  # its daemon lives: it will answer again
            return
        found = find_daemon(runtime_dir, self.config.journal_file)
        if found is None or found == self.socket:
            return
        self.socket = found
        self.client.retarget(found)
        try:
            snap = self.client.snapshot()
        except LlmosError:
            return
        serve = snap.get("serve")
        self.daemon = {"pid": snap.get("pid"), "url": serve.get("url") if isinstance(serve, dict) else None,
                       "socket": str(found)}
        log.info("attached face: the daemon restarted; now attached to pid %s", snap.get("pid"))

    def _dispatch(self, item: Mapping[str, Json]) -> None:
        kind = item.get("type")
        data = item.get("data")
        data = data if isinstance(data, dict) else {}
        try:
            if kind == "engine":
                self.supervisor.on_event(str(item.get("kind")), data, float(item.get("ts") or time.time()))  # type: ignore[arg-type]
            elif kind == "sample":
                self._feed(data)
            elif kind == "doctor" and self.doctor is not None:
                self.doctor.on_event(data)
            elif kind == "change":
                self._changes.publish(_change_result(data))
            elif kind == "tuner" and self._tuner is not None:
                self._tuner.on_event(data)
        except Exception:  # noqa: BLE001 - one odd event must not stop the stream
            log.exception("attached face: event %r not handled", kind)

    def _feed(self, data: Mapping[str, Json]) -> None:
        try:
            sample = Sample.from_dict(data)
        except Exception:  # noqa: BLE001
            return
        if isinstance(sample.engine, dict):
            self.supervisor.on_sample_engine(sample.engine)
        if self.sampler is not None:
            self.sampler.feed(sample)

    # ---- engine ---------------------------------------------------------------------------------------
    def try_start_engine(self) -> str | None:
        return None

    def restart_engine(self, params: EngineParams | None = None, reason: str = "operator") -> str | None:
        if params is not None and params.to_dict() != self.supervisor.params.to_dict():
            result = self.apply(params, reason=reason)
            return None if result.ok else result.message
        try:
            answer = self.client.restart(reason)
        except LlmosError as exc:
            return str(exc)
        return None if answer.get("ok") else str(answer.get("message") or answer.get("error"))

    # ---- chat: send and cancel are SharedVerbs (core/cockpit.py) ---------------------------
    # ---- configuration changes --------------------------------------------------------------------------
    def apply(self, changes: EngineParams | dict[str, object], *, reason: str = "", source: str = "operator",
              verify: Callable[[], str | None] | None = None) -> ChangeResult:
        if verify is not None:
            return ChangeResult("refused", "refused: a verification callback cannot run in the daemon")
        wanted = changes.to_dict() if isinstance(changes, EngineParams) else dict(changes)
        try:
            return _change_result(self.client.apply(wanted, reason=reason or f"{self.face}: attached change"))  # type: ignore[arg-type]
        except LlmosError as exc:
            return ChangeResult("refused", f"refused: {exc}")

    def undo(self, entry_id: str, *, wait_s: float = 0.0) -> ChangeResult:
        try:
            return _change_result(self.client.undo(entry_id))
        except LlmosError as exc:
            return ChangeResult("refused", f"refused: {exc}")

    def reset_start_limit(self) -> str:
        try:
            return self.client.reset_start_limit()
        except LlmosError as exc:
            return str(exc)

    def set_adapt_mode(self, mode: str) -> str:
        answer = self.client.set_adapt_mode(mode)
        if not answer.get("ok"):
            raise LlmosError(str(answer.get("error")))
        adapt = self.client.snapshot().get("adapt")  # the dashboard's view of the learner follows
        self.adapter = _AdaptView(adapt) if isinstance(adapt, dict) and adapt.get("mode") != "off" else None
        return str(answer.get("message"))

    # ---- observation -------------------------------------------------------------------------------------
    def subscribe(self, *, samples: Callable[[Sample], object] | None = None,
                  findings: Callable[[DoctorEvent], object] | None = None,
                  events: Callable[[EngineEvent], object] | None = None,
                  changes: Callable[[ChangeResult], object] | None = None) -> Callable[[], None]:
        undo: list[Callable[[], None]] = []
        if samples is not None and self.sampler is not None:
            undo.append(self.sampler.subscribe(samples))
        if findings is not None:
            if self.doctor is None:
                raise LlmosError("the doctor is not running in the daemon")
            undo.append(self.doctor.subscribe(findings))
        if events is not None:
            undo.append(self.supervisor.subscribe(events))  # type: ignore[arg-type]
        if changes is not None:
            undo.append(self._changes.subscribe(changes))

        def unsubscribe() -> None:
            for fn in undo:
                fn()

        return unsubscribe

    def snapshot(self) -> dict[str, Json]:
        return self.client.snapshot()

    # ---- tuning ------------------------------------------------------------------------------------------
    @property
    def tuner(self) -> RemoteTuner:
        if self._tuner is None:
            self._tuner = RemoteTuner(self.client)
        return self._tuner

    def tune(self, **options: Json) -> dict[str, Json]:
        """Start a study in the daemon; unlike the embedded core's, it returns at once (the study
        runs there, its events come on the stream)."""
        return self.tuner.run(**options)

    # ---- life ----------------------------------------------------------------------------------------------
    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        """Detach: the stream and the clients close; the daemon keeps serving."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.supervisor.cancel()
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: BLE001
                pass
        events = self._events_client
        if events is not None:
            events.close()
        self._thread.join(0.5)  # a read blocked on the socket ends with the process (a daemon thread)
        if self.journal_writer is not None:
            self.journal_writer.close()
        self.client.close()

    def __enter__(self) -> "AttachedOperator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _change_result(data: Mapping[str, Json]) -> ChangeResult:
    params = data.get("params")
    try:
        engine = EngineParams(**params) if isinstance(params, dict) else None  # type: ignore[arg-type]
    except (TypeError, LlmosError):
        engine = None
    if "state" not in data:
        return ChangeResult("refused", str(data.get("error") or "the daemon refused the change"))
    details = data.get("details")
    return ChangeResult(str(data["state"]), str(data.get("message") or ""), engine,
                        data.get("config_id") if isinstance(data.get("config_id"), int) else None,  # type: ignore[arg-type]
                        data.get("action_id") if isinstance(data.get("action_id"), int) else None,  # type: ignore[arg-type]
                        bool(data.get("journaled", True)), dict(details) if isinstance(details, dict) else {})
