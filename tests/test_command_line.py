"""The `:` command line through Textual's pilot: completion, screens, the theme, undo through the
change transaction (real engine, real journal), confirmation and read-only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList

from llmos_tui.config import load_config
from llmos_tui.core.wiring import build_core
from llmos_tui.journal import Journal
from llmos_tui.ui import command_line
from llmos_tui.ui.app import LlmosApp
from llmos_tui.ui.command_line import CommandLine, Confirm
from tests.pilot import notices, wait_for

TRACE = Path(__file__).parent / "data" / "trace_throttle.jsonl"


def make_app(*, readonly: bool = False, doctor: bool = False, start_engine: bool = False, **extra) -> LlmosApp:
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "n_ctx": 512, "readonly": readonly})
    operator = build_core(config, "oneshot", telemetry=False, doctor=doctor, endpoint=False)
    return LlmosApp(operator, start_screen="chat", start_engine=start_engine, **extra)


async def open_line(pilot, text: str = "") -> CommandLine:
    await pilot.press("colon")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandLine))
    line = pilot.app.screen.query_one("#command-input", Input)
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.pause()
    assert line.value == text
    return pilot.app.screen


def test_every_app_binding_and_screen_has_a_command() -> None:
    names = {c.name for c in command_line.commands()}
    for binding in LlmosApp.BINDINGS:
        action = binding.action
        if action.startswith("mode("):
            assert command_line.find(action[6:-2]) is not None, action
    assert {"dashboard", "chat", "doctor", "journal", "tune", "undo", "theme", "quit", "help", "restart",
            "explain", "accept", "reject", "silence", "canary", "killswitch", "reset-limit", "params"} <= names
    # the engine-changing commands are the core's: one table for the `:` line and the console
    from llmos_tui.console.app import TABLE
    from llmos_tui.core.commands import COMMANDS

    assert all(c in command_line.commands() and c in TABLE for c in COMMANDS)
    assert {c.name for c in COMMANDS if c.changes_engine is True} == {"undo", "restart", "accept"}


async def test_colon_in_an_empty_prompt_opens_the_line_and_tab_completes() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_line(pilot, "the")
        options = screen.query_one(OptionList)
        assert options.option_count == 1 and "theme" in str(options.get_option_at_index(0).prompt)
        await pilot.press("tab")
        assert screen.query_one("#command-input", Input).value == "theme "
        await pilot.press("l")
        await pilot.pause()
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert labels and labels[0].startswith("theme light"), labels
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: app.theme == "light")
        assert not isinstance(app.screen, CommandLine)
        # a colon typed inside text is text, not the command line
        prompt = app.screen.query_one("#prompt", Input)
        prompt.value = "ratio 1"
        await pilot.press("colon", "2")
        assert prompt.value == "ratio 1:2" and not isinstance(app.screen, CommandLine)
    app.operator.close()


async def test_screen_commands_and_unknown_command() -> None:
    app = make_app(doctor=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_line(pilot, "doctor")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "doctor")
        await open_line(pilot, "journal kind:crashed")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "journal")
        await wait_for(pilot, lambda: app.screen.query_one("#journal-filter", Input).value == "kind:crashed")
        await open_line(pilot, "tune")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "tuning")
        await open_line(pilot, "frobnicate")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("unknown command :frobnicate" in n for n in notices(app)))
    app.operator.close()


async def test_readonly_greys_out_destructive_commands_and_refuses_them() -> None:
    app = make_app(readonly=True)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_line(pilot, "un")
        options = screen.query_one(OptionList)
        first = options.get_option_at_index(0)
        assert "undo" in str(first.prompt) and first.disabled and "read-only" in str(first.prompt)
        screen.query_one("#command-input", Input).value = "undo cfg:1"
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("read-only mode: :undo is disabled" in n for n in notices(app)))
        assert not isinstance(app.screen, Confirm)
    app.operator.close()


async def test_undo_asks_first_and_goes_through_the_change_transaction() -> None:
    app = make_app(start_engine=True)
    op = app.operator
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: op.supervisor.is_ready and not op.changes.busy, 60)
        result = await asyncio.to_thread(op.changes.propose, {"n_ctx": 640}, reason="test")
        assert result.state == "applied", result.message
        changed = result.config_id
        await open_line(pilot, f"undo cfg:{changed}")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("n")  # no: nothing changes
        await pilot.pause(0.2)
        assert op.supervisor.params.n_ctx == 640
        await open_line(pilot, f"undo cfg:{changed}")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("y")
        await wait_for(pilot, lambda: any(n.startswith("undone: now running") for n in notices(app)), 60)
        assert op.supervisor.params.n_ctx == 512
    with Journal(op.config.journal_file, readonly=True) as journal:
        active = journal.active_config()
        assert active.source == "undo" and active.params["n_ctx"] == 512
        undo = journal.action_for_config(active.id)
        assert undo.kind == "undo" and undo.state == "verified"
    op.close()


async def test_the_command_palette_offers_the_same_commands_and_themes() -> None:
    app = make_app(readonly=True)
    async with app.run_test(size=(100, 30)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert ":doctor" in titles and ":theme high-contrast" in titles and ":theme 16-colour" in titles
        assert ":restart" not in titles  # destructive: left out in read-only mode
        next(c for c in app.get_system_commands(app.screen) if c.title == ":theme high-contrast").callback()
        await wait_for(pilot, lambda: app.theme == "high-contrast")
    app.operator.close()


async def test_replay_has_no_tuning_screen_and_refuses_adapt() -> None:
    """A replay drives no engine to tune: `:tune` says so; the learner never runs on replayed findings."""
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "n_ctx": 512})
    operator = build_core(config, "replay", replay=str(TRACE), replay_speed=1, doctor=False, endpoint=False)
    app = LlmosApp(operator, start_screen="chat", start_engine=False)
    async with app.run_test(size=(100, 30)) as pilot:
        assert "tuning" not in app.screen_factories
        await open_line(pilot, "tune")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("tuning screen is not available" in n for n in notices(app)))
        assert app.current_mode == "chat"
        await open_line(pilot, "adapt shadow")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("replay mode: the online learner stays off" in n for n in notices(app)))
        assert operator.adapter is None
    operator.close()


async def test_reset_limit_command_resets_the_doctors_start_limit_through_the_operator() -> None:
    app = make_app(doctor=True)
    doctor = app.operator.doctor
    calls: list[str] = []
    verb = type(app.operator).reset_start_limit

    def counted(op) -> str:  # noqa: ANN001 - the Operator's own verb, counted
        calls.append("op")
        return verb(op)

    async with app.run_test(size=(100, 30)) as pilot:
        doctor.runner.start_limit_hit = True
        type(app.operator).reset_start_limit = counted
        try:
            await open_line(pilot, "reset-limit")
            await pilot.press("enter")
            await wait_for(pilot, lambda: not doctor.start_limit_hit)
        finally:
            type(app.operator).reset_start_limit = verb
        assert calls == ["op"]
        assert not isinstance(app.screen, Confirm)  # it does not change the engine: no question
    app.operator.close()


async def test_a_toast_with_markup_in_its_words_does_not_take_the_cockpit_down(tmp_path: Path) -> None:
    """"model not found: …/x[/]y[b.gguf" as a toast raised MarkupError in Textual's renderer and the
    cockpit died. Toasts are plain text now."""
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "model_path": str(tmp_path / "x[/]y[b.gguf")})
    operator = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    app = LlmosApp(operator, start_screen="chat", start_engine=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: any("x[/]y[b.gguf" in n for n in notices(app)), timeout=30)
        notification = next(n for n in app._notifications if "x[/]y[b.gguf" in str(n.message))
        assert notification.markup is False
        from textual.content import Content
        from textual.markup import MarkupError

        with pytest.raises(MarkupError):  # what the toast drew with markup on (headless runs draw no toasts)
            Content.from_markup(notification.message)
        assert app.is_running and app.return_code is None
