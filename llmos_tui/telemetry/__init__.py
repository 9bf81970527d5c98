"""Telemetry: samples of the GPU (NVML), the host (psutil) and the engine, on a fixed interval.

The public pieces:

- :class:`Sample`, :class:`GpuSample`, :class:`GpuProcess`, :class:`HostSample`: the data, JSON-safe.
- :class:`Sampler`: polls sources in its own thread, keeps :class:`SeriesStore` rings, feeds subscribers.
- :class:`NvmlSource`, :class:`HostSource`: the live sources; :class:`ReplaySource` replays a trace
  through the same interface; :class:`Recorder` writes one.
- :func:`decode_clock_reasons`: NVML clock-event (throttle) bits in words.

Nothing here imports Textual, and ``pynvml`` is imported only when NVML is first used.
"""

from llmos_tui.telemetry.host import HostSource
from llmos_tui.telemetry.nvml import NvmlSource, decode_clock_reasons, is_throttling
from llmos_tui.telemetry.replay import Recorder, ReplaySource, TraceError, read_trace
from llmos_tui.telemetry.sample import GpuProcess, GpuSample, HostSample, Sample
from llmos_tui.telemetry.sampler import Sampler, Source, default_sources
from llmos_tui.telemetry.series import SeriesStore

__all__ = [
    "GpuProcess",
    "GpuSample",
    "HostSample",
    "HostSource",
    "NvmlSource",
    "Recorder",
    "ReplaySource",
    "Sample",
    "Sampler",
    "SeriesStore",
    "Source",
    "TraceError",
    "decode_clock_reasons",
    "default_sources",
    "is_throttling",
    "read_trace",
]
