"""One telemetry sample: what the GPU(s), the host and the engine looked like at one instant.

Plain dataclasses with JSON-safe ``to_dict()`` / ``from_dict()`` so a sample can be
printed by ``status --json``, written to a trace file and read back unchanged.
A field a GPU or driver does not support is ``None`` (shown as "n/a"), never missing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

from llmos_tui.jsontypes import Json, JsonDict


def _known(cls: type, data: Mapping[str, Json]) -> JsonDict:
    """The keys of ``data`` that are fields of ``cls`` (traces from newer versions may carry more)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class GpuProcess:
    """A process holding memory on a GPU."""

    pid: int
    name: str | None = None
    used_memory: int | None = None  # bytes; None where the driver hides it (WDDM, containers)
    kind: str = "compute"  # "compute", "graphics" or "compute+graphics"
    is_engine: bool = False

    def to_dict(self) -> JsonDict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> "GpuProcess":
        return cls(**_known(cls, data))


@dataclass
class GpuSample:
    """One GPU at one instant. Units: %, bytes, W, °C, MHz."""

    index: int
    name: str | None = None
    uuid: str | None = None
    # utilisation, memory
    util_gpu: float | None = None
    util_mem: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    # temperature against the GPU's own thresholds
    temp: float | None = None
    temp_mem: float | None = None
    temp_slowdown: float | None = None
    temp_shutdown: float | None = None
    temp_mem_max: float | None = None
    fan: float | None = None
    # power against the enforced limit
    power: float | None = None
    power_limit: float | None = None
    # clocks against max, performance state, clock-event (throttle) reasons bit mask
    sm_clock: int | None = None
    sm_clock_max: int | None = None
    mem_clock: int | None = None
    mem_clock_max: int | None = None
    pstate: int | None = None
    clock_reasons: int | None = None
    # PCIe link against its maximum
    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    pcie_replay: int | None = None
    # memory errors
    ecc_mode: bool | None = None
    ecc_volatile_corrected: int | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_corrected: int | None = None
    ecc_aggregate_uncorrected: int | None = None
    remapped_corrected: int | None = None
    remapped_uncorrected: int | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    # XID critical errors seen since the previous sample; the last one seen since start
    xid_events: list[int] = field(default_factory=list)
    xid_last: int | None = None
    # a GPU that stopped answering (NVML "GPU is lost") or failed to open
    lost: bool = False
    error: str | None = None
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def throttle_reasons(self) -> list[str]:
        """The clock-event reasons in words ("power cap", "HW thermal slowdown", ...)."""
        from llmos_tui.telemetry.nvml import decode_clock_reasons  # nvml imports this module

        return decode_clock_reasons(self.clock_reasons)

    @property
    def throttled(self) -> bool:
        """True when a reason that costs performance is active (not idle / app clocks / display)."""
        from llmos_tui.telemetry.nvml import is_throttling

        return is_throttling(self.clock_reasons)

    @property
    def mem_fraction(self) -> float | None:
        if self.mem_used is None or not self.mem_total:
            return None
        return self.mem_used / self.mem_total

    @property
    def power_fraction(self) -> float | None:
        if self.power is None or not self.power_limit:
            return None
        return self.power / self.power_limit

    def to_dict(self) -> JsonDict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "processes"}
        data["xid_events"] = list(self.xid_events)
        data["processes"] = [p.to_dict() for p in self.processes]
        # derived, for readers of `status --json` and traces; ignored by from_dict
        data["throttle_reasons"] = self.throttle_reasons
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> "GpuSample":
        values = _known(cls, data)
        values["processes"] = [GpuProcess.from_dict(p) for p in data.get("processes") or []]
        values["xid_events"] = list(data.get("xid_events") or [])
        return cls(**values)


@dataclass
class HostSample:
    """The host: CPU, memory, swap, and the engine child process's share of them."""

    cpu_percent: float | None = None
    cpu_count: int | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    mem_percent: float | None = None
    swap_used: int | None = None
    swap_total: int | None = None
    engine_pid: int | None = None
    engine_cpu_percent: float | None = None  # of one core; above 100 with several threads
    engine_rss: int | None = None

    def to_dict(self) -> JsonDict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> "HostSample":
        return cls(**_known(cls, data))


@dataclass
class Sample:
    """Everything sampled at one instant. ``ts`` is seconds since the epoch."""

    ts: float
    gpus: list[GpuSample] = field(default_factory=list)
    host: HostSample | None = None
    engine: JsonDict | None = None  # the engine's stats (Supervisor.stats()), JSON-safe
    nvml_error: str | None = None  # NVML's own reason when no GPU can be read at all
    driver_version: str | None = None
    cuda_version: str | None = None

    def to_dict(self) -> JsonDict:
        return {
            "ts": self.ts,
            "gpus": [g.to_dict() for g in self.gpus],
            "host": self.host.to_dict() if self.host is not None else None,
            "engine": _json_safe(self.engine) if self.engine is not None else None,
            "nvml_error": self.nvml_error,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> "Sample":
        host = data.get("host")
        engine = data.get("engine")
        return cls(
            ts=float(data["ts"]),
            gpus=[GpuSample.from_dict(g) for g in data.get("gpus") or []],
            host=HostSample.from_dict(host) if host is not None else None,
            engine=dict(engine) if engine is not None else None,
            nvml_error=data.get("nvml_error"),
            driver_version=data.get("driver_version"),
            cuda_version=data.get("cuda_version"),
        )

    @property
    def engine_pid(self) -> int | None:
        pid = (self.engine or {}).get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _json_safe(value: object) -> Json:
    """A copy of ``value`` that json.dumps accepts (engine stats may hold numpy scalars, tuples, paths)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN / inf are not JSON
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and not isinstance(value, type):
        try:
            return _json_safe(item())
        except Exception:  # noqa: BLE001 - fall through to str()
            pass
    return str(value)
