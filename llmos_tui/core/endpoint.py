"""The local status endpoint: a running llmos-tui publishes its live state on a Unix socket.

Each running core (TUI, console) listens on ``<runtime_dir>/llmos-tui-<pid>.sock``; the folder
is the owner's alone (0700) and so is the socket (0600), so only the same user can read it.
A client connects, and reads one JSON object (the Operator's snapshot) and end of file.
`llmos-tui status` reads every endpoint of this box with :func:`read_endpoints`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("llmos_tui.endpoint")

PREFIX = "llmos-tui-"
SUFFIX = ".sock"


def _secure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise OSError(f"{path} belongs to another user; refusing to publish the status there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


class StatusEndpoint:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], *, runtime_dir: Path) -> None:
        self.snapshot = snapshot
        self.dir = Path(runtime_dir)
        self.path = self.dir / f"{PREFIX}{os.getpid()}{SUFFIX}"
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.served = 0

    def start(self) -> "StatusEndpoint":
        _secure_dir(self.dir)
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
            try:
                conn.settimeout(2.0)
                try:
                    data = self.snapshot()
                except Exception as exc:  # noqa: BLE001 - a client gets an error, the core goes on
                    data = {"error": f"snapshot failed: {type(exc).__name__}: {exc}", "pid": os.getpid()}
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


def _pid_of(path: Path) -> int | None:
    try:
        return int(path.name[len(PREFIX):-len(SUFFIX)])
    except ValueError:
        return None


def read_endpoints(runtime_dir: Path, *, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The snapshots of every llmos-tui running for this user (stale sockets are skipped and,
    when their process is gone, removed)."""
    found: list[dict[str, Any]] = []
    folder = Path(runtime_dir)
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob(f"{PREFIX}*{SUFFIX}")):
        pid = _pid_of(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            found.append(json.loads(b"".join(chunks).decode() or "{}"))
        except (OSError, ValueError) as exc:
            if pid is not None and not _alive(pid):
                try:
                    path.unlink()
                except OSError:
                    pass
            else:
                found.append({"pid": pid, "error": f"endpoint {path} did not answer: {exc}"})
        finally:
            sock.close()
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
