"""GPU telemetry through NVML, read so that nothing a driver lacks can raise.

Every NVML call goes through one wrapper (:meth:`NvmlSource._call`): a field the GPU
or driver does not support (NotSupported, FunctionNotFound, a function missing
from an older ``pynvml``) becomes ``None`` and is not asked again; a GPU that
answers "GPU is lost" is marked lost and left alone. Fields are read in three
tiers so monitoring stays cheap: static (name, UUID, thresholds, max clocks,
PCIe max: once), slow (power limit, ECC, remapped rows, PCIe link: every
``slow_every`` seconds) and fast (everything else: every sample).

``pynvml`` is imported lazily, so importing this module never needs a driver.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import math
import time
from dataclasses import dataclass, field
from collections.abc import Hashable
from typing import Any, Callable

from llmos_tui.jsontypes import JsonScalar
from llmos_tui.telemetry.sample import GpuProcess, GpuSample, Sample
from llmos_tui.textsafe import sanitize

log = logging.getLogger(__name__)

# ---- clock-event ("throttle") reasons ---------------------------------------------
# nvml.h nvmlClocksEventReason* bits; the values are ABI and never change.
REASON_IDLE = 0x001
REASON_APP_CLOCKS = 0x002
REASON_POWER_CAP = 0x004
REASON_HW_SLOWDOWN = 0x008
REASON_SYNC_BOOST = 0x010
REASON_SW_THERMAL = 0x020
REASON_HW_THERMAL = 0x040
REASON_HW_POWER_BRAKE = 0x080
REASON_DISPLAY_CLOCK = 0x100
REASON_BOARD_LIMIT = 0x200  # only in the older "throttle reasons" constants
REASON_RELIABILITY = 0x400  # idem

CLOCK_REASONS: tuple[tuple[int, str], ...] = (
    (REASON_IDLE, "idle"),
    (REASON_APP_CLOCKS, "applications clocks setting"),
    (REASON_POWER_CAP, "power cap"),
    (REASON_HW_SLOWDOWN, "HW slowdown"),
    (REASON_SYNC_BOOST, "sync boost"),
    (REASON_SW_THERMAL, "SW thermal slowdown"),
    (REASON_HW_THERMAL, "HW thermal slowdown"),
    (REASON_HW_POWER_BRAKE, "HW power brake"),
    (REASON_DISPLAY_CLOCK, "display clock setting"),
    (REASON_BOARD_LIMIT, "board limit"),
    (REASON_RELIABILITY, "reliability"),
)
_KNOWN_REASONS = 0
for _bit, _ in CLOCK_REASONS:
    _KNOWN_REASONS |= _bit
# Reasons that cost performance; idle, application clocks and display clock are benign.
THROTTLING_MASK = (
    REASON_POWER_CAP
    | REASON_HW_SLOWDOWN
    | REASON_SW_THERMAL
    | REASON_HW_THERMAL
    | REASON_HW_POWER_BRAKE
    | REASON_BOARD_LIMIT
    | REASON_RELIABILITY
)


def decode_clock_reasons(mask: int | None) -> list[str]:
    """The clock-event reasons set in ``mask``, in words; [] for None or 0."""
    if not mask:
        return []
    words = [word for bit, word in CLOCK_REASONS if mask & bit]
    unknown = mask & ~_KNOWN_REASONS
    if unknown:
        words.append(f"unknown (0x{unknown:x})")
    return words


def is_throttling(mask: int | None) -> bool:
    """True when a reason that lowers clocks under load is active."""
    return bool(mask and mask & THROTTLING_MASK)


# ---- NVML constants (nvml.h; ABI values, so an old pynvml lacking a name still works)
_TEMPERATURE_GPU = 0
_THRESHOLD_SHUTDOWN = 0
_THRESHOLD_SLOWDOWN = 1
_THRESHOLD_MEM_MAX = 2
_CLOCK_SM = 1
_CLOCK_MEM = 2
_ERR_CORRECTED = 0
_ERR_UNCORRECTED = 1
_VOLATILE_ECC = 0
_AGGREGATE_ECC = 1
_FI_DEV_MEMORY_TEMP = 82
_EVENT_XID = 0x8

_E_SUCCESS = 0
_E_NOT_SUPPORTED = 3
_E_NO_PERMISSION = 4
_E_TIMEOUT = 10
_E_FUNCTION_NOT_FOUND = 13
_E_GPU_IS_LOST = 15
_E_RESET_REQUIRED = 16
_E_ARGUMENT_VERSION_MISMATCH = 25
_E_DEPRECATED = 26
# Errors after which asking again is pointless: the field is n/a on this GPU/driver.
_PERMANENT = {_E_NOT_SUPPORTED, _E_NO_PERMISSION, _E_FUNCTION_NOT_FOUND, _E_ARGUMENT_VERSION_MISMATCH, _E_DEPRECATED}
# Errors that mean the GPU itself is gone until a reset.
_LOST = {_E_GPU_IS_LOST, _E_RESET_REQUIRED}

# nvmlValueType_t -> the member of the c_nvmlValue_t union holding the value
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")

STATIC_FIELDS = (
    "name",
    "uuid",
    "temp_slowdown",
    "temp_shutdown",
    "temp_mem_max",
    "sm_clock_max",
    "mem_clock_max",
    "pcie_gen_max",
    "pcie_width_max",
)
SLOW_FIELDS = (
    "power_limit",
    "pcie_gen",
    "pcie_width",
    "pcie_replay",
    "ecc_mode",
    "ecc_volatile_corrected",
    "ecc_volatile_uncorrected",
    "ecc_aggregate_corrected",
    "ecc_aggregate_uncorrected",
    "remapped_corrected",
    "remapped_uncorrected",
    "remap_pending",
    "remap_failure",
)
# GpuSample fields read together under one label (one NVML call)
_FIELD_LABELS = {
    "util_gpu": "util",
    "util_mem": "util",
    "mem_used": "memory",
    "mem_total": "memory",
    "remapped_corrected": "remapped_rows",
    "remapped_uncorrected": "remapped_rows",
    "remap_pending": "remapped_rows",
    "remap_failure": "remapped_rows",
    "processes": "compute_processes",
}


class _DeviceLost(Exception):
    """Raised inside a device read to stop asking a GPU that is gone."""


@dataclass
class _Device:
    index: int
    handle: object  # NVML's opaque device handle
    static: dict[str, JsonScalar] = field(default_factory=dict)
    slow: dict[str, JsonScalar] = field(default_factory=dict)
    slow_read_at: float = -math.inf
    unsupported: dict[str, str] = field(default_factory=dict)  # field label -> reason
    dead: set[str] = field(default_factory=set)  # NVML functions that failed for good on this GPU
    lost: bool = False
    error: str | None = None
    xid_last: int | None = None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _handle_key(handle: object) -> Hashable:
    """A hashable identity for a device handle (ctypes pointers do not compare by address)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except Exception:  # noqa: BLE001 - a fake module's handles are plain objects
        try:
            hash(handle)
            return handle
        except TypeError:
            return id(handle)


