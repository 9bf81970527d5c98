"""The local status endpoint: a running llmos-tui publishes its live state on a Unix socket.

Each running core (TUI, console) listens on ``<runtime_dir>/llmos-tui-<pid>.sock``; the folder
is the owner's alone (0700) and so is the socket (0600), so only the same user can read it.

The protocol is one JSON line in, one JSON line out, then end of file:

- ``{"op": "status"}`` (or nothing at all within a moment: older clients) -> the Operator's snapshot
- ``{"op": "undo", "entry": "cfg:N", "journal": PATH}`` -> the running core undoes it through its
  own change transaction and answers ``{"ok", "pid", "result": ChangeResult, "engine": params}``
- ``{"op": "reset_start_limit"}`` -> ``{"ok", "pid", "message"}``

`llmos-tui status` reads every endpoint of this box with :func:`read_endpoints`;
`llmos-tui journal undo` finds the one running on its journal with :func:`find_running` and
sends the undo there with :func:`request`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

Json = Union[str, int, float, bool, None, list["Json"], dict[str, "Json"]]
Snapshot = Callable[[], dict[str, Json]]
Handler = Callable[[dict[str, Json]], dict[str, Json]]

log = logging.getLogger("llmos_tui.endpoint")

PREFIX = "llmos-tui-"
SUFFIX = ".sock"
REQUEST_WAIT_S = 0.3  # how long the server waits for a request line before it sends the snapshot
MAX_REQUEST = 65536


def secure_dir(path: Path, what: str = "publish the status") -> None:
    """The runtime folder, the owner's alone (0700): made, or checked and tightened."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise OSError(f"{path} belongs to another user; refusing to {what} there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


class StatusEndpoint:
    """The socket of one running core. ``start(snapshot, handler)`` binds it and serves each
    client on its own thread (an undo that reloads the engine never holds up a status read)."""

    def __init__(self, *, runtime_dir: Path) -> None:
        self.dir = Path(runtime_dir)
        self.path = self.dir / f"{PREFIX}{os.getpid()}{SUFFIX}"
        self._snapshot: Snapshot | None = None
        self._handler: Handler | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.served = 0

    def start(self, snapshot: Snapshot, handler: Handler | None = None) -> "StatusEndpoint":
        self._snapshot, self._handler = snapshot, handler
        secure_dir(self.dir)
        if self.path.exists():
            self.path.unlink()  # our own pid: a leftover of an earlier process with this pid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="llmos-status-endpoint", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=self._answer, args=(conn,), name="llmos-endpoint-client", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(REQUEST_WAIT_S)
            request = _read_request(conn)
            conn.settimeout(2.0)
            try:
                if request.get("op", "status") == "status" or self._handler is None:
                    assert self._snapshot is not None
                    data = self._snapshot()
                else:
                    data = self._handler(request)
            except Exception as exc:  # noqa: BLE001 - a client gets an error, the core goes on
                data = {"ok": False, "error": f"request failed: {type(exc).__name__}: {exc}", "pid": os.getpid()}
            conn.sendall(json.dumps(data, default=str).encode() + b"\n")
            self.served += 1
        except OSError as exc:
            log.debug("status client went away: %s", exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(2.0)
        try:
            self.path.unlink()
        except OSError:
            pass


def _read_request(conn: socket.socket) -> dict[str, Json]:
    """One JSON line from the client; nothing within REQUEST_WAIT_S (an older client) is a status read."""
    data = b""
    try:
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    line = data.split(b"\n", 1)[0].strip()
    if not line:
        return {"op": "status"}
    try:
        request = json.loads(line)
    except ValueError:
        return {"op": "invalid"}
    return request if isinstance(request, dict) else {"op": "invalid"}


def _pid_of(path: Path) -> int | None:
    try:
        return int(path.name[len(PREFIX):-len(SUFFIX)])
    except ValueError:
        return None


def _exchange(path: Path, request: dict[str, Json], timeout: float) -> dict[str, Json]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    answer = json.loads(b"".join(chunks).decode() or "{}")
    if not isinstance(answer, dict):
        raise ValueError("the endpoint answered something other than a JSON object")
    return answer


def read_endpoints(runtime_dir: Path, *, timeout: float = 2.0) -> list[dict[str, Json]]:
    """The snapshots of every llmos-tui running for this user (stale sockets are skipped and,
    when their process is gone, removed). Each has ``endpoint``: its socket's path."""
    found: list[dict[str, Json]] = []
    folder = Path(runtime_dir)
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob(f"{PREFIX}*{SUFFIX}")):
        pid = _pid_of(path)
        if pid is None:  # not a status endpoint (a daemon's control socket, llmos-tui-serve-PID.sock)
            continue
        try:
            found.append({**_exchange(path, {"op": "status"}, timeout), "endpoint": str(path)})
        except (OSError, ValueError) as exc:
            if pid is not None and not process_running(pid):
                try:
                    path.unlink()
                except OSError:
                    pass
            else:
                found.append({"pid": pid, "endpoint": str(path), "error": f"endpoint {path} did not answer: {exc}"})
    return found


@dataclass(frozen=True)
class Running:
    """An llmos-tui running on a given journal: its pid and its socket."""

    pid: int | None
    endpoint: Path
    snapshot: dict[str, Json]


def find_running(runtime_dir: Path, journal: Path, *, timeout: float = 2.0) -> list[Running]:
    """Every llmos-tui of this user whose journal is ``journal`` (one that did not answer counts:
    it may be running on it)."""
    want = Path(journal).expanduser().resolve()
    found = []
    for snap in read_endpoints(runtime_dir, timeout=timeout):
        info = snap.get("journal")
        path = info.get("path") if isinstance(info, dict) else None
        pid = snap.get("pid")
        same = "error" in snap or (isinstance(path, str) and Path(path).expanduser().resolve() == want)
        if same:
            found.append(Running(pid if isinstance(pid, int) else None, Path(str(snap["endpoint"])), snap))
    return found


def request(endpoint: Path, message: dict[str, Json], *, timeout: float = 180.0) -> dict[str, Json]:
    """Send one request to a running llmos-tui and return its answer (OSError/ValueError when it
    does not answer)."""
    return _exchange(endpoint, message, timeout)


def process_running(pid: int) -> bool:
    """The process runs (a zombie, waiting for its parent to reap it, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return True
