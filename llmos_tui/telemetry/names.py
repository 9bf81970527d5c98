"""One table of telemetry series names and units: what the sampler writes, the dashboard
draws, the detectors read, the journal keeps per minute and the exporter serves.

A GPU series is ``gpu<index>.<field>`` (``gpu0.temp``); host and engine series have fixed
names. :func:`unit` and :func:`describe` answer for any series name; :func:`gpu` builds a GPU
series name and refuses a field that is not in the table (a typo is an error, not a blank
sparkline).
"""

from __future__ import annotations

import re

# field -> (unit, what it is)
GPU_FIELDS: dict[str, tuple[str, str]] = {
    "util": ("%", "GPU utilisation"),
    "mem_util": ("%", "memory controller utilisation"),
    "mem_used": ("bytes", "GPU memory used"),
    "mem_total": ("bytes", "GPU memory in all"),
    "mem_pct": ("%", "GPU memory used, of the total"),
    "power": ("W", "power draw"),
    "power_limit": ("W", "enforced power limit"),
    "temp": ("°C", "GPU temperature"),
    "temp_mem": ("°C", "memory temperature"),
    "fan": ("%", "fan speed"),
    "sm_clock": ("MHz", "SM clock"),
    "mem_clock": ("MHz", "memory clock"),
    "clock_reasons": ("bitmask", "clock-event (throttle) reasons"),
    "throttled": ("0/1", "a throttling clock-event reason is active"),
    "pcie_replay": ("count", "PCIe replay counter"),
    "ecc_uncorrected": ("count", "volatile uncorrected ECC errors"),
    "xid": ("count", "XID events in this sample"),
    "lost": ("0/1", "the GPU fell off the bus"),
}
HOST_SERIES: dict[str, tuple[str, str]] = {
    "host.cpu": ("%", "host CPU, of all cores"),
    "host.mem": ("%", "host memory used"),
    "host.mem_used": ("bytes", "host memory used"),
    "host.swap_used": ("bytes", "swap used"),
    "host.load1": ("load", "1-minute load average"),
    "engine.cpu": ("%", "engine process CPU, of one core"),
    "engine.rss": ("bytes", "engine process resident memory"),
}
ENGINE_SERIES: dict[str, tuple[str, str]] = {
    "engine.gen_tps": ("tok/s", "generation tokens/s of the last reply"),
    "engine.rolling_tps": ("tok/s", "generation tokens/s, rolling mean"),
    "engine.ttft_ms": ("ms", "time to first token of the last reply"),
    "engine.ctx_used": ("tokens", "context in use"),
    "engine.requests": ("count", "requests served"),
    "engine.errors": ("count", "requests that failed"),
    "engine.restarts": ("count", "engine restarts"),
}
FIXED = {**HOST_SERIES, **ENGINE_SERIES}
_GPU = re.compile(r"^gpu(\d+)\.(\w+)$")


def gpu(index: int, field: str) -> str:
    """The series name of a GPU field: ``gpu(0, "temp") == "gpu0.temp"``."""
    if field not in GPU_FIELDS:
        raise KeyError(f"unknown GPU series field {field!r} (known: {', '.join(GPU_FIELDS)})")
    return f"gpu{int(index)}.{field}"


def _entry(name: str) -> tuple[str, str] | None:
    if name in FIXED:
        return FIXED[name]
    match = _GPU.match(name)
    if match and match.group(2) in GPU_FIELDS:
        unit, text = GPU_FIELDS[match.group(2)]
        return unit, f"GPU {match.group(1)}: {text}"
    return None


def known(name: str) -> bool:
    return name == "ts" or _entry(name) is not None


def unit(name: str) -> str:
    entry = _entry(name)
    if entry is None:
        raise KeyError(f"unknown series {name!r}")
    return entry[0]


def describe(name: str) -> str:
    entry = _entry(name)
    if entry is None:
        raise KeyError(f"unknown series {name!r}")
    return entry[1]
