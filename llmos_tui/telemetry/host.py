"""Host telemetry through psutil: CPU load, load average, memory, swap, and the engine child's share.

The engine's pid comes from the engine stats already in the sample (the sampler
asks the engine before its sources), so this source needs no link to the engine.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from llmos_tui.telemetry.sample import HostSample, Sample

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)


class HostSource:
    """A telemetry source for the host. ``collect(sample)`` fills ``sample.host``; never raises."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._cpu_count = psutil.cpu_count() or os.cpu_count()
        # cpu_percent(None) compares with the previous call; prime it so the first sample is real
        psutil.cpu_percent(interval=None)
        self._proc: psutil.Process | None = None
        self._proc_pid: int | None = None

    def collect(self, sample: Sample) -> None:
        host = HostSample(cpu_count=self._cpu_count)
        ps = self._psutil
        try:
            host.cpu_percent = ps.cpu_percent(interval=None)
        except Exception as exc:  # noqa: BLE001
            log.debug("cpu_percent: %s", exc)
        try:
            host.load1, host.load5, host.load15 = os.getloadavg()
        except (OSError, AttributeError):  # not on Windows
            pass
        try:
            vm = ps.virtual_memory()
            host.mem_total = vm.total
            host.mem_used = vm.total - vm.available  # what applications hold, as `free` and htop count it
            host.mem_percent = vm.percent
        except Exception as exc:  # noqa: BLE001
            log.debug("virtual_memory: %s", exc)
        try:
            sw = ps.swap_memory()
            host.swap_total = sw.total
            host.swap_used = sw.used
        except Exception as exc:  # noqa: BLE001 - no swap accounting in some containers
            log.debug("swap_memory: %s", exc)
        pid = sample.engine_pid
        host.engine_pid = pid
        if pid is not None:
            host.engine_cpu_percent, host.engine_rss = self._engine_usage(pid)
        else:
            self._proc = self._proc_pid = None
        sample.host = host

    def close(self) -> None:
        self._proc = self._proc_pid = None

    def _engine_usage(self, pid: int) -> tuple[float | None, int | None]:
        ps = self._psutil
        first = False
        if pid != self._proc_pid:
            # A new child (first start or a restart): cpu_percent needs one call to set its baseline.
            try:
                self._proc = ps.Process(pid)
            except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied
                self._proc = None
            self._proc_pid = pid
            first = True
        if self._proc is None:
            return None, None
        try:
            with self._proc.oneshot():
                cpu = self._proc.cpu_percent(interval=None)
                rss = self._proc.memory_info().rss
        except Exception:  # noqa: BLE001 - the child exited between two samples
            self._proc = None
            return None, None
        return (None if first else cpu), rss
