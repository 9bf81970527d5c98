"""The journal screen: a live timeline of every configuration, event, finding and action,
a filter, the selected entry's details (evidence pretty-printed), and undo on `u`; above it the
flight recorder: the telemetry rollups of an hour on sparklines like the dashboard's, stepped
back and forward in time with `[` and `]` (live again once it reaches now).

All journal reads run in thread workers (polls never overlap: a tick is skipped while
the previous read is still running), so a slow disk never freezes the UI; rows are put
into the table on the UI thread only when they changed, keeping the cursor in place.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Static, TextArea
from textual.worker import get_current_worker

from llmos_tui.errors import LlmosError
from llmos_tui.telemetry import format as fmt
from llmos_tui.telemetry import names
from llmos_tui.textsafe import sanitize
from llmos_tui.ui import keymap

if TYPE_CHECKING:
    from llmos_tui.journal import Entry, Journal

UNDOABLE_PREFIXES = ("cfg:", "act:")
RECORDER_SPAN_S = 3600.0  # one screen of the flight recorder; `[` and `]` step by this much
# the recorder's rows, in this order, where the rollups hold them (GPU fields for every GPU)
RECORDER_GPU_FIELDS = ("util", "mem_pct", "temp", "power")
RECORDER_FIXED = ("engine.gen_tps", "host.cpu", "host.mem")
RECORDER_ROWS = 6
RECORDER_REFRESH_S = 10.0  # the finest rollup: reading more often would show nothing new
Rows = list[tuple[float, dict[str, float]]]  # (ts, {series: mean}) of a span of rollups


def recorder_series(rows: Rows) -> list[str]:
    """The series to draw, in order: each GPU's fields, then the engine's and the host's."""
    present = {name for _, values in rows for name in values}
    gpus = sorted({int(n[3:n.index(".")]) for n in present if n.startswith("gpu") and "." in n
                   and n[3:n.index(".")].isdigit()})
    wanted = [names.gpu(i, f) for i in gpus for f in RECORDER_GPU_FIELDS] + list(RECORDER_FIXED)
    return [n for n in wanted if n in present][:RECORDER_ROWS]


class RecorderBody:
    """One line per series: its name, the span's last and peak values, and a sparkline of the
    whole span resampled to the width it gets (the same glyphs as the dashboard's)."""

    LABEL = 16
    VALUE = 22

    def __init__(self, head: Text, rows: Rows, series: list[str], since: float, until: float) -> None:
        self.head, self.rows, self.series = head, rows, series
        self.since, self.until = since, until
        self.until_asked: float | None = None  # the right edge the screen asked for (None: now)
        self.read_at = time.time()

    @property
    def height(self) -> int:
        return 1 + (len(self.series) if self.series else int(self.until > self.since))

    def _resampled(self, name: str, width: int) -> list[float]:
        """Means per column over [since, until). A column with no row between two that have rows
        (the rows are sparser than the columns) holds the value before it; a column outside the
        rows, or in a gap of more than three rows' time, stays empty (NaN)."""
        sums, counts = [0.0] * width, [0] * width
        step = (self.until - self.since) / width
        times = []
        for ts, values in self.rows:
            if name in values and step > 0:
                col = min(width - 1, max(0, int((ts - self.since) / step)))
                sums[col] += values[name]
                counts[col] += 1
                times.append(ts)
        out = [sums[i] / counts[i] if counts[i] else float("nan") for i in range(width)]
        spacing = min((b - a for a, b in zip(times, times[1:]) if b > a), default=step)
        hold = max(1, int(3 * spacing / step)) if step > 0 else 1
        last, gap = float("nan"), 0
        filled = [c for c in range(width) if counts[c]]
        end = filled[-1] if filled else -1
        for i in range(width):
            if counts[i]:
                last, gap = out[i], 0
            elif last == last and i < end and gap < hold:
                out[i], gap = last, gap + 1
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(30, options.max_width)
        self.head.truncate(width)
        yield self.head
        if not self.series:
            if self.until > self.since:
                yield Text("no telemetry rollups in this hour", style="dim")
            return
        spark_w = max(4, width - self.LABEL - self.VALUE - 2)
        for name in self.series:
            values = [row[name] for _, row in self.rows if name in row]
            unit = names.unit(name)
            lo, hi = (0.0, 100.0) if unit == "%" else (min(0.0, min(values)), max(values))
            line = Text(no_wrap=True, overflow="crop")
            line.append(f"{name:<{self.LABEL}}"[:self.LABEL], style="bold")
            line.append(f" {_value(values[-1], unit)} max {_value(max(values), unit)}"[:self.VALUE]
                        .ljust(self.VALUE))
            line.append(" ")
            # one glyph per column on the time axis (the dashboard's glyphs); an empty column a blank
            line.append("".join(fmt.spark([v], 1, lo, hi) if v == v else " "
                                for v in self._resampled(name, spark_w)), style="cyan")
            yield line


