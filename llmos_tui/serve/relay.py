"""A running daemon's metrics on another exporter's page: `llmos-tui exporter` beside a daemon.

The daemon serves its own ``/metrics`` (engine, doctor, journal, tuner, requests). A standalone
``llmos-tui exporter`` on the same box runs no engine; when a daemon serves this journal it relays
the daemon's engine, doctor, journal, tuner and request families, read over the control socket at
each scrape, and keeps its own GPU and host families (the daemon's copies of those are skipped:
one box, one set of GPU series).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import httpx

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("llmos_tui.serve.relay")

OWN_FAMILIES = ("llmos_gpu_", "llmos_host_", "llmos_telemetry", "llmos_exporter_")


class DaemonMetrics:
    """A Prometheus collector that relays a daemon's families (a daemon that does not answer
    relays nothing: that scrape shows only this exporter's own)."""

    def __init__(self, socket: Path, *, timeout: float = 5.0) -> None:
        self.socket = Path(socket)
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://llmos-tui",
                                  timeout=timeout)

    def collect(self) -> Iterator["Metric"]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self._http.get("/metrics").text
        except httpx.HTTPError as exc:
            log.warning("the daemon at %s did not answer for its metrics: %s", self.socket, exc)
            return
        for family in text_string_to_metric_families(text):
            if not family.name.startswith(OWN_FAMILIES):
                yield family

    def close(self) -> None:
        self._http.close()
