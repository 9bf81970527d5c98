"""The tuning screen (F6): live trials, best so far, a convergence plot and a parameter plot
(textual-plotext), failed trials with llama.cpp's reasons, and the keys — s Start, x / Esc Stop,
a Apply best (only a verified gain), p next parameter in the parameter plot.

The tuner runs on its own thread; its events are posted as messages (thread-safe) and the UI
thread redraws. While a study runs the serving engine is paused (the status bar says so) and
chat is refused with "engine is paused"; it resumes with its own parameters when the study ends.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static

from llmos_tui.textsafe import sanitize

OUTCOME_STYLE = {"ok": "green", "refused": "yellow", "budget": "yellow", "oom": "red", "crash": "red",
                 "timeout": "red", "error": "red"}
SHORT = {"n_gpu_layers": "ngl", "n_batch": "b", "n_ubatch": "ub", "n_threads": "t", "n_threads_batch": "tb",
         "flash_attn": "fa", "type_k": "k", "type_v": "v"}


class TunerUpdate(Message):
    """The tuner said something (posted from its thread)."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__()
        self.event = event


def _fmt(config: dict[str, Any]) -> str:
    return " ".join(f"{SHORT.get(k, k)}={v}" for k, v in config.items())


class TuningScreen(Screen[None]):
    BINDINGS = [
        Binding("s", "start", "Start", id="tune.start"),
        Binding("x", "stop", "Stop", id="tune.stop"),
        Binding("escape", "stop", "Stop", show=False, id="tune.stop_esc"),
        Binding("a", "apply_best", "Apply best", id="tune.apply"),
        Binding("p", "next_param", "Param plot", id="tune.param"),
    ]
    DEFAULT_CSS = """
    TuningScreen #tune-status { height: 2; padding: 0 1; background: $panel; }
    TuningScreen #tune-body { height: 1fr; }
    TuningScreen #tune-trials { width: 3fr; }
    TuningScreen #tune-side { width: 2fr; border-left: solid $primary; }
    TuningScreen .tune-plot { height: 1fr; }
    TuningScreen #tune-log { height: 8; border-top: solid $primary; }
    """

    def __init__(self, operator: Any, *, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.operator = operator
        self.options = dict(options or {})  # Tuner.run options of the Start key (trials, objective, spec, ...)
        self.trials: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.report: dict[str, Any] | None = None
        self.param_index = 0
        self.state = "idle"
        self.maximize = True
        self._tuner: Any = None
        self._unsubscribe: Callable[[], None] | None = None

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
        table = self.query_one("#tune-trials", DataTable)
        table.add_columns("#", "origin", "configuration", "outcome", "value")
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

    @property
    def tuner(self) -> Any:
        if self._tuner is None:
            try:
                self._tuner = getattr(self.operator, "tuner", None)
            except Exception:  # noqa: BLE001 - a tuner that cannot be built is said on Start
                self._tuner = None
            if self._tuner is None:
                from llmos_tui.tuning.runner import Tuner

                self._tuner = Tuner(self.operator.supervisor, self.operator.changes, self.operator.journal_writer, self.operator.sampler, self.operator.config)  # noqa: E501
        return self._tuner

    # ---- events from the tuner ------------------------------------------------------
    def on_tuner_update(self, message: TunerUpdate) -> None:
        ev = message.event
        kind = ev.get("kind")
        if kind == "state":
            self.state = ev.get("state", self.state)
        elif kind == "study":
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
        self.refresh_status()
        if kind in ("trial", "done", "study"):
            self.redraw_plots()

    def add_trial(self, trial: dict[str, Any]) -> None:
        self.trials.append(trial)
        outcome = trial.get("outcome", "")
        value = trial.get("value")
        self.query_one("#tune-trials", DataTable).add_row(
            str(trial.get("index")), sanitize(str(trial.get("origin", "")))[:28], _fmt(trial.get("config") or {}),
            Text(outcome, style=OUTCOME_STYLE.get(outcome, "")), "-" if value is None else f"{value:.2f}")
        if outcome != "ok":
            self.log_line(f"trial {trial.get('index')} {outcome}: {_fmt(trial.get('config') or {})}: "
                          f"{trial.get('reason', '')}")

    def log_line(self, text: str) -> None:
        self.query_one("#tune-log", RichLog).write(sanitize(text))

    def refresh_status(self) -> None:
        sup = self.operator.supervisor
        engine = sup.state.value
        if getattr(sup, "paused_reason", None):
            engine = f"paused ({sup.paused_reason})"
        best = self.best
        best_text = f"best {best['mean']:.2f} (n={best['n']}) {_fmt(best['config'])}" if best else "best: -"
        failed = sum(1 for t in self.trials if t.get("outcome") != "ok")
        study = f"std:{self.tuner.study_id}" if self.tuner is not None and self.tuner.study_id else "no study"
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
        if self.tuner.running:
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
        changes = getattr(self.operator, "changes", None)
        if changes is None:
            self.notify("no change transaction in this core: nothing applied", severity="error")
            return
        from llmos_tui.engine.params import EngineParams

        running = self.operator.supervisor.params
        params = EngineParams.from_mapping(report["best"]["params"]).replace(
            seed=running.seed, use_mmap=running.use_mmap, repack=running.repack)
        reason = (f"std:{report.get('study_id')} verified {verdict['median']:.3f}x "
                  f"(CI {verdict['ci_low']:.3f}-{verdict['ci_high']:.3f}, {verdict['rounds']} rounds)")
        self.log_line(f"applying the best: {reason}")

        def run() -> None:
            result = changes.propose(params, source="tuner", kind="tune", reason=reason, proposed_by="operator")
            report["applied"] = result.to_dict()
            self.app.call_from_thread(self.log_line, f"apply: {result.state}: {result.message}")
            self.app.call_from_thread(self.refresh_status)

        self.run_worker(run, thread=True, group="tune-apply", exclusive=True, exit_on_error=False)

    def action_next_param(self) -> None:
        self.param_index += 1
        self.redraw_plots()
