"""The chat screen: prompts, replies streamed as markdown, and each reply's measured numbers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, TypeVar

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from llmos_tui.engine.metrics import format_metrics
from llmos_tui.engine.supervisor import Reply
from llmos_tui.errors import LlmosError
from llmos_tui.textsafe import sanitize
from llmos_tui.ui import keymap
from llmos_tui.ui.status import EngineStatus

if TYPE_CHECKING:
    from llmos_tui.core.operator import Operator
    from llmos_tui.journal import Journal

T = TypeVar("T")

# Streaming renders at most this often: llama.cpp's threads need the cores more than the
# reader needs a repaint per token (20 frames/s reads as smooth).
FRAME_S = 1 / 20

DEMO_NOTE = (
    "You are chatting with the **embedded demo model**: a tiny model trained on a small corpus, "
    "so expect short, simple answers. Start with `--model PATH` (or set `engine.model_path`) "
    "for a real GGUF; `llmos-tui models` lists the ones on this machine."
)


class UserMessage(Static):
    """A prompt the operator sent (styles: widgets.tcss)."""


class ReplyView(Vertical):
    """One assistant reply: markdown body, then a dim line of metrics or an outcome.

    While it streams, finished paragraphs are appended to the markdown body (one append per
    paragraph) and the paragraph still being written shows as plain text in a tail line that
    is repainted, not laid out again, until its height changes: a frame costs a repaint of one
    paragraph, not a re-render of the reply or a relayout of the conversation.
    """

    def __init__(self, markdown: str = "") -> None:
        super().__init__()
        self.body = Markdown(markdown)
        self.tail = Static("", classes="tail")
        self.tail.display = False
        self.footer_line = Static("…", classes="metrics")
        self._tail_lines = 0

    def compose(self) -> ComposeResult:
        yield self.body
        yield self.tail
        yield self.footer_line

    def show_tail(self, text: str) -> None:
        """The paragraph being written, as plain text; relayout only when its height changes."""
        if not text:
            if self.tail.display:
                self.tail.display = False
                self._tail_lines = 0
            return
        content = Text(text)
        width = max(1, self.tail.content_region.width or self.content_region.width or 80)
        lines = len(content.wrap(self.app.console, width))
        if not self.tail.display:
            self.tail.display = True
        self.tail.update(content, layout=lines != self._tail_lines)
        self._tail_lines = lines

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
            await self.app.run_action("help")
            return
        await super()._on_key(event)


class ChatPicker(ModalScreen[int | None]):
    """Earlier chats from the journal; Enter resumes one."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]
    CSS_PATH = "chat.tcss"

    def __init__(self, chats: list[dict]) -> None:
        super().__init__()
        self.chats = chats

    def compose(self) -> ComposeResult:
        import time as _time

        options = [
            # Text, not a str: a title is the operator's first prompt, and a str here is markup ("[/]" raised,
            # "[llmos demo]" vanished)
            Option(Text(sanitize(f"{_time.strftime('%Y-%m-%d %H:%M', _time.localtime(c['updated']))}  {c['title']}  "
                                 f"[{c['model']}]")), id=str(c["id"]))
            for c in self.chats
        ]
        yield OptionList(*options)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))


