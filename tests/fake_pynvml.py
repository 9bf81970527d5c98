"""A stand-in for the ``pynvml`` module, for tests only (nvidia-ml-py ships no mock).

GPUs are plain objects whose readings a test can change between polls; awkward
drivers on demand:

- ``FakeGpu.not_supported``: functions that raise NVMLError_NotSupported;
- ``FakeGpu.function_not_found``: functions the driver lacks (NVMLError_FunctionNotFound,
  as the real pynvml raises when libnvidia-ml has no such symbol);
- ``FakeNvml(missing=...)``: functions an older pynvml module does not have (AttributeError);
- ``FakeGpu.transient``: functions that fail once with NVMLError_Unknown;
- ``FakeNvml.fall_off_bus(i)``: XID 79 is queued, then every call on that GPU raises
  NVMLError_GpuIsLost;
- ``FakeNvml(init_error=...)``: nvmlInit fails with that NVML error code.

``FakeNvml.calls`` counts every call by function name, so tests can check caching.
"""

from __future__ import annotations

import threading
import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml's: NVMLError(code) builds the subclass for that code; ``.value`` is the code."""

    _by_code: dict[int, type] = {}

    def __new__(cls, value: int = NVML_ERROR_UNKNOWN):
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, NVMLError)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int = NVML_ERROR_UNKNOWN) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


def _subclass(name: str, code: int) -> type:
    def new(cls, *args):
        return NVMLError.__new__(cls, code)

    cls = type(name, (NVMLError,), {"__new__": new})
    NVMLError._by_code[code] = cls
    return cls


