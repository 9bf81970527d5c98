"""The queue in front of the single engine: who goes next, who waits, who is told to come back.

The engine answers one request at a time (the supervisor refuses a second). The gate holds the
API's requests in a bounded FIFO and hands the engine to the head of it when the engine is
ready, nobody else holds it (a change, a restart, a study: the change transaction's hold
listeners tell the gate), and the daemon is not shutting down.

- a full queue: :class:`Refusal` 429 with ``Retry-After`` (an estimate from recent requests)
- a change, undo, pause or study holding the engine: in-flight replies drain (``drain_s``, then
  they are cut with a reason), waiting and new requests get 503 with ``Retry-After``
- a crash, a restart, a load: waiting requests keep waiting (up to ``wait_s``) for the engine
  to come back; the one in flight ends with an error its client can read and retry
- shutdown: waiting and new requests get 503; in-flight replies drain, then are cut
- a hang: a reply with no new text for ``stall_s`` is cut (its client reads why), and when the
  engine does not even end it then, the daemon restarts the engine through the change
  transaction (the doctor's canary stays off while a request is generating: it cannot see this)

Everything here runs on the server's event loop except the hold listeners (called on the
thread of whoever takes the engine: they block until the drain is done) and the reply
callbacks (the supervisor's reader thread), which hop onto the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from llmos_tui.engine.supervisor import EngineEvent, EngineState, Reply, Sampling, Supervisor
from llmos_tui.errors import EngineError

log = logging.getLogger("llmos_tui.serve.gate")

WAIT_THROUGH = frozenset({"start", "restart", "resume"})  # the engine comes back: queued requests wait
SEND_RETRY_S = 5.0  # a canary or a bench may hold the engine for a moment: retry the send this long


class Refusal(Exception):
    """A request the gate cannot take now: an HTTP status, a line for the client, a retry hint."""

    def __init__(self, status: int, message: str, *, code: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client went away while its request waited."""


@dataclass(frozen=True)
class Hold:
    kind: str  # change, undo, start, restart, pause, resume, stop, hold (a study)
    who: str
    since: float


class Turn:
    """The engine, lent to one request until its reply ends (or it never started one)."""

    def __init__(self, gate: "Gate", queued_s: float) -> None:
        self.gate = gate
        self.queued_s = queued_s
        self.reply: Reply | None = None
        self.cut: str | None = None  # why the gate cut the reply (a change, shutdown, a stall), if it did
        self.cut_at: float | None = None
        self.started = time.monotonic()
        self.progress = self.started  # the last sign of life of its reply (set from the reader thread)
        self.released = asyncio.Event()

    def cancel(self) -> None:
        """Stop this turn's reply (a client that went away, a stop string)."""
        reply = self.reply
        if reply is not None and not reply.finished and self.gate.active is self:
            self.gate.supervisor.cancel()

    def release(self) -> None:
        self.gate._release(self)


@dataclass
class GateStats:
    queued: int
    in_flight: int
    hold: str | None
    closing: str | None
    served: int
    rejected: dict[str, int]


