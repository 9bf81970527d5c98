"""The TUI's chat through Textual's pilot, on real llama.cpp and the demo model."""

from __future__ import annotations

import time

from textual.widgets import Input, Markdown

from llmos_tui.config import Config, load_config
from llmos_tui.core.operator import Operator
from llmos_tui.core.wiring import build_core
from llmos_tui.ui.app import LlmosApp
from llmos_tui.ui.chat_screen import ChatScreen, ReplyView
from llmos_tui.ui.help_screen import HelpScreen
from llmos_tui.ui.status import EngineStatus
from tests.pilot import wait_for


def wired(config: Config) -> Operator:
    """The core as every face gets it (the composition root), without telemetry, doctor or endpoint."""
    return build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)


def make_app(**overrides) -> LlmosApp:
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, **overrides})
    return LlmosApp(wired(config), start_screen="chat")


async def type_prompt(pilot, text: str) -> None:
    prompt = pilot.app.screen.query_one("#prompt", Input)
    prompt.value = text
    await pilot.press("enter")


async def test_chat_streams_a_reply_with_its_metrics_line() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.operator.supervisor.is_ready)
        assert isinstance(app.screen, ChatScreen)
        status = app.screen.query_one(EngineStatus)
        await pilot.pause()
        assert "READY" in str(status.render()) and "llmos demo" in str(status.render())
        assert "(demo model)" in str(status.render())
        await type_prompt(pilot, "What is the KV cache?")
        await wait_for(pilot, lambda: app.screen.reply is not None and app.screen.reply.finished)
        await pilot.pause(0.3)
        view = app.screen.query(ReplyView).last()
        body = view.body.source
        assert len(body.split()) >= 5, body
        metrics = str(view.footer_line.render())
        assert "prompt tok" in metrics and "gen tok" in metrics and "tok/s" in metrics and "TTFT" in metrics
        notes = app.screen.query(".note")
        assert notes and "embedded demo model" in notes.first(Markdown).source
    app.operator.close()


async def test_up_recalls_earlier_prompts_and_escape_cancels() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.operator.supervisor.is_ready)
        await type_prompt(pilot, "first question")
        await wait_for(pilot, lambda: app.screen.reply.finished)
        app.operator.supervisor.inject("slow", ms=30)
        await type_prompt(pilot, "second question")
        await wait_for(pilot, lambda: app.screen.reply.text != "")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.reply.finished)
        assert app.screen.reply.status == "cancelled"
        await pilot.pause(0.3)
        assert "cancelled" in str(app.screen.query(ReplyView).last().footer_line.render())
        await pilot.press("up")
        assert app.screen.query_one("#prompt", Input).value == "second question"
        await pilot.press("up")
        assert app.screen.query_one("#prompt", Input).value == "first question"
        await pilot.press("down")
        assert app.screen.query_one("#prompt", Input).value == "second question"
    app.operator.close()


async def test_killed_engine_marks_the_reply_interrupted_and_shows_crashed() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.operator.supervisor.is_ready)
        app.operator.supervisor.inject("slow", ms=30)
        await type_prompt(pilot, "Tell me about GPUs")
        await wait_for(pilot, lambda: app.screen.reply.text != "")
        app.operator.supervisor.kill()
        await wait_for(pilot, lambda: app.screen.reply.finished)
        await pilot.pause(0.3)
        assert app.screen.reply.status == "interrupted"
        assert "interrupted" in str(app.screen.query(ReplyView).last().footer_line.render())
        assert "CRASHED" in str(app.screen.query_one(EngineStatus).render())
        assert app.is_running
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.operator.supervisor.is_ready)
        await pilot.pause(0.2)
        assert "READY" in str(app.screen.query_one(EngineStatus).render())
    app.operator.close()


async def test_help_lists_every_key() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        text = "\n".join(" ".join(row) for row in app.screen.rows)
        for words in ("Cancel reply", "Restart engine", "Quit", "Chat", "New chat"):
            assert words in text, words
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
    app.operator.close()


async def test_bad_model_is_shown_and_the_app_stays_up(bad_models) -> None:
    app = make_app(model=str(bad_models["refused"]))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.operator.supervisor.state.value == "failed")
        await pilot.pause(0.2)
        assert "FAILED" in str(app.screen.query_one(EngineStatus).render())
        await type_prompt(pilot, "hello?")
        await pilot.pause(0.2)
        assert app.is_running
        assert any("not ready" in str(n.message) for n in app._notifications)
    app.operator.close()


async def test_chats_are_journaled_and_an_earlier_one_resumes(tmp_path) -> None:
    from llmos_tui.journal import Journal

    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "journal": str(tmp_path / "j.sqlite")})
    op = wired(config)
    app = LlmosApp(op, start_screen="chat")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: op.supervisor.is_ready)
        await type_prompt(pilot, "What is VRAM?")
        await wait_for(pilot, lambda: app.screen.reply.finished)
        first_answer = app.screen.reply.text
        op.journal_writer.flush()
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
        assert not app.screen.query(ReplyView)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ChatPicker")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(op.chat.messages) == 2)
        await pilot.pause(0.3)
        views = app.screen.query(ReplyView)
        assert len(views) == 1 and views.first().body.source == first_answer
        assert "gen tok" in str(views.first().footer_line.render())
        assert [m.role for m in op.chat.messages] == ["user", "assistant"]
        await type_prompt(pilot, "And the KV cache?")
        await wait_for(pilot, lambda: app.screen.reply.finished)
        op.journal_writer.flush()
    op.close()
    journal = Journal(tmp_path / "j.sqlite")
    chats = journal.list_chats()
    assert len(chats) == 1, "the resumed chat continues, no new chat is started"
    roles = [m.role for m in journal.chat_messages(chats[0].id)]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert journal.active_config().standing == "good"


