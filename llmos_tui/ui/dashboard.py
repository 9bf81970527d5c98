"""The telemetry dashboard: a panel per GPU, the engine, the host and the GPU processes.

``DashboardScreen(sampler)`` subscribes to the sampler. Samples arrive on the
sampler thread; the screen keeps only the newest and posts one message to the UI
thread (``post_message`` is thread-safe and never blocks, so a busy UI cannot stall
the sampler, and stopping the sampler from the UI thread cannot deadlock on it).
While the screen is not the active one, nothing is rendered; it catches up with
the newest sample when it is shown again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from llmos_tui.telemetry import format as fmt
from llmos_tui.telemetry.nvml import CLOCK_REASONS, THROTTLING_MASK
from llmos_tui.telemetry.sample import GpuSample, HostSample, Sample
from llmos_tui.textsafe import sanitize
from llmos_tui.ui.status import EngineStatus

if TYPE_CHECKING:
    from llmos_tui.telemetry.sampler import Sampler

Policy = dict[str, Any]  # the online learner's policy: JSON-like data (tuning.adapt)

SPARK_HISTORY = 120  # samples fetched for a sparkline; it shows as many as fit

STATE_STYLES = {
    "generating": "bold green",
    "ready": "green",
    "loading": "yellow",
    "restarting": "bold yellow",
    "crashed": "bold red",
    "failed": "bold red",
    "stopped": "dim",
}


# ---- one light renderable per panel: rows of label / bar / value / sparkline, then lines --------
@dataclass
class Metric:
    """One row: a bar (or text in its place), a value, and a sparkline of its history."""

    label: str
    value: str
    fraction: float | None = None
    bar_style: str = "green"
    bar_text: str | None = None  # shown instead of a bar
    history: Sequence[float] = ()
    lo: float | None = None
    hi: float | None = None
    spark_style: str = "cyan"


class PanelBody:
    """Metric rows laid out in whatever width the panel has, then plain lines.

    Cheaper than a Rich Table (which measures every cell on every render) and it
    always renders exactly ``height`` lines, so the screen needs no relayout
    while the shape of a panel stays the same.
    """

    LABEL = 6

    def __init__(self, rows: list[Metric], lines: list[Text], above: list[Text] | None = None) -> None:
        self.rows = rows
        self.lines = lines
        self.above = above or []

    @property
    def height(self) -> int:
        return len(self.above) + len(self.rows) + len(self.lines)

    @staticmethod
    def _cropped(text: Text) -> Text:
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(20, options.max_width)
        for text in self.above:
            yield self._cropped(text)
        value_w = max([13] + [len(r.value) for r in self.rows])
        rest = max(2, width - self.LABEL - value_w - 3)
        bar_w = rest * 2 // 5
        spark_w = rest - bar_w
        for row in self.rows:
            line = Text(no_wrap=True, overflow="crop")
            line.append(f"{row.label:<{self.LABEL}} ", style="bold")
            if row.bar_text is not None:
                line.append(row.bar_text[:bar_w].ljust(bar_w))
            else:
                line.append(fmt.bar(row.fraction, bar_w), style=row.bar_style if row.fraction is not None else "dim")
            line.append(" ")
            line.append(row.value.ljust(value_w))
            line.append(" ")
            line.append(fmt.spark(row.history, spark_w, row.lo, row.hi).rjust(spark_w), style=row.spark_style)
            line.truncate(width)
            yield line
        for text in self.lines:
            yield self._cropped(text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(20, options.max_width)


def _level_style(fraction: float | None, warn: float, alarm: float, ok: str = "green") -> str:
    if fraction is None:
        return "dim"
    if fraction >= alarm:
        return "bold red"
    if fraction >= warn:
        return "yellow"
    return ok


class DashboardScreen(Screen):
    """Live telemetry. Construct with the Sampler that feeds it: ``DashboardScreen(sampler)``."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    CSS_PATH = ["widgets.tcss", "dashboard.tcss"]

    class SampleReady(Message):
        """A new sample waits in the screen (posted from the sampler thread)."""

    def __init__(self, sampler: "Sampler", *, adapt_policy: Callable[[], Policy | None] | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.sampler = sampler
        self.adapt_policy = adapt_policy  # the online learner's policy, when there is one (a line in the engine panel)
        self.shown: Sample | None = None  # the sample on screen now
        self.renders = 0
        self._unsubscribe: Callable[[], None] | None = None
        self._pending: Sample | None = None
        self._posted = False
        self._visible = False
        self._lock = threading.Lock()
        self._gpu_ids: list[int] = []
        self._proc_rows: list[tuple] | None = None
        self._heights: dict[str, int] = {}
        self._shown_bodies: dict[str, object] = {}  # per widget: the signature of what it shows

    # ---- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dash-scroll"):
            yield Static("Telemetry: waiting for the first sample…", id="dash-header")
            yield Static("", id="dash-nogpu")
            yield Vertical(id="dash-gpus")
            with Horizontal(id="dash-lower"):
                yield Static("", id="dash-engine")
                yield Static("", id="dash-host")
            yield Static("GPU processes", id="dash-procs-title")
            yield DataTable(id="dash-procs", show_cursor=False, zebra_stripes=True)
        yield EngineStatus()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dash-nogpu").display = False
        self.query_one("#dash-engine", Static).border_title = "Engine"
        self.query_one("#dash-host", Static).border_title = "Host"
        table = self.query_one("#dash-procs", DataTable)
        table.add_columns("GPU", "PID", "process", "type", "VRAM", "")
        self._unsubscribe = self.sampler.subscribe(self._on_sample)
        latest = self.sampler.latest
        if latest is not None:
            self._show(latest)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_screen_resume(self) -> None:
        self._visible = True
        latest = self._pending or self.sampler.latest
        if latest is not None and latest is not self.shown:
            self._show(latest)

    def on_screen_suspend(self) -> None:
        self._visible = False

    # ---- sampler thread → UI thread ------------------------------------------------------
    def _on_sample(self, sample: Sample) -> None:
        """Runs on the sampler thread: keep the newest, wake the UI once."""
        self._pending = sample
        if not self._visible:
            return  # hidden: no work; on_screen_resume catches up
        with self._lock:
            if self._posted:
                return  # a render is queued and will pick up this newer sample
            self._posted = True
        try:
            queued = self.post_message(self.SampleReady())
        except Exception:  # noqa: BLE001 - the app is shutting down
            queued = False
        if not queued:
            with self._lock:
                self._posted = False

    def on_dashboard_screen_sample_ready(self, message: SampleReady) -> None:
        message.stop()
        with self._lock:
            self._posted = False
        sample = self._pending
        if sample is not None and self._visible and sample is not self.shown:
            self._show(sample)

    # ---- rendering -----------------------------------------------------------------------
    def _show(self, sample: Sample) -> None:
        self.shown = sample
        self.renders += 1
        self._show_header(sample)
        self._show_gpus(sample)
        self._show_engine(sample)
        self._show_host(sample.host)
        self._show_processes(sample)

    def _update(self, widget: Static, body: RenderableType, height: int) -> None:
        """Update ``widget`` only when what it shows changed (an idle engine's panel is not
        redrawn every sample); relayout the screen only when its height changes."""
        key = widget.id or str(id(widget))
        shown = _signature(body)
        if shown is not None and self._shown_bodies.get(key) == shown and self._heights.get(key) == height:
            return
        self._shown_bodies[key] = shown
        changed = self._heights.get(key) != height
        self._heights[key] = height
        widget.update(body, layout=changed)

    def _show_header(self, sample: Sample) -> None:
        parts = [("Telemetry ", "bold"), (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sample.ts)), "")]
        if sample.driver_version:
            parts.append((f"  driver {sample.driver_version}", "dim"))
        if sample.cuda_version:
            parts.append((f"  CUDA {sample.cuda_version}", "dim"))
        if not self.sampler.running and self.sampler.finished.is_set():
            parts.append(("  (sampling stopped)", "yellow"))
        header = Text.assemble(*parts, no_wrap=True, overflow="ellipsis")
        self._update(self.query_one("#dash-header", Static), header, 1)

    def _show_gpus(self, sample: Sample) -> None:
        nogpu = self.query_one("#dash-nogpu", Static)
        if not sample.gpus:
            self._update(nogpu, Text(fmt.no_gpu_text(sample), style="bold"), 1)
            nogpu.display = True
        else:
            nogpu.display = False
        container = self.query_one("#dash-gpus", Vertical)
        ids = [gpu.index for gpu in sample.gpus]
        if ids != self._gpu_ids:
            container.remove_children()
            container.mount_all([Static("", id=f"dash-gpu-{i}", classes="gpu-panel") for i in ids])
            self._gpu_ids = ids
            for key in [k for k in self._shown_bodies if k.startswith("dash-gpu-")]:
                del self._shown_bodies[key]  # new, empty panels: draw them whatever was shown before
        engine_tps_gpu = self._engine_gpu(sample)
        for gpu in sample.gpus:
            panel = self.query_one(f"#dash-gpu-{gpu.index}", Static)
            panel.border_title = self._gpu_title(gpu)
            panel.set_class(gpu.throttled and not gpu.lost, "-throttled")
            panel.set_class(gpu.lost, "-lost")
            body = self._gpu_body(gpu, sample, show_tps=gpu.index == engine_tps_gpu)
            self._update(panel, body, body.height)

    @staticmethod
    def _engine_gpu(sample: Sample) -> int | None:
        """The GPU whose panel also shows tokens/s: the one running the engine's process."""
        for gpu in sample.gpus:
            if any(p.is_engine for p in gpu.processes):
                return gpu.index
        if len(sample.gpus) == 1 and sample.engine is not None:
            return sample.gpus[0].index
        return None

    @staticmethod
    def _gpu_title(gpu: GpuSample) -> str:
        title = f"GPU {gpu.index} · {gpu.name or 'n/a'} · {fmt.fmt_pstate(gpu.pstate)}"
        if gpu.lost:
            return title + " · LOST"
        if gpu.throttled:
            title += " · THROTTLED"
        return title

    def _gpu_body(self, gpu: GpuSample, sample: Sample, show_tps: bool) -> PanelBody:
        if gpu.lost:
            return PanelBody([], [
                Text.assemble((f"GPU lost: {gpu.error or 'GPU is lost'}", "bold red"), f"   {fmt.fmt_xid(gpu)}"),
                Text("Its readings stop until the GPU is reset (nvidia-smi -r) or the host reboots."),
            ])
        window = self.sampler.series.window
        p = f"gpu{gpu.index}."
        mem_f, pow_f, slowdown = gpu.mem_fraction, gpu.power_fraction, gpu.temp_slowdown
        temp_f = gpu.temp / slowdown if gpu.temp is not None and slowdown else None
        rows = [
            Metric("util", f"{fmt.fmt_pct(gpu.util_gpu):>4} mem {fmt.fmt_pct(gpu.util_mem)}",
                   gpu.util_gpu / 100 if gpu.util_gpu is not None else None,
                   history=window(p + "util", SPARK_HISTORY), lo=0, hi=100),
            Metric("vram", fmt.fmt_used_total(gpu.mem_used, gpu.mem_total), mem_f, _level_style(mem_f, 0.9, 0.97),
                   history=window(p + "mem_used", SPARK_HISTORY), lo=0, hi=gpu.mem_total),
            Metric("power", fmt.fmt_of(gpu.power, gpu.power_limit, "W"), pow_f, _level_style(pow_f, 0.97, 1.02),
                   history=window(p + "power", SPARK_HISTORY), lo=0, hi=gpu.power_limit),
            Metric("temp", fmt.fmt_temp(gpu.temp) + (f" /{slowdown:.0f}" if slowdown else ""), temp_f,
                   _level_style(temp_f, 0.94, 1.0), history=window(p + "temp", SPARK_HISTORY), lo=20,
                   hi=slowdown or None, spark_style="yellow"),
        ]
        if show_tps and sample.engine is not None:
            rows.append(Metric("tok/s", fmt.fmt_rate(sample.engine.get("last_gen_tps"), ""), bar_text="",
                               history=window("engine.gen_tps", SPARK_HISTORY), spark_style="green"))
        clocks = Text()
        clocks.append("clocks ", style="bold")
        clocks.append(f"SM {fmt.fmt_of(gpu.sm_clock, gpu.sm_clock_max, 'MHz')}  "
                      f"mem {fmt.fmt_of(gpu.mem_clock, gpu.mem_clock_max, 'MHz')}")
        if gpu.temp_mem is not None:
            mem_max = f" /{gpu.temp_mem_max:.0f}" if gpu.temp_mem_max else ""
            clocks.append(f"  HBM {fmt.fmt_temp(gpu.temp_mem)}{mem_max}")
        clocks.append(f"  fan {fmt.fmt_pct(gpu.fan)}")
        health = Text()
        # the rare, alarming ones first so that a narrow terminal does not cut them off
        health.append(fmt.fmt_xid(gpu), style="bold red" if gpu.xid_events else "dim")
        if gpu.ecc_volatile_uncorrected or gpu.remap_failure:
            health.append(" · uncorrected memory errors", style="bold red")
        health.append(
            f" · {fmt.fmt_ecc(gpu, short=True)} · {fmt.fmt_remap(gpu)} · PCIe {fmt.fmt_pcie(gpu)} "
            f"replay {fmt.fmt_num(gpu.pcie_replay)}",
            style="dim",
        )
        return PanelBody(rows, [clocks, self._reasons_text(gpu), health])

    @staticmethod
    def _reasons_text(gpu: GpuSample) -> Text:
        text = Text("clock events ", style="bold")
        mask = gpu.clock_reasons
        if mask is None:
            text.append("n/a", style="dim")
            return text
        if not mask:
            text.append("none (full clocks)", style="green")
            return text
        first = True
        for bit, word in CLOCK_REASONS:
            if mask & bit:
                if not first:
                    text.append(" ")
                first = False
                if bit & THROTTLING_MASK:
                    text.append(f" {word.upper()} ", style="bold white on red")
                else:
                    text.append(word, style="dim")
        for word in gpu.throttle_reasons:
            if word.startswith("unknown"):
                text.append(f" {word}", style="yellow")
        return text

    def _show_engine(self, sample: Sample) -> None:
        panel = self.query_one("#dash-engine", Static)
        engine = sample.engine
        if engine is None:
            self._update(panel, Text("no engine attached", style="dim"), 1)
            return
        state = str(engine.get("state") or "n/a")
        head = Text()
        head.append(state, style=STATE_STYLES.get(state, ""))
        head.append(f"  {engine.get('model') or 'no model'}")
        if engine.get("restarts"):
            head.append(f"  restarts {engine['restarts']}", style="yellow")
        n_ctx, used = engine.get("n_ctx"), engine.get("ctx_used")
        numbers = isinstance(used, (int, float)) and isinstance(n_ctx, (int, float)) and n_ctx
        ctx_f = used / n_ctx if numbers else None
        rows = [
            Metric("ctx", f"{fmt.fmt_num(used)} / {fmt.fmt_num(n_ctx)}", ctx_f, _level_style(ctx_f, 0.85, 0.97)),
            Metric("tok/s", f"{fmt.fmt_rate(engine.get('rolling_gen_tps'), '')} avg",
                   bar_text=f"{fmt.fmt_rate(engine.get('last_gen_tps'), '')} last",
                   history=self.sampler.series.window("engine.gen_tps", SPARK_HISTORY), spark_style="green"),
        ]
        tail = Text()
        tail.append(f"TTFT {fmt.fmt_num(engine.get('last_ttft_ms'), 0, 'ms')}  "
                    f"requests {fmt.fmt_num(engine.get('requests'))}  ")
        tail.append(f"errors {fmt.fmt_num(engine.get('errors'))}", style="bold red" if engine.get("errors") else "")
        lines = [tail]
        policy = self.adapt_policy() if self.adapt_policy is not None else None
        if policy is not None:
            lines.append(_adapt_line(policy))
        body = PanelBody(rows, lines, above=[head])
        self._update(panel, body, body.height)

    def _show_host(self, host: HostSample | None) -> None:
        panel = self.query_one("#dash-host", Static)
        if host is None:
            self._update(panel, Text("no host data", style="dim"), 1)
            return
        cpu_f = host.cpu_percent / 100 if host.cpu_percent is not None else None
        mem_f = host.mem_used / host.mem_total if host.mem_used is not None and host.mem_total else None
        rows = [
            Metric("cpu", f"{fmt.fmt_pct(host.cpu_percent)} of {host.cpu_count or '?'}", cpu_f,
                   _level_style(cpu_f, 0.85, 0.97), history=self.sampler.series.window("host.cpu", SPARK_HISTORY),
                   lo=0, hi=100),
            Metric("mem", fmt.fmt_used_total(host.mem_used, host.mem_total), mem_f, _level_style(mem_f, 0.85, 0.95)),
        ]
        load = "n/a" if host.load1 is None else f"{host.load1:.2f} {host.load5:.2f} {host.load15:.2f}"
        lines = [Text(f"load {load}  swap {fmt.fmt_swap(host)}")]
        if host.engine_pid is not None:
            lines.append(Text(f"engine pid {host.engine_pid}  CPU {fmt.fmt_pct(host.engine_cpu_percent)}  "
                              f"RSS {fmt.fmt_bytes(host.engine_rss)}"))
        body = PanelBody(rows, lines)
        self._update(panel, body, body.height)

    def _show_processes(self, sample: Sample) -> None:
        rows = []
        for gpu in sample.gpus:
            for proc in gpu.processes:
                rows.append((
                    str(gpu.index), str(proc.pid), proc.name or "?", proc.kind,
                    fmt.fmt_bytes(proc.used_memory), "◀ engine" if proc.is_engine else "",
                ))
        if rows == self._proc_rows:
            return  # unchanged: spare the table its relayout
        self._proc_rows = rows
        table = self.query_one("#dash-procs", DataTable)
        table.clear()
        if rows:
            # Text cells, not str: a DataTable parses a str as markup, and a process may be named "[/]"
            table.add_rows(
                [tuple(Text(sanitize(str(c))) for c in row[:5]) + (Text(row[5], style="bold green"),) for row in rows]
            )
        title = self.query_one("#dash-procs-title", Static)
        title.update("GPU processes" if rows else "GPU processes: none")