class Gate:
    def __init__(self, supervisor: Supervisor, *, queue_size: int = 16, wait_s: float = 60.0,
                 drain_s: float = 30.0, stall_s: float = 120.0, restart: Callable[[str], object] | None = None,
                 heal_crashes: bool = False, gave_up: Callable[[], str | None] | None = None) -> None:
        self.supervisor = supervisor
        self.queue_size = queue_size
        self.wait_s = wait_s
        self.drain_s = drain_s
        self.stall_s = stall_s
        self._restart = restart  # the engine's restart through the change transaction (blocks: on a thread)
        self.heal_crashes = heal_crashes  # restart a crashed engine (when no doctor does)
        self.gave_up = gave_up  # why nobody will restart a down engine (the doctor's start limit...), or None
        self._restarting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._queue: collections.deque[_Ticket] = collections.deque()
        self.active: Turn | None = None
        self.hold: Hold | None = None
        self.closing: str | None = None
        self.served = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self._durations: collections.deque[float] = collections.deque(maxlen=32)

    # ---- life ------------------------------------------------------------------------
    def bind(self) -> None:
        """Start dispatching on the running event loop (the server's startup)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="serve-gate")
        loop = self._loop

        def on_engine(event: EngineEvent) -> None:  # the supervisor's threads: READY may free the engine
            if event.kind == "state" and not loop.is_closed():
                loop.call_soon_threadsafe(self._poke)

        self._unsubscribe = self.supervisor.subscribe(on_engine)

    async def close(self, reason: str, grace_s: float) -> None:
        """Refuse new and waiting requests; let the reply in flight finish (``grace_s``), then cut it."""
        self.closing = reason
        self._reject_waiting(Refusal(503, f"the server is shutting down ({reason})", code="shutting_down",
                                     retry_after=5))
        await self._drain(grace_s, f"the server is shutting down ({reason})")
        if self._task is not None:
            self._task.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def stats(self) -> GateStats:
        hold = self.hold
        return GateStats(len(self._queue), 1 if self.active is not None else 0,
                         f"{hold.who} ({hold.kind})" if hold else None, self.closing, self.served,
                         dict(self.rejected))

    # ---- a request's way through ------------------------------------------------------
    async def turn(self, disconnected: Callable[[], Awaitable[bool]]) -> Turn:
        """Wait for the engine. Raises Refusal (429/503) or ClientGone."""
        refusal = self._refusal()
        if refusal is not None:
            self.rejected[refusal.code] += 1
            raise refusal
        assert self._loop is not None
        ticket = _Ticket(self._loop.create_future(), time.monotonic())
        self._queue.append(ticket)
        self._poke()
        while True:
            done, _ = await asyncio.wait({ticket.future}, timeout=0.5)
            if done:
                try:
                    return ticket.future.result()
                except Refusal as exc:
                    self.rejected[exc.code] += 1
                    raise
            if await disconnected():
                self._withdraw(ticket)
                raise ClientGone()

    async def send(self, turn: Turn, messages: list[dict[str, str]], sampling: dict[str, Sampling],
                   on_piece: Callable[[str], None], on_done: Callable[[Reply], None]) -> Reply:
        """Send the request on the engine this turn holds. A probe that slipped in (the doctor's
        canary) is waited out; an engine that went down meanwhile is a 503 to retry."""
        deadline = time.monotonic() + SEND_RETRY_S
        while True:
            try:
                reply = self.supervisor.chat(messages, on_piece=on_piece, **sampling)
            except EngineError as exc:
                state = self.supervisor.state
                if state in (EngineState.GENERATING, EngineState.READY) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    continue
                turn.release()
                raise Refusal(503, f"the engine could not take the request: {exc}", code="engine_unavailable",
                              retry_after=self.retry_after()) from None
            turn.reply = reply
            loop = self._loop
            assert loop is not None

            def ended(r: Reply) -> None:  # the supervisor's reader thread
                loop.call_soon_threadsafe(turn.release)
                on_done(r)

            reply.add_done_callback(ended)
            return reply

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue ahead of it at the recent pace."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, min(60, math.ceil(mean * (len(self._queue) + 1))))

    # ---- the change transaction's hold listeners (any thread but the loop's) ---------------
    def before_hold(self, kind: str, who: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        if threading.get_ident() == self._loop_thread:  # never block the loop on itself
            self._begin_hold(kind, who)
            return
        future = asyncio.run_coroutine_threadsafe(self._hold_and_drain(kind, who), loop)
        try:
            future.result(self.drain_s + 15.0)
        except Exception as exc:  # noqa: BLE001 - the change goes on; the reply is cut by the reload
            log.warning("drain before %s (%s) did not finish: %s", kind, who, exc)

    def after_hold(self, kind: str, who: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.hold = None
            return
        loop.call_soon_threadsafe(self._end_hold)

    async def _hold_and_drain(self, kind: str, who: str) -> None:
        self._begin_hold(kind, who)
        await self._drain(self.drain_s, f"the engine was taken by {who} ({kind})")

    def _begin_hold(self, kind: str, who: str) -> None:
        self.hold = Hold(kind, who, time.time())
        if kind not in WAIT_THROUGH:
            self._reject_waiting(Refusal(503, f"the engine is busy: {who} ({kind}); retry in a moment",
                                         code="engine_busy", retry_after=self.retry_after()))
        self._poke()

    def _end_hold(self) -> None:
        self.hold = None
        self._poke()

    async def _drain(self, grace_s: float, reason: str) -> None:
        turn = self.active
        if turn is None or turn.cut is not None:  # nothing in flight, or already cut (a stall): go on
            return
        try:
            await asyncio.wait_for(turn.released.wait(), grace_s)
            return
        except TimeoutError:
            pass
        turn.cut, turn.cut_at = reason, time.monotonic()
        turn.cancel()
        try:
            await asyncio.wait_for(turn.released.wait(), 5.0)
        except TimeoutError:
            log.warning("a cut reply did not end within 5 s")

    # ---- inside ---------------------------------------------------------------------------
    def _refusal(self) -> Refusal | None:
        if self.closing:
            return Refusal(503, f"the server is shutting down ({self.closing})", code="shutting_down", retry_after=5)
        hold = self.hold
        if hold is not None and hold.kind not in WAIT_THROUGH:
            return Refusal(503, f"the engine is busy: {hold.who} ({hold.kind}); retry in a moment",
                           code="engine_busy", retry_after=self.retry_after())
        state = self.supervisor.state
        down = self._down_for_good()
        if down is not None:
            return down
        if hold is None and state in (EngineState.FAILED, EngineState.PAUSED):
            why = self.supervisor.last_error or self.supervisor.paused_reason or ""
            return Refusal(503, f"the engine is {state.value}" + (f": {why}" if why else ""),
                           code="engine_unavailable", retry_after=10)
        if len(self._queue) >= self.queue_size:
            return Refusal(429, f"the queue is full ({len(self._queue)} requests wait for the engine)",
                           code="queue_full", retry_after=self.retry_after())
        return None

    def down_reason(self) -> str | None:
        """Why the engine is down for good (nobody will restart it), or None."""
        refusal = self._down_for_good()
        return refusal.message if refusal is not None else None

    def _down_for_good(self) -> Refusal | None:
        """A crashed or failed engine that nobody will restart: waiting for it would only delay the 503."""
        if self.hold is not None or self.gave_up is None:
            return None
        if self.supervisor.state not in (EngineState.CRASHED, EngineState.FAILED):
            return None
        why = self.gave_up()
        if why is None:
            return None
        return Refusal(503, f"the engine is {self.supervisor.state.value} and will not be restarted by itself: {why}",
                       code="engine_down", retry_after=30)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _withdraw(self, ticket: "_Ticket") -> None:
        try:
            self._queue.remove(ticket)
        except ValueError:
            pass
        if ticket.future.done() and ticket.future.exception() is None:
            ticket.future.result().release()  # it got the engine just as its client left
        else:
            ticket.future.cancel()

    def _reject_waiting(self, refusal: Refusal) -> None:
        while self._queue:
            ticket = self._queue.popleft()
            if not ticket.future.done():
                ticket.future.set_exception(refusal)

    def _release(self, turn: Turn) -> None:
        if turn.released.is_set():
            return
        turn.released.set()
        if self.active is turn:
            self.active = None
            self.served += 1
            self._durations.append(time.monotonic() - turn.started)
        self._poke()

    def _ready(self) -> bool:
        return (self.active is None and self.hold is None and self.closing is None
                and self.supervisor.state == EngineState.READY)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            now = time.monotonic()
            while self._queue and (self._queue[0].future.done() or now - self._queue[0].since > self.wait_s):
                ticket = self._queue.popleft()
                if not ticket.future.done():
                    state = self.supervisor.state.value
                    ticket.future.set_exception(Refusal(
                        503, f"waited {self.wait_s:g} s for the engine (it is {state}); retry later",
                        code="engine_unavailable", retry_after=self.retry_after()))
            down = self._down_for_good() if self._queue else None
            if down is not None:
                self._reject_waiting(down)
            if self._queue and self._ready():
                ticket = self._queue.popleft()
                turn = Turn(self, now - ticket.since)
                self.active = turn
                ticket.future.set_result(turn)
                continue
            self._watch_crash()
            self._watch_stall(now)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.25)
            except TimeoutError:
                pass

    def _watch_crash(self) -> None:
        """With no doctor to heal it, the daemon restarts a crashed engine itself (through the
        change transaction, on a thread: the restart blocks)."""
        state = self.supervisor.state
        if state != EngineState.CRASHED:
            if state == EngineState.READY:
                self._restarting = False
            return
        if self.heal_crashes and self.hold is None:
            self._restart_engine("the engine crashed while serving")

    def _watch_stall(self, now: float) -> None:
        turn = self.active
        if turn is None or turn.reply is None or turn.reply.finished:
            return
        if turn.cut is None and now - turn.progress > self.stall_s:
            turn.cut, turn.cut_at = f"the engine produced nothing for {self.stall_s:g} s", now
            turn.cancel()
        elif turn.cut_at is not None and now - turn.cut_at > 5.0 and self.hold is None:
            self._restart_engine(f"the engine hung: a reply made no progress for {self.stall_s:g} s "
                                 "and ignored its cancel")

    def _restart_engine(self, reason: str) -> None:
        if self._restart is None or self._restarting:
            return
        self._restarting = True
        restart = self._restart

        def run() -> None:
            try:
                restart(reason)
            finally:
                self._restarting = False

        threading.Thread(target=run, name="serve-restart", daemon=True).start()


@dataclass(eq=False)
class _Ticket:
    future: "asyncio.Future[Turn]"
    since: float