async def test_question_mark_shows_keys_in_an_empty_prompt_and_types_otherwise() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen), app.screen.query_one("#prompt", Input).value
        await pilot.press("escape")
        await pilot.press("w", "h", "y", "question_mark")
        assert isinstance(app.screen, ChatScreen)
        assert app.screen.query_one("#prompt", Input).value == "why?"
    app.operator.close()


async def test_ui_keys_remap_a_binding_through_the_config_file(tmp_path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('[ui.keys]\n"chat.new" = "ctrl+b"\n')
    config = load_config(config_file, overrides={"n_threads": 2, "n_threads_batch": 2})
    assert config.keys == {"chat.new": "ctrl+b"}
    app = LlmosApp(wired(config), start_screen="chat")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.operator.supervisor.is_ready)
        await type_prompt(pilot, "What is VRAM?")
        await wait_for(pilot, lambda: app.screen.reply is not None and app.screen.reply.finished)
        await pilot.pause(0.2)
        assert app.screen.query(ReplyView)
        await pilot.press("ctrl+n")  # the old key does nothing now
        await pilot.pause(0.2)
        assert app.screen.query(ReplyView) and app.operator.chat.messages
        await pilot.press("ctrl+b")  # the new one starts a new chat
        await pilot.pause(0.2)
        assert not app.screen.query(ReplyView) and not app.operator.chat.messages
    app.operator.close()


async def test_a_prompt_sent_while_the_engine_is_not_ready_is_queued_and_sent_when_it_is() -> None:
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2})
    app = LlmosApp(wired(config), start_screen="chat", start_engine=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        status = app.screen.query_one(EngineStatus)
        assert "STOPPED" in str(status.render()) and "not running yet" in str(status.render())
        await type_prompt(pilot, "What is VRAM?")
        await pilot.pause(0.1)
        assert app.screen.pending == "What is VRAM?"
        assert any("queued" in str(n.message) for n in app._notifications)
        assert app.screen.query_one("#prompt", Input).value == ""
        app.operator.start_engine_in_background()
        await wait_for(pilot, lambda: app.screen.reply is not None and app.screen.reply.finished)
        assert app.screen.pending is None
        assert [m.role for m in app.operator.chat.messages][:1] == ["user"]
        assert app.operator.chat.messages[0].content == "What is VRAM?"
        await pilot.pause(0.2)
        assert "READY" in str(status.render()), "the status bar follows the engine by itself"
    app.operator.close()


async def test_streaming_renders_at_most_one_frame_per_budget_not_one_per_token(monkeypatch) -> None:
    from llmos_tui.ui import chat_screen

    # A frame budget long enough that tokens come faster than frames even on a starved box (the
    # demo model made ~5 tokens/s on a 2-core box shared by six test runs): several tokens must
    # then share a frame, always.
    monkeypatch.setattr(chat_screen, "FRAME_S", 1.0)
    app = make_app()
    frames: list[float] = []
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.operator.supervisor.is_ready)
        original_tail = ReplyView.show_tail

        def counting_tail(self, text):  # noqa: ANN001
            frames.append(time.monotonic())
            return original_tail(self, text)

        ReplyView.show_tail = counting_tail
        try:
            app.operator.supervisor.inject("slow", ms=20)  # at most ~50 tokens/s: a few frames at least
            app.operator.chat.settings.max_tokens = 150
            await type_prompt(pilot, "Tell me about GPUs and their memory.")
            await wait_for(pilot, lambda: app.screen.reply is not None and app.screen.reply.finished, 90)
            view = app.screen.query(ReplyView).last()
            # the last frame waits out its budget before the finish is drawn
            await wait_for(pilot, lambda: str(view.footer_line.render()) != "…", 10)
            await pilot.pause(0.3)
            assert view.body.source.strip() == chat_screen.sanitize(app.screen.reply.text).strip()
        finally:
            ReplyView.show_tail = original_tail
        tokens = app.screen.reply.metrics["gen_tokens"]
        span = frames[-1] - frames[0]
        assert tokens >= 50
        assert len(frames) <= span / chat_screen.FRAME_S + 3, (len(frames), span)
        gaps = [b - a for a, b in zip(frames, frames[1:-1])]  # the last one is the finish
        assert min(gaps) >= chat_screen.FRAME_S * 0.9, "never two frames within one frame budget"
        streamed = len(frames) - 1  # the last one is the finish
        assert streamed <= tokens, "never more than a frame per token"
        rate = tokens / span
        assert rate > 2 / chat_screen.FRAME_S, f"the demo model made only {rate:.1f} tokens/s"  # not a skip
        assert streamed < tokens / 2, "several tokens share a frame when they come faster than frames"
    app.operator.close()


async def test_the_chat_picker_shows_titles_and_models_as_written() -> None:
    """A chat's title is the operator's first prompt: "[/]" in it raised MarkupError, and the model's
    name in brackets ("[llmos demo]") vanished as a style tag."""
    from textual.app import App
    from textual.widgets import OptionList

    from llmos_tui.ui.chat_screen import ChatPicker

    picker = ChatPicker([{"id": 7, "title": "why [/] and [b]?", "model": "llmos demo", "updated": 0.0}])

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(picker)

    async with Host().run_test(size=(100, 20)) as pilot:
        await pilot.pause(0.1)
        prompt = str(picker.query_one(OptionList).get_option_at_index(0).prompt)
        assert "why [/] and [b]?" in prompt and prompt.endswith("[llmos demo]"), prompt
