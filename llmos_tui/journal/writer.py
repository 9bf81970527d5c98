"""Journal writes that never block the caller: a queue drained by one background thread.

The UI thread (and the supervisor's event thread) call ``JournalWriter`` methods,
which only put the write on a queue and return a ``Future``. The writer thread
takes everything queued at that moment and commits it as one transaction — so
the batch size follows the load by itself: one row per commit when it is quiet,
hundreds when events pour in. A future resolves only after its row is committed,
so "the future is done" means "it survives a kill -9".

Each write runs in its own savepoint inside the batch: one bad write (a message for
a chat that does not exist) fails its own future and leaves the others committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, TypeVar, Union

from llmos_tui.errors import JournalError
from llmos_tui.journal.records import Json
from llmos_tui.journal.store import Journal, JournalLocked, PathLike

log = logging.getLogger("llmos_tui.journal")
T = TypeVar("T")


@dataclass
class _Op:
    fn: Callable[[Journal], object]
    future: "Future[object]"


class _Stop:
    """The marker that ends the writer thread."""


_STOP = _Stop()
_Item = Union[_Op, _Stop, threading.Event]


class JournalWriter:
    """A background thread that owns its own connection to the journal and batches writes.

    ``journal`` is a path (None: the default journal) or an open ``Journal`` whose path and
    settings are reused. Opening errors (locked, read-only, damaged…) are raised here,
    in the caller's thread, as ``JournalError``.
    """

    def __init__(
        self,
        journal: Journal | PathLike | None = None,
        *,
        max_batch: int = 1000,
        lock_retries: int = 3,
        on_error: Callable[[BaseException], None] | None = None,
        busy_timeout: float | None = None,
        telemetry_retention_days: float | None = 7.0,
    ) -> None:
        if isinstance(journal, Journal):
            path: PathLike | None = journal.path
            busy_timeout = journal.busy_timeout if busy_timeout is None else busy_timeout
            telemetry_retention_days = journal.telemetry_retention_days
            check = False  # the caller's open already checked the file
        else:
            path, check = journal, True
        self._options = dict(
            busy_timeout=5.0 if busy_timeout is None else busy_timeout,
            telemetry_retention_days=telemetry_retention_days,
            check=check,
        )
        self._path = path
        self.max_batch = max_batch
        self.lock_retries = lock_retries
        self.on_error = on_error
        self.last_error: BaseException | None = None
        self.batches = 0  # commits made; the benchmark reports rows per commit
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self.journal: Journal | None = None
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise self._open_error

    # ---- submitting (any thread; never blocks) ------------------------------------
    def submit(self, fn: Callable[[Journal], T]) -> "Future[T]":
        """Run ``fn(journal)`` on the writer thread inside the next batch."""
        future: Future[T] = Future()
        if self._closed:
            raise JournalError("the journal writer is closed; no more writes are accepted")
        self._queue.put(_Op(fn, future))  # type: ignore[arg-type]  # Future is invariant
        return future

    def record_event(self, kind: str, data: Json = None, *, ts: float | None = None, config_id: int | None = None) -> "Future[int]":
        ts = ts or time.time()  # when it happened, not when the batch commits
        return self.submit(lambda j: j.record_event(kind, data, ts=ts, config_id=config_id))

    def record_finding(self, detector: str, severity: str, title: str, evidence: Json = None, *,
                       fingerprint: str = "", ts: float | None = None) -> "Future[int]":
        ts = ts or time.time()
        return self.submit(lambda j: j.record_finding(detector, severity, title, evidence, fingerprint=fingerprint, ts=ts))

    def create_chat(self, title: str = "", *, model: str = "", config_id: int | None = None) -> "Future[int]":
        ts = time.time()
        return self.submit(lambda j: j.create_chat(title, model=model, config_id=config_id, ts=ts))

    def add_message(self, chat_id: int, role: str, content: str, *, metrics: Json = None,
                    status: str = "done", ts: float | None = None) -> "Future[int]":
        ts = ts or time.time()
        return self.submit(lambda j: j.add_message(chat_id, role, content, metrics=metrics, status=status, ts=ts))

    def update_message(self, message_id: int, *, content: str | None = None, status: str | None = None,
                       metrics: Json = None) -> "Future[None]":
        return self.submit(lambda j: j.update_message(message_id, content=content, status=status, metrics=metrics))

    def record_telemetry(self, summary: dict[str, Json], *, ts: float | None = None) -> "Future[int]":
        ts = ts or time.time()
        return self.submit(lambda j: j.record_telemetry(summary, ts=ts))

    # ---- lifecycle -------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything submitted before this call is committed (or failed)."""
        if self._closed or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Commit what is queued, then stop the thread and close its connection."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def __enter__(self) -> "JournalWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the writer thread ---------------------------------------------------------
    def _run(self) -> None:
        try:
            self.journal = Journal(self._path, **self._options)
        except BaseException as exc:  # handed to the constructor's caller
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                ops = [item for item in batch if isinstance(item, _Op) and item.future.set_running_or_notify_cancel()]
                if ops:
                    self._commit(ops)
                for item in batch:
                    if item is _STOP:
                        stop = True
                    elif isinstance(item, threading.Event):
                        item.set()
        finally:
            self.journal.close()

    def _commit(self, ops: list[_Op]) -> None:
        journal = self.journal
        assert journal is not None
        attempt = 0
        while True:
            results: list[tuple[_Op, object, Exception | None]] = []  # (op, value, error)
            try:
                with journal.batch():
                    for op in ops:
                        try:
                            results.append((op, op.fn(journal), None))
                        except Exception as exc:
                            if not journal.in_transaction:
                                raise  # the error ended the whole transaction: nothing in it was kept
                            results.append((op, None, exc))
            except JournalLocked as exc:
                attempt += 1
                self._report(exc)
                if attempt <= self.lock_retries:
                    continue
                self._fail(ops, exc)
                return
            except Exception as exc:
                self._report(exc)
                self._fail(ops, exc)
                return
            break
        self.batches += 1
        for op, value, error in results:
            if error is None:
                op.future.set_result(value)
            else:
                self._report(error)
                op.future.set_exception(error)

    @staticmethod
    def _fail(ops: list[_Op], exc: BaseException) -> None:
        for op in ops:
            if not op.future.done():
                op.future.set_exception(exc)

    def _report(self, exc: BaseException) -> None:
        self.last_error = exc
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:  # a broken callback must not stop the writer
                log.exception("journal writer on_error callback failed")
        else:
            log.warning("journal write failed: %s", exc)
