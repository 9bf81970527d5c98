"""The sampler: polls its sources on a fixed interval in one thread and hands each Sample out.

- One thread, and a lock around each poll: polls never overlap, even when
  ``poll_once()`` is also called from another thread. The next poll is due one
  interval after the previous one started, but never starts before it finished
  (a slow poll delays the next one; there are no catch-up bursts).
- Blocking NVML calls run on that thread, never on the UI's.
- Every numeric field goes into :class:`SeriesStore` rings (flat memory).
- ``subscribe(callback)`` hands every Sample to any number of subscribers (UI,
  doctor, recorder) on the sampler thread; a subscriber that raises is logged
  and skipped, the sampler goes on.

A *source* is any object with ``collect(sample: Sample) -> None`` that fills
its part of the sample (NvmlSource: GPUs; HostSource: host; ReplaySource: all of
it from a trace). Optional: ``close()``; ``next_delay(interval) -> float`` to pace
the sampler (replay at recorded speed); ``exhausted`` (True when a trace ended:
the sampler thread stops and ``finished`` is set).

``pacing`` (an :class:`IdlePacing`, the TUI's live sampler): sample less while nothing
changes; ``wake()`` (an engine event) takes the next sample at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Mapping, Optional, Protocol

from llmos_tui.jsontypes import Json, JsonDict
from llmos_tui.observers import Observers
from llmos_tui.telemetry.sample import Sample
from llmos_tui.telemetry.series import SeriesStore

log = logging.getLogger(__name__)

Subscriber = Callable[[Sample], object]  # what it returns is ignored
EngineStats = Callable[[], Optional[Mapping[str, Json]]]  # Supervisor.stats


class Source(Protocol):
    def collect(self, sample: Sample) -> None: ...


def default_sources() -> tuple[Source, ...]:
    """The live sources: NVML (GPUs) and psutil (host)."""
    from llmos_tui.telemetry.host import HostSource
    from llmos_tui.telemetry.nvml import NvmlSource

    return (NvmlSource(), HostSource())


MIN_WAIT_S = 0.001  # the shortest pause between polls of the sampling thread


class IdlePacing:
    """Sample less while nothing changes, at once again when something does.

    A sample is *quiet* when its activity is the previous sample's: the engine's state, requests,
    errors, restarts, context and process, and per GPU its memory (to 1 % of the total), its
    clock-event reasons, XIDs and whether it is lost, with utilisation under 5 %. Host load is
    not activity (other processes move it). After ``after`` quiet samples the interval doubles
    with each further quiet one, up to ``idle_interval``; an active sample (or the engine
    generating, loading, restarting) returns to the base interval. The engine's events wake the
    sampler meanwhile (``Sampler.wake``), so a request is seen at once, not up to
    ``idle_interval`` later.
    """

    BUSY_STATES = ("generating", "loading", "restarting")

    def __init__(self, idle_interval: float = 5.0, after: int = 3) -> None:
        self.idle_interval = float(idle_interval)
        self.after = after
        self._last: tuple[object, ...] | None = None
        self.quiet = 0  # consecutive quiet samples

    @staticmethod
    def activity(sample: Sample) -> tuple[object, ...] | None:
        """What counts as something happening (None: busy, never quiet)."""
        engine = sample.engine or {}
        if engine.get("state") in IdlePacing.BUSY_STATES:
            return None
        gpus = []
        for gpu in sample.gpus:
            if gpu.util_gpu is not None and gpu.util_gpu >= 5:
                return None
            mem = round(gpu.mem_used / gpu.mem_total * 100) if gpu.mem_used is not None and gpu.mem_total else None
            gpus.append((gpu.index, mem, gpu.clock_reasons, len(gpu.xid_events), gpu.lost))
        keys = ("state", "requests", "errors", "restarts", "ctx_used", "pid")
        return tuple(engine.get(k) for k in keys) + tuple(gpus)

    def next_interval(self, sample: Sample, base: float) -> float:
        act = self.activity(sample)
        if act is not None and act == self._last:
            self.quiet += 1
        else:
            self.quiet = 0
        self._last = act
        if self.quiet < self.after:
            return base
        return min(max(base, self.idle_interval), base * 2 ** (self.quiet - self.after + 1))


class Sampler:
    """Samples ``sources`` every ``interval`` seconds; keeps ``history`` samples of every series."""

    def __init__(
        self,
        *sources: Source,
        interval: float = 1.0,
        engine_stats: EngineStats | None = None,
        history: int = 3600,
        recent: int = 120,
    ) -> None:
        self.sources: tuple[Source, ...] = sources or default_sources()
        self.interval = interval
        self.engine_stats = engine_stats
        self.series = SeriesStore(history)
        self._recent: deque[Sample] = deque(maxlen=max(1, recent))
        self._latest: Sample | None = None
        self._observers: Observers[Sample] = Observers("telemetry")
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._poke = threading.Event()  # wake(): the next poll now
        self.pacing: IdlePacing | None = None
        self._thread: threading.Thread | None = None
        self._engine_failures = 0
        self.polls = 0
        self.last_poll_seconds: float | None = None  # wall time of the last poll, for self-monitoring

    # ---- settings ---------------------------------------------------------------
    @property
    def interval(self) -> float:
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"sampling interval must be a positive number of seconds, got {value!r}")
        self._interval = float(value)

    # ---- results ----------------------------------------------------------------
    @property
    def latest(self) -> Sample | None:
        return self._latest

    def recent(self, n: int | None = None) -> list[Sample]:
        """The last ``n`` whole samples (a short history; the series hold the long one)."""
        items = list(self._recent)
        return items if n is None else items[-n:] if n > 0 else []

    # ---- subscribers ------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(sample)`` on the sampler thread after each poll; returns an unsubscribe function."""
        return self._observers.subscribe(callback)

    # ---- polling ----------------------------------------------------------------
    def poll_once(self) -> Sample:
        """Take one sample now from every source, store it and hand it to the subscribers."""
        with self._poll_lock:
            if self._exhausted() and self._latest is not None:
                return self._latest
            started = time.perf_counter()
            sample = Sample(ts=time.time(), engine=self._read_engine())
            for source in self.sources:
                try:
                    source.collect(sample)
                except Exception:  # noqa: BLE001 - a source is meant never to raise; guard anyway
                    log.exception("telemetry source %r failed", source)
            self._store(sample)
            self.last_poll_seconds = time.perf_counter() - started
            self._observers.publish(sample)
            return sample

    def feed(self, sample: Sample) -> None:
        """Store a sample taken elsewhere and hand it to the subscribers, as a poll does: a face
        attached to a daemon mirrors the daemon's samples this way (its sampler never polls)."""
        with self._poll_lock:
            self._store(sample)
            self._observers.publish(sample)

    def _store(self, sample: Sample) -> None:
        self.series.add_sample(sample)
        self._recent.append(sample)
        self._latest = sample
        self.polls += 1

    def _read_engine(self) -> JsonDict | None:
        if self.engine_stats is None:
            return None
        try:
            stats = self.engine_stats()
        except Exception:  # noqa: BLE001
            self._engine_failures += 1
            if self._engine_failures == 1 or self._engine_failures % 100 == 0:
                log.exception("engine_stats() failed (%d times)", self._engine_failures)
            return None
        return dict(stats) if stats is not None else None

    def _exhausted(self) -> bool:
        return any(getattr(source, "exhausted", False) for source in self.sources)

    def wake(self) -> None:
        """Take the next sample now (something happened: an engine event while sampling slowly)."""
        if self.pacing is not None and self.pacing.quiet:
            self._poke.set()

    def _next_delay(self) -> float:
        """The interval, unless a source paces the sampler itself (a replay at recorded speed) or
        the idle pacing stretches it while nothing changes."""
        delay = self._interval
        if self.pacing is not None and self._latest is not None:
            delay = self.pacing.next_interval(self._latest, self._interval)
        for source in self.sources:
            pace = getattr(source, "next_delay", None)
            if pace is not None:
                try:
                    delay = float(pace(self._interval))
                except Exception:  # noqa: BLE001
                    log.exception("next_delay of %r failed", source)
        return max(0.0, delay)

    # ---- the thread -------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def finished(self) -> threading.Event:
        """Set when the sampling thread ends (stopped, or a replayed trace ran out)."""
        return self._finished

    def start(self) -> "Sampler":
        if self.running:
            return self
        self._stop.clear()
        self._poke.clear()
        self._finished.clear()
        self._thread = threading.Thread(target=self._run, name="llmos-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits for a poll in progress, up to ``timeout`` seconds)."""
        self._stop.set()
        self._poke.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None if thread is None or not thread.is_alive() else thread

    def close(self) -> None:
        """Stop and release the sources (NVML shutdown, trace file closed)."""
        self.stop()
        for source in self.sources:
            close = getattr(source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    log.exception("closing telemetry source %r failed", source)

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._exhausted():
                started = time.monotonic()
                self.poll_once()
                wait = started + self._next_delay() - time.monotonic()
                # never less than MIN_WAIT_S: a replay "as fast as possible" (speed 0, looped)
                # would otherwise hold the GIL in a tight loop and starve every other thread of
                # the process (measured: a 0.4 s GGUF header read took 37 s beside one)
                pause = max(MIN_WAIT_S, wait)
                if self.pacing is None:
                    if self._stop.wait(pause):
                        break
                else:
                    if self._poke.wait(pause):
                        self._poke.clear()  # woken early: an engine event, or stop()
                    if self._stop.is_set():
                        break
        except Exception:  # noqa: BLE001 - poll_once guards its parts; this is the last net
            log.exception("telemetry sampler stopped by an error")
        finally:
            self._finished.set()
