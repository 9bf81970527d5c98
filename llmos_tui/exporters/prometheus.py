"""A Prometheus exporter over the Operator: the numbers every face shows, as ``/metrics``.

One custom collector reads the core at scrape time — the sampler's newest sample (GPUs, host),
the supervisor (engine state, speed, context, requests, errors), the doctor (open findings),
and the journal (actions by outcome, findings recorded, tuning results). It lives in its own
``CollectorRegistry``: nothing is registered in prometheus-client's global registry, so two
exporters (or a test) never collide.

Names and units follow the Prometheus conventions: base units (``_bytes``, ``_seconds``,
``_hertz``, ``_watts``, ``_celsius``), fractions as ``_ratio`` (0–1), counters end in
``_total``. GPU series carry ``gpu`` (index), ``uuid`` and ``name``; engine series ``model``.
A value the GPU or the driver does not report is left out, never exported as 0.

A replay never looks live: when telemetry comes from a recorded trace, every GPU, host and doctor
series carries ``replay="true"`` and the trace's ``synthetic`` flag (``"true"`` for a made-up
trace), so alert rules and dashboards that select ``replay!="true"`` (the shipped ones in
``examples/`` do) ignore it. Live series carry neither label.

Bind: loopback unless an explicit address is given (``0.0.0.0:9464`` to listen everywhere).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from llmos_tui.doctor.api import SEVERITY_RANK
from llmos_tui.engine.supervisor import EngineState
from llmos_tui.errors import ConfigError
from llmos_tui.journal.records import ACTION_STATES

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    from llmos_tui.config import Config
    from llmos_tui.journal import Journal
    from llmos_tui.telemetry.sample import GpuSample, Sample
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger("llmos_tui.exporters.prometheus")

# the listen address is the config's to parse (the exporter and `config --check` share it)
from llmos_tui.config import DEFAULT_EXPORTER_LISTEN as DEFAULT_LISTEN, is_loopback, parse_listen  # noqa: E402,F401
PREFIX = "llmos"
# The vocabularies come from their owners: engine states (the supervisor), severities (the
# doctor's API), action states (the journal).
ENGINE_STATES = tuple(state.value for state in EngineState)
SEVERITIES = tuple(sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__))
SERVING = (EngineState.READY.value, EngineState.GENERATING.value)


def _maximized(objective: str) -> bool:
    """Which way a study's objective is better (the tuner's Objective says)."""
    from llmos_tui.tuning.objective import Objective

    return Objective(name=objective).maximize


# ---- what the collector reads (narrow faces of the core) ----------------------------------------
class _Sampler(Protocol):
    @property
    def latest(self) -> "Sample | None": ...

    def subscribe(self, callback: Callable[["Sample"], None]) -> Callable[[], None]: ...


class _Supervisor(Protocol):
    def stats(self) -> Mapping[str, object]: ...


class _Finding(Protocol):
    @property
    def severity(self) -> str: ...

    @property
    def id(self) -> int: ...

    @property
    def detector(self) -> str: ...

    @property
    def narrated(self) -> str: ...


class _Canary(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def ts(self) -> float: ...


class _Doctor(Protocol):
    @property
    def kill_switch(self) -> bool: ...

    @property
    def busy(self) -> bool: ...

    @property
    def last_canary(self) -> "_Canary | None": ...

    def findings(self, *, open_only: bool = False) -> Sequence[_Finding]: ...


class Core(Protocol):
    """What the exporter reads of the Operator; each part may be None (not wired)."""

    @property
    def sampler(self) -> "_Sampler | None": ...

    @property
    def supervisor(self) -> "_Supervisor | None": ...

    @property
    def doctor(self) -> "_Doctor | None": ...

    @property
    def config(self) -> "Config | None": ...

    @property
    def replay(self) -> "Mapping[str, object] | None": ...


class _Attachable(Core, Protocol):
    """The composition root's view of the Operator: problems to report, closers to run."""

    @property
    def problems(self) -> list[str]: ...

    exporter: "Exporter | None"

    def on_close(self, fn: Callable[[], None]) -> None: ...