class ChatScreen(Screen[None]):
    BINDINGS = keymap.bindings("ChatScreen")
    CSS_PATH = ["widgets.tcss", "chat.tcss"]

    def __init__(self) -> None:
        super().__init__()
        self.history: list[str] = []
        self.history_pos = 0
        self.reply: Reply | None = None
        self.pending: str | None = None  # a prompt typed while the model loads, sent when it is ready

    @property
    def operator(self) -> "Operator":
        from llmos_tui.ui.app import LlmosApp

        app = self.app
        if not isinstance(app, LlmosApp):
            raise TypeError("the chat screen runs inside LlmosApp (it needs the core)")
        return app.operator

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="log")
        yield PromptInput(placeholder="Type a prompt, Enter to send · Esc cancels · ? or F1 for keys", id="prompt")
        yield EngineStatus()
        yield Footer()

    class EngineMoved(Message):
        def __init__(self, state: str) -> None:
            super().__init__()
            self.state = state

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()
        self.show_demo_note()
        self._unsubscribe = self.operator.supervisor.subscribe(
            lambda ev: self.post_message(self.EngineMoved(ev.data.get("state", ""))) if ev.kind == "state" else None)

    def on_unmount(self) -> None:
        self._unsubscribe()

    def on_chat_screen_engine_moved(self, message: "ChatScreen.EngineMoved") -> None:
        self.engine_state_changed(message.state)

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
        state = self.operator.supervisor.state.value
        if state in ("loading", "restarting", "stopped") and self.pending is None:
            # the model is not there yet: keep the prompt, say so, and send it the moment it is ready
            self.pending = prompt
            event.input.value = ""
            self.notify(f"The model is {'loading' if state != 'stopped' else 'not started yet'}: "
                        "your prompt is queued and will be sent when it is ready.", title="Queued")
            self.query_one("#log", VerticalScroll).mount(UserMessage(Text(prompt), classes="queued"))
            return
        if self.pending is not None:
            self.notify("A prompt is already queued until the model is ready.", severity="warning")
            return
        self._send(prompt, event.input)

    def _send(self, prompt: str, field: Input | None = None, *, mounted: UserMessage | None = None) -> bool:
        try:
            reply = self.operator.chat.send(prompt)
        except LlmosError as exc:
            self.notify(str(exc), title="Cannot send", severity="error")
            return False
        if field is not None:
            field.value = ""
        self.history.append(prompt)
        self.history_pos = len(self.history)
        self.reply = reply
        log = self.query_one("#log", VerticalScroll)
        view = ReplyView()
        if mounted is None:
            log.mount(UserMessage(Text(prompt)))
        else:
            mounted.remove_class("queued")
        log.mount(view)
        log.scroll_end(animate=False)
        self.stream_reply(reply, view)
        return True

    def engine_state_changed(self, state: str) -> None:
        """The engine's state moved (on the UI thread): a queued prompt goes out once it is ready,
        or is refused with the reason when the engine did not come up."""
        if self.pending is None:
            return
        prompt, self.pending = self.pending, None
        queued = next(iter(self.query(UserMessage).filter(".queued")), None)
        if state == "ready":
            if not self._send(prompt, mounted=queued):
                self.query_one("#prompt", Input).value = prompt  # nothing lost
                if queued is not None:
                    queued.remove()
        elif state in ("failed", "crashed"):
            error = self.operator.supervisor.last_error or state
            self.notify(f"The queued prompt was not sent: the engine is {state} ({error}). It is back in the input.",
                        title="Not sent", severity="error", timeout=10)
            self.query_one("#prompt", Input).value = prompt
            if queued is not None:
                queued.remove()
        else:
            self.pending = prompt  # still loading

    @work(thread=True, group="reply", exit_on_error=False)
    def stream_reply(self, reply: Reply, view: ReplyView) -> None:
        stream = self.app.call_from_thread(Markdown.get_stream, view.body)  # needs the event loop
        log = self.query_one("#log", VerticalScroll)

        async def write(done: str, tail: str) -> None:
            at_bottom = log.scroll_y >= log.max_scroll_y - 1
            if done:
                await stream.write(done)
            view.show_tail(tail)
            if at_bottom:
                log.scroll_end(animate=False)

        # One write per frame at most: pieces that arrive while we wait are joined by batches()
        # into the next write, so the UI wakes ~20 times a second, not once per token.
        text, sent, last = "", 0, 0.0
        for piece in reply.batches():
            wait = last + FRAME_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            text += sanitize(piece)
            end = text.rfind("\n\n")
            cut = end + 2 if end >= 0 else 0  # finished paragraphs go to the markdown body
            done = text[sent:cut] if cut > sent else ""
            sent = max(sent, cut)
            self.app.call_from_thread(write, done, text[sent:])
            last = time.monotonic()

        async def finish() -> None:
            if text[sent:]:
                await stream.write(text[sent:])
            await stream.stop()
            view.show_tail("")
            view.finish(reply)
            log.scroll_end(animate=False)

        self.app.call_from_thread(finish)

    # ---- actions ----------------------------------------------------------------
    def action_cancel_reply(self) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.cancel()

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self.history_pos = max(0, min(len(self.history), self.history_pos + step))
        prompt = self.query_one("#prompt", Input)
        prompt.value = self.history[self.history_pos] if self.history_pos < len(self.history) else ""
        prompt.cursor_position = len(prompt.value)

    def action_new_chat(self) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.cancel()
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

    def _read_journal(self, fn: "Callable[[Journal], T]") -> T:
        """Reads run in a worker thread on their own connection, never on the UI thread."""
        from llmos_tui.journal import Journal

        journal = Journal(self.operator.config.journal_file, readonly=True)
        try:
            return fn(journal)
        finally:
            journal.close()

    @work(thread=True, exclusive=True, group="journal-read", exit_on_error=False)
    def read_chats(self) -> None:
        from llmos_tui.core.journaling import chat_summaries

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
        from llmos_tui.core.journaling import resume_messages

        try:
            messages = self._read_journal(lambda j: resume_messages(j, chat_id))
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"cannot read chat {chat_id}: {exc}", severity="error")
            return
        self.app.call_from_thread(self.show_chat, chat_id, messages)

    def show_chat(self, chat_id: int, messages: list) -> None:
        if self.reply is not None and not self.reply.finished:
            self.operator.cancel()
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