def _cuda_text(version: object) -> str | None:
    if not isinstance(version, int) or version <= 0:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


class NvmlSource:
    """A telemetry source for NVIDIA GPUs. ``collect(sample)`` fills ``sample.gpus``.

    ``nvml`` is a pynvml-like module (tests pass a fake); None imports ``pynvml``.
    When NVML cannot start (no driver, no GPU), ``sample.nvml_error`` carries NVML's
    own reason and initialisation is retried every ``retry_init_every`` seconds.
    """

    def __init__(
        self,
        nvml: object | None = None,  # pynvml, or a fake with its functions
        *,
        slow_every: float = 10.0,
        retry_init_every: float = 30.0,
        watch_xid: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nv = nvml
        self._slow_every = slow_every
        self._retry_every = retry_init_every
        self._watch_xid = watch_xid
        self._clock = clock
        self._initialised = False  # nvmlInit succeeded (so nvmlShutdown is owed)
        self._ready = False
        self._next_init_at = -math.inf
        self._error: str | None = None
        self._devices: list[_Device] = []
        self._by_key: dict[Hashable, int] = {}
        self._driver: str | None = None
        self._cuda: str | None = None
        self._event_set: object | None = None
        self.event_error: str | None = None  # why XID events are not watched, if they are not
        self._proc_names: dict[int, str | None] = {}
        self._dead: set[str] = set()  # system-level functions that failed for good
        self._nvml_error_cls: type | tuple = ()

    # ---- public ---------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why no GPU can be read (NVML's reason), or None."""
        return self._error

    @property
    def device_count(self) -> int:
        return len(self._devices)

    @property
    def watching_xid(self) -> bool:
        return self._event_set is not None

    def unsupported(self, index: int) -> dict[str, str]:
        """Fields that read n/a on GPU ``index``, with the reason NVML gave."""
        if 0 <= index < len(self._devices):
            return dict(self._devices[index].unsupported)
        return {}

    def na_reason(self, index: int, field_name: str) -> str | None:
        """Why GpuSample field ``field_name`` of GPU ``index`` reads n/a for good, or None."""
        label = _FIELD_LABELS.get(field_name, field_name)
        return self.unsupported(index).get(label)

    def collect(self, sample: Sample) -> None:
        """Fill ``sample`` with every GPU's fields; never raises."""
        try:
            if not self._ensure_ready():
                sample.nvml_error = self._error
                return
            sample.driver_version = self._driver
            sample.cuda_version = self._cuda
            xids = self._drain_events()
            engine_pid = sample.engine_pid
            sample.gpus = [self._read_device(dev, xids.get(dev.index, []), engine_pid) for dev in self._devices]
            if not sample.gpus:
                sample.nvml_error = self._error or "NVML found no NVIDIA GPU"
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            log.exception("NVML sampling failed")
            sample.nvml_error = f"NVML sampling failed: {exc}"

    def close(self) -> None:
        nv = self._nv
        if nv is None:
            return
        if self._event_set is not None:
            self._quiet(nv, "nvmlEventSetFree", self._event_set)
            self._event_set = None
        if self._initialised:
            self._quiet(nv, "nvmlShutdown")
            self._initialised = False
        self._ready = False
        self._devices = []
        self._by_key = {}

    # ---- start-up -------------------------------------------------------------
    def _ensure_ready(self) -> bool:
        if self._ready:
            return True
        now = self._clock()
        if now < self._next_init_at:
            return False
        self._next_init_at = now + self._retry_every
        if self._nv is None:
            try:
                self._nv = importlib.import_module("pynvml")
            except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install
                self._error = f"the nvidia-ml-py package (pynvml) cannot be imported: {exc}"
                self._next_init_at = math.inf
                return False
        nv = self._nv
        self._nvml_error_cls = getattr(nv, "NVMLError", ())
        try:
            nv.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self._error = str(exc) or type(exc).__name__
            return False
        self._initialised = True
        count = self._call(None, "count", ("nvmlDeviceGetCount",))
        if count is None:
            self._error = "NVML could not count the GPUs"
            return False
        self._devices = []
        for index in range(int(count)):
            dev = _Device(index=index, handle=None)
            try:
                dev.handle = nv.nvmlDeviceGetHandleByIndex(index)
                self._by_key[_handle_key(dev.handle)] = index
            except Exception as exc:  # noqa: BLE001 - no permission, GPU lost at boot
                dev.lost = True
                dev.error = f"cannot open GPU {index}: {exc}"
            self._devices.append(dev)
        self._driver = _text(self._call(None, "driver", ("nvmlSystemGetDriverVersion",)))
        self._cuda = _cuda_text(
            self._call(None, "cuda", ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"))
        )
        if self._watch_xid:
            self._setup_events()
        self._error = None if self._devices else "NVML found no NVIDIA GPU"
        self._ready = True
        return True

    def _setup_events(self) -> None:
        nv = self._nv
        create = getattr(nv, "nvmlEventSetCreate", None)
        if create is None:
            self.event_error = "nvmlEventSetCreate missing from this pynvml"
            return
        try:
            self._event_set = create()
        except Exception as exc:  # noqa: BLE001
            self.event_error = f"nvmlEventSetCreate: {exc}"
            return
        registered = 0
        for dev in self._devices:
            if dev.lost:
                continue
            try:
                nv.nvmlDeviceRegisterEvents(dev.handle, _EVENT_XID, self._event_set)
                registered += 1
            except Exception as exc:  # noqa: BLE001 - NotSupported on some boards (and in VMs)
                dev.unsupported["xid_events"] = str(exc) or type(exc).__name__
        if registered == 0:
            reasons = {dev.unsupported.get("xid_events") for dev in self._devices} - {None}
            self.event_error = "XID events not supported" + (f": {', '.join(sorted(reasons))}" if reasons else "")
            self._quiet(nv, "nvmlEventSetFree", self._event_set)
            self._event_set = None

    # ---- the one wrapper ------------------------------------------------------
    def _call(self, dev: _Device | None, label: str, names: tuple[str, ...], *args: object) -> Any:
        """The result of the first NVML function in ``names`` that answers; None on any failure.

        A permanent failure (not supported, missing function, no permission) is
        remembered under ``label`` so the field is not asked again; "GPU is lost"
        raises _DeviceLost for the device read to stop.
        """
        if dev is not None and label in dev.unsupported:
            return None
        dead = dev.dead if dev is not None else self._dead
        reason = None
        for name in names:
            if name in dead:
                continue
            fn = getattr(self._nv, name, None)
            if fn is None:
                reason = reason or f"{name} missing from this pynvml"
                continue
            try:
                return fn(*args)
            except Exception as exc:  # noqa: BLE001 - classify below
                code = getattr(exc, "value", None) if isinstance(exc, self._nvml_error_cls or ()) else None
                if code in _LOST and dev is not None:
                    dev.lost = True
                    dev.error = str(exc) or "GPU is lost"
                    raise _DeviceLost from None
                if code in _PERMANENT or type(exc).__name__ == "NVMLLibraryMismatchError":
                    reason = reason or f"{exc}" or name
                    dead.add(name)
                    continue  # an older or newer variant may still answer
                if code is None:
                    # Not an NVML error: a binding that no longer fits. Asking again would fail again.
                    log.warning("NVML %s failed (%s: %s); reading it as n/a from now on", name, type(exc).__name__, exc)
                    reason = f"{type(exc).__name__}: {exc}"
                    break
                log.debug("NVML %s failed this time: %s", name, exc)
                return None  # transient (timeout, unknown error): try again next sample
        if dev is not None:
            dev.unsupported[label] = reason or "not supported"
        return None

    def _quiet(self, nv: object, name: str, *args: object) -> None:
        fn = getattr(nv, name, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - shutting down
            log.debug("NVML %s: %s", name, exc)

    # ---- events ---------------------------------------------------------------
    def _drain_events(self) -> dict[int, list[int]]:
        """XID critical errors waiting in the event set, per GPU index (never blocks)."""
        if self._event_set is None:
            return {}
        nv = self._nv
        wait = getattr(nv, "nvmlEventSetWait_v2", None) or getattr(nv, "nvmlEventSetWait", None)
        if wait is None:
            return {}
        found: dict[int, list[int]] = {}
        for _ in range(64):  # bounded: an XID storm must not stall the sampler
            try:
                data = wait(self._event_set, 0)
            except Exception as exc:  # noqa: BLE001 - Timeout means "no event waiting"
                if getattr(exc, "value", None) != _E_TIMEOUT:
                    log.debug("NVML event wait: %s", exc)
                break
            if not (int(getattr(data, "eventType", 0)) & _EVENT_XID):
                continue
            index = self._by_key.get(_handle_key(getattr(data, "device", None)))
            if index is None and len(self._devices) == 1:
                index = 0
            if index is None:
                log.warning("XID %s on an unknown GPU", getattr(data, "eventData", "?"))
                continue
            found.setdefault(index, []).append(int(getattr(data, "eventData", 0)))
        return found

    # ---- per device -----------------------------------------------------------
    def _read_device(self, dev: _Device, xids: list[int], engine_pid: int | None) -> GpuSample:
        if xids:
            dev.xid_last = xids[-1]
        gpu = GpuSample(index=dev.index, xid_events=list(xids))
        if not dev.lost:
            try:
                now = self._clock()
                if now - dev.slow_read_at >= self._slow_every:
                    self._read_static(dev)
                    self._read_slow(dev)
                    dev.slow_read_at = now
                self._read_fast(dev, gpu, engine_pid)
            except _DeviceLost:
                log.warning("GPU %d is lost: %s", dev.index, dev.error)
        for name, value in dev.static.items():
            setattr(gpu, name, value)
        if dev.lost:
            self._clear_live(gpu)
        else:
            for name, value in dev.slow.items():
                setattr(gpu, name, value)
        gpu.lost = dev.lost
        gpu.error = dev.error
        gpu.xid_last = dev.xid_last
        return gpu

    @staticmethod
    def _clear_live(gpu: GpuSample) -> None:
        """A lost GPU keeps its name and limits; its live readings are n/a, not stale."""
        keep = set(STATIC_FIELDS) | {"index", "xid_events", "xid_last", "lost", "error"}
        blank = GpuSample(index=gpu.index)
        for name in vars(blank):
            if name not in keep:
                setattr(gpu, name, getattr(blank, name))

    def _read_static(self, dev: _Device) -> None:
        """Fields that do not change while the driver is loaded; retried only while missing."""
        h = dev.handle
        readers: dict[str, Callable[[], JsonScalar]] = {
            "name": lambda: _text(self._call(dev, "name", ("nvmlDeviceGetName",), h)),
            "uuid": lambda: _text(self._call(dev, "uuid", ("nvmlDeviceGetUUID",), h)),
            "temp_slowdown": lambda: self._call(
                dev, "temp_slowdown", ("nvmlDeviceGetTemperatureThreshold",), h, _THRESHOLD_SLOWDOWN
            ),
            "temp_shutdown": lambda: self._call(
                dev, "temp_shutdown", ("nvmlDeviceGetTemperatureThreshold",), h, _THRESHOLD_SHUTDOWN
            ),
            "temp_mem_max": lambda: self._call(
                dev, "temp_mem_max", ("nvmlDeviceGetTemperatureThreshold",), h, _THRESHOLD_MEM_MAX
            ),
            "sm_clock_max": lambda: self._call(dev, "sm_clock_max", ("nvmlDeviceGetMaxClockInfo",), h, _CLOCK_SM),
            "mem_clock_max": lambda: self._call(dev, "mem_clock_max", ("nvmlDeviceGetMaxClockInfo",), h, _CLOCK_MEM),
            "pcie_gen_max": lambda: self._call(dev, "pcie_gen_max", ("nvmlDeviceGetMaxPcieLinkGeneration",), h),
            "pcie_width_max": lambda: self._call(dev, "pcie_width_max", ("nvmlDeviceGetMaxPcieLinkWidth",), h),
        }
        for name, read in readers.items():
            if dev.static.get(name) is None and name not in dev.unsupported:
                dev.static[name] = read()

    def _read_slow(self, dev: _Device) -> None:
        h = dev.handle
        slow: dict[str, JsonScalar] = {}
        limit = self._call(dev, "power_limit", ("nvmlDeviceGetEnforcedPowerLimit",), h)
        slow["power_limit"] = limit / 1000.0 if limit is not None else None
        slow["pcie_gen"] = self._call(dev, "pcie_gen", ("nvmlDeviceGetCurrPcieLinkGeneration",), h)
        slow["pcie_width"] = self._call(dev, "pcie_width", ("nvmlDeviceGetCurrPcieLinkWidth",), h)
        slow["pcie_replay"] = self._call(dev, "pcie_replay", ("nvmlDeviceGetPcieReplayCounter",), h)
        mode = self._call(dev, "ecc_mode", ("nvmlDeviceGetEccMode",), h)
        ecc_on = bool(mode[0]) if isinstance(mode, (list, tuple)) and mode else None
        slow["ecc_mode"] = ecc_on
        if ecc_on:
            for name, kind, counter in (
                ("ecc_volatile_corrected", _ERR_CORRECTED, _VOLATILE_ECC),
                ("ecc_volatile_uncorrected", _ERR_UNCORRECTED, _VOLATILE_ECC),
                ("ecc_aggregate_corrected", _ERR_CORRECTED, _AGGREGATE_ECC),
                ("ecc_aggregate_uncorrected", _ERR_UNCORRECTED, _AGGREGATE_ECC),
            ):
                slow[name] = self._call(dev, name, ("nvmlDeviceGetTotalEccErrors",), h, kind, counter)
        rows = self._call(dev, "remapped_rows", ("nvmlDeviceGetRemappedRows",), h)
        if isinstance(rows, (list, tuple)) and len(rows) >= 4:
            slow["remapped_corrected"] = int(rows[0])
            slow["remapped_uncorrected"] = int(rows[1])
            slow["remap_pending"] = bool(rows[2])
            slow["remap_failure"] = bool(rows[3])
        dev.slow = slow

    def _read_fast(self, dev: _Device, gpu: GpuSample, engine_pid: int | None) -> None:
        h = dev.handle
        util = self._call(dev, "util", ("nvmlDeviceGetUtilizationRates",), h)
        if util is not None:
            gpu.util_gpu = getattr(util, "gpu", None)
            gpu.util_mem = getattr(util, "memory", None)
        mem = self._call(dev, "memory", ("nvmlDeviceGetMemoryInfo",), h)
        if mem is not None:
            gpu.mem_used = getattr(mem, "used", None)
            gpu.mem_total = getattr(mem, "total", None)
        # nvmlDeviceGetTemperature is deprecated; a future pynvml may only have the V form
        temp_calls = ("nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV")
        gpu.temp = self._call(dev, "temp", temp_calls, h, _TEMPERATURE_GPU)
        gpu.temp_mem = self._memory_temperature(dev)
        gpu.fan = self._call(dev, "fan", ("nvmlDeviceGetFanSpeed",), h)
        power = self._call(dev, "power", ("nvmlDeviceGetPowerUsage",), h)
        gpu.power = power / 1000.0 if power is not None else None
        gpu.sm_clock = self._call(dev, "sm_clock", ("nvmlDeviceGetClockInfo",), h, _CLOCK_SM)
        gpu.mem_clock = self._call(dev, "mem_clock", ("nvmlDeviceGetClockInfo",), h, _CLOCK_MEM)
        gpu.pstate = self._call(dev, "pstate", ("nvmlDeviceGetPerformanceState",), h)
        gpu.clock_reasons = self._call(
            dev,
            "clock_reasons",
            ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
            h,
        )
        gpu.processes = self._processes(dev, engine_pid)

    def _memory_temperature(self, dev: _Device) -> float | None:
        values = self._call(dev, "temp_mem", ("nvmlDeviceGetFieldValues",), dev.handle, [_FI_DEV_MEMORY_TEMP])
        if not values:
            return None
        value = values[0]
        code = getattr(value, "nvmlReturn", _E_SUCCESS)
        if code != _E_SUCCESS:
            if code in _PERMANENT:
                dev.unsupported["temp_mem"] = f"field value error {code}"
            return None
        kind = getattr(value, "valueType", 1)
        member = _VALUE_MEMBERS[kind] if 0 <= kind < len(_VALUE_MEMBERS) else "uiVal"
        try:
            return getattr(value.value, member)
        except AttributeError:
            return None

    def _processes(self, dev: _Device, engine_pid: int | None) -> list[GpuProcess]:
        by_pid: dict[int, GpuProcess] = {}
        for label, kind, names in (
            (
                "compute_processes",
                "compute",
                ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"),
            ),
            (
                "graphics_processes",
                "graphics",
                ("nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v2"),
            ),
        ):
            for info in self._call(dev, label, names, dev.handle) or ():
                pid = int(getattr(info, "pid", 0) or 0)
                used = getattr(info, "usedGpuMemory", None)
                known = by_pid.get(pid)
                if known is None:
                    by_pid[pid] = GpuProcess(
                        pid=pid,
                        name=self._process_name(pid),
                        used_memory=used,
                        kind=kind,
                        is_engine=engine_pid is not None and pid == engine_pid,
                    )
                else:
                    known.kind = "compute+graphics"
                    if used is not None and (known.used_memory is None or used > known.used_memory):
                        known.used_memory = used
        return sorted(by_pid.values(), key=lambda p: (-(p.used_memory or 0), p.pid))

    def _process_name(self, pid: int) -> str | None:
        if pid in self._proc_names:
            return self._proc_names[pid]
        name = None
        try:
            import psutil

            name = sanitize(psutil.Process(pid).name())  # anyone can name a process ESC ] 52 ...
        except Exception:  # noqa: BLE001 - gone, in another container, or no permission
            name = None
        if len(self._proc_names) > 512:  # pids come and go; keep the cache small
            self._proc_names.clear()
        self._proc_names[pid] = name
        return name
