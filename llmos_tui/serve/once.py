"""Requests that carry an idempotency key run once: a retry gets the first answer back.

A fleet agent forwards a change (apply, undo, restart, kill switch) to its box's daemon with a
key. The network or Ray may deliver it twice: a caller that timed out and retried, an agent
that died after sending and was restarted by Ray and ran the call again. The daemon answers
the second delivery with the first one's result (``"replayed": true``) and changes nothing.

The key and the result are journaled in the box's own journal (an event ``request_key``), in
the same journal as the change itself, so the promise holds across a restart of the agent and
of the daemon. A retry that arrives while the first delivery still runs waits for it. Without a
journal the keys are remembered in this process only (said in the answer's ``note``).

An answer that changed nothing because the engine was busy (``details.busy``) is not kept: a
retry of it is a new try, which is what the caller wants.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Callable

from llmos_tui.journal.port import JournalPort

if TYPE_CHECKING:
    from llmos_tui.engine.supervisor import Json
    from llmos_tui.journal.port import JournalTarget
    from llmos_tui.journal.store import Journal

KIND = "request_key"
MAX_KEY = 200
MEMORY_KEYS = 10_000  # the newest keys kept in memory too (the journal keeps them all)
WAIT_S = 600.0  # a change (reload + canary, or a rollback) ends well before this

Answer = tuple[dict[str, "Json"], int]  # (JSON body, HTTP status)


class Once:
    """``run(key, verb, fn)``: ``fn()`` once per key; later calls with the key get its answer."""

    def __init__(self, journal: "JournalTarget | None") -> None:
        self._port = JournalPort(journal, "idempotency keys")
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._memory: dict[str, dict[str, "Json"]] = {}  # without a journal

    @staticmethod
    def check_key(key: object) -> str | None:
        """Why ``key`` is not a usable idempotency key, or None (absent is fine)."""
        if key is None:
            return None
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
            return f"idempotency_key must be a non-empty string of at most {MAX_KEY} characters"
        return None

    def run(self, key: str | None, verb: str, fn: Callable[[], Answer]) -> Answer:
        if not key:
            return fn()
        while True:
            with self._lock:
                stored = self._lookup(key)
                if stored is not None:
                    return self._replay(key, verb, stored)
                running = self._running.get(key)
                if running is None:
                    running = self._running[key] = threading.Event()
                    break
            running.wait(WAIT_S)
        try:
            body, status = fn()
            details = body.get("details")
            if not (isinstance(details, dict) and details.get("busy")):
                self._store(key, verb, body, status)
            return body, status
        finally:
            with self._lock:
                self._running.pop(key, None)
            running.set()

    def _replay(self, key: str, verb: str, stored: dict[str, "Json"]) -> Answer:
        if stored.get("verb") != verb:
            return ({"ok": False, "error": f"idempotency key {key!r} was used for {stored.get('verb')}, not {verb}"},
                    409)
        body = stored.get("body")
        status = stored.get("status")
        out = dict(body) if isinstance(body, dict) else {}
        out["replayed"] = True
        return out, int(status) if isinstance(status, int) else 200

    def _lookup(self, key: str) -> dict[str, "Json"] | None:
        if key in self._memory or not self._port.available:
            return self._memory.get(key)

        def find(j: "Journal") -> dict[str, "Json"] | None:
            row = j.connection.one(f"SELECT data FROM events WHERE kind = '{KIND}' "
                                   "AND json_extract(data, '$.key') = ? ORDER BY id DESC LIMIT 1", (key,))
            if row is None:
                return None
            data = row["data"]
            data = json.loads(data) if isinstance(data, str) else data
            return data if isinstance(data, dict) else None

        return self._port.call(find)

    def _store(self, key: str, verb: str, body: dict[str, "Json"], status: int) -> None:
        record: dict[str, Json] = {"key": key, "verb": verb, "status": status,
                                   "body": json.loads(json.dumps(body, default=str))}
        self._memory[key] = record  # this process's own copy, also when the journal write fails
        while len(self._memory) > MEMORY_KEYS:
            self._memory.pop(next(iter(self._memory)))
        if not self._port.available:
            return
        config_id = body.get("config_id")
        self._port.safe(lambda j: j.record_event(KIND, record,
                                                 config_id=config_id if isinstance(config_id, int) else None))