# ---- the collector ----------------------------------------------------------------------------
class LlmosCollector:
    """Reads the Operator at every scrape: ``sampler``, ``supervisor``, ``doctor``,
    ``config.journal_file`` and ``replay`` (each may be None)."""

    def __init__(self, operator: Core, *, journal_path: str | Path | None = None, engine: bool = True) -> None:
        self.operator = operator
        self.with_engine = engine  # False: this process runs no engine, so it says nothing about one
        config = operator.config
        self.journal_path = Path(journal_path) if journal_path else (
            Path(config.journal_file) if config is not None else None)
        self._journal: Journal | None = None
        # A replay's series carry these labels, so that nothing reads a trace as the live box.
        replay = operator.replay
        self.replay_labels: dict[str, str] = {} if replay is None else {
            "replay": "true", "synthetic": "true" if replay.get("synthetic") else "false"}
        self._lock = threading.Lock()
        # XID events arrive one sample at a time: count them between scrapes.
        self._xids: dict[tuple[str, str, str, str], int] = {}
        self._unsubscribe: Callable[[], None] | None = None
        sampler = operator.sampler
        if sampler is not None:
            self._unsubscribe = sampler.subscribe(self._count_xids)
        self.scrapes = 0
        self.scrape_errors = 0

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            if self._journal is not None:
                try:
                    self._journal.close()
                except Exception:  # noqa: BLE001
                    pass
                self._journal = None

    def _count_xids(self, sample: "Sample") -> None:
        for gpu in sample.gpus:
            for xid in gpu.xid_events or []:
                key = (*_gpu_labels(gpu), str(xid))
                self._xids[key] = self._xids.get(key, 0) + 1

    # prometheus-client calls describe() at register time; an empty answer keeps it from
    # calling collect() there (which would read the journal before anyone scraped).
    def describe(self) -> list["Metric"]:
        return []

    def collect(self) -> Iterator["Metric"]:
        from prometheus_client.core import GaugeMetricFamily

        started = time.perf_counter()
        self.scrapes += 1
        families: list[Metric] = []
        for part in (self._telemetry, self._engine, self._doctor, self._journal_metrics):
            try:
                families.extend(part())
            except Exception:  # noqa: BLE001 - one broken part must not empty the whole scrape
                self.scrape_errors += 1
                log.exception("exporter: %s failed", part.__name__)
        duration = GaugeMetricFamily(f"{PREFIX}_exporter_scrape_duration_seconds",
                                     "Time this exporter took to read the core for this scrape.")
        duration.add_metric([], time.perf_counter() - started)
        errors = _counter(f"{PREFIX}_exporter_scrape_errors", "Parts of a scrape that failed (see the log).")
        errors.add_metric([], self.scrape_errors)
        yield from families
        yield duration
        yield errors

    # ---- GPUs and host (the sampler's newest sample) --------------------------------------
    def _telemetry(self) -> Iterable["Metric"]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        from llmos_tui.telemetry.nvml import CLOCK_REASONS

        sampler = self.operator.sampler
        sample = sampler.latest if sampler is not None else None
        if sample is None:
            return []
        out: list[Metric] = []
        rl = self.replay_labels
        rk, rv = list(rl), list(rl.values())  # the replay labels' names and values ([] when live)
        age = GaugeMetricFamily(f"{PREFIX}_telemetry_sample_timestamp_seconds",
                                "When the newest telemetry sample was taken (seconds since the epoch).", labels=rk)
        age.add_metric(rv, float(sample.ts))
        out.append(age)
        info = InfoMetricFamily(f"{PREFIX}_telemetry", "Where telemetry comes from (nvml, or a replayed trace).")
        info.add_metric([], {"source": "replay" if rl else "nvml", **rl, "driver_version": sample.driver_version or "",
                             "cuda_version": sample.cuda_version or "", "nvml_error": sample.nvml_error or ""})
        out.append(info)

        labels = ["gpu", "uuid", "name"] + rk

        def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{PREFIX}_gpu_{name}", doc, labels=labels + (extra or []))
            out.append(family)
            return family

        up = gauge("up", "1 when the GPU answers NVML, 0 when it is lost or failed to open.")
        util = gauge("utilization_ratio", "GPU (SM) utilisation over the last sample period, 0-1.")
        util_mem = gauge("memory_bandwidth_utilization_ratio", "Memory controller utilisation, 0-1.")
        mem_used = gauge("memory_used_bytes", "Framebuffer memory in use.")
        mem_total = gauge("memory_total_bytes", "Framebuffer memory in total.")
        temp = gauge("temperature_celsius", "GPU core temperature.")
        temp_mem = gauge("memory_temperature_celsius", "GPU memory (HBM) temperature.")
        temp_slow = gauge("slowdown_temperature_celsius", "The temperature at which the GPU slows down.")
        temp_shut = gauge("shutdown_temperature_celsius", "The temperature at which the GPU shuts down.")
        fan = gauge("fan_speed_ratio", "Fan speed, 0-1 of its maximum.")
        power = gauge("power_watts", "Power draw.")
        power_limit = gauge("power_limit_watts", "The enforced power limit.")
        sm_clock = gauge("sm_clock_hertz", "SM clock.")
        sm_max = gauge("sm_clock_max_hertz", "Maximum SM clock.")
        mem_clock = gauge("memory_clock_hertz", "Memory clock.")
        mem_max = gauge("memory_clock_max_hertz", "Maximum memory clock.")
        pstate = gauge("performance_state", "Performance state (0 fastest, 15 slowest).")
        reasons = gauge("clock_event_reason", "1 while this clock-event (throttle) reason is active.", ["reason"])
        throttled = gauge("throttled", "1 while a reason that costs performance is active.")
        pcie_gen = gauge("pcie_link_generation", "Current PCIe link generation.")
        pcie_width = gauge("pcie_link_width", "Current PCIe link width (lanes).")
        pcie_replay = _counter(f"{PREFIX}_gpu_pcie_replay", "PCIe replay counter.", labels)
        ecc = _counter(f"{PREFIX}_gpu_ecc_errors", "ECC errors reported by the driver.", labels + ["type", "scope"])
        remapped = gauge("remapped_rows", "Memory rows remapped.", ["type"])
        remap_pending = gauge("remap_pending", "1 when a row remap waits for a GPU reset.")
        xid_last = gauge("xid_last", "The last XID critical error code seen since the sampler started.")
        xids = _counter(f"{PREFIX}_gpu_xid_errors", "XID critical errors seen since this exporter started.",
                        labels + ["xid"])
        out.extend([pcie_replay, ecc, xids])

        for gpu in sample.gpus:
            key = list(_gpu_labels(gpu)) + rv
            up.add_metric(key, 0.0 if gpu.lost or gpu.error else 1.0)
            _maybe(util, key, gpu.util_gpu, 0.01)
            _maybe(util_mem, key, gpu.util_mem, 0.01)
            _maybe(mem_used, key, gpu.mem_used)
            _maybe(mem_total, key, gpu.mem_total)
            _maybe(temp, key, gpu.temp)
            _maybe(temp_mem, key, gpu.temp_mem)
            _maybe(temp_slow, key, gpu.temp_slowdown)
            _maybe(temp_shut, key, gpu.temp_shutdown)
            _maybe(fan, key, gpu.fan, 0.01)
            _maybe(power, key, gpu.power)
            _maybe(power_limit, key, gpu.power_limit)
            _maybe(sm_clock, key, gpu.sm_clock, 1e6)
            _maybe(sm_max, key, gpu.sm_clock_max, 1e6)
            _maybe(mem_clock, key, gpu.mem_clock, 1e6)
            _maybe(mem_max, key, gpu.mem_clock_max, 1e6)
            _maybe(pstate, key, gpu.pstate)
            if gpu.clock_reasons is not None:
                for bit, word in CLOCK_REASONS:
                    reasons.add_metric(key + [word], 1.0 if gpu.clock_reasons & bit else 0.0)
                throttled.add_metric(key, 1.0 if gpu.throttled else 0.0)
            _maybe(pcie_gen, key, gpu.pcie_gen)
            _maybe(pcie_width, key, gpu.pcie_width)
            _maybe(pcie_replay, key, gpu.pcie_replay)
            for value, kind, scope in ((gpu.ecc_volatile_corrected, "corrected", "volatile"),
                                       (gpu.ecc_volatile_uncorrected, "uncorrected", "volatile"),
                                       (gpu.ecc_aggregate_corrected, "corrected", "aggregate"),
                                       (gpu.ecc_aggregate_uncorrected, "uncorrected", "aggregate")):
                _maybe(ecc, key + [kind, scope], value)
            _maybe(remapped, key + ["corrected"], gpu.remapped_corrected)
            _maybe(remapped, key + ["uncorrected"], gpu.remapped_uncorrected)
            if gpu.remap_pending is not None:
                remap_pending.add_metric(key, 1.0 if gpu.remap_pending else 0.0)
            _maybe(xid_last, key, gpu.xid_last)
        for (index, uuid, name, xid), count in sorted(self._xids.items()):
            xids.add_metric([index, uuid, name] + rv + [xid], count)

        host = sample.host
        if host is not None:
            def host_gauge(name: str, doc: str, value: float | int | None, scale: float = 1.0) -> None:
                if value is not None:
                    family = GaugeMetricFamily(f"{PREFIX}_host_{name}", doc, labels=rk)
                    family.add_metric(rv, float(value) * scale)
                    out.append(family)

            host_gauge("cpu_utilization_ratio", "Host CPU utilisation, 0-1 of all cores.", host.cpu_percent, 0.01)
            host_gauge("load1", "Host load average over 1 minute.", host.load1)
            host_gauge("memory_used_bytes", "Host memory in use.", host.mem_used)
            host_gauge("memory_total_bytes", "Host memory in total.", host.mem_total)
            host_gauge("swap_used_bytes", "Swap in use.", host.swap_used)
            host_gauge("engine_cpu_utilization_ratio", "The engine process's CPU use, in cores (1.0 = one core).",
                       host.engine_cpu_percent, 0.01)
            host_gauge("engine_resident_memory_bytes", "The engine process's resident memory.", host.engine_rss)
        return out

    # ---- the engine (the supervisor) --------------------------------------------------------
    def _engine(self) -> Iterable["Metric"]:
        from prometheus_client.core import GaugeMetricFamily

        supervisor = self.operator.supervisor
        if supervisor is None or not self.with_engine:
            return []
        stats = supervisor.stats()
        model = stats.get("model") or Path(str(stats.get("model_path") or "")).name
        labels = ["model"]
        key = [model]
        out: list[Metric] = []

        def gauge(name: str, doc: str, value: object, scale: float = 1.0) -> None:
            if not isinstance(value, (int, float)):
                return  # not reported (None): left out, never exported as 0
            family = GaugeMetricFamily(f"{PREFIX}_engine_{name}", doc, labels=labels)
            family.add_metric(key, float(value) * scale)
            out.append(family)

        state = GaugeMetricFamily(f"{PREFIX}_engine_state", "1 for the engine's current state, 0 for the others.",
                                  labels=labels + ["state"])
        current = str(stats.get("state") or "stopped")
        for name in ENGINE_STATES + ((current,) if current not in ENGINE_STATES else ()):
            state.add_metric(key + [name], 1.0 if name == current else 0.0)
        out.append(state)
        gauge("up", "1 while the engine can serve (ready or generating).",
              1.0 if current in SERVING else 0.0)
        gauge("generation_tokens_per_second", "Generation speed of the last reply (llama.cpp's counters).",
              stats.get("last_gen_tps"))
        gauge("generation_tokens_per_second_rolling", "Mean generation speed of the recent replies.",
              stats.get("rolling_gen_tps"))
        gauge("prompt_tokens_per_second", "Prompt processing speed of the last reply.", stats.get("last_prompt_tps"))
        gauge("time_to_first_token_seconds", "Time to the first token of the last reply.",
              stats.get("last_ttft_ms"), 0.001)
        gauge("context_used_tokens", "Tokens held in the context (KV cache) now.", stats.get("ctx_used"))
        gauge("context_size_tokens", "The context window in tokens.", stats.get("n_ctx") or None)
        n_ctx, ctx_used = stats.get("n_ctx"), stats.get("ctx_used")
        if isinstance(n_ctx, int) and n_ctx:
            gauge("context_used_ratio", "Context fill, 0-1.", (ctx_used if isinstance(ctx_used, int) else 0) / n_ctx)
        gauge("load_progress_ratio", "Model load progress, 0-1.", stats.get("load_progress"))
        for name, doc, field in (("requests", "Requests the engine finished.", "requests"),
                                 ("errors", "Errors the engine reported.", "errors"),
                                 ("restarts", "Engine restarts.", "restarts")):
            family = _counter(f"{PREFIX}_engine_{name}", doc, labels)
            count = stats.get(field)
            family.add_metric(key, float(count) if isinstance(count, (int, float)) else 0.0)
            out.append(family)
        return out

    # ---- the doctor (in memory) ----------------------------------------------------------------
    def _doctor(self) -> Iterable["Metric"]:
        from prometheus_client.core import GaugeMetricFamily

        doctor = self.operator.doctor
        if doctor is None:
            return []
        # A replay's doctor reads the trace: its series say so (replay="true"), like the GPU series.
        rk, rv = list(self.replay_labels), list(self.replay_labels.values())
        open_by = dict.fromkeys(SEVERITIES, 0)
        for finding in doctor.findings(open_only=True):
            open_by[finding.severity] = open_by.get(finding.severity, 0) + 1
        findings = GaugeMetricFamily(f"{PREFIX}_doctor_findings_open", "Doctor findings open now, by severity.",
                                     labels=["severity"] + rk)
        for severity, count in open_by.items():
            findings.add_metric([severity] + rv, count)
        kill = GaugeMetricFamily(f"{PREFIX}_doctor_kill_switch", "1 while the kill switch stops automatic repairs.",
                                 labels=rk)
        kill.add_metric(rv, 1.0 if doctor.kill_switch else 0.0)
        busy = GaugeMetricFamily(f"{PREFIX}_doctor_repair_in_progress", "1 while a repair runs.", labels=rk)
        busy.add_metric(rv, 1.0 if doctor.busy else 0.0)
        out: list[Metric] = [findings, kill, busy, self._narration(doctor.findings(open_only=True),
                                                                   self.replay_labels)]
        canary = doctor.last_canary
        if canary is not None:
            ok = GaugeMetricFamily(f"{PREFIX}_doctor_canary_ok", "1 when the last canary passed.", labels=rk)
            ok.add_metric(rv, 1.0 if canary.ok else 0.0)
            when = GaugeMetricFamily(f"{PREFIX}_doctor_canary_timestamp_seconds", "When the last canary ran.",
                                     labels=rk)
            when.add_metric(rv, float(canary.ts))
            out += [ok, when]
        return out

    @staticmethod
    def _narration(open_findings: Sequence[_Finding], replay: Mapping[str, str]) -> "Metric":
        """The doctor's narration of its worst open finding (the newest of the worst severity),
        as one label-free info metric; empty values when nothing is open."""
        from prometheus_client.core import InfoMetricFamily

        rank = {name: i for i, name in enumerate(SEVERITIES)}
        top = max(open_findings, key=lambda f: (rank.get(f.severity, -1), f.id), default=None)
        info = InfoMetricFamily(f"{PREFIX}_doctor_narration",
                                "The doctor's narration of its worst open finding (fact or likely).")
        kind, _, text = top.narrated.partition(": ") if top is not None else ("", "", "")
        info.add_metric([], {"finding": str(top.id) if top else "", "detector": top.detector if top else "",
                             "severity": top.severity if top else "", "kind": kind, "text": text, **replay})
        return info

    # ---- the journal (actions by outcome, findings recorded, tuning) ------------------------------
    def _open_journal(self) -> "Journal | None":
        if self._journal is None:
            if self.journal_path is None or not self.journal_path.exists():
                return None
            from llmos_tui.journal import Journal

            self._journal = Journal(self.journal_path, readonly=True, check=False)
        return self._journal

    def _journal_metrics(self) -> Iterable["Metric"]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            journal = self._open_journal()
            if journal is None:
                return []
            try:
                rows = journal.overview.counts(maximize=_maximized)
            except Exception:
                self._journal = None  # reopen next time (a moved-aside file, a new schema)
                journal.close()
                raise
        out: list[Metric] = []
        actions = GaugeMetricFamily(f"{PREFIX}_doctor_actions", "Journaled actions (repairs, changes, undo) by outcome.",
                                    labels=["outcome"])
        counts = dict.fromkeys(ACTION_STATES, 0) | rows.actions
        for state, count in counts.items():
            actions.add_metric([state], count)
        out.append(actions)
        findings = _counter(f"{PREFIX}_doctor_findings", "Findings journaled, by severity.", ["severity"])
        for severity, count in (dict.fromkeys(SEVERITIES, 0) | rows.findings).items():
            findings.add_metric([severity], count)
        out.append(findings)
        crashes = _counter(f"{PREFIX}_journal_engine_crashes", "Engine crashes journaled.")
        crashes.add_metric([], rows.crashes)
        out.append(crashes)
        if rows.active_config is not None:
            active = GaugeMetricFamily(f"{PREFIX}_journal_active_config", "The journal id (cfg:N) of the active configuration.")
            active.add_metric([], rows.active_config)
            out.append(active)
        trials = _counter(f"{PREFIX}_tuner_trials", "Tuning trials journaled, by outcome.", ["outcome"])
        for outcome, count in rows.trials.items():
            trials.add_metric([outcome], count)
        out.append(trials)
        best = GaugeMetricFamily(f"{PREFIX}_tuner_best_value",
                                 "The best objective value among a study's successful trials.",
                                 labels=["study", "objective"])
        best_params = GaugeMetricFamily(f"{PREFIX}_tuner_best_param",
                                        "A numeric parameter of a study's best trial.", labels=["study", "param"])
        for study in rows.studies:
            best.add_metric([study.label, study.objective], study.value)
            for name, value in study.params.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    best_params.add_metric([study.label, name], float(value))
        out += [best, best_params]
        return out


