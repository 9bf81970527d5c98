"""The engine supervisor: starts the llama.cpp child, streams replies, keeps its logs, notices its death.

This is the one engine API that every face uses (TUI, console, doctor, tuner). It is plain
threads and callbacks, so it serves Textual, prompt-toolkit and scripts alike.
"""

from __future__ import annotations

import collections
import enum
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

from llmos_tui.engine import protocol as P
from llmos_tui.engine.gguf_info import ModelInfo, read_model_info
from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import EngineError, ModelError
from llmos_tui.observers import Observers
from llmos_tui.textsafe import sanitize


log = logging.getLogger("llmos_tui.engine")

Json = Union[str, int, float, bool, None, list["Json"], dict[str, "Json"]]
Payload = dict[str, Json]  # one JSON object to or from the engine child (its protocol), or an event's data
Sampling = Union[float, int, None]  # temperature, top_p, max_tokens, seed...


@dataclass
class _Waiter:
    """A request in flight that waits for the child's answer (a bench, a thread change)."""

    id: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Payload | str | None = None  # the answer, or the child's error line
    error: str | None = None


class EngineState(str, enum.Enum):
    STOPPED = "stopped"
    LOADING = "loading"
    READY = "ready"
    GENERATING = "generating"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    FAILED = "failed"  # the last load failed; the engine is not running
    PAUSED = "paused"  # stopped on purpose for a while (a tuning study); resume() brings it back


@dataclass
class EngineEvent:
    """What subscribers receive. kind: state, progress, loaded, load_failed, unloaded,
    crashed, restarting, request_done, error; adapt_drift (published by the online learner)."""

    kind: str
    data: Payload = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True)
class LogLine:
    ts: float
    text: str


