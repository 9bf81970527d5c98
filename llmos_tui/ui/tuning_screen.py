"""The tuning screen (F6): live trials, best so far, a convergence plot and a parameter plot
(textual-plotext), failed trials with llama.cpp's reasons, and the keys — s Start, x / Esc Stop,
a Apply best (only a verified gain), p next parameter in the parameter plot.

The tuner runs on its own thread; its events are posted as messages (thread-safe) and the UI
thread redraws. While a study runs the serving engine is paused (the status bar says so) and
chat is refused with "engine is paused"; it resumes with its own parameters when the study ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static

from llmos_tui.textsafe import sanitize
from llmos_tui.ui import keymap

if TYPE_CHECKING:
    from llmos_tui.core.operator import Operator
    from llmos_tui.tuning.runner import Tuner

Json = dict[str, Any]  # what the tuner publishes and reports: plain JSON-like data
Event = Json
Row = Json

OUTCOME_STYLE = {"ok": "green", "refused": "yellow", "budget": "yellow", "oom": "red", "crash": "red",
                 "timeout": "red", "error": "red"}
SHORT = {"n_gpu_layers": "ngl", "n_batch": "b", "n_ubatch": "ub", "n_threads": "t", "n_threads_batch": "tb",
         "flash_attn": "fa", "type_k": "k", "type_v": "v"}


class TunerUpdate(Message):
    """The tuner said something (posted from its thread)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


# Pairs shown as one value, as the engine's own summary does ("b=512/128", "t=2/2", "kv=f16/q8_0").
PAIRS = (("n_batch", "n_ubatch", "b"), ("n_threads", "n_threads_batch", "t"), ("type_k", "type_v", "kv"))


def _fmt(config: object) -> str:
    if not isinstance(config, Mapping):
        return ""
    paired = {first: (second, label) for first, second, label in PAIRS if first in config and second in config}
    seconds = {second for second, _label in paired.values()}
    out = []
    for k, v in config.items():
        if k in paired:
            second, label = paired[k]
            out.append(f"{label}={v}/{config[second]}")
        elif k not in seconds:
            out.append(f"{SHORT.get(str(k), k)}={v}")
    return " ".join(out)


def _short_origin(origin: str) -> str:
    """``warm start: trl:12 of std:3 (same model, …)`` -> ``warm trl:12``: the column stays narrow."""
    if origin.startswith("warm start:"):
        words = origin.removeprefix("warm start:").split()
        return "warm " + (words[0] if words else "")
    return origin


# The trial table's fixed columns (the configuration takes what is left): #, origin, outcome, value.
FIXED = {"#": 3, "origin": 11, "outcome": 7, "value": 8}
NARROW = 100  # below this width the plots go under the table, not beside it