def _value(value: float, unit: str) -> str:
    if unit == "bytes":
        return fmt.fmt_bytes(value)
    if unit in ("%", "°C", "W"):
        return f"{value:.0f}{unit if unit != '%' else ' %'}"
    return f"{value:.1f} {unit}"


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
            yield Static(Text.assemble("Undo ", (self.entry_id, "bold"), f"?\n{sanitize(self.summary)}\n\n"
                         "The previous configuration becomes active again; the undo is journaled too."))
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
        self.recorder_until: float | None = None  # the recorder's right edge; None: now, following
        self.recorder: RecorderBody | None = None  # what the recorder shows (tests read it)
        self._live_end: float | None = None  # the live span's right edge: the newest rollup

    # ---- layout ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("journal: opening…", id="journal-status")
        yield Static("", id="journal-recorder")
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
        # the recorder's rows change once per 10 s bucket: read them again when that may have
        # happened, or when the operator stepped in time, not on every refresh of the timeline
        shown = self.recorder
        stale = (shown is None or shown.until_asked != self.recorder_until
                 or (self.recorder_until is None and time.time() - shown.read_at >= RECORDER_REFRESH_S))
        self._load(self._filter_text, self.recorder_until, stale)

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
    def _load(self, filter_text: str, recorder_until: float | None = None, recorder: bool = True) -> None:
        from llmos_tui.journal import SOURCES, JournalMissing

        worker = get_current_worker()
        entries: list[Entry] = []
        status = ""
        body: RecorderBody | None = None
        try:
            reader = self._open_reader()
            type_names = {s.type for s in SOURCES} | {s.prefix for s in SOURCES}
            kinds, text = split_filter(filter_text, type_names)
            entries = reader.timeline(kinds=kinds, text=text or None, limit=self.limit)
            if recorder:
                body = self._read_recorder(reader, recorder_until)
            where = reader.path
            status = f"journal {where} · {len(entries)} entries" + (f" · filter: {filter_text}" if filter_text else "")
        except JournalMissing as exc:
            status = f"{exc}"
        except LlmosError as exc:
            status = f"⚠ {exc}"
        except Exception as exc:  # a reader bug must not kill the screen
            status = f"⚠ could not read the journal: {type(exc).__name__}: {exc}"
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, entries, status, body)

    @staticmethod
    def _read_recorder(reader: "Journal", until: float | None) -> RecorderBody:
        """The rollups of one span ending at ``until``; None: live, the span ending at the newest
        rollup (a journal read after the recording stopped shows its last hour, not an empty one)."""
        if until is None:
            newest = reader.rollups.newest_ts()
            if newest is None:
                head = Text.assemble(("flight recorder ", "bold"), ("no telemetry rollups yet", "dim"))
                return RecorderBody(head, [], [], 0.0, 0.0)
            end = newest + 1.0
        else:
            end = until
        since = end - RECORDER_SPAN_S
        res, rows = reader.rollups.span(since, end)
        live = "live · [ older" if until is None else "[ older · ] newer"
        head = Text.assemble(("flight recorder ", "bold"),
                             f"{time.strftime('%m-%d %H:%M', time.localtime(since))} – "
                             f"{time.strftime('%H:%M', time.localtime(end))}",
                             (f"  {res} s means · {len(rows)} rows · {live}", "dim"), no_wrap=True)
        body = RecorderBody(head, rows, recorder_series(rows), since, end)
        body.until_asked = until
        return body

    def action_step_recorder(self, steps: int) -> None:
        """``[``: an hour further back; ``]``: an hour nearer now (following now again once there)."""
        live_end = self._live_end or time.time()
        until = (self.recorder_until or live_end) + steps * RECORDER_SPAN_S
        # back within a quarter span of the live edge (where stepping forward from an hour back
        # lands): live again, following what is recorded
        self.recorder_until = None if until >= live_end - RECORDER_SPAN_S / 4 else until
        self.reload()

    def _show(self, entries: "list[Entry]", status: str, recorder: RecorderBody | None = None) -> None:
        self._loading = False
        self.loads += 1
        self.query_one("#journal-status", Static).update(Text(sanitize(status)))  # the filter's words are not markup
        if recorder is not None:
            self.recorder = recorder
            if recorder.until_asked is None and recorder.rows:
                self._live_end = recorder.until
            strip = self.query_one("#journal-recorder", Static)
            strip.styles.height = recorder.height
            strip.update(recorder)
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
            # Text cells, sanitized: a DataTable parses a str as markup ("[/]" in a model's name raised), and a
            # prompt or a log line may carry escapes
            table.add_row(*(Text(sanitize(c)) for c in (e.id, e.time, e.type, e.kind, e.summary)), key=e.id)
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
            text = sanitize(json.dumps(self._open_reader().show(entry_id), indent=2, default=str, ensure_ascii=False))
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