class Reply:
    """One streamed answer. Iterate it for text pieces; afterwards read status and metrics.

    status: streaming, done, cancelled, interrupted (the engine died mid-reply), error.
    """

    _END = object()

    def __init__(self, rid: int, on_piece: Callable[[str], None] | None = None) -> None:
        self.id = rid
        self.text = ""
        self.status = "streaming"
        self.finish_reason: str | None = None
        self.metrics: Payload = {}
        self.error: str | None = None
        self.started = time.perf_counter()
        self.first_piece_at: float | None = None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._done = threading.Event()
        self._on_piece = on_piece
        self._callbacks: list[Callable[["Reply"], None]] = []
        self._cb_lock = threading.Lock()

    # called by the supervisor's reader thread
    def _piece(self, text: str) -> None:
        if self.first_piece_at is None:
            self.first_piece_at = time.perf_counter()
        self.text += text
        if self._on_piece is not None:
            try:
                self._on_piece(text)
            except Exception:
                log.exception("on_piece callback of reply %s failed", self.id)
        self._queue.put(text)

    def _finish(self, status: str, *, metrics: Payload | None = None, error: str | None = None,
                finish_reason: str | None = None) -> None:
        with self._cb_lock:
            if self._done.is_set():
                return
            self.status = status
            self.metrics = metrics or {}
            self.error = error
            self.finish_reason = finish_reason
            self._done.set()
            callbacks = list(self._callbacks)
        # callbacks first (the chat records the reply, the journal queues it), then the end of
        # the stream: a reader that finishes iterating can rely on the reply being recorded
        for callback in callbacks:
            self._run_callback(callback)
        self._queue.put(self._END)

    def add_done_callback(self, callback: Callable[["Reply"], None]) -> None:
        """Run callback(reply) when the reply ends (at once if it already has)."""
        with self._cb_lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        self._run_callback(callback)

    def _run_callback(self, callback: Callable[["Reply"], None]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("done callback of reply %s failed", self.id)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> "Reply":
        if not self._done.wait(timeout):
            raise TimeoutError(f"reply {self.id} still streaming after {timeout} s")
        return self

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            yield item

    def batches(self) -> Iterator[str]:
        """Like iterating, but joins the pieces that arrived while the reader was busy."""
        while True:
            parts = [self._queue.get()]
            while True:
                try:
                    parts.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ended = parts[-1] is self._END
            text = "".join(p for p in parts if p is not self._END)
            if text:
                yield text
            if ended:
                return


Listener = Callable[[EngineEvent], None]


class Supervisor:
    """Owns one engine child process at a time."""

    def __init__(
        self,
        params: EngineParams,
        *,
        log_capacity: int = 2000,
        load_timeout: float = 600.0,
        python: str = sys.executable,
    ) -> None:
        self.params = params.validate()
        self.load_timeout = load_timeout
        self.python = python
        self.model_info: ModelInfo | None = None
        self.runtime: Payload = {}
        self.state = EngineState.STOPPED
        self.load_progress = 0.0
        self.last_exit: Payload | None = None
        self.last_error: str | None = None
        self.requests = 0
        self.errors = 0
        self.restarts = 0
        self.ctx_used = 0
        self.last_metrics: Payload = {}
        self._threads_waiter: _Waiter | None = None  # a set_threads waiting for its answer
        self.live_threads: dict[str, int] = {}  # set_threads' counts in force (until the next load)
        self._gen_tps: collections.deque[float] = collections.deque(maxlen=10)
        self._logs: collections.deque[LogLine] = collections.deque(maxlen=log_capacity)
        self._observers: Observers[EngineEvent] = Observers("engine")
        self._lock = threading.RLock()
        self._life = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self._active: Reply | None = None
        self._load_done = threading.Event()
        self._load_result: Payload = {}
        self._reset_done = threading.Event()
        self._bench: _Waiter | None = None  # the bench in flight: id, event, result
        self.paused_reason: str | None = None
        self._inflight: InFlight | None = None  # the chat request being answered (the watchdog reads it)

    # ---- observers ------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._observers.subscribe(listener)

    def _emit(self, kind: str, /, **data: Json) -> None:
        self._observers.publish(EngineEvent(kind, data))

    def publish(self, kind: str, /, **data: Json) -> None:
        """An event about this engine from another part of the core (the online learner's
        ``adapt_drift``), to every subscriber: the doctor reads it like the engine's own."""
        self._emit(kind, **data)

    def _set_state(self, state: EngineState, **data: Json) -> None:
        with self._lock:
            prev, self.state = self.state, state
        if prev != state:
            self._emit("state", state=state.value, prev=prev.value, **data)

    def _log(self, text: str) -> None:
        # llama.cpp prints the model's metadata (general.name, ...): whatever escapes they carry stay here
        self._logs.append(LogLine(time.time(), sanitize(text)))

    def logs(self, n: int | None = None) -> list[LogLine]:
        lines = list(self._logs)
        return lines[-n:] if n else lines

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_ready(self) -> bool:
        return self.state == EngineState.READY

    # ---- life cycle -----------------------------------------------------------------
    def start(self, params: EngineParams | None = None, *, timeout: float | None = None) -> ModelInfo:
        """Start a child and load the model; block until it is ready. Raises ModelError/EngineError."""
        params = (params or self.params).validate()
        try:
            info = read_model_info(params.model_path)
        except ModelError as exc:
            self.last_error = str(exc)
            self._set_state(EngineState.FAILED, error=str(exc))
            self._emit("load_failed", error=str(exc), params=params.to_dict())
            raise
        with self._life:  # one start at a time: two would orphan a child
            self.paused_reason = None
            self.stop()
            with self._lock:
                self.params = params
                self.model_info = info
                self.load_progress = 0.0
                self._stopping = False
                self._load_done.clear()
                self._load_result = {}
            self._set_state(EngineState.LOADING, model=info.name)
            proc = self._spawn()
            self._send({"op": P.OP_LOAD, "params": params.to_dict()})
            if not self._load_done.wait(timeout or self.load_timeout):
                with self._lock:
                    self._stopping = True  # our own kill, not a crash
                self._kill(proc)
                message = f"model load timed out after {timeout or self.load_timeout:.0f} s"
                self._fail_load(message)
                raise EngineError(message)
            result = self._load_result
        if result.get("ev") != P.EV_LOADED:
            message = result.get("message") or "engine failed to load the model"
            raise (ModelError if result.get("ev") == P.EV_LOAD_FAILED else EngineError)(message)
        return info

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            [self.python, "-m", "llmos_tui.engine.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is the operator's, not the engine's
        )
        with self._lock:
            self._proc = proc
        threading.Thread(target=self._read_events, args=(proc,), name="engine-events", daemon=True).start()
        threading.Thread(target=self._read_logs, args=(proc,), name="engine-logs", daemon=True).start()
        return proc

    def stop(self, timeout: float = 5.0) -> None:
        """Unload and end the child (gracefully, then by force)."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            self._stopping = True
        if not self._load_done.is_set():  # a start() waiting for this child gives up at once
            self._load_result = {"ev": "stopped", "message": "the engine was stopped while loading"}
            self._load_done.set()
        if proc.poll() is None:
            self.cancel()  # a reply in flight ends first, so the shutdown is not queued behind it
            try:
                self._send({"op": P.OP_SHUTDOWN})
                assert proc.stdin is not None
                proc.stdin.close()
            except (OSError, EngineError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
        self._wait_reader_finish(proc)
        with self._lock:
            if self._proc is proc:
                self._proc = None
            reply, self._active = self._active, None
            self._inflight = None
        if reply is not None:
            reply._finish("interrupted", error="the engine was stopped")
        waiter = self._bench
        if waiter is not None and not waiter.done.is_set():
            waiter.error = "the engine was stopped during the benchmark"
            waiter.done.set()
        if self.paused_reason is not None:
            self._set_state(EngineState.PAUSED, reason=self.paused_reason)
        elif self.state not in (EngineState.CRASHED, EngineState.FAILED):
            self._set_state(EngineState.STOPPED)
        self._emit("unloaded")

    def restart(self, params: EngineParams | None = None, *, reason: str = "") -> ModelInfo:
        self.restarts += 1
        self._emit("restarting", reason=reason, params=(params or self.params).to_dict())
        self._set_state(EngineState.RESTARTING)
        return self.start(params)

    def pause(self, reason: str = "paused") -> None:
        """Stop the child and stay PAUSED (not a configuration change: resume() loads the same
        parameters). Chat requests meanwhile are refused with "engine is paused"."""
        with self._life:
            self.paused_reason = reason or "paused"
            if self._proc is None:
                self._set_state(EngineState.PAUSED, reason=self.paused_reason)
                return
            self.stop()

    def resume(self, *, timeout: float | None = None) -> ModelInfo:
        """Start again with the parameters that ran before the pause."""
        self.paused_reason = None
        return self.start(self.params, timeout=timeout)

    @property
    def is_paused(self) -> bool:
        return self.state == EngineState.PAUSED

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the child (tests, and an operator's last resort)."""
        pid = self.pid
        if pid is None:
            raise EngineError("engine is not running")
        os.kill(pid, sig)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _wait_reader_finish(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 2.0
        while getattr(proc, "_llmos_reader_done", False) is False and time.monotonic() < deadline:
            time.sleep(0.005)

    # ---- requests -------------------------------------------------------------------
    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        on_piece: Callable[[str], None] | None = None,
        **sampling: Sampling,
    ) -> Reply:
        """Send a chat request; returns at once with a Reply that streams."""
        with self._lock:
            if self.state != EngineState.READY or (self._active is not None and not self._active.finished):
                raise EngineError(f"engine is {self.state.value}, not ready")
            reply = Reply(next(self._ids), on_piece)
            self._active = reply
            self._inflight = InFlight(reply.id, time.time(),
                                      prompt_estimate=sum(len(m.get("content") or "") for m in messages) // 4)
            self.state = EngineState.GENERATING  # in the same lock as the check: one request at a time
        self._emit("state", state=EngineState.GENERATING.value, prev=EngineState.READY.value)
        sampling = {k: v for k, v in sampling.items() if v is not None}
        try:
            self._send({"op": P.OP_CHAT, "id": reply.id, "messages": messages, "sampling": sampling})
        except EngineError as exc:
            self._end_flight(reply.id)
            reply._finish("interrupted", error=str(exc))
        return reply

    def bench(self, *, n_prompt: int = 512, n_gen: int = 128, depth: int = 0, reps: int = 3,
              warmup: bool = True, seed: int = 1234, timeout: float = 300.0) -> Payload:
        """Measure the loaded model, llama-bench style (see Worker.bench); block until done.

        Returns the worker's result: per-rep ``rows`` (pp_tok_s, tg_tok_s, ttft_ms, ...), their
        means, peak_rss_mb, peak_vram_mb, load_ms. Raises EngineError when the engine is not
        ready, refuses the bench or dies during it, BenchTimeout when it runs past ``timeout``.
        """
        with self._lock:
            if self.state != EngineState.READY or (self._active is not None and not self._active.finished):
                raise EngineError(f"engine is {self.state.value}, not ready")
            waiter = _Waiter(next(self._ids))
            self._bench = waiter
            self.state = EngineState.GENERATING  # a chat meanwhile is refused, as during a reply
        self._emit("state", state=EngineState.GENERATING.value, prev=EngineState.READY.value)
        spec = {"n_prompt": int(n_prompt), "n_gen": int(n_gen), "depth": int(depth), "reps": int(reps),
                "warmup": bool(warmup), "seed": int(seed)}
        try:
            self._send({"op": P.OP_BENCH, "id": waiter.id, **spec})
            if not waiter.done.wait(timeout):
                try:
                    self._send({"op": P.OP_CANCEL, "id": waiter.id})
                except EngineError:
                    pass
                raise BenchTimeout(f"benchmark did not finish within {timeout:.0f} s")
        finally:
            with self._lock:
                if self._bench is waiter:
                    self._bench = None
                if self.state == EngineState.GENERATING and self._active is None:
                    self.state = EngineState.READY
        if waiter.error:
            raise EngineError(waiter.error)
        result = dict(waiter.result or {})
        self._emit("bench_done", spec=spec, result={k: v for k, v in result.items() if k != "rows"})
        return result

    def cancel(self) -> None:
        reply = self._active
        if reply is not None and not reply.finished:
            try:
                self._send({"op": P.OP_CANCEL, "id": reply.id})
            except EngineError:
                pass

    def set_threads(self, n_threads: int, n_threads_batch: int, *, timeout: float = 5.0) -> dict[str, int]:
        """Change the engine's generation / prompt-processing threads live (llama_set_n_threads),
        no reload; it applies from the next request and lasts until the next load. Returns the
        counts the child reports in force. ``self.params`` (the journaled configuration) is not
        changed: ``live_threads`` says what runs."""
        if self.state not in (EngineState.READY, EngineState.GENERATING):
            raise EngineError(f"engine is {self.state.value}, not ready")
        with self._lock:
            waiter = _Waiter(next(self._ids))
            self._threads_waiter = waiter
        self._send({"op": P.OP_SET_THREADS, "id": waiter.id, "n_threads": int(n_threads),
                    "n_threads_batch": int(n_threads_batch)})
        if not waiter.done.wait(timeout):
            raise EngineError("engine did not confirm the thread change in time")
        if isinstance(waiter.result, str):
            raise EngineError(waiter.result)
        self.live_threads = dict(waiter.result)
        return self.live_threads

    def reset_context(self, timeout: float = 10.0) -> None:
        """Clear the KV cache (the conversation the engine remembers)."""
        if self.state != EngineState.READY:
            raise EngineError(f"engine is {self.state.value}, not ready")
        self._reset_done.clear()
        self._send({"op": P.OP_RESET})
        if not self._reset_done.wait(timeout):
            raise EngineError("engine did not clear its context in time")
        self.ctx_used = 0

    def inject(self, kind: str, **args: Json) -> None:
        """Make the child misbehave on purpose: abort, oom, exit, slow, hang."""
        if kind not in P.FAULTS:
            raise EngineError(f"unknown fault {kind!r} (known: {', '.join(P.FAULTS)})")
        self._send({"op": P.OP_FAULT, "kind": kind, **args})

    def _send(self, cmd: Payload) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise EngineError("engine is not running")
        try:
            proc.stdin.write((json.dumps(cmd) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise EngineError(f"engine is not answering: {exc}") from None

    # ---- reader threads -------------------------------------------------------------
    def _read_logs(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if text:
                self._log(text)

    def _read_events(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    self._log(f"llmos: unreadable event line {raw[:120]!r}")
                    continue
                try:
                    self._on_event(event)
                except Exception:  # a bug must not stop the reading, or the state would stick
                    log.exception("engine event %r could not be handled", event.get("ev"))
        finally:
            code = proc.wait()
            self._on_exit(proc, code)
            proc._llmos_reader_done = True  # type: ignore[attr-defined]

    def _on_event(self, ev: Payload) -> None:
        kind = ev.get("ev")
        reply = self._active
        if kind == P.EV_TOKEN:
            self._progress(ev)
            if reply is not None and reply.id == ev.get("id"):
                reply._piece(ev["text"])
        elif kind == P.EV_GEN_PROGRESS:
            self._progress(ev)
        elif kind == P.EV_PREFILL:
            flight = self._inflight
            if flight is not None and flight.id == ev.get("id"):
                flight.prompt_tokens = int(ev.get("prompt_tokens") or 0)
        elif kind == P.EV_DONE:
            metrics = ev.get("metrics") or {}
            if reply is not None and reply.id == ev.get("id"):
                reply._finish(ev.get("status", "done"), metrics=metrics, finish_reason=ev.get("finish_reason"))
                self._active = None
            self._end_flight(ev.get("id"))
            self.requests += 1
            self.ctx_used = int(metrics.get("ctx_used") or 0)
            self.last_metrics = metrics
            if metrics.get("gen_tps"):
                self._gen_tps.append(float(metrics["gen_tps"]))
            self._set_state(EngineState.READY)
            self._emit("request_done", id=ev.get("id"), status=ev.get("status"), metrics=metrics)
        elif kind == P.EV_PROGRESS:
            self.load_progress = float(ev.get("progress", 0.0))
            self._emit("progress", progress=self.load_progress)
        elif kind == P.EV_LOADED:
            self.runtime = ev.get("runtime") or {}
            self.live_threads = {}  # a fresh load runs its params' threads again
            self.ctx_used = 0
            self.last_error = None
            self.load_progress = 1.0
            self._load_result = ev
            self._set_state(EngineState.READY)
            self._emit("loaded", load_ms=ev.get("load_ms"), model=self.model_info.name if self.model_info else "",
                       params=self.params.to_dict(), runtime=self.runtime)
            self._load_done.set()
        elif kind == P.EV_LOAD_FAILED:
            message = self._explain_load_failure(ev.get("message", ""))
            ev = {**ev, "message": message}
            self._load_result = ev
            self._fail_load(message)
        elif kind == P.EV_RESET_DONE:
            self._reset_done.set()
        elif kind == P.EV_THREADS_SET:
            waiter = self._threads_waiter
            if waiter is not None and waiter.id == ev.get("id"):
                waiter.result = {"n_threads": int(ev["n_threads"]), "n_threads_batch": int(ev["n_threads_batch"])}
                waiter.done.set()
        elif kind == P.EV_BENCH:
            waiter = self._bench
            if waiter is not None and waiter.id == ev.get("id"):
                result = ev.get("result") or {}
                result["status"] = ev.get("status", "done")
                waiter.result = result
                self._set_state(EngineState.READY)
                waiter.done.set()
        elif kind == P.EV_ERROR:
            self.errors += 1
            message = ev.get("message", "")
            self.last_error = message
            if reply is not None and ev.get("id") == reply.id:
                reply._finish("error", error=message)
                self._active = None
                self._set_state(EngineState.READY)
            self._end_flight(ev.get("id"))
            waiter = self._bench
            if waiter is not None and waiter.id == ev.get("id"):
                waiter.error = message
                self._set_state(EngineState.READY)
                waiter.done.set()
            threads_waiter = self._threads_waiter
            if threads_waiter is not None and threads_waiter.id == ev.get("id"):
                threads_waiter.result = message
                threads_waiter.done.set()
            self._emit("error", message=message, id=ev.get("id"))

    def _progress(self, ev: Payload) -> None:
        """A token (or the worker's word that tokens still come): the request moves forward."""
        flight = self._inflight
        if flight is not None and flight.id == ev.get("id"):
            flight.tokens = int(ev.get("n") or flight.tokens + 1)
            flight.last_token_ts = time.time()

    def _end_flight(self, rid: object) -> None:
        flight = self._inflight
        if flight is not None and flight.id == rid:
            self._inflight = None

    def in_flight(self) -> Payload | None:
        """The chat request being answered, for the forward-progress watchdog: when it started,
        its prompt's length (the worker's count once it has tokenised, an estimate before),
        the tokens sampled so far and how long since the last one (or since the start)."""
        flight = self._inflight
        return flight.to_dict(time.time()) if flight is not None else None

    def _explain_load_failure(self, message: str) -> str:
        """llama-cpp-python says 'Failed to load model from file'; llama.cpp's log says why."""
        time.sleep(0.05)  # let the log reader catch the lines printed just before
        from llmos_tui.engine.logreasons import llama_reason

        lines = [line.text for line in self.logs(60)]
        reason = llama_reason(lines)
        if not reason:  # no line with a known mark: the last error-looking one
            reasons = [t for t in lines if ("error" in t.lower() or "failed" in t.lower()) and not t.startswith("llmos")]
            reason = reasons[-1].strip() if reasons else ""
        detail = f" ({reason})" if reason else ""
        path = self.params.model_path
        return f"llama.cpp refused {os.path.basename(path)}: {message}{detail}"

    def _fail_load(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        self._set_state(EngineState.FAILED, error=message)
        self._emit("load_failed", error=message, params=self.params.to_dict())
        self._load_done.set()  # before the stop below, which would otherwise say "stopped"
        proc = self._proc
        if proc is not None:
            threading.Thread(target=self.stop, name="engine-stop", daemon=True).start()

    def _on_exit(self, proc: subprocess.Popen[bytes], code: int) -> None:
        with self._lock:
            expected = self._stopping or self._proc is not proc
        if expected:
            return
        time.sleep(0.05)  # the log reader drains the child's last words (the abort message)
        sig = -code if code < 0 else None
        exit_info = {
            "exit_code": code if code >= 0 else None,
            "signal": signal.Signals(sig).name if sig else None,
            "last_logs": [l.text for l in self.logs(20)],
        }
        self.last_exit = exit_info
        self.errors += 1
        reply = self._active
        self._active = None
        self._inflight = None
        if reply is not None:
            reply._finish("interrupted", error=describe_exit(exit_info))
        waiter = self._bench
        if waiter is not None and not waiter.done.is_set():
            waiter.error = f"engine died during the benchmark: {describe_exit(exit_info)}"
            waiter.done.set()
        if not self._load_done.is_set():
            self._load_result = {"ev": "crashed", "message": f"engine died while loading: {describe_exit(exit_info)}"}
            self._load_done.set()
        with self._lock:
            if self._proc is proc:
                self._proc = None
        self.last_error = describe_exit(exit_info)
        self._set_state(EngineState.CRASHED, **exit_info)
        self._emit("crashed", **exit_info, interrupted_request=reply.id if reply else None)

    # ---- numbers for telemetry and status bars --------------------------------------
    def stats(self) -> Payload:
        rolling = sum(self._gen_tps) / len(self._gen_tps) if self._gen_tps else None
        info = self.model_info
        return {
            "state": self.state.value,
            "model": info.name if info else "",
            "model_path": self.params.model_path,
            "params": self.params.to_dict(),
            "n_ctx": int(self.runtime.get("n_ctx") or self.params.n_ctx),
            "ctx_used": self.ctx_used,
            "last_gen_tps": self.last_metrics.get("gen_tps"),
            "rolling_gen_tps": rolling,
            "last_prompt_tps": self.last_metrics.get("prompt_tps"),
            "last_ttft_ms": self.last_metrics.get("ttft_ms"),
            "requests": self.requests,
            "errors": self.errors,
            "pid": self.pid,
            "restarts": self.restarts,
            "load_progress": self.load_progress,
            "last_error": self.last_error,
            "in_flight": self.in_flight(),
        }


@dataclass
class InFlight:
    """The chat request the child is answering: what the forward-progress watchdog reads.
    Times are wall-clock (time.time()), so they mean the same in the journal and the doctor."""

    id: int
    started: float
    prompt_estimate: int = 0  # characters / 4, until the worker says how many tokens it made
    prompt_tokens: int | None = None
    tokens: int = 0
    last_token_ts: float | None = None

    def to_dict(self, now: float) -> Payload:
        since = self.last_token_ts if self.last_token_ts is not None else self.started
        return {
            "id": self.id,
            "started": self.started,
            "age_s": round(now - self.started, 3),
            "prompt_tokens": self.prompt_tokens if self.prompt_tokens is not None else self.prompt_estimate,
            "prompt_counted": self.prompt_tokens is not None,
            "tokens": self.tokens,
            "last_token_ts": self.last_token_ts,
            "since_progress_s": round(now - since, 3),
        }


class BenchTimeout(EngineError):
    """A benchmark ran past its time limit (the child may still be busy: stop it)."""


def describe_exit(info: Payload) -> str:
    if info.get("signal"):
        return f"engine killed by {info['signal']}"
    return f"engine exited with code {info.get('exit_code')}"
