"""`llmos-tui serve`: the headless core as a long-running daemon behind the OpenAI-compatible API.

One process: the core built by ``build_core(config, "serve")`` (engine, doctor, journal,
telemetry, change transaction, status socket), the :class:`~llmos_tui.serve.gate.Gate` in front
of the engine, and uvicorn serving :mod:`llmos_tui.serve.api` in the foreground.

- one daemon per journal (:class:`~llmos_tui.serve.lock.DaemonLock`): a second start is refused
  with a line naming the first (pid, address)
- SIGTERM / SIGINT: waiting requests get 503, the replies in flight finish (``drain_s``) or are
  cut with a reason, the server stops, the core closes (engine stopped, journal flushed); a
  second signal stops at once
- a configuration change, undo or study takes the engine through the change transaction, whose
  hold listeners drain the gate first; a crash is healed by the doctor's restart (or, with no
  doctor, by the daemon's own restart through the same transaction)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import AsyncIterator, Callable, Iterator

import uvicorn
from starlette.applications import Starlette

from llmos_tui.config import Config
from llmos_tui.core.wiring import build_core
from llmos_tui.exporters.prometheus import LlmosCollector
from llmos_tui.serve.api import OpenAIApi, create_app
from llmos_tui.core.endpoint import secure_dir
from llmos_tui.serve.control import create_control_app
from llmos_tui.serve.sockets import socket_path
from llmos_tui.serve.gate import Gate
from llmos_tui.serve.lock import DaemonLock
from llmos_tui.serve.settings import ServeSettings
from llmos_tui.serve.traffic import Traffic

log = logging.getLogger("llmos_tui.serve")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon drains before the server stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    def __init__(self, config: Config, settings: ServeSettings, *, doctor: bool = True,
                 say: Callable[[str], object] | None = None) -> None:
        self.settings = settings.check()
        self.say = say or (lambda line: print(f"llmos-tui serve: {line}", flush=True))
        self.lock = DaemonLock(config.journal_file).acquire(f"http://{_url_host(settings.host)}:{settings.port}")
        try:
            self.operator = build_core(config, "serve", face="serve", doctor=doctor)
        except BaseException:
            self.lock.release()
            raise
        op = self.operator
        self.gate = Gate(op.supervisor, queue_size=settings.queue_size, wait_s=settings.wait_s,
                         drain_s=settings.drain_s, stall_s=settings.stall_s, restart=self._restart,
                         heal_crashes=op.doctor is None, gave_up=self._gave_up)
        self._unhold = op.changes.on_hold(self.gate.before_hold, self.gate.after_hold)
        self.traffic = Traffic(op.supervisor, op.journal_writer, self.gate, log_prompts=settings.log_prompts)
        self.collector = LlmosCollector(op)
        self.traffic.registry.register(self.collector)
        self.api = OpenAIApi(op, self.gate, self.traffic, settings)
        app = create_app(self.api, lifespan=self._lifespan, token=settings.token)
        self.server = _Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                             access_log=False, lifespan="on", timeout_graceful_shutdown=5))
        # the control socket: the Operator's verbs and the chat for faces that attach (owner-only)
        self.control_path: Path | None = None
        self._control_sock: socket.socket | None = None
        self.control: _Server | None = None
        try:
            self._control_sock = _owner_only_socket(socket_path(config.paths.runtime_dir))
            self.control_path = socket_path(config.paths.runtime_dir)
            self._control_app = create_control_app(op, self.api, url=lambda: self.url)
            self.control = _Server(uvicorn.Config(self._control_app, log_level="warning",
                                                  access_log=False, lifespan="off", timeout_graceful_shutdown=5))
        except OSError as exc:
            op.problems.append(f"control socket disabled: {exc}")
        self.ready = threading.Event()  # the server listens
        self.stopped_by: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # ---- running ----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped (blocking). Installs SIGTERM/SIGINT handlers in the main thread."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        try:
            asyncio.run(self._serve())
        finally:
            self.close()
        return 0

    async def _serve(self) -> None:
        servers = [self.server.serve()]
        if self.control is not None and self._control_sock is not None:
            servers.append(self.control.serve(sockets=[self._control_sock]))
        await asyncio.gather(*servers)

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.settings.port

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.settings.host)}:{self.port}"

    def stop(self, reason: str = "stop") -> None:
        """Drain and stop (any thread). A second call stops at once."""
        if self.stopped_by is not None:
            for server in self._servers():
                server.force_exit = True
                server.should_exit = True
            return
        self.stopped_by = reason
        loop = self._loop
        if loop is None or loop.is_closed():
            for server in self._servers():
                server.should_exit = True
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(self._shutdown(reason)))

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.stop(signal.Signals(sig).name)

    async def _shutdown(self, reason: str) -> None:
        self.say(f"stopping ({reason}): draining {self.gate.stats().in_flight} reply in flight, "
                 f"refusing {self.gate.stats().queued} waiting")
        try:
            await self.gate.close(reason, self.settings.drain_s)
        finally:
            if self.control is not None:  # attached faces: their event streams end, they detach
                self._control_app.state.control.end_streams(reason)
            for server in self._servers():
                server.should_exit = True

    def _servers(self) -> list[uvicorn.Server]:
        return [self.server] + ([self.control] if self.control is not None else [])

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self.gate.bind()
        threading.Thread(target=self._start_engine, name="serve-engine-start", daemon=True).start()
        self._loop.call_later(0.05, self._announce)
        yield

    def _announce(self) -> None:
        if not self.server.started or (self.control is not None and not self.control.started):
            assert self._loop is not None
            self._loop.call_later(0.05, self._announce)
            return
        self.lock.update(self.url)
        token = "a bearer token is required" if self.settings.token else "no token: loopback only"
        self.say(f"listening on {self.url} ({token}); journal {self.operator.config.journal_file}; pid {os.getpid()}")
        if self.control_path is not None:
            self.say(f"control socket {self.control_path} (owner-only)")
        for problem in self.operator.problems:
            self.say(f"note: {problem}")
        self.ready.set()

    def _start_engine(self) -> None:
        error = self.operator.try_start_engine()
        if error:
            self.say(f"the engine did not start: {error} (requests get 503 until it does)")
        else:
            self.say(f"engine ready: {self.operator.supervisor.params.summary()}")

    def _gave_up(self) -> str | None:
        """Why a down engine will not come back by itself, or None (the doctor or the daemon heals it)."""
        if self.operator.config.readonly:
            return "read-only mode: restarts are disabled"
        doctor = self.operator.doctor
        if doctor is None:
            return None
        if doctor.kill_switch:
            return "the doctor's kill switch is on"
        if doctor.start_limit_hit:
            return ("the doctor reached its start limit: restart the engine (POST /v1/llmos/restart on the "
                    "control socket) or reset the limit (POST /v1/llmos/reset_start_limit, :reset-limit in the TUI)")
        return None

    def _restart(self, reason: str) -> None:
        result = self.operator.changes.restart(source="serve", reason=reason, wait_s=5.0)
        self.say(f"restart ({reason}): {result.message}")

    # ---- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unhold()
        try:
            self.collector.close()
            self.operator.close()  # doctor, telemetry, engine, then the journal (flushed)
        finally:
            if self._control_sock is not None:
                self._control_sock.close()
            if self.control_path is not None:
                try:
                    self.control_path.unlink()
                except OSError:
                    pass
            self.lock.release()
        stats = self.gate.stats()
        self.say(f"stopped{f' ({self.stopped_by})' if self.stopped_by else ''}: {stats.served} requests served")


def _owner_only_socket(path: Path) -> socket.socket:
    """A Unix socket only this user can connect to: folder 0700, socket 0600 from the start."""
    secure_dir(path.parent, "put the control socket")
    if path.exists():
        path.unlink()  # our own pid: a leftover of an earlier process with this pid
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

