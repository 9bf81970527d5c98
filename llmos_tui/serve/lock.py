"""One daemon per journal: an exclusive lock on ``<journal>.serve.lock`` that names its holder.

The kernel drops the lock when the process dies (``flock``), so a killed daemon never blocks the
next one; the file's text (pid, address) is only what a refused start prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from llmos_tui.errors import LlmosError


class DaemonRunning(LlmosError):
    """Another daemon serves this journal (the message names its pid and address)."""


class DaemonLock:
    def __init__(self, journal: Path) -> None:
        self.journal = Path(journal)
        self.path = self.journal.with_name(self.journal.name + ".serve.lock")
        self._fd: int | None = None

    def acquire(self, address: str) -> "DaemonLock":
        """Take the lock for this process (serving ``address``), or raise DaemonRunning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DaemonRunning(f"another llmos-tui serve runs on journal {self.journal}: {holder}; "
                                "stop it first (one daemon per journal)") from None
        self._fd = fd
        self.update(address)
        return self

    def update(self, address: str) -> None:
        """Say where this daemon listens (once the port is bound: port 0 picks one)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps({"pid": os.getpid(), "address": address, "journal": str(self.journal),
                                        "started": time.time()}).encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the lock
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or "pid" not in data:
        return "its pid and address are not written yet (it is starting)"
    return f"pid {data.get('pid')} at {data.get('address')}"
