"""The journal screen: a live timeline of every configuration, event, finding and action,
a filter, the selected entry's details (evidence pretty-printed), and undo on `u`.

All journal reads run in thread workers (polls never overlap: a tick is skipped while
the previous read is still running), so a slow disk never freezes the UI; rows are put
into the table on the UI thread only when they changed, keeping the cursor in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Static, TextArea
from textual.worker import get_current_worker

from llmos_tui.errors import LlmosError
from llmos_tui.ui import keymap

if TYPE_CHECKING:
    from llmos_tui.journal import Entry, Journal

UNDOABLE_PREFIXES = ("cfg:", "act:")


def split_filter(text: str, type_names: set[str]) -> tuple[list[str] | None, str]:
    """``"kind:crashed event oom"`` -> (["crashed", "event"], "oom").

    ``kind:A,B`` words and bare entry-type names (event, config, cfg…) pick kinds; the
    other words are searched as text.
    """
    kinds: list[str] = []
    words: list[str] = []
    for word in text.split():
        if word.lower().startswith("kind:"):
            kinds.extend(k for k in word[5:].split(",") if k)
        elif word.lower() in type_names:
            kinds.append(word.lower())
        else:
            words.append(word)
    return (kinds or None), " ".join(words)


class ConfirmUndo(ModalScreen[bool]):
    """Asks before an undo: it changes the engine's configuration."""

    BINDINGS = keymap.bindings("ConfirmUndo")
    CSS_PATH = "journal.tcss"

    def __init__(self, entry_id: str, summary: str) -> None:
        super().__init__()
        self.entry_id = entry_id
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Undo [b]{self.entry_id}[/b]?\n{self.summary}\n\n"
                         "The previous configuration becomes active again; the undo is journaled too.")
            with Horizontal():
                yield Button("Undo (y)", variant="warning", id="yes")
                yield Button("Cancel (n)", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class JournalScreen(Screen[None]):
    BINDINGS = keymap.bindings("JournalScreen")
    CSS_PATH = "journal.tcss"

    def __init__(
        self,
        journal: "str | os.PathLike[str] | Journal | None" = None,
        on_undo: Callable[[str], object] | None = None,
        *,
        limit: int = 500,
        refresh_interval: float = 2.0,
    ) -> None:
        """``journal``: a path (None: the default journal) or an open reader such as a ``Journal``.

        ``on_undo(entry_id)`` runs in a worker thread after the operator confirms; what it
        returns (a ConfigVersion or a line of text) is shown as a notification. Without it
        the undo key explains that undo is unavailable (read-only sessions).
        """
        super().__init__()
        if journal is None or isinstance(journal, (str, os.PathLike)):
            self._path: Path | None = Path(journal).expanduser() if journal is not None else None
            self._reader: "Journal | None" = None
            self._owns_reader = True
        else:
            self._path, self._reader = None, journal
            self._owns_reader = False
        self.on_undo = on_undo
        self.limit = limit
        self.refresh_interval = refresh_interval
        self.entries: list[Entry] = []
        self._shown: tuple[tuple[str, str, str], ...] | None = None
        self._loading = False
        self._reload_wanted = False
        self._filter_text = ""
        self.details_for: str | None = None
        self.loads = 0  # completed reads (tests and the benchmark wait on this)

    # ---- layout ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("journal: opening…", id="journal-status")
        yield Input(placeholder="filter: text, an entry type (event, config, action…) or kind:crashed,undo",
                    id="journal-filter")
        with Horizontal(id="journal-body"):
            table: DataTable[str] = DataTable(id="journal-table", cursor_type="row", zebra_stripes=True)
            yield table
            yield TextArea("", id="journal-details", read_only=True, soft_wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#journal-table", DataTable)
        table.add_column("ID", key="id")
        table.add_column("Time", key="time")
        table.add_column("Type", key="type")
        table.add_column("Kind", key="kind")
        table.add_column("Summary", key="summary")
        table.focus()
        self.set_interval(self.refresh_interval, self._tick)
        # The first read starts from on_screen_resume, which also follows every return here.

    def on_screen_resume(self) -> None:
        self.reload()

    def on_unmount(self) -> None:
        if self._owns_reader and self._reader is not None:
            self._reader.close()

    # ---- reading (thread workers) -------------------------------------------------
    def _tick(self) -> None:
        if self.is_current:  # a hidden screen costs nothing
            self.reload()

    def reload(self) -> None:
        if self._loading:
            self._reload_wanted = True  # read again as soon as the running read ends
            return
        self._loading = True
        self._load(self._filter_text)

    def _open_reader(self) -> "Journal":
        if self._reader is None:
            from llmos_tui.journal import Journal, JournalReadOnly

            # check=False: the integrity check is the opener's job (app start, CLI); this
            # screen only reads, and a damaged page still surfaces as a JournalDamaged.
            try:
                self._reader = Journal(self._path, create=False, check=False)
            except JournalReadOnly:
                self._reader = Journal(self._path, readonly=True, check=False)
        return self._reader

    @work(thread=True, group="journal-load", exit_on_error=False)
    def _load(self, filter_text: str) -> None:
        from llmos_tui.journal import SOURCES, JournalMissing

        worker = get_current_worker()
        entries: list[Entry] = []
        status = ""
        try:
            reader = self._open_reader()
            type_names = {s.type for s in SOURCES} | {s.prefix for s in SOURCES}
            kinds, text = split_filter(filter_text, type_names)
            entries = reader.timeline(kinds=kinds, text=text or None, limit=self.limit)
            where = reader.path
            status = f"journal {where} · {len(entries)} entries" + (f" · filter: {filter_text}" if filter_text else "")
        except JournalMissing as exc:
            status = f"{exc}"
        except LlmosError as exc:
            status = f"⚠ {exc}"
        except Exception as exc:  # a reader bug must not kill the screen
            status = f"⚠ could not read the journal: {type(exc).__name__}: {exc}"
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, entries, status)

    def _show(self, entries: "list[Entry]", status: str) -> None:
        self._loading = False
        self.loads += 1
        self.query_one("#journal-status", Static).update(status)
        shown = tuple((e.id, e.summary, e.kind) for e in entries)
        if shown != self._shown:
            self._shown = shown
            self.entries = entries
            self._fill_table(entries)
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload()

    def _fill_table(self, entries: "list[Entry]") -> None:
        table = self.query_one("#journal-table", DataTable)
        selected = self.selected_id()
        table.clear()
        for e in entries:
            table.add_row(e.id, e.time, e.type, e.kind, e.summary, key=e.id)
        if selected is not None:
            try:
                table.move_cursor(row=table.get_row_index(selected), animate=False)
            except Exception:  # the selected entry left the filtered view
                pass
        if entries and self.details_for is None:
            self._load_details(entries[min(table.cursor_row, len(entries) - 1)].id)

    def selected_id(self) -> str | None:
        table = self.query_one("#journal-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:
            return None
        return row_key.value

    @on(DataTable.RowHighlighted, "#journal-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None and event.row_key.value != self.details_for:
            self._load_details(event.row_key.value)

    def _load_details(self, entry_id: str) -> None:
        self.details_for = entry_id
        self._details(entry_id)

    @work(thread=True, exclusive=True, group="journal-details", exit_on_error=False)
    def _details(self, entry_id: str) -> None:
        worker = get_current_worker()
        try:
            text = json.dumps(self._open_reader().show(entry_id), indent=2, default=str, ensure_ascii=False)
        except Exception as exc:
            text = f"could not read {entry_id}: {exc}"
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_details, entry_id, text)

    def _show_details(self, entry_id: str, text: str) -> None:
        if entry_id == self.details_for:
            self.query_one("#journal-details", TextArea).load_text(text)

    # ---- filter ---------------------------------------------------------------------
    @on(Input.Changed, "#journal-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._filter_text = event.value.strip()
        self.reload()

    @on(Input.Submitted, "#journal-filter")
    def _filter_submitted(self) -> None:
        self.query_one("#journal-table", DataTable).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#journal-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#journal-table", DataTable).focus()

    def action_refresh_now(self) -> None:
        self.reload()

    # ---- undo -----------------------------------------------------------------------
    def action_undo(self) -> None:
        entry_id = self.selected_id()
        if entry_id is None:
            self.notify("no entry selected", severity="warning")
            return
        entry = next((e for e in self.entries if e.id == entry_id), None)
        if not entry_id.startswith(UNDOABLE_PREFIXES) or (entry is not None and not entry.undoable):
            self.notify(f"{entry_id} is not a configuration change; only cfg:N and act:N entries that changed "
                        "the configuration can be undone", severity="warning")
            return
        if self.on_undo is None:
            self.notify("undo is not available in this session (read-only)", severity="warning")
            return
        summary = entry.summary if entry is not None else ""

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._run_undo(entry_id)

        self.app.push_screen(ConfirmUndo(entry_id, summary), answered)

    @work(thread=True, group="journal-undo", exit_on_error=False)
    def _run_undo(self, entry_id: str) -> None:
        assert self.on_undo is not None
        try:
            result = self.on_undo(entry_id)
        except LlmosError as exc:
            self.app.call_from_thread(self.notify, f"undo {entry_id} failed: {exc}", severity="error")
            return
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"undo {entry_id} failed: {type(exc).__name__}: {exc}", severity="error")
            return
        severity = "information"
        if hasattr(result, "state"):  # a ChangeResult from the change transaction
            message = result.message
            severity = "information" if result.ok else "error"
        elif hasattr(result, "entry_id"):
            message = f"undo of {entry_id} recorded: {result.entry_id} is now active"
        else:
            message = str(result) if result else f"undo of {entry_id} recorded"
        self.app.call_from_thread(self.notify, message, severity=severity)
        self.app.call_from_thread(self.reload)