NVMLError_Uninitialized = _subclass("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _subclass("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _subclass("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_Timeout = _subclass("NVMLError_Timeout", NVML_ERROR_TIMEOUT)
NVMLError_LibraryNotFound = _subclass("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _subclass("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _subclass("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_Unknown = _subclass("NVMLError_Unknown", NVML_ERROR_UNKNOWN)

MIB = 1024 * 1024


@dataclass
class FakeGpu:
    """One GPU's readings, in NVML's own units (mW, MHz, bytes)."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-5f1c2a9e-0000-4000-8000-000000000000"
    util_gpu: int = 0
    util_mem: int = 0
    mem_used: int = 600 * MIB
    mem_total: int = 81559 * MIB
    temp: int = 34
    temp_mem: int = 38
    thresholds: dict[int, int] = field(default_factory=lambda: {0: 92, 1: 87, 2: 95, 3: 87})
    fan: int = 0
    power_mw: int = 72_000
    power_limit_mw: int = 700_000
    clocks: dict[int, int] = field(default_factory=lambda: {0: 345, 1: 345, 2: 2619, 3: 765})
    max_clocks: dict[int, int] = field(default_factory=lambda: {0: 1980, 1: 1980, 2: 2619, 3: 1755})
    pstate: int = 0
    clock_reasons: int = 0x1  # idle
    pcie_gen: int = 5
    pcie_width: int = 16
    pcie_gen_max: int = 5
    pcie_width_max: int = 16
    pcie_replay: int = 0
    ecc_mode: int = 1
    ecc_counts: dict[tuple[int, int], int] = field(default_factory=dict)  # (error type, counter) -> n
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    compute_processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)
    not_supported: set[str] = field(default_factory=set)
    function_not_found: set[str] = field(default_factory=set)
    transient: set[str] = field(default_factory=set)  # fail once with NVMLError_Unknown, then answer
    lost: bool = False


def rtx_gpu() -> FakeGpu:
    """A consumer board: no ECC, no row remapping, no memory temperature, XID events not offered."""
    return FakeGpu(
        name="NVIDIA GeForce RTX 3090",
        uuid="GPU-0a0b0c0d-1111-4222-8333-444455556666",
        mem_total=24576 * MIB,
        thresholds={0: 98, 1: 95},
        fan=41,
        power_limit_mw=350_000,
        max_clocks={0: 2100, 1: 2100, 2: 9751, 3: 1950},
        pcie_gen=4,
        pcie_width=16,
        pcie_gen_max=4,
        pcie_width_max=16,
        ecc_mode=0,
        not_supported={
            "nvmlDeviceGetEccMode",
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetRemappedRows",
            "nvmlDeviceGetFieldValues",
            "nvmlDeviceRegisterEvents",
        },
    )


class FakeHandle:
    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<FakeHandle {self.index}>"


class FakeEventSet:
    def __init__(self) -> None:
        self.handles: set[FakeHandle] = set()
        self.queue: list[Any] = []


_API = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetPerformanceState",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetCurrPcieLinkGeneration",
    "nvmlDeviceGetCurrPcieLinkWidth",
    "nvmlDeviceGetMaxPcieLinkGeneration",
    "nvmlDeviceGetMaxPcieLinkWidth",
    "nvmlDeviceGetPcieReplayCounter",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
    "nvmlEventSetCreate",
    "nvmlDeviceRegisterEvents",
    "nvmlEventSetWait_v2",
    "nvmlEventSetWait",
    "nvmlEventSetFree",
)


class FakeNvml(types.ModuleType):
    """A pynvml-shaped module over ``gpus``. Pass it as ``NvmlSource(nvml=fake)`` or put it in sys.modules."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        missing: set[str] | frozenset[str] = frozenset(),
        init_error: int | None = None,
        driver: str = "550.90.07",
        cuda: int = 12040,
    ) -> None:
        super().__init__("pynvml")
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.handles = [FakeHandle(i) for i in range(len(self.gpus))]
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.calls: Counter[str] = Counter()
        self.initialised = False
        self.event_sets: list[FakeEventSet] = []
        self._lock = threading.Lock()
        for name, value in globals().items():
            if name.startswith(("NVMLError", "NVML_")):
                setattr(self, name, value)
        for name in _API:
            if name not in missing:
                setattr(self, name, getattr(self, "_" + name))

    # ---- test controls ------------------------------------------------------------
    def emit_xid(self, index: int, xid: int) -> None:
        handle = self.handles[index]
        for event_set in self.event_sets:
            if handle in event_set.handles:
                event_set.queue.append(types.SimpleNamespace(device=handle, eventType=0x8, eventData=xid))

    def fall_off_bus(self, index: int) -> None:
        """XID 79 ("GPU has fallen off the bus"); from now on the GPU answers only GpuIsLost."""
        self.emit_xid(index, 79)
        self.gpus[index].lost = True

    # ---- plumbing -----------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def _gpu(self, handle: FakeHandle, name: str) -> FakeGpu:
        self._count(name)
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if name in gpu.not_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if name in gpu.function_not_found:
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        if name in gpu.transient:
            gpu.transient.discard(name)
            raise NVMLError(NVML_ERROR_UNKNOWN)
        return gpu

    # ---- system -------------------------------------------------------------------
    def _nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def _nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        self.initialised = False

    def _nvmlDeviceGetCount(self) -> int:
        self._count("nvmlDeviceGetCount")
        return len(self.gpus)

    def _nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._count("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.handles[index]

    def _nvmlSystemGetDriverVersion(self) -> str:
        self._count("nvmlSystemGetDriverVersion")
        return self.driver

    def _nvmlSystemGetCudaDriverVersion(self) -> int:
        self._count("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def _nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._count("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    # ---- device -------------------------------------------------------------------
    def _nvmlDeviceGetName(self, h):
        return self._gpu(h, "nvmlDeviceGetName").name

    def _nvmlDeviceGetUUID(self, h):
        return self._gpu(h, "nvmlDeviceGetUUID").uuid

    def _nvmlDeviceGetUtilizationRates(self, h):
        g = self._gpu(h, "nvmlDeviceGetUtilizationRates")
        return types.SimpleNamespace(gpu=g.util_gpu, memory=g.util_mem)

    def _nvmlDeviceGetMemoryInfo(self, h, version=None):
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        return types.SimpleNamespace(used=g.mem_used, total=g.mem_total, free=g.mem_total - g.mem_used)

    def _nvmlDeviceGetTemperature(self, h, sensor):
        return self._gpu(h, "nvmlDeviceGetTemperature").temp

    def _nvmlDeviceGetTemperatureThreshold(self, h, threshold):
        g = self._gpu(h, "nvmlDeviceGetTemperatureThreshold")
        if threshold not in g.thresholds:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.thresholds[threshold]

    def _nvmlDeviceGetFieldValues(self, h, field_ids):
        g = self._gpu(h, "nvmlDeviceGetFieldValues")
        out = []
        for fid in field_ids:
            if fid == 82:  # NVML_FI_DEV_MEMORY_TEMP
                out.append(types.SimpleNamespace(fieldId=fid, nvmlReturn=0, valueType=1,
                                                 value=types.SimpleNamespace(uiVal=g.temp_mem)))
            else:
                out.append(types.SimpleNamespace(fieldId=fid, nvmlReturn=NVML_ERROR_NOT_SUPPORTED, valueType=1,
                                                 value=types.SimpleNamespace(uiVal=0)))
        return out

    def _nvmlDeviceGetFanSpeed(self, h):
        return self._gpu(h, "nvmlDeviceGetFanSpeed").fan

    def _nvmlDeviceGetPowerUsage(self, h):
        return self._gpu(h, "nvmlDeviceGetPowerUsage").power_mw

    def _nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self._gpu(h, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def _nvmlDeviceGetClockInfo(self, h, kind):
        return self._gpu(h, "nvmlDeviceGetClockInfo").clocks[kind]

    def _nvmlDeviceGetMaxClockInfo(self, h, kind):
        return self._gpu(h, "nvmlDeviceGetMaxClockInfo").max_clocks[kind]

    def _nvmlDeviceGetPerformanceState(self, h):
        return self._gpu(h, "nvmlDeviceGetPerformanceState").pstate

    def _nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self._gpu(h, "nvmlDeviceGetCurrentClocksEventReasons").clock_reasons

    def _nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return self._gpu(h, "nvmlDeviceGetCurrentClocksThrottleReasons").clock_reasons

    def _nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return self._gpu(h, "nvmlDeviceGetCurrPcieLinkGeneration").pcie_gen

    def _nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return self._gpu(h, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width

    def _nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self._gpu(h, "nvmlDeviceGetMaxPcieLinkGeneration").pcie_gen_max

    def _nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self._gpu(h, "nvmlDeviceGetMaxPcieLinkWidth").pcie_width_max

    def _nvmlDeviceGetPcieReplayCounter(self, h):
        return self._gpu(h, "nvmlDeviceGetPcieReplayCounter").pcie_replay

    def _nvmlDeviceGetEccMode(self, h):
        g = self._gpu(h, "nvmlDeviceGetEccMode")
        return [g.ecc_mode, g.ecc_mode]

    def _nvmlDeviceGetTotalEccErrors(self, h, error_type, counter_type):
        g = self._gpu(h, "nvmlDeviceGetTotalEccErrors")
        return g.ecc_counts.get((error_type, counter_type), 0)

    def _nvmlDeviceGetRemappedRows(self, h):
        return self._gpu(h, "nvmlDeviceGetRemappedRows").remapped_rows

    def _nvmlDeviceGetComputeRunningProcesses(self, h):
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.compute_processes]

    def _nvmlDeviceGetGraphicsRunningProcesses(self, h):
        g = self._gpu(h, "nvmlDeviceGetGraphicsRunningProcesses")
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.graphics_processes]

    # ---- events -------------------------------------------------------------------
    def _nvmlEventSetCreate(self):
        self._count("nvmlEventSetCreate")
        event_set = FakeEventSet()
        self.event_sets.append(event_set)
        return event_set

    def _nvmlDeviceRegisterEvents(self, h, event_types, event_set):
        self._gpu(h, "nvmlDeviceRegisterEvents")
        event_set.handles.add(h)

    def _nvmlEventSetWait_v2(self, event_set, timeout_ms):
        self._count("nvmlEventSetWait_v2")
        if event_set.queue:
            return event_set.queue.pop(0)
        raise NVMLError(NVML_ERROR_TIMEOUT)

    def _nvmlEventSetWait(self, event_set, timeout_ms):
        return self._nvmlEventSetWait_v2(event_set, timeout_ms)

    def _nvmlEventSetFree(self, event_set):
        self._count("nvmlEventSetFree")
        if event_set in self.event_sets:
            self.event_sets.remove(event_set)


# ---- the synthetic trace tests/data/trace_throttle.jsonl --------------------------------
# An H100-like GPU serving an 8B model: idle, model load, then steady generation that
# runs into the power cap, then into thermal slowdown as the board heats up, then the load
# eases. The trace is made by the real NvmlSource reading this fake GPU and the real
# Recorder writing it; only the host and the engine stats are made up directly.
# Regenerate: python tests/fake_pynvml.py tests/data/trace_throttle.jsonl

TRACE_SECONDS = 240
ENGINE_PID = 48213
GIB = 1024 * MIB


def _throttle_state(t: int, rng: Any) -> dict[str, Any]:
    """Readings at second ``t`` of the scenario."""
    jitter = rng.uniform
    loading = 5 <= t < 20
    busy = 20 <= t < 205
    if t < 20:
        temp = 33 + t * 0.3 + jitter(-0.4, 0.4)
    elif busy:
        # heats towards 90 °C under full load; the slowdown threshold (87 °C) holds it near 88
        temp = min(90 - (90 - 39) * 2.718 ** (-(t - 20) / 45.0), 88.2) + jitter(-0.5, 0.5)
    else:
        temp = 40 + 48 * 2.718 ** (-(t - 205) / 18.0) + jitter(-0.5, 0.5)  # cooling down
    thermal = busy and temp >= 86.5
    reasons = 0x1  # idle
    if busy:
        reasons = 0
        if t >= 40:
            reasons |= 0x4  # power cap from 40 s on
        if thermal:
            reasons |= 0x20  # SW thermal slowdown
            if temp >= 88.4:
                reasons |= 0x40  # HW thermal slowdown at the peaks
    if busy:
        power = 520 + (t - 20) * 9 if t < 40 else 697 + jitter(-4, 3)
        if thermal:
            power = 655 + jitter(-12, 8)  # slowed clocks draw less: below the cap
            reasons &= ~0x4
        sm = 1980 if t < 40 else int(1755 + jitter(-45, 40))
        if thermal:
            sm = int(1530 + jitter(-60, 40) - (120 if reasons & 0x40 else 0))
        util = int(min(100, 97 + jitter(0, 4)))
        mem_util = int(58 + jitter(-6, 6) - (8 if thermal else 0))
    else:
        power = 74 + jitter(-2, 2) + (40 if loading else 0)
        sm = 345 if not loading else 1980
        util = 0 if not loading else int(jitter(2, 12))
        mem_util = 0 if not loading else int(jitter(10, 30))
    if t < 5:
        vram = 0.55 * GIB
    elif loading:
        vram = 0.55 * GIB + (t - 5) / 15 * 15.6 * GIB
    else:
        vram = 16.2 * GIB + (1.2 * GIB if t >= 20 else 0)
    # tokens/s: ~92 at full clocks, ~86 under the power cap, ~71 when thermally slowed
    if busy:
        tps = 92.0 if t < 40 else 86.0
        if thermal:
            tps = 71.0 - (6 if reasons & 0x40 else 0)
        tps += jitter(-1.5, 1.5)
    else:
        tps = None
    return {
        "temp": temp, "reasons": reasons, "power": power, "sm": sm, "util": util, "mem_util": mem_util,
        "vram": vram, "tps": tps, "busy": busy, "loading": loading,
    }


def write_throttle_trace(path: str) -> None:
    import random

    from llmos_tui.telemetry.nvml import NvmlSource
    from llmos_tui.telemetry.replay import Recorder
    from llmos_tui.telemetry.sample import HostSample, Sample

    rng = random.Random(20261105)
    gpu = FakeGpu(
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-8d3b6f0e-7c1a-4e2b-9f35-1a2b3c4d5e6f",
        not_supported={"nvmlDeviceGetFanSpeed"},  # SXM boards are cooled by the chassis
    )
    fake = FakeNvml([gpu], driver="550.90.07", cuda=12040)
    now = [0.0]
    source = NvmlSource(nvml=fake, slow_every=10.0, clock=lambda: now[0])
    start = 1793700000.0  # 2026-11-04 ~13:20 UTC
    recorder = Recorder(
        path,
        interval=1.0,
        start=start,
        host="h100-node-07",
        synthetic=True,
        description=(
            "Synthetic: H100-like GPU serving an 8B model; power cap from 40 s, SW (then briefly HW) "
            "thermal slowdown as it heats past 87 °C, load ends at 205 s; no XID; tokens/s falls with the clocks."
        ),
    )
    requests = 0
    ctx_used = 0
    rolling: float | None = None
    last_tps: float | None = None
    ttft: float | None = None
    for t in range(TRACE_SECONDS):
        now[0] = float(t)
        s = _throttle_state(t, rng)
        gpu.temp = int(round(s["temp"]))
        gpu.temp_mem = int(round(s["temp"] + 5 + rng.uniform(-0.5, 0.5)))
        gpu.power_mw = int(s["power"] * 1000)
        gpu.clock_reasons = s["reasons"]
        gpu.clocks = {0: s["sm"], 1: s["sm"], 2: 2619 if s["busy"] or s["loading"] else 1593, 3: 1755}
        gpu.util_gpu = s["util"]
        gpu.util_mem = s["mem_util"]
        gpu.mem_used = int(s["vram"])
        gpu.pstate = 0 if t >= 5 else 5
        gpu.pcie_gen = 5 if t >= 5 else 1
        gpu.compute_processes = [(ENGINE_PID, int(s["vram"] - 0.5 * GIB))] if t >= 5 else []
        if s["busy"]:
            if t % 8 == 4:  # a new request every 8 s; the context grows with each
                requests += 1
                ctx_used = min(8192, 310 + requests * 260)
                ttft = 42.0 + ctx_used / 120.0 + rng.uniform(-3, 3)
            last_tps = s["tps"]
            rolling = last_tps if rolling is None else rolling * 0.8 + last_tps * 0.2
        state = "stopped" if t < 5 else "loading" if s["loading"] else "generating" if s["busy"] else "ready"
        engine = {
            "state": state,
            "model": "llama-3.1-8b-instruct-f16",
            "model_path": "/models/llama-3.1-8b-instruct-f16.gguf",
            "params": {"n_gpu_layers": -1, "n_ctx": 8192, "n_batch": 512, "flash_attn": "on"},
            "n_ctx": 8192,
            "ctx_used": ctx_used,
            "last_gen_tps": round(last_tps, 2) if last_tps is not None else None,
            "rolling_gen_tps": round(rolling, 2) if rolling is not None else None,
            "last_ttft_ms": round(ttft, 1) if ttft is not None else None,
            "requests": requests,
            "errors": 0,
            "pid": ENGINE_PID if t >= 5 else None,
            "restarts": 0,
        }
        sample = Sample(ts=start + t, engine=engine)
        source.collect(sample)
        for proc in sample.gpus[0].processes:
            proc.name = "python3"
        busy_cpu = 9.5 if s["busy"] else (4.0 if s["loading"] else 1.2)
        sample.host = HostSample(
            cpu_percent=round(busy_cpu + rng.uniform(-1, 1), 1),
            cpu_count=32,
            load1=round(1.1 + (1.0 if s["busy"] else 0.2) + rng.uniform(-0.1, 0.1), 2),
            load5=1.6,
            load15=1.2,
            mem_used=int((38.0 + (2.1 if t >= 5 else 0)) * GIB),
            mem_total=int(251.5 * GIB),
            mem_percent=round((38.0 + (2.1 if t >= 5 else 0)) / 251.5 * 100, 1),
            swap_used=0,
            swap_total=int(8 * GIB),
            engine_pid=engine["pid"],
            engine_cpu_percent=(round(100 + rng.uniform(-3, 2), 1) if s["busy"] else 35.0 if s["loading"] else 0.5)
            if t >= 5 else None,
            engine_rss=int(2.1 * GIB) if t >= 5 else None,
        )
        recorder.write(sample)
    recorder.close()
    source.close()


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    write_throttle_trace(sys.argv[1] if len(sys.argv) > 1 else "tests/data/trace_throttle.jsonl")
