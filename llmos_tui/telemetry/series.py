"""Bounded time series of every numeric telemetry field, for graphs and detectors.

Each series is a fixed-size ring of C doubles allocated up front, so memory is
flat from the first sample on: uptime never grows it. All series advance together
(one slot per sample; a value missing in a sample is NaN), so index i of one
series lines up with index i of another and of ``"ts"``.

Names (``i`` the GPU index; units as in :mod:`llmos_tui.telemetry.sample`):

- ``ts``: sample time, seconds since the epoch
- ``gpu{i}.util``, ``.mem_util`` (%), ``.mem_used``, ``.mem_total`` (bytes), ``.mem_pct`` (%),
  ``.power``, ``.power_limit`` (W), ``.temp``, ``.temp_mem`` (°C), ``.fan`` (%),
  ``.sm_clock``, ``.mem_clock`` (MHz), ``.clock_reasons`` (bit mask), ``.throttled`` (0/1),
  ``.pcie_replay``, ``.ecc_uncorrected`` (volatile count), ``.xid`` (XID events in the sample), ``.lost`` (0/1)
- ``host.cpu``, ``host.mem`` (%), ``host.mem_used``, ``host.swap_used`` (bytes), ``host.load1``
- ``engine.gen_tps``, ``engine.rolling_tps`` (tokens/s), ``engine.ttft_ms``, ``engine.ctx_used``,
  ``engine.requests``, ``engine.errors``, ``engine.restarts``, ``engine.cpu`` (%), ``engine.rss`` (bytes)
"""

from __future__ import annotations

import math
import threading
from array import array
from typing import Iterable, Mapping

from llmos_tui.telemetry import names
from llmos_tui.telemetry.sample import Sample

NAN = float("nan")


class Ring:
    """A fixed-capacity ring of floats; the oldest value is overwritten."""

    __slots__ = ("_buf", "_cap", "_head", "_len")

    def __init__(self, capacity: int, filled: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be at least 1, got {capacity}")
        self._cap = capacity
        self._buf = array("d", [NAN]) * capacity
        self._len = min(filled, capacity)
        self._head = self._len % capacity

    def append(self, value: float) -> None:
        self._buf[self._head] = value
        self._head = (self._head + 1) % self._cap
        if self._len < self._cap:
            self._len += 1

    def last(self, n: int | None = None) -> list[float]:
        """The last ``n`` values (all when None), oldest first."""
        count = self._len if n is None else max(0, min(n, self._len))
        if count == 0:
            return []
        start = (self._head - count) % self._cap
        if start + count <= self._cap:
            return self._buf[start : start + count].tolist()
        return self._buf[start:].tolist() + self._buf[: self._head].tolist()

    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        return self._cap


def _num(value: object) -> float | None:
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def sample_values(sample: Sample) -> dict[str, float | None]:
    """The numeric fields of ``sample`` under their series names."""
    values: dict[str, float | None] = {"ts": sample.ts}
    for gpu in sample.gpus:
        mem_pct = gpu.mem_fraction
        fields = {
            "util": gpu.util_gpu,
            "mem_util": gpu.util_mem,
            "mem_used": gpu.mem_used,
            "mem_total": gpu.mem_total,
            "mem_pct": mem_pct * 100.0 if mem_pct is not None else None,
            "power": gpu.power,
            "power_limit": gpu.power_limit,
            "temp": gpu.temp,
            "temp_mem": gpu.temp_mem,
            "fan": gpu.fan,
            "sm_clock": gpu.sm_clock,
            "mem_clock": gpu.mem_clock,
            "clock_reasons": gpu.clock_reasons,
            "throttled": (1.0 if gpu.throttled else 0.0) if gpu.clock_reasons is not None else None,
            "pcie_replay": gpu.pcie_replay,
            "ecc_uncorrected": gpu.ecc_volatile_uncorrected,
            "xid": float(len(gpu.xid_events)),
            "lost": 1.0 if gpu.lost else 0.0,
        }
        values.update({names.gpu(gpu.index, field): value for field, value in fields.items()})
    host = sample.host
    if host is not None:
        values.update(
            {
                "host.cpu": host.cpu_percent,
                "host.mem": host.mem_percent,
                "host.mem_used": host.mem_used,
                "host.swap_used": host.swap_used,
                "host.load1": host.load1,
                "engine.cpu": host.engine_cpu_percent,
                "engine.rss": host.engine_rss,
            }
        )
    engine = sample.engine
    if engine is not None:
        values.update(
            {
                "engine.gen_tps": engine.get("last_gen_tps"),
                "engine.rolling_tps": engine.get("rolling_gen_tps"),
                "engine.ttft_ms": engine.get("last_ttft_ms"),
                "engine.ctx_used": engine.get("ctx_used"),
                "engine.requests": engine.get("requests"),
                "engine.errors": engine.get("errors"),
                "engine.restarts": engine.get("restarts"),
            }
        )
    return {name: _num(value) for name, value in values.items()}


class SeriesStore:
    """Every series of the session, each a :class:`Ring` of ``capacity`` samples. Thread-safe."""

    def __init__(self, capacity: int = 3600) -> None:
        if capacity < 1:
            raise ValueError(f"history must be at least 1 sample, got {capacity}")
        self._capacity = capacity
        self._rings: dict[str, Ring] = {}
        self._count = 0  # samples added so far (not capped)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def add_sample(self, sample: Sample) -> None:
        self.add(sample_values(sample))

    def add(self, values: Mapping[str, float | None]) -> None:
        """Append one sample's values; known series missing from ``values`` get NaN."""
        with self._lock:
            for name, value in values.items():
                ring = self._rings.get(name)
                if ring is None:
                    # a series that appears late (a GPU that came back) starts aligned with the rest
                    ring = self._rings[name] = Ring(self._capacity, filled=self._count)
                ring.append(NAN if value is None else value)
            if len(values) < len(self._rings):
                for name, ring in self._rings.items():
                    if name not in values:
                        ring.append(NAN)
            self._count += 1

    def window(self, name: str, n: int | None = None, *, keep_missing: bool = False) -> list[float]:
        """The values of the last ``n`` samples (all held when None), oldest first.

        Missing values (NaN) are dropped unless ``keep_missing``, so the list may be
        shorter than ``n``; an unknown name gives [].
        """
        with self._lock:
            ring = self._rings.get(name)
            values = ring.last(n) if ring is not None else []
        if keep_missing:
            return values
        return [v for v in values if not math.isnan(v)]

    def latest(self, name: str) -> float | None:
        """The value of the newest sample, or None when it is missing."""
        values = self.window(name, 1, keep_missing=True)
        if not values or math.isnan(values[0]):
            return None
        return values[0]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._rings)

    def __contains__(self, name: object) -> bool:
        return name in self._rings

    def __len__(self) -> int:
        """Samples held (at most ``capacity``)."""
        return min(self._count, self._capacity)

    @property
    def total(self) -> int:
        """Samples added since the start (not capped)."""
        return self._count

    def clear(self) -> None:
        with self._lock:
            self._rings.clear()
            self._count = 0

    def extend(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            self.add_sample(sample)
