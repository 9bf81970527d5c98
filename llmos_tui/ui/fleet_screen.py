"""The fleet screen (F7): one row a box — state and since when, GPUs, engine, model, tok/s with
a sparkline, open findings, last change — sorted and filtered; the selected box's findings and
its latest journal entries (the head's copy: also for a box that is down) beside it.

The view (``llmos_tui.fleet.view.Fleet``) polls in a thread worker, one round at a time, only
while the screen is shown; Ray is imported there, on first show, and a missing Ray or cluster is
a line on the screen, not an error. New findings of any box, and a box that drops or comes back,
are toasts marked with the box, whatever screen is shown (once the fleet screen was opened).

Enter on a box opens :class:`BoxScreen`: that box in full (its snapshot: engine, model, params,
GPUs; its open findings with the doctor's narration; its last journal entries from the head's
copy), redrawn after every round of the fleet screen's poll (which goes on while it is shown);
Escape goes back.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static, TextArea
from textual.worker import get_current_worker

from llmos_tui.textsafe import sanitize
from llmos_tui.ui import keymap

if TYPE_CHECKING:
    from llmos_tui.fleet.view import BoxView, Fleet

SPARK = "▁▂▃▄▅▆▇█"
SORTS = ("box", "state", "tok/s", "findings")
RECONNECT_S = 10.0
STATE_ORDER = {"dead": 0, "unavailable": 1, "stale": 2, "alive": 3}
SEVERITY = {"critical": "error", "error": "error", "warning": "warning"}


def sparkline(values: "list[float]") -> str:
    if not values:
        return ""
    top = max(values) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    s = max(0.0, now - ts)
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.0f}m" if s < 5400 else f"{s / 3600:.0f}h"


class FleetScreen(Screen[None]):
    BINDINGS = keymap.bindings("FleetScreen")
    CSS_PATH = "fleet.tcss"

    def __init__(self, journal_file: "str | Path | None" = None, *, address: str | None = None,
                 interval: float = 1.0) -> None:
        super().__init__()
        self.journal_file = journal_file
        self.address = address
        self.interval = interval
        self.fleet: Fleet | None = None
        self.views: list[BoxView] = []
        self.history: dict[str, deque[float]] = {}
        self.sort = "box"
        self.filter_text = ""
        self.problem = ""
        self.rounds = 0  # completed polls (tests wait on this)
        self._polling = False
        self._next_connect = 0.0

    def compose(self) -> ComposeResult:
        yield Static("fleet: connecting…", id="fleet-status")
        yield Input(placeholder="filter: box, state or model", id="fleet-filter")
        with Horizontal(id="fleet-body"):
            yield DataTable(id="fleet-table", cursor_type="row", zebra_stripes=True)
            yield TextArea("", id="fleet-details", read_only=True, soft_wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#fleet-table", DataTable)
        for name in ("Box", "State", "Since", "GPUs", "Engine", "Model", "tok/s", "", "Findings", "Last change"):
            table.add_column(name, key=name or "spark")
        table.focus()
        self.set_interval(self.interval, self._tick)
        self._tick()

    def _tick(self) -> None:
        if self.fleet is None and time.time() < self._next_connect:
            return  # no cluster a moment ago: try again later, not every tick
        watched = self.is_current or (isinstance(self.app.screen, BoxScreen) and self.app.screen.source is self)
        if watched and not self._polling:
            self._polling = True
            self._poll()

    @work(thread=True, group="fleet-poll", exit_on_error=False)
    def _poll(self) -> None:
        worker = get_current_worker()
        views: list[BoxView] = []
        problem = ""
        try:
            if self.fleet is None:
                self.fleet = self._connect()
            views = self.fleet.poll()
        except Exception as exc:  # noqa: BLE001 - a line on the screen, never a traceback
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if self.fleet is None:
                self._next_connect = time.time() + RECONNECT_S
                problem += f" (trying again every {RECONNECT_S:g} s)"
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, views, problem)

    def _connect(self) -> "Fleet":
        from llmos_tui.fleet.view import Fleet
        from llmos_tui.journal import Journal

        Fleet.connect(self.address)
        journal = Journal(self.journal_file, check=False) if self.journal_file is not None else None
        fleet = Fleet(journal)
        fleet.listeners.append(self._changed)
        return fleet

    def _changed(self, now: "BoxView", before: "BoxView | None") -> None:
        """A box's state or findings changed (the poll's thread): toasts marked with the box."""
        toasts: list[tuple[str, str, str]] = []
        if before is not None and before.state != now.state:
            toasts.append((f"{before.state} -> {now.state}" + (f": {now.why}" if now.why else ""),
                           f"box {now.box}", "information" if now.alive else "warning"))
        old = {f.get("id") for f in (before.info.get("findings") or [])} if before is not None else set()
        for f in now.info.get("findings") or []:
            if f.get("id") not in old and f.get("severity") != "info":
                toasts.append((sanitize(str(f.get("title"))), f"box {now.box} · doctor: {f.get('severity')}",
                               SEVERITY.get(str(f.get("severity")), "information")))
        for text, title, severity in toasts:
            self.app.call_from_thread(self.app.notify, text, title=title, severity=severity)  # type: ignore[arg-type]

    def _show(self, views: "list[BoxView]", problem: str) -> None:
        self._polling = False
        self.rounds += 1
        self.problem = problem
        if problem:
            self.query_one("#fleet-status", Static).update(Text(sanitize(f"fleet: {problem}")))  # not markup
            return
        self.views = views
        if isinstance(self.app.screen, BoxScreen) and self.app.screen.source is self:
            self.app.screen.redraw()
        for v in views:
            tps = v.info.get("tok_s")
            series = self.history.setdefault(v.box, deque(maxlen=20))
            series.append(float(tps) if isinstance(tps, (int, float)) and v.alive else 0.0)
        alive = sum(v.alive for v in views)
        self.query_one("#fleet-status", Static).update(Text(sanitize(
            f"fleet: {len(views)} boxes, {alive} alive · sort: {self.sort} (s) · "
            + (f"filter: {self.filter_text}" if self.filter_text else "/ filters"))))
        self._fill()

    def shown_views(self) -> "list[BoxView]":
        text = self.filter_text.lower()
        views = [v for v in self.views if not text or text in f"{v.box} {v.state} {v.info.get('model')}".lower()]
        keys = {
            "box": lambda v: v.box,
            "state": lambda v: (STATE_ORDER.get(v.state, 9), v.box),
            "tok/s": lambda v: (-(v.info.get("tok_s") or 0.0), v.box),
            "findings": lambda v: (-len(v.info.get("findings") or []), v.box),
        }
        return sorted(views, key=keys[self.sort])  # type: ignore[arg-type]

    def _fill(self) -> None:
        table = self.query_one("#fleet-table", DataTable)
        selected = self.selected_box()
        table.clear()
        now = time.time()
        for v in self.shown_views():
            info = v.info
            tps = info.get("tok_s")
            findings = info.get("findings") or []
            change = info.get("last_change") or {}
            gpus = info.get("gpus") or []
            cells = (v.box, v.state, ago(v.since, now), str(len(gpus) or f"{v.ray_gpus:g}"),
                     str(info.get("engine") or "-"), str(info.get("model") or "-")[:24],
                     f"{tps:.1f}" if isinstance(tps, (int, float)) else "-",
                     sparkline(list(self.history.get(v.box, []))), str(len(findings)),
                     str(change.get("message") or "-")[:40])
            # Text cells: a DataTable parses a str as markup, and a box's names and messages are its own
            table.add_row(*(Text(sanitize(c)) for c in cells), key=v.box)
        if selected is not None:
            for index, v in enumerate(self.shown_views()):
                if v.box == selected:
                    table.move_cursor(row=index)
        self._details()

    def selected_box(self) -> str | None:
        table = self.query_one("#fleet-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:  # noqa: BLE001
            return None

    @on(DataTable.RowHighlighted, "#fleet-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._details()

    def _details(self) -> None:
        box = self.selected_box()
        view = next((v for v in self.views if v.box == box), None)
        area = self.query_one("#fleet-details", TextArea)
        if view is None:
            area.text = ""
            return
        lines = [f"box {view.box}: {view.state} since {time.strftime('%H:%M:%S', time.localtime(view.since))}"]
        if view.why:
            lines.append(view.why)
        lines.append(f"engine {view.info.get('engine')} · {view.info.get('summary') or ''}")
        for f in view.info.get("findings") or []:
            lines.append(f"finding #{f.get('id')} [{f.get('severity')}] {f.get('title')}")
        fleet = self.fleet
        if fleet is not None and fleet.journal is not None:
            lines.append("")
            lines.append("journal (head's copy):")
            try:
                for _b, e in fleet.journal.fleet.entries(view.box, limit=12):
                    lines.append(f"{e.id}  {e.time}  {e.kind}  {e.summary}")
            except Exception as exc:  # noqa: BLE001
                lines.append(f"(could not read: {exc})")
        area.text = sanitize("\n".join(lines))

    # ---- keys ---------------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#fleet-table")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open_box()

    def action_open_box(self) -> None:
        """Enter: the selected box in full."""
        box = self.selected_box()
        if box is not None:
            self.app.push_screen(BoxScreen(self, box))

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self._fill()

    def action_focus_filter(self) -> None:
        self.query_one("#fleet-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#fleet-table", DataTable).focus()

    @on(Input.Changed, "#fleet-filter")
    def _filter(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._fill()

    def on_unmount(self) -> None:
        fleet = self.fleet
        if fleet is not None and fleet.journal is not None:
            fleet.journal.close()


class BoxScreen(Screen[None]):
    """One box in full, from its fleet screen's data (``source``: its views and the head's journal):
    redrawn after each of its polls, and kept polling while this screen is shown."""

    BINDINGS = keymap.bindings("BoxScreen")
    CSS_PATH = "fleet.tcss"

    def __init__(self, source: FleetScreen, box: str) -> None:
        super().__init__()
        self.source = source
        self.box = box
        self.redraws = 0  # tests wait on this
        self.shown_round = -1  # the source's round last drawn
        self._composed = False

    def compose(self) -> ComposeResult:
        yield Static(f"box {self.box}", id="box-title")
        yield TextArea("", id="box-body", read_only=True, soft_wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        self._composed = True
        self.redraw()
        self.set_interval(self.source.interval, self.source._tick)  # noqa: SLF001 - its poll goes on

    def view(self) -> "BoxView | None":
        return next((v for v in self.source.views if v.box == self.box), None)

    def redraw(self) -> None:
        if not self._composed:  # a round that ends while it is being pushed: on_mount draws it
            return
        self.redraws += 1
        self.shown_round = self.source.rounds
        now = time.time()
        self.query_one("#box-title", Static).update(Text(sanitize(
            f"box {self.box} · round {self.source.rounds} · {time.strftime('%H:%M:%S', time.localtime(now))}"
            + (f" · {self.source.problem}" if self.source.problem else "") + " · Esc: back")))
        self.query_one("#box-body", TextArea).text = sanitize("\n".join(box_lines(self.view(), self.source.fleet,
                                                                                  self.box, now)))

    def action_back(self) -> None:
        self.app.pop_screen()


def box_lines(view: "BoxView | None", fleet: "Fleet | None", box: str, now: float, entries: int = 20) -> list[str]:
    """What :class:`BoxScreen` shows of ``box``."""
    lines: list[str] = []
    if view is None:
        lines.append(f"box {box}: not in the last round of the fleet view")
    else:
        info = view.info
        lines.append(f"box {box}: {view.state} since {time.strftime('%H:%M:%S', time.localtime(view.since))} "
                     f"({ago(view.since, now)})" + (f" · last seen alive {ago(view.seen, now)} ago" if view.seen else ""))
        if view.why:
            lines.append(f"  {view.why}")
        tps = info.get("tok_s")
        lines += ["", "snapshot" + (f" (as of {ago(info.get('ts'), now)} ago)" if not view.alive and info.get("ts") else ""),
                  f"  engine   {info.get('engine') or '-'} · {info.get('summary') or ''}",
                  f"  model    {info.get('model') or '-'}  {info.get('model_path') or ''}",
                  f"  tok/s    {tps:.1f}" if isinstance(tps, (int, float)) else "  tok/s    -",
                  f"  daemon   pid {info.get('daemon_pid') or '-'} · kill switch "
                  f"{'on' if info.get('kill_switch') else 'off'}" + (" · read-only" if info.get("readonly") else ""),
                  f"  config   {('cfg:' + str(info['active_config'])) if info.get('active_config') else '-'}"]
        gpus = info.get("gpus") or []
        for g in gpus:
            lines.append(f"  gpu {g.get('index')}  {g.get('name') or '?'}  util {g.get('util') if g.get('util') is not None else '-'}%"
                         f"  mem {g.get('mem_used') or '-'}/{g.get('mem_total') or '-'}")
        if not gpus:
            lines.append(f"  gpus     {view.ray_gpus:g} (as Ray accounts them)")
        change = info.get("last_change") or {}
        if change:
            lines.append(f"  last change: {change.get('state')} · {change.get('message') or ''}")
        params = info.get("params") or {}
        lines += ["", "params"]
        lines += [f"  {k} = {v}" for k, v in sorted(params.items()) if v is not None] or ["  -"]
        findings = info.get("findings") or []
        lines += ["", f"open findings ({len(findings)})"]
        for f in findings:
            lines.append(f"  #{f.get('id')} [{f.get('severity')}] {f.get('title')}  ({f.get('detector')})")
            if f.get("narration"):
                kind = f" ({f.get('narration_kind')})" if f.get("narration_kind") else ""
                lines.append(f"      {f.get('narration')}{kind}")
            if f.get("repairs"):
                lines.append(f"      repairs: {', '.join(str(r) for r in f['repairs'])}")
        if not findings:
            lines.append("  none")
    lines += ["", "journal (head's copy, newest first)"]
    if fleet is None or fleet.journal is None:
        lines.append("  (the fleet view keeps no journal)")
    else:
        try:
            rows = fleet.journal.fleet.entries(box, limit=entries)
        except Exception as exc:  # noqa: BLE001 - a line on the screen
            lines.append(f"  (could not read: {exc})")
        else:
            lines += [f"  {e.id:<14} {e.time}  {e.type:<8} {e.kind:<12} {e.summary}" for _b, e in rows] or ["  none"]
    return lines
