"""Record telemetry to a JSON-lines trace and replay it through the sampler's source interface.

A trace is UTF-8 JSON lines: the first line is a header
``{"format": "llmos-tui-trace", "version": 1, "host": ..., "start": <epoch s>,
"interval": <s>, "synthetic": false, ...}``; every further line is one
``Sample.to_dict()``. Each line is flushed as it is written, so a trace cut
short by a crash is readable up to its last whole line.

``ReplaySource`` is a source like NvmlSource: give it to a Sampler and every
face (dashboard, doctor, status) sees the recorded session as if it were live.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from llmos_tui.errors import LlmosError
from llmos_tui.jsontypes import Json, JsonDict
from llmos_tui.telemetry.sample import Sample

log = logging.getLogger(__name__)

TRACE_FORMAT = "llmos-tui-trace"
TRACE_VERSION = 1


class TraceError(LlmosError):
    """A trace file that cannot be read or written: the message names the file and the problem."""


def make_header(interval: float | None, start: float | None = None, **meta: Json) -> JsonDict:
    start = time.time() if start is None else start
    header: JsonDict = {
        "format": TRACE_FORMAT,
        "version": TRACE_VERSION,
        "host": socket.gethostname(),
        "start": start,
        "start_iso": datetime.fromtimestamp(start, timezone.utc).isoformat(timespec="seconds"),
        "interval": interval,
        "synthetic": False,
    }
    header.update(meta)
    return header


class Recorder:
    """Writes samples to ``path`` as JSON lines. Callable, so ``sampler.subscribe(recorder)`` records."""

    def __init__(self, path: str | Path, *, interval: float | None = None, **meta: Json) -> None:
        self.path = Path(path)
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise TraceError(f"cannot write trace {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        self.count = 0
        self.header = make_header(interval, **meta)
        self._write_line(self.header)

    def __call__(self, sample: Sample) -> None:
        self.write(sample)

    def write(self, sample: Sample) -> None:
        self._write_line(sample.to_dict())
        self.count += 1

    def _write_line(self, data: JsonDict) -> None:
        line = json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                raise TraceError(f"trace {self.path} is already closed")
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                raise TraceError(f"cannot write trace {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_header(file: IO[str], path: Path) -> JsonDict:
    first = file.readline()
    try:
        header = json.loads(first) if first.strip() else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != TRACE_FORMAT:
        raise TraceError(f"{path} is not an llmos-tui trace (its first line is not a trace header)")
    version = header.get("version")
    if not isinstance(version, int) or version > TRACE_VERSION:
        raise TraceError(f"{path} is trace version {version!r}; this llmos-tui reads up to {TRACE_VERSION}")
    return header


def read_trace(path: str | Path) -> tuple[JsonDict, list[Sample]]:
    """The header and every sample of a trace, at once (for tests and tools; replay streams instead)."""
    source = ReplaySource(path, speed=0)
    try:
        samples = list(source)
    finally:
        source.close()
    return source.header, samples


class ReplaySource:
    """Replays a trace as a telemetry source.

    ``speed``: 1.0 is recorded speed, 2.0 twice as fast, 0 as fast as possible.
    ``loop``: start again at the end (time keeps running forward), else the source
    becomes ``exhausted`` and a Sampler using it stops.
    The trace is streamed line by line, so a long trace costs no memory.
    """

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False) -> None:
        if not isinstance(speed, (int, float)) or isinstance(speed, bool) or speed < 0 or math.isnan(speed):
            raise ValueError(f"replay speed must be 0 (as fast as possible) or a positive factor, got {speed!r}")
        self.path = Path(path)
        self.speed = float(speed)
        self.loop = loop
        try:
            self._file: IO[str] | None = open(self.path, encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise TraceError(f"cannot read trace {self.path}: {exc.strerror or exc}") from None
        try:
            self.header = _read_header(self._file, self.path)
        except Exception:
            self._file.close()
            raise
        self._data_start = self._file.tell()
        interval = self.header.get("interval")
        self.interval = float(interval) if isinstance(interval, (int, float)) and interval > 0 else 1.0
        self.skipped = 0  # lines that were not whole JSON (a trace cut by a crash)
        self.replayed = 0
        self.loops = 0
        self._offset = 0.0  # added to recorded times after each loop, so time never runs backwards
        self._first_ts: float | None = None
        self._last_raw_ts: float | None = None
        self._current: Sample | None = None
        self._pending: Sample | None = self._read_next()
        if self._pending is None:
            log.warning("trace %s holds no samples", self.path)

    # ---- the source interface -------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return self._pending is None

    def collect(self, sample: Sample) -> None:
        """Fill ``sample`` with the next recorded sample (all of it, time included)."""
        recorded = self._pending
        if recorded is None:
            return
        sample.ts = recorded.ts
        sample.gpus = recorded.gpus
        sample.host = recorded.host
        sample.engine = recorded.engine
        sample.nvml_error = recorded.nvml_error
        sample.driver_version = recorded.driver_version
        sample.cuda_version = recorded.cuda_version
        self._current = recorded
        self.replayed += 1
        self._pending = self._read_next()

    def next_delay(self, interval: float) -> float:
        """Seconds until the next recorded sample is due, at this speed."""
        if self.speed == 0:
            return 0.0
        if self._current is None or self._pending is None:
            return self.interval / self.speed
        gap = self._pending.ts - self._current.ts
        if not 0 <= gap <= 60 * self.interval:  # a pause in recording: do not make the viewer wait for it
            gap = self.interval
        return gap / self.speed

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- iteration (without a Sampler) --------------------------------------------
    def __iter__(self) -> Iterator[Sample]:
        """Yield the recorded samples, sleeping between them as ``speed`` says."""
        while not self.exhausted:
            sample = Sample(ts=0.0)
            self.collect(sample)
            yield sample
            if not self.exhausted:
                delay = self.next_delay(self.interval)
                if delay > 0:
                    time.sleep(delay)

    # ---- reading --------------------------------------------------------------------
    def _read_next(self) -> Sample | None:
        file = self._file
        if file is None:
            return None
        wrapped = False
        while True:
            line = file.readline()
            if not line:
                if not self.loop or wrapped or self._first_ts is None:
                    return None  # the end (or a loop over a trace with no samples)
                wrapped = True
                self.loops += 1
                # the first sample of the next round comes one interval after the last of this one
                self._offset += (self._last_raw_ts or self._first_ts) - self._first_ts + self.interval
                file.seek(self._data_start)
                continue
            if not line.strip():
                continue
            try:
                sample = Sample.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError, AttributeError):
                self.skipped += 1
                if self.skipped == 1:
                    log.warning("trace %s: skipping a line that is not a whole sample", self.path)
                continue
            if self._first_ts is None:
                self._first_ts = sample.ts
            if self.loops == 0:
                self._last_raw_ts = sample.ts
            sample.ts += self._offset
            return sample

    def __enter__(self) -> "ReplaySource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
