"""Host load as the engine feels it: how many cores processes other than ours keep busy.

On Linux, the runnable threads of every other process at this instant (``/proc/*/task/*/stat``,
within a time budget); elsewhere (or over budget), other processes' CPU time since the last call.
The online learner (``tuning.adapt``) reads it before each request to know its context.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import psutil


class HostLoad:
    """Cores kept busy by processes other than ours: this process and the engine child (``engine_pid``,
    a callable: the engine restarts with a new pid). Every other process, our own children included
    (a tuner's trial, a script's load generator), is load the engine competes with."""

    def __init__(self, ncpu: int | None = None, engine_pid: Callable[[], int | None] | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.ncpu = ncpu or psutil.cpu_count() or 1
        self._me = psutil.Process()
        self._engine_pid = engine_pid or (lambda: None)
        self._engine: psutil.Process | None = None
        self._last: tuple[float, float, float, tuple[int, ...]] | None = None
        self.scan_budget_s = 0.02
        self._no_proc = not os.path.isdir("/proc/self/task")  # no Linux /proc: never scan
        self._scan_retry_at = 0.0  # a scan over budget: the CPU-time view until then, then a new try
        self.scan_retry_s = 30.0
        self.last_other = 0.0

    def _own_procs(self) -> list["psutil.Process"]:
        procs = [self._me]
        pid = self._engine_pid()
        if pid:
            if self._engine is None or self._engine.pid != pid:
                try:
                    self._engine = self._psutil.Process(pid)
                except self._psutil.Error:
                    self._engine = None
            if self._engine is not None:
                procs.append(self._engine)
        return procs

    def _own_cpu(self) -> tuple[float, tuple[int, ...]]:
        total = 0.0
        procs = self._own_procs()
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                continue
        return total, tuple(p.pid for p in procs)

    def sample(self) -> float:
        """Cores other processes keep busy now. On Linux: their runnable threads at this instant.
        Elsewhere: other processes' CPU time since the last call (a lagging view: a load that
        started during the last request is seen late)."""
        running = self._runnable()
        if running is not None:
            self.last_other = max(0.0, min(float(self.ncpu), running))
            return self.last_other
        return self._cpu_time_other()

    @staticmethod
    def _running_in(pid: str) -> int:
        """Runnable threads of one process (0 when it is gone)."""
        n = 0
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return 0
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            # the state follows the command name in parentheses (which may hold spaces)
            end = stat.rfind(b")")
            if stat[end + 2:end + 3] == b"R":
                n += 1
        return n

    def _runnable(self) -> float | None:
        """Runnable threads of other processes at this instant, from /proc/*/task/*/stat (our own
        process and the engine left out: llama.cpp's threads spin a while after each token, and the
        caller itself runs); None where /proc is not Linux's, or when the box has so many threads
        that one scan takes over ``scan_budget_s`` (then the CPU-time view for ``scan_retry_s``)."""
        if self._no_proc or time.monotonic() < self._scan_retry_at:
            return None
        started = time.perf_counter()
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return None
        own = {str(p.pid) for p in self._own_procs()}
        n = 0
        for pid in pids:
            if pid not in own:
                n += self._running_in(pid)
            # over budget (a box with many threads, or our own busy threads holding the GIL between
            # the reads): give up this scan at once, not seconds later, and use the CPU-time view
            if time.perf_counter() - started > self.scan_budget_s:
                self._scan_retry_at = time.monotonic() + self.scan_retry_s
                return None
        return float(n)

    def _cpu_time_other(self) -> float:
        """Other processes' busy cores since the last call (the first call: a baseline, 0)."""
        t = self._psutil.cpu_times()
        busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) \
            + getattr(t, "steal", 0.0)
        now = time.monotonic()
        own, who = self._own_cpu()
        if self._last is not None and self._last[3] == who:
            t0, busy0, own0, _ = self._last
            dt = now - t0
            if dt > 0.02:
                self.last_other = max(0.0, min(self.ncpu, ((busy - busy0) - (own - own0)) / dt))
                self._last = (now, busy, own, who)
        else:  # the first call, or the engine restarted (a new pid's times start at 0): a new baseline
            self._last = (now, busy, own, who)
        return self.last_other


__all__ = ["HostLoad"]