class TuningScreen(Screen[None]):
    BINDINGS = keymap.bindings("TuningScreen")
    CSS_PATH = "tuning.tcss"

    def __init__(self, operator: "Operator", *, options: dict[str, object] | None = None) -> None:
        super().__init__()
        self.operator = operator
        self.options = dict(options or {})  # Tuner.run options of the Start key (trials, objective, spec, ...)
        self.trials: list[Row] = []
        self.best: Row | None = None
        self.report: Row | None = None
        self.param_index = 0
        self.state = "idle"
        self.maximize = True
        self._tuner: "Tuner | None" = None
        self._unsubscribe: Callable[[], None] | None = None
        self._config_width = 0
        self.study_id: int | None = None  # the study the events are about

    # ---- layout --------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot  # only when the screen is built

        yield Static(id="tune-status")
        with Horizontal(id="tune-body"):
            yield DataTable(id="tune-trials", cursor_type="row", zebra_stripes=True)
            with Vertical(id="tune-side"):
                yield PlotextPlot(id="tune-convergence", classes="tune-plot")
                yield PlotextPlot(id="tune-param", classes="tune-plot")
        yield RichLog(id="tune-log", max_lines=400, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.layout_table(self.size.width)
        tuner = self.tuner
        if tuner is not None:
            self._unsubscribe = tuner.subscribe(lambda ev: self.post_message(TunerUpdate(ev)))
            if tuner.report is not None:
                self.report = tuner.report.to_dict()
        self.refresh_status()
        self.redraw_plots()
        self.log_line("s starts a study (the serving engine pauses while it runs), x or Esc stops it, "
                      "a applies a verified best")

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def on_resize(self, event: events.Resize) -> None:
        self.layout_table(event.size.width)

    def layout_table(self, width: int) -> None:
        """Fixed narrow columns for #, origin, outcome and value; the configuration gets the rest
        of the table's width (beside the plots when wide, the full width when narrow)."""
        narrow = width < NARROW
        self.set_class(narrow, "-narrow")
        table_width = width if narrow else width * 7 // 10  # tuning.tcss: the table is 7fr, the plots 3fr
        padding = 2 * (len(FIXED) + 1) + 2  # each cell's padding, and the scroll bar
        config_width = max(16, table_width - sum(FIXED.values()) - padding)
        if config_width == self._config_width:
            return
        self._config_width = config_width
        table = self.query_one("#tune-trials", DataTable)
        table.clear(columns=True)
        table.add_column("#", width=FIXED["#"])
        table.add_column("origin", width=FIXED["origin"])
        table.add_column("configuration", width=config_width)
        table.add_column("outcome", width=FIXED["outcome"])
        table.add_column("value", width=FIXED["value"])
        for trial in self.trials:
            self._add_row(table, trial)

    @property
    def tuner(self) -> "Tuner | None":
        if self._tuner is None:
            try:
                self._tuner = self.operator.tuner
            except Exception:  # noqa: BLE001 - a tuner that cannot be built is said on Start
                self._tuner = None
        return self._tuner

    # ---- events from the tuner ------------------------------------------------------
    def on_tuner_update(self, message: TunerUpdate) -> None:
        ev = message.event
        kind = ev.get("kind")
        if kind == "state":
            self.state = ev.get("state", self.state)
        elif kind == "study":
            self.study_id = ev.get("study_id")
            self.trials.clear()
            self.query_one("#tune-trials", DataTable).clear()
            self.maximize = bool((ev.get("objective") or {}).get("maximize", True))
            word = "resumed" if ev.get("resumed") else "started"
            self.log_line(f"study std:{ev.get('study_id')} {word}: {(ev.get('objective') or {}).get('name')}, "
                          f"{ev.get('trials')} trials, {ev.get('strategy')}; the serving engine is paused")
            if ev.get("note"):
                self.log_line(ev["note"])
        elif kind == "warmstart":
            self.log_line(ev.get("summary", ""))
        elif kind == "note":  # what the study decided and why (held knobs, a pre-flight correction, ...)
            self.log_line(ev.get("text", ""))
        elif kind == "trial":
            self.add_trial(ev["trial"])
            self.best = ev.get("best")
        elif kind == "verify_round":
            a, b = ev.get("a"), ev.get("b")
            self.log_line(f"verify {ev.get('round')}/{ev.get('rounds')}: running "
                          f"{'failed' if a is None else f'{a:.2f}'}, candidate {'failed' if b is None else f'{b:.2f}'}")
        elif kind == "verdict":
            self.log_line((ev.get("verdict") or {}).get("message", ""))
        elif kind == "applied":
            result = ev.get("result") or {}
            self.log_line(f"apply: {result.get('state')}: {result.get('message')}")
        elif kind == "done":
            self.report = ev.get("report")
            if self.report:
                self.best = self.report.get("best") or self.best
                self.log_line(f"study std:{self.report.get('study_id')} {self.report.get('status')}: "
                              f"{self.report.get('message')}")
                if self.report.get("error"):
                    self.log_line(f"error: {self.report['error']}")
                plateau = self.report.get("plateau")
                if plateau:
                    self.log_line(f"stopped on a plateau: {plateau.get('trials')} of {plateau.get('budget')} "
                                  f"trials run, {plateau.get('saved')} saved")
        self.refresh_status()
        if kind in ("trial", "done", "study"):
            self.redraw_plots()

    def add_trial(self, trial: Row) -> None:
        self.trials.append(trial)
        self._add_row(self.query_one("#tune-trials", DataTable), trial)
        outcome = str(trial.get("outcome", ""))
        if outcome != "ok":
            self.log_line(f"trial {trial.get('index')} {outcome}: {_fmt(trial.get('config') or {})}: "
                          f"{trial.get('reason', '')}")

    def _add_row(self, table: DataTable[str | Text], trial: Row) -> None:
        outcome = str(trial.get("outcome", ""))
        value = trial.get("value")
        origin = _short_origin(sanitize(str(trial.get("origin", ""))))
        table.add_row(str(trial.get("index")), Text(origin, overflow="ellipsis", no_wrap=True),
                      Text(_fmt(trial.get("config")), overflow="ellipsis", no_wrap=True),
                      Text(outcome, style=OUTCOME_STYLE.get(outcome, "")),
                      f"{value:.2f}" if isinstance(value, (int, float)) else "-")

    def log_line(self, text: str) -> None:
        self.query_one("#tune-log", RichLog).write(sanitize(text))

    def refresh_status(self) -> None:
        sup = self.operator.supervisor
        engine = sup.state.value
        if sup.paused_reason:
            engine = f"paused ({sup.paused_reason})"
        best = self.best
        best_text = f"best {best['mean']:.2f} (n={best['n']}) {_fmt(best['config'])}" if best else "best: -"
        failed = sum(1 for t in self.trials if t.get("outcome") != "ok")
        study_id = self.tuner.study_id if self.tuner is not None and self.tuner.study_id else self.study_id
        study = f"std:{study_id}" if study_id else "no study"
        self.query_one("#tune-status", Static).update(Text.assemble(
            ("tuner ", "bold"), (self.state, "bold cyan" if self.state != "idle" else "dim"), f"  {study}  ",
            f"{len(self.trials)} trials ({failed} failed)  engine {engine}\n", best_text))

    def redraw_plots(self) -> None:
        from textual_plotext import PlotextPlot

        conv = self.query_one("#tune-convergence", PlotextPlot)
        plt = conv.plt
        plt.clear_data()
        plt.clear_figure()
        ok = [(t["index"], t["value"]) for t in self.trials if t.get("value") is not None]
        plt.title("convergence: each trial and the best so far")
        if ok:
            xs, ys = zip(*ok)
            plt.scatter(list(xs), list(ys), marker="dot", label="trial")
            best, running = [], None
            for y in ys:
                running = y if running is None or (y > running if self.maximize else y < running) else running
                best.append(running)
            plt.plot(list(xs), best, label="best")
        plt.xlabel("trial")
        conv.refresh()
        param = self.query_one("#tune-param", PlotextPlot)
        plt = param.plt
        plt.clear_data()
        plt.clear_figure()
        names = self.param_names()
        if names and ok:
            name = names[self.param_index % len(names)]
            points = [(t["config"].get(name), t["value"]) for t in self.trials
                      if t.get("value") is not None and name in (t.get("config") or {})]
            values = sorted({p[0] for p in points}, key=lambda v: (isinstance(v, str), v))
            if all(isinstance(v, (int, float)) for v in values):
                plt.scatter([p[0] for p in points], [p[1] for p in points], marker="dot")
            else:
                index = {v: i for i, v in enumerate(values)}
                plt.scatter([index[p[0]] for p in points], [p[1] for p in points], marker="dot")
                plt.xticks(list(range(len(values))), [str(v) for v in values])
            plt.title(f"objective by {name} (p: next parameter)")
            plt.xlabel(name)
        else:
            plt.title("objective by parameter (no measured trial yet)")
        param.refresh()

    def param_names(self) -> list[str]:
        names: list[str] = []
        for t in self.trials:
            for name in (t.get("config") or {}):
                if name not in names:
                    names.append(name)
        return names

    # ---- keys ---------------------------------------------------------------------
    def action_start(self) -> None:
        if self.operator.config.readonly:
            self.notify("read-only mode: tuning (it pauses the engine) is disabled", severity="warning")
            return
        tuner = self.tuner
        if tuner is None:
            self.notify("the tuner cannot be built in this core", severity="error")
            return
        if tuner.running:
            self.notify(f"a study already runs (std:{tuner.study_id})", severity="warning")
            return
        self.trials.clear()
        self.query_one("#tune-trials", DataTable).clear()
        self.best, self.report = None, None
        self.state = "starting"
        self.refresh_status()
        tuner.start_in_background(**self.options)

    def action_stop(self) -> None:
        tuner = self.tuner
        if tuner is None or not tuner.running:
            self.notify("no study runs", severity="information")
            return
        self.log_line("stopping: the trial in flight is abandoned; the study stays resumable")
        tuner.stop()

    def action_apply_best(self) -> None:
        if self.operator.config.readonly:
            self.notify("read-only mode: configuration changes are disabled", severity="warning")
            return
        report = self.report or {}
        verdict = report.get("verdict") or {}
        if self.tuner is not None and self.tuner.running:
            self.notify("the study still runs; apply when it is done", severity="warning")
            return
        if not report.get("best"):
            self.notify("no best configuration yet: start a study (s)", severity="warning")
            return
        if report.get("applied"):
            self.notify(f"already applied: {report['applied'].get('message')}", severity="information")
            return
        if not verdict.get("significant"):
            self.notify(verdict.get("message") or "the best was not verified faster than the running "
                        "configuration: nothing to apply", severity="warning", timeout=8)
            return
        tuner = self.tuner
        if tuner is None:
            self.notify("the tuner could not be built in this core", severity="error")
            return
        self.log_line(f"applying the best of std:{report.get('study_id')} (verified: {verdict.get('message')})")

        def run() -> None:
            # the tuner re-checks that the verdict's baseline still runs, applies through the change
            # transaction and records what became of it in the study's journal result
            result = tuner.apply_best(report)
            if result.get("ok"):
                report["applied"] = result
            self.app.call_from_thread(self.log_line, f"apply: {result.get('state')}: {result.get('message')}")
            self.app.call_from_thread(self.refresh_status)

        self.run_worker(run, thread=True, group="tune-apply", exclusive=True, exit_on_error=False)

    def action_next_param(self) -> None:
        self.param_index += 1
        self.redraw_plots()
