"""The journal screen, driven headless: live rows, the filter, details with evidence, undo with confirm."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Callable

import pytest
from textual.app import App
from textual.widgets import DataTable, Input, TextArea

from llmos_tui.engine.params import EngineParams
from llmos_tui.journal import Journal
from llmos_tui.ui.journal_screen import ConfirmUndo, JournalScreen


class Host(App[None]):
    def __init__(self, screen: JournalScreen) -> None:
        super().__init__()
        self.journal_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.journal_screen)


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)


def row_ids(screen: JournalScreen) -> list[str]:
    table = screen.query_one("#journal-table", DataTable)
    return [table.coordinate_to_cell_key((i, 0))[0].value for i in range(table.row_count)]


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        journal.record_config(EngineParams(model_path="/m/a.gguf", n_threads=2, n_threads_batch=2), ts=100.0)
        finding = journal.record_finding("oom", "critical", "CUDA out of memory",
                                         {"free_mib": 12, "need_mib": 900}, ts=101.0)
        action = journal.propose_action("shrink_ctx", {"n_ctx": 1024}, proposed_by="auto", finding_id=finding, ts=102.0)
        journal.change_config(EngineParams(model_path="/m/a.gguf", n_ctx=1024, n_threads=2, n_threads_batch=2),
                              source="repair", action_id=action)
        journal.record_event("crashed", {"signal": "SIGABRT"})  # after the change: the newest entries
        journal.record_event("loaded", {"load_ms": 640.0})
    return path


async def test_entries_appear_and_new_ones_arrive_live(jpath: Path) -> None:
    screen = JournalScreen(jpath, refresh_interval=0.1)
    async with Host(screen).run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        ids = row_ids(screen)
        assert ids[:2] == ["evt:2", "evt:1"]
        assert set(ids) == {"evt:2", "evt:1", "cfg:2", "act:1", "fnd:1", "cfg:1"}
        with Journal(jpath) as other:  # another writer (the app's JournalWriter, another process)
            other.record_event("restarting", {"attempt": 1})
        await wait_for(pilot, lambda: "evt:3" in row_ids(screen))
        assert row_ids(screen)[0] == "evt:3"
        assert "journal.sqlite" in str(screen.query_one("#journal-status").render())


async def test_filter_narrows_by_text_and_kind(jpath: Path) -> None:
    screen = JournalScreen(jpath, refresh_interval=5)
    async with Host(screen).run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        await pilot.press("slash", *"ABRT")  # typed: `/` focuses the filter
        assert screen.query_one("#journal-filter", Input).has_focus
        await wait_for(pilot, lambda: row_ids(screen) == ["evt:1"])
        filter_input = screen.query_one("#journal-filter", Input)
        filter_input.value = "config"  # an entry type
        await wait_for(pilot, lambda: row_ids(screen) == ["cfg:2", "cfg:1"])
        filter_input.value = "kind:oom,loaded"  # kinds across types
        await wait_for(pilot, lambda: row_ids(screen) == ["evt:2", "fnd:1"])
        filter_input.value = ""
        await wait_for(pilot, lambda: len(row_ids(screen)) == 6)


async def test_details_show_the_evidence(jpath: Path) -> None:
    screen = JournalScreen(jpath, refresh_interval=5)
    async with Host(screen).run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        details = screen.query_one("#journal-details", TextArea)
        await wait_for(pilot, lambda: '"id": "evt:2"' in details.text)  # the first row, at once
        table = screen.query_one("#journal-table", DataTable)
        table.move_cursor(row=table.get_row_index("fnd:1"))
        await wait_for(pilot, lambda: '"need_mib": 900' in details.text)
        assert json.loads(details.text)["evidence"] == {"free_mib": 12, "need_mib": 900}


async def test_undo_asks_first_then_calls_on_undo(jpath: Path) -> None:
    calls: list[str] = []
    screen = JournalScreen(jpath, on_undo=lambda entry: calls.append(entry) or "undone", refresh_interval=5)
    app = Host(screen)
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        table = screen.query_one("#journal-table", DataTable)
        table.focus()

        table.move_cursor(row=table.get_row_index("evt:1"))  # an event: nothing to undo
        await pilot.press("u")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmUndo) and calls == []

        table.move_cursor(row=table.get_row_index("act:1"))
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmUndo))
        await pilot.press("n")  # changed my mind
        await wait_for(pilot, lambda: app.screen is screen)
        assert calls == []

        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmUndo))
        await pilot.press("y")
        await wait_for(pilot, lambda: calls == ["act:1"])


async def test_without_on_undo_the_key_explains(jpath: Path) -> None:
    screen = JournalScreen(Journal(jpath, readonly=True), on_undo=None, refresh_interval=5)
    app = Host(screen)
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        table = screen.query_one("#journal-table", DataTable)
        table.move_cursor(row=table.get_row_index("cfg:2"))
        await pilot.press("u")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmUndo)
        assert any("not available" in n.message for n in app._notifications)


async def test_a_missing_journal_is_reported_not_fatal(tmp_path: Path) -> None:
    screen = JournalScreen(tmp_path / "absent.sqlite", refresh_interval=5)
    async with Host(screen).run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        assert "no journal" in str(screen.query_one("#journal-status").render())
        assert row_ids(screen) == []


async def test_the_flight_recorder_steps_back_and_forward_through_the_rollups(tmp_path: Path) -> None:
    """The recorder above the timeline draws the last recorded hour's rollups on sparklines; `[`
    steps an hour back (older values), `]` returns to the live edge and follows it again."""
    import time

    from rich.console import Console

    from llmos_tui.ui.journal_screen import RECORDER_SPAN_S

    path = tmp_path / "journal.sqlite"
    now = time.time()
    with Journal(path) as journal:
        for i in range(120):  # two hours of 1-minute means: 30 °C an hour ago, 70 °C in the last hour
            ts = now - 7200 + 60 * i + 30  # mid-minute: the hour's edges fall between rows
            journal.rollups.record(60, ts, {"gpu0.temp": 30.0 if i < 60 else 70.0, "gpu0.util": float(i % 100),
                                            "host.cpu": 12.0})
    screen = JournalScreen(path, refresh_interval=0.1)
    async with Host(screen).run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: screen.recorder is not None)
        live = screen.recorder
        newest = now - 7200 + 60 * 119 + 30
        assert live.until == newest + 1, "live: the hour ending at the newest rollup"
        assert screen.recorder_until is None and live.series == ["gpu0.util", "gpu0.temp", "host.cpu"]
        assert {row["gpu0.temp"] for _, row in live.rows} == {70.0}
        console = Console(width=120, record=True)
        console.print(live)
        drawn = console.export_text()
        assert "gpu0.temp" in drawn and "70°C max 70°C" in drawn and "host.cpu" in drawn
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: screen.recorder is not live and screen.recorder.until_asked is not None)
        back = screen.recorder
        assert back.until == newest + 1 - RECORDER_SPAN_S
        assert {row["gpu0.temp"] for _, row in back.rows} == {30.0}, "an hour back: the older means"
        assert "[ older · ] newer" in back.head.plain
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: screen.recorder is not back and screen.recorder.until_asked is None)
        assert screen.recorder_until is None and "live" in screen.recorder.head.plain
        assert 70.0 in {row["gpu0.temp"] for _, row in screen.recorder.rows}


async def test_markup_in_what_the_journal_holds_is_shown_as_written(tmp_path: Path) -> None:
    """A model named "evil[/]name" made the journal screen raise MarkupError (a DataTable parses a str
    cell as markup), and "[warning]" in a finding's summary vanished. Cells are text now."""
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        journal.record_config(EngineParams(model_path="/m/x[b]y.gguf", n_threads=2, n_threads_batch=2), ts=100.0)
        journal.record_event("loaded", {"load_ms": 12.0, "model": "evil[/]name [b]x"}, ts=101.0)
    screen = JournalScreen(path, refresh_interval=0.1)
    async with Host(screen).run_test(size=(160, 30)) as pilot:
        await wait_for(pilot, lambda: screen.loads >= 1)
        table = screen.query_one("#journal-table", DataTable)
        cells = [str(table.get_cell_at((i, 4))) for i in range(table.row_count)]
        assert any("model=evil[/]name [b]x" in c for c in cells), cells
        assert any("x[b]y.gguf" in c for c in cells), cells  # markup would have swallowed the [b]
        await pilot.pause(0.2)  # rendered without an exception: the app still runs
        assert screen.is_attached
