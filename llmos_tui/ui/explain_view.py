"""The model explains a finding: the journal's evidence on one side, the model's words (streamed,
in the chat's own rendering) on the other, each labelled for what it is.

Opened with `e` on the doctor screen or `:explain fnd:N`. The prompt is built from the journal
(llmos_tui.core.explain) in a worker thread; when the engine is not healthy the screen says why
and the model is not asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown, Static

from llmos_tui.engine.supervisor import Reply
from llmos_tui.textsafe import sanitize
from llmos_tui.ui import keymap
from llmos_tui.ui.chat_screen import ReplyView

if TYPE_CHECKING:
    from llmos_tui.core.explain import ExplainPrompt
    from llmos_tui.core.operator import Operator


class ExplainScreen(ModalScreen[None]):
    BINDINGS = keymap.bindings("ExplainScreen")
    CSS_PATH = ["widgets.tcss", "explain.tcss"]

    def __init__(self, operator: "Operator", finding_id: int) -> None:
        super().__init__()
        self.operator = operator
        self.finding_id = int(finding_id)
        self.reply: Reply | None = None
        self.refused: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"explain fnd:{self.finding_id}", id="explain-title")
            with Horizontal(id="explain-body"):
                with VerticalScroll(classes="explain-side", id="explain-evidence-side"):
                    yield Static("EVIDENCE — from the journal, as recorded", classes="explain-label")
                    yield Static("reading the journal…", id="explain-evidence", markup=False)
                    yield Static("", id="explain-note", markup=False)
                with VerticalScroll(classes="explain-side", id="explain-model-side"):
                    yield Static(f"THE MODEL'S WORDS — {self._model_name()}, not a measurement",
                                 classes="explain-label", id="explain-model-label", markup=False)
                    yield ReplyView()
            yield Footer()

    def _model_name(self) -> str:
        info = self.operator.supervisor.model_info
        return info.name if info is not None else "the local model"

    def on_mount(self) -> None:
        self.prepare()

    # ---- the pipeline (worker thread) -----------------------------------------------------
    @work(thread=True, exclusive=True, group="explain", exit_on_error=False)
    def prepare(self) -> None:
        from llmos_tui.core import explain
        from llmos_tui.journal import Journal

        why = explain.refusal(self.operator)
        prompt = None
        try:
            journal = Journal(self.operator.config.journal_file, readonly=True)
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            self.app.call_from_thread(self._show_refusal, f"cannot read the journal: {exc}", None)
            return
        try:
            n_ctx = explain.engine_n_ctx(self.operator) if why is None else 0
            if why is None:
                prompt = explain.build_prompt(journal, self.finding_id, n_ctx=n_ctx)
            else:
                finding, items = explain.gather(journal, self.finding_id)
                self.app.call_from_thread(self._show_evidence, finding["title"], finding["severity"],
                                          "\n".join(f"• {e.text}" for e in sorted(items, key=lambda e: e.order)), "")
        except Exception as exc:  # noqa: BLE001
            why = str(exc)
        finally:
            journal.close()
        if prompt is not None:
            self.app.call_from_thread(self._show_evidence, prompt.title, prompt.severity,
                                      "\n".join(f"• {e.text}" for e in prompt.kept), prompt.note())
        if why is None and prompt is not None:
            try:
                self.reply = explain.ask(self.operator, prompt)
            except Exception as exc:  # noqa: BLE001 - refused at the last moment, or the engine went away
                why = str(exc)
        if why is not None:
            self.app.call_from_thread(self._show_refusal, why, prompt)
            return
        if self.reply is not None:
            self._stream(self.reply)

    def _stream(self, reply: Reply) -> None:
        view = self.query_one(ReplyView)
        stream = self.app.call_from_thread(Markdown.get_stream, view.body)
        side = self.query_one("#explain-model-side", VerticalScroll)

        async def write(text: str) -> None:
            at_bottom = side.scroll_y >= side.max_scroll_y - 1
            await stream.write(text)
            if at_bottom:
                side.scroll_end(animate=False)

        for piece in reply.batches():
            self.app.call_from_thread(write, sanitize(piece))

        async def finish() -> None:
            await stream.stop()
            view.finish(reply)

        self.app.call_from_thread(finish)

    # ---- drawing (UI thread) -------------------------------------------------------------------
    def _show_evidence(self, title: str, severity: str, text: str, note: str) -> None:
        self.query_one("#explain-title", Static).update(
            Text.assemble(("explain ", "bold"), f"fnd:{self.finding_id} ", (f"[{severity}] ", "bold"), sanitize(title)))
        self.query_one("#explain-evidence", Static).update(sanitize(text) or "(no evidence recorded)")
        self.query_one("#explain-note", Static).update(note)

    def _show_refusal(self, why: str, _prompt: "ExplainPrompt | None") -> None:
        self.refused = why
        view = self.query_one(ReplyView)
        view.footer_line.update(Text(f"not asked: {why}", style="bold yellow"))
        self.app.notify(f"explain fnd:{self.finding_id}: not asked — {why}", severity="warning")

    def action_close(self) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.supervisor.cancel()
        self.dismiss(None)


def open_explain(app: App[int] | App[None], finding_id: int) -> None:
    """Push the explain screen for journal finding ``fnd:finding_id``."""
    from llmos_tui.ui.app import LlmosApp

    if not isinstance(app, LlmosApp):
        app.notify("explain needs the cockpit's core (the journal and the engine)", severity="warning")
        return
    if app.operator.journal_writer is None:
        app.notify("the journal is not open: explain reads the finding's evidence from the journal",
                   severity="warning")
        return
    app.push_screen(ExplainScreen(app.operator, finding_id))
