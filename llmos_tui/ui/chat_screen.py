"""The chat screen: prompts, replies streamed as markdown, and each reply's measured numbers."""

from __future__ import annotations

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from llmos_tui.engine.metrics import format_metrics
from llmos_tui.engine.supervisor import Reply
from llmos_tui.errors import LlmosError
from llmos_tui.textsafe import sanitize
from llmos_tui.ui.status import EngineStatus

DEMO_NOTE = (
    "You are chatting with the **embedded demo model**: a tiny model trained on a small corpus, "
    "so expect short, simple answers. Start with `--model PATH` (or set `engine.model_path`) "
    "for a real GGUF; `llmos-tui models` lists the ones on this machine."
)


class UserMessage(Static):
    DEFAULT_CSS = "UserMessage { margin: 1 0 0 0; padding: 0 1; background: $boost; color: $text; }"


class ReplyView(Vertical):
    """One assistant reply: markdown body, then a dim line of metrics or an outcome."""

    DEFAULT_CSS = """
    ReplyView { height: auto; margin: 0 0 0 2; }
    ReplyView > Markdown { margin: 0; padding: 0; }
    ReplyView > .metrics { color: $text-muted; height: auto; }
    """

    def __init__(self, markdown: str = "") -> None:
        super().__init__()
        self.body = Markdown(markdown)
        self.footer_line = Static("…", classes="metrics")

    def compose(self) -> ComposeResult:
        yield self.body
        yield self.footer_line

    def finish(self, reply: Reply) -> None:
        self.show_outcome(reply.status, reply.metrics, reply.error)

    def show_outcome(self, status: str, metrics: dict, error: str | None = None) -> None:
        line = Text()
        if status == "cancelled":
            line.append("■ cancelled · ", style="yellow")
        elif status == "interrupted":
            line.append(f"⚠ interrupted{': ' + error if error else ''} · ", style="bold red")
        elif status == "error":
            line.append(f"⚠ error{': ' + error if error else ''}", style="bold red")
        line.append(format_metrics(metrics))
        self.footer_line.update(line)


class PromptInput(Input):
    """The prompt. `?` in an empty prompt is left to the app (it shows the keys)."""

    async def _on_key(self, event: events.Key) -> None:
        # Decided here, in the input's own queue, so a burst of typed keys cannot race it.
        if event.character == "?" and not self.value:
            event.stop()
            event.prevent_default()
            self.app.action_help()  # type: ignore[attr-defined]
            return
        await super()._on_key(event)


class ChatPicker(ModalScreen[int | None]):
    """Earlier chats from the journal; Enter resumes one."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    ChatPicker { align: center middle; }
    ChatPicker > OptionList { width: 80%; max-height: 80%; border: round $accent; }
    """

    def __init__(self, chats: list[dict]) -> None:
        super().__init__()
        self.chats = chats

    def compose(self) -> ComposeResult:
        import time as _time

        options = [
            Option(f"{_time.strftime('%Y-%m-%d %H:%M', _time.localtime(c['updated']))}  {c['title']}  [{c['model']}]",
                   id=str(c["id"]))
            for c in self.chats
        ]
        yield OptionList(*options)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))


class ChatScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "cancel_reply", "Cancel reply", id="chat.cancel"),
        Binding("up", "history(-1)", "Earlier prompt", show=False, id="chat.history_up"),
        Binding("down", "history(1)", "Later prompt", show=False, id="chat.history_down"),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("ctrl+o", "open_chat", "Earlier chats", id="chat.open"),
    ]
    DEFAULT_CSS = """
    ChatScreen #log { height: 1fr; padding: 0 1; }
    ChatScreen #prompt { height: auto; }
    ChatScreen .note { color: $warning; margin: 1 0 0 0; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[str] = []
        self.history_pos = 0
        self.reply: Reply | None = None

    @property
    def operator(self):  # type: ignore[no-untyped-def]
        return self.app.operator  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="log")
        yield PromptInput(placeholder="Type a prompt, Enter to send · Esc cancels · ? or F1 for keys", id="prompt")
        yield EngineStatus()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()
        self.show_demo_note()

    def show_demo_note(self) -> None:
        info = self.operator.supervisor.model_info
        log = self.query_one("#log", VerticalScroll)
        if info is not None and info.is_demo and not log.query(".note"):
            log.mount(Markdown(DEMO_NOTE, classes="note"), before=0 if log.children else None)

    # ---- sending ----------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt:
            return
        if self.reply is not None and not self.reply.finished:
            self.notify("A reply is still streaming: Esc cancels it.", severity="warning")
            return
        try:
            reply = self.operator.chat.send(prompt)
        except LlmosError as exc:
            self.notify(str(exc), title="Cannot send", severity="error")
            return
        event.input.value = ""
        self.history.append(prompt)
        self.history_pos = len(self.history)
        self.reply = reply
        log = self.query_one("#log", VerticalScroll)
        view = ReplyView()
        log.mount(UserMessage(Text(prompt)))
        log.mount(view)
        log.scroll_end(animate=False)
        self.stream_reply(reply, view)

    @work(thread=True, group="reply", exit_on_error=False)
    def stream_reply(self, reply: Reply, view: ReplyView) -> None:
        stream = self.app.call_from_thread(Markdown.get_stream, view.body)  # needs the event loop
        log = self.query_one("#log", VerticalScroll)

        async def write(text: str) -> None:
            at_bottom = log.scroll_y >= log.max_scroll_y - 1
            await stream.write(text)
            if at_bottom:
                log.scroll_end(animate=False)

        for piece in reply.batches():
            self.app.call_from_thread(write, sanitize(piece))

        async def finish() -> None:
            await stream.stop()
            view.finish(reply)
            log.scroll_end(animate=False)

        self.app.call_from_thread(finish)

    # ---- actions ----------------------------------------------------------------
    def action_cancel_reply(self) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.supervisor.cancel()

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self.history_pos = max(0, min(len(self.history), self.history_pos + step))
        prompt = self.query_one("#prompt", Input)
        prompt.value = self.history[self.history_pos] if self.history_pos < len(self.history) else ""
        prompt.cursor_position = len(prompt.value)

    def action_new_chat(self) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.supervisor.cancel()
        self.operator.chat.reset()
        log = self.query_one("#log", VerticalScroll)
        log.remove_children()
        self.show_demo_note()
        self.notify("New conversation")

    def action_open_chat(self) -> None:
        if self.operator.journal_writer is None:
            self.notify("The journal is not open: earlier chats are not available.", severity="warning")
            return
        self.read_chats()

    def _read_journal(self, fn):  # type: ignore[no-untyped-def]
        """Reads run in a worker thread on their own connection, never on the UI thread."""
        from llmos_tui.journal import Journal

        journal = Journal(self.operator.config.journal_file, readonly=True)
        try:
            return fn(journal)
        finally:
            journal.close()

    @work(thread=True, exclusive=True, group="journal-read", exit_on_error=False)
    def read_chats(self) -> None:
        from llmos_tui.journal.link import chat_summaries

        try:
            self.operator.journal_writer.flush(5)
            chats = self._read_journal(chat_summaries)
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"cannot read the journal: {exc}", severity="error")
            return

        def show() -> None:
            if not chats:
                self.notify("No earlier chats in the journal yet.")
                return
            self.app.push_screen(ChatPicker(chats), lambda chat_id: chat_id is not None and self.read_chat(chat_id))

        self.app.call_from_thread(show)

    @work(thread=True, exclusive=True, group="journal-read", exit_on_error=False)
    def read_chat(self, chat_id: int) -> None:
        from llmos_tui.journal.link import resume_messages

        try:
            messages = self._read_journal(lambda j: resume_messages(j, chat_id))
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"cannot read chat {chat_id}: {exc}", severity="error")
            return
        self.app.call_from_thread(self.show_chat, chat_id, messages)

    def show_chat(self, chat_id: int, messages: list) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.supervisor.cancel()
        self.operator.chat.reset()
        self.operator.chat.load(messages, chat_id)
        log = self.query_one("#log", VerticalScroll)
        log.remove_children()
        for m in messages:
            if m.role == "user":
                log.mount(UserMessage(Text(m.content)))
            elif m.role == "assistant":
                view = ReplyView(sanitize(m.content))
                log.mount(view)
                view.show_outcome(m.status, m.metrics)
        log.scroll_end(animate=False)
        self.notify(f"Resumed chat {chat_id} ({len(messages)} messages)")

    def engine_changed(self) -> None:
        self.show_demo_note()