def _gpu_labels(gpu: "GpuSample") -> tuple[str, str, str]:
    return str(gpu.index), gpu.uuid or "", gpu.name or ""


def _maybe(family: "GaugeMetricFamily | CounterMetricFamily", labels: list[str], value: float | int | None,
           scale: float = 1.0) -> None:
    if value is None:
        return
    family.add_metric(labels, float(value) * scale)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> "CounterMetricFamily":
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, labels=labels or [])


# ---- the server -----------------------------------------------------------------------------
class Exporter:
    """A running ``/metrics`` server; ``close()`` stops it (idempotent)."""

    def __init__(self, collector: LlmosCollector, server: "WSGIServer", thread: threading.Thread, host: str,
                 port: int) -> None:
        self.collector = collector
        self.server = server
        self.thread = thread
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self.thread.join(timeout=5)
        self.collector.close()

    def __call__(self) -> None:  # an Exporter is its own closer (Operator.on_close takes it)
        self.close()


def start_exporter(operator: Core, listen: str | None = None, *, engine: bool = True,
                   extra: Iterable[object] = ()) -> Exporter:
    """Serve ``/metrics`` for ``operator`` on ``listen`` (default loopback:9464) in a daemon thread.
    ``extra``: more collectors on the same page (a running daemon's, relayed by `llmos-tui exporter`).

    Raises ConfigError with one line when the address is bad or taken.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    collector = LlmosCollector(operator, engine=engine)
    registry.register(collector)
    for more in extra:
        registry.register(more)  # type: ignore[arg-type]
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        collector.close()
        raise ConfigError(f"exporter cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound_port = server.server_address[1]
    return Exporter(collector, server, thread, host, bound_port)


def attach_exporter(operator: _Attachable, listen: str | None = None) -> Exporter | None:
    """For the composition root: serve ``/metrics`` when ``[exporter] listen`` (or ``listen``) is set.

    A failure (the port is taken) is one line in ``operator.problems``, never a failed start; the
    server stops with the operator."""
    listen = listen or (operator.config.exporter_listen if operator.config is not None else None)
    if not listen:
        return None
    try:
        exporter = start_exporter(operator, listen)
    except (ConfigError, ImportError) as exc:
        operator.problems.append(f"exporter disabled: {exc}")
        return None
    operator.exporter = exporter
    operator.on_close(exporter.close)
    return exporter
