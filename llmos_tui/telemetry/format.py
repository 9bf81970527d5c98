"""Human formatting of telemetry, shared by ``status`` and the dashboard. Plain text, no colour.

Every formatter takes None for a field the hardware does not report and shows "n/a".
"""

from __future__ import annotations

import math
import time
from typing import Sequence

from llmos_tui.jsontypes import JsonDict
from llmos_tui.telemetry.sample import GpuProcess, GpuSample, HostSample, Sample

NA = "n/a"
SPARK_CHARS = "▁▂▃▄▅▆▇█"
_BAR_PARTS = " ▏▎▍▌▋▊▉█"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if _missing(value):
        return NA
    text = f"{value:.{digits}f}"
    return f"{text} {unit}" if unit else text


def fmt_pct(value: float | None, digits: int = 0) -> str:
    return NA if _missing(value) else f"{value:.{digits}f}%"


def fmt_bytes(value: float | None) -> str:
    if _missing(value):
        return NA
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit in ("B", "KiB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - loop always returns


def fmt_used_total(used: float | None, total: float | None) -> str:
    """'61.2 / 80.0 GiB' in one unit (the total's), or n/a."""
    if _missing(used) and _missing(total):
        return NA
    if _missing(total):
        return f"{fmt_bytes(used)} / {NA}"
    unit, div = "B", 1.0
    for candidate in ("KiB", "MiB", "GiB", "TiB"):
        if total >= div * 1024:
            unit, div = candidate, div * 1024
    used_text = NA if _missing(used) else f"{used / div:.1f}"
    return f"{used_text} / {total / div:.1f} {unit}"


def fmt_of(value: float | None, limit: float | None, unit: str, digits: int = 0) -> str:
    """'698 / 700 W' with either side n/a."""
    if _missing(value) and _missing(limit):
        return NA
    return f"{fmt_num(value, digits)} / {fmt_num(limit, digits)} {unit}"


def fmt_temp(value: float | None) -> str:
    return NA if _missing(value) else f"{value:.0f} °C"


def fmt_pcie(gpu: GpuSample) -> str:
    if gpu.pcie_gen is None and gpu.pcie_width is None and gpu.pcie_gen_max is None:
        return NA
    def link(gen: int | None, width: int | None) -> str:
        return f"Gen{'?' if gen is None else gen} x{'?' if width is None else width}"

    now = link(gpu.pcie_gen, gpu.pcie_width)
    if gpu.pcie_gen_max is None and gpu.pcie_width_max is None:
        return now
    top = link(gpu.pcie_gen_max, gpu.pcie_width_max)
    return now if now == top else f"{now} (max {top})"


def fmt_pstate(value: int | None) -> str:
    return NA if value is None or value == 32 else f"P{value}"  # 32: NVML_PSTATE_UNKNOWN


def fmt_ecc(gpu: GpuSample, short: bool = False) -> str:
    if gpu.ecc_mode is None:
        return f"ECC {NA}"
    if not gpu.ecc_mode:
        return "ECC off"

    def pair(corrected: int | None, uncorrected: int | None) -> str:
        return f"{fmt_num(corrected)}/{fmt_num(uncorrected)}"

    if short:
        return (
            f"ECC corr/uncorr {pair(gpu.ecc_volatile_corrected, gpu.ecc_volatile_uncorrected)} vol "
            f"{pair(gpu.ecc_aggregate_corrected, gpu.ecc_aggregate_uncorrected)} agg"
        )
    return (
        f"ECC on, corrected/uncorrected: volatile {pair(gpu.ecc_volatile_corrected, gpu.ecc_volatile_uncorrected)}, "
        f"aggregate {pair(gpu.ecc_aggregate_corrected, gpu.ecc_aggregate_uncorrected)}"
    )


def fmt_remap(gpu: GpuSample) -> str:
    if gpu.remapped_corrected is None and gpu.remapped_uncorrected is None:
        return f"remapped rows {NA}"
    text = f"remapped rows {fmt_num(gpu.remapped_corrected)}/{fmt_num(gpu.remapped_uncorrected)}"
    if gpu.remap_failure:
        text += " REMAP FAILED"
    elif gpu.remap_pending:
        text += " (reset pending)"
    return text


def fmt_xid(gpu: GpuSample) -> str:
    if gpu.xid_events:
        return "XID " + ", ".join(str(x) for x in gpu.xid_events)
    if gpu.xid_last is not None:
        return f"XID none now (last {gpu.xid_last})"
    return "XID none"


def fmt_throttle(gpu: GpuSample) -> str:
    if gpu.clock_reasons is None:
        return NA
    words = gpu.throttle_reasons
    return ", ".join(words) if words else "none"


def fmt_rate(value: float | None, unit: str = "tok/s") -> str:
    if _missing(value):
        return NA
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_process(proc: GpuProcess) -> str:
    mark = " [engine]" if proc.is_engine else ""
    return f"{proc.pid} {proc.name or '?'}{mark} {fmt_bytes(proc.used_memory)}"


def spark(values: Sequence[float], width: int, lo: float | None = None, hi: float | None = None) -> str:
    """The last ``width`` values as block characters, scaled to [lo, hi] (data range when None)."""
    data = [v for v in values if not _missing(v)][-width:] if width > 0 else []
    if not data:
        return ""
    low = min(data) if lo is None else lo
    high = max(data) if hi is None else hi
    span = high - low
    top = len(SPARK_CHARS) - 1
    if span <= 0:
        return SPARK_CHARS[0] * len(data)
    out = []
    for v in data:
        level = int(round((min(max(v, low), high) - low) / span * top))
        out.append(SPARK_CHARS[level])
    return "".join(out)


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar ``width`` cells wide with eighth-cell resolution; blanks for n/a."""
    if width <= 0:
        return ""
    if _missing(fraction):
        return " " * width
    eighths = int(round(max(0.0, min(1.0, fraction)) * width * 8))
    full, part = divmod(eighths, 8)
    text = "█" * full + (_BAR_PARTS[part] if part and full < width else "")
    return text.ljust(width)


# ---- whole snapshots -------------------------------------------------------------------
def gpu_lines(gpu: GpuSample) -> list[str]:
    head = f"GPU {gpu.index}  {gpu.name or NA}  {fmt_pstate(gpu.pstate)}"
    if gpu.lost:
        return [head, f"  LOST: {gpu.error or 'GPU is lost'}  {fmt_xid(gpu)}"]
    lines = [
        head + (f"  {gpu.uuid}" if gpu.uuid else ""),
        f"  util {fmt_pct(gpu.util_gpu)}  mem-util {fmt_pct(gpu.util_mem)}  "
        f"VRAM {fmt_used_total(gpu.mem_used, gpu.mem_total)}"
        + (f" ({gpu.mem_fraction * 100:.0f}%)" if gpu.mem_fraction is not None else ""),
        f"  power {fmt_of(gpu.power, gpu.power_limit, 'W')}  temp {fmt_temp(gpu.temp)} "
        f"(slowdown {fmt_temp(gpu.temp_slowdown)}, shutdown {fmt_temp(gpu.temp_shutdown)})  "
        f"mem {fmt_temp(gpu.temp_mem)}  fan {fmt_pct(gpu.fan)}",
        f"  clocks SM {fmt_of(gpu.sm_clock, gpu.sm_clock_max, 'MHz')}  "
        f"mem {fmt_of(gpu.mem_clock, gpu.mem_clock_max, 'MHz')}",
        f"  clock events: {fmt_throttle(gpu)}" + ("  [THROTTLED]" if gpu.throttled else ""),
        f"  PCIe {fmt_pcie(gpu)}  replays {fmt_num(gpu.pcie_replay)}",
        f"  {fmt_ecc(gpu)}  {fmt_remap(gpu)}  {fmt_xid(gpu)}",
    ]
    if gpu.processes:
        lines.append("  processes: " + "; ".join(fmt_process(p) for p in gpu.processes))
    else:
        lines.append("  processes: none")
    return lines


def fmt_swap(host: HostSample) -> str:
    if host.swap_total == 0:
        return "none"
    return fmt_used_total(host.swap_used, host.swap_total)


def host_line(host: HostSample | None) -> str:
    if host is None:
        return f"host  {NA}"
    load = NA if host.load1 is None else f"{host.load1:.2f} {host.load5:.2f} {host.load15:.2f}"
    text = (
        f"host  CPU {fmt_pct(host.cpu_percent)} of {host.cpu_count or '?'} cores  load {load}  "
        f"mem {fmt_used_total(host.mem_used, host.mem_total)}  swap {fmt_swap(host)}"
    )
    if host.engine_pid is not None:
        text += (
            f"  engine pid {host.engine_pid}: CPU {fmt_pct(host.engine_cpu_percent)} RSS {fmt_bytes(host.engine_rss)}"
        )
    return text


def engine_line(engine: JsonDict | None, missing: str = "not attached") -> str:
    if engine is None:
        return f"engine  {missing}"
    ctx = f"{fmt_num(engine.get('ctx_used'))} / {fmt_num(engine.get('n_ctx'))}"
    ttft = engine.get("last_ttft_ms")
    return (
        f"engine  {engine.get('state') or NA}  model {engine.get('model') or NA}  ctx {ctx}  "
        f"gen {fmt_rate(engine.get('last_gen_tps'))} last, {fmt_rate(engine.get('rolling_gen_tps'))} rolling  "
        f"TTFT {fmt_num(ttft, 0, 'ms')}  requests {fmt_num(engine.get('requests'))}  "
        f"errors {fmt_num(engine.get('errors'))}  restarts {fmt_num(engine.get('restarts'))}"
    )


def no_gpu_text(sample: Sample) -> str:
    return f"No NVIDIA GPU: {sample.nvml_error or 'NVML found no device'}"


def format_status(sample: Sample, *, no_engine: str = "not attached") -> str:
    """A whole sample as plain text lines (the `status` command)."""
    head = f"llmos-tui status  {fmt_time(sample.ts)}"
    if sample.driver_version:
        head += f"  driver {sample.driver_version}"
    if sample.cuda_version:
        head += f"  CUDA {sample.cuda_version}"
    lines = [head]
    if sample.gpus:
        for gpu in sample.gpus:
            lines.extend(gpu_lines(gpu))
    else:
        lines.append(no_gpu_text(sample))
    lines.append(host_line(sample.host))
    lines.append(engine_line(sample.engine, no_engine))
    return "\n".join(lines)