def _text_signature(text: Text) -> tuple[object, ...]:
    return (text.plain, str(text.style), tuple((span.start, span.end, str(span.style)) for span in text.spans))


def _signature(body: RenderableType) -> object:
    """What a panel shows, as a value to compare with the last one (None: not comparable)."""
    if isinstance(body, Text):
        return _text_signature(body)
    if isinstance(body, PanelBody):
        rows = tuple((r.label, r.value, None if r.fraction is None else round(r.fraction, 3), r.bar_style, r.bar_text,
                      tuple(r.history), r.lo, r.hi, r.spark_style) for r in body.rows)
        return (rows, tuple(_text_signature(t) for t in body.lines), tuple(_text_signature(t) for t in body.above))
    return None


def _adapt_line(policy: Policy) -> Text:
    """The online learner in one line: its mode, the threads it would pick now, the estimated gain."""
    mode = policy.get("mode", "off")
    line = Text(f"adapt {mode}", style="bold magenta" if mode == "on" else "magenta")
    contexts = policy.get("contexts") or {}
    if contexts:
        name, best = max(contexts.items(), key=lambda kv: kv[1].get("requests", 0))
        verb = "uses" if mode == "on" else "would use"
        line.append(f"  {verb} {best.get('n_threads')}/{best.get('n_threads_batch')} threads ({name})")
    gain = policy.get("estimated_gain")
    if isinstance(gain, (int, float)):
        line.append(f"  est. gain {gain * 100:+.0f} %")
    line.append(f"  explored {policy.get('explore_share', 0) * 100:.0f} % of {policy.get('requests', 0)}")
    return line
