"""The doctor screen: live findings, the selected one's evidence and proposed repair, the
history of what the doctor did, and the operator's keys — a Accept, r Reject, s Silence,
k kill switch, c canary now.

The doctor calls back on its own threads; callbacks only ``post_message`` (thread-safe) and
the UI thread redraws. Accept/Reject/Silence and the canary run in thread workers, so a
journal commit or an engine reload never freezes the screen.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static

from llmos_tui.textsafe import sanitize
from llmos_tui.ui import keymap

if TYPE_CHECKING:
    from llmos_tui.doctor import Doctor
    from llmos_tui.engine.probe import CanaryResult
    from llmos_tui.doctor.loop import DoctorEvent

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "red", "critical": "bold white on red"}
NOTIFY_SEVERITY = {"info": "information", "warning": "warning", "error": "error", "critical": "error"}


class DoctorUpdate(Message):
    """Something happened in the doctor (posted from the doctor's threads)."""

    def __init__(self, event: "DoctorEvent") -> None:
        super().__init__()
        self.event = event


class DoctorScreen(Screen[None]):
    BINDINGS = keymap.bindings("DoctorScreen")
    CSS_PATH = "doctor.tcss"

    def __init__(self, doctor: "Doctor", *, readonly: bool = False, silence_s: float | None = None,
                 reset_start_limit: Callable[[], str] | None = None) -> None:
        super().__init__()
        self.doctor = doctor
        self.readonly = readonly
        self.silence_s = silence_s if silence_s is not None else doctor.policy.silence_s
        self.reset_start_limit = reset_start_limit  # the Operator's verb (l); None: not offered here
        self.open_only = False
        self._unsubscribe: Callable[[], None] | None = None
        self._rows: list[int] = []

    # ---- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="doctor-status")
        with Horizontal(id="doctor-body"):
            yield DataTable(id="doctor-findings", cursor_type="row", zebra_stripes=True)
            with Vertical(id="doctor-side"):
                with VerticalScroll(id="doctor-detail-box"):
                    yield Static("no finding selected", id="doctor-detail")
                yield RichLog(id="doctor-history", max_lines=500, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#doctor-findings", DataTable)
        table.add_column("#", key="id", width=4)
        table.add_column("severity", key="sev", width=9)
        table.add_column("detector", key="det", width=20)
        table.add_column("state", key="state", width=9)
        table.add_column("finding", key="title")
        self._unsubscribe = self.doctor.subscribe(lambda event: self.post_message(DoctorUpdate(event)))
        history = self.query_one("#doctor-history", RichLog)
        for action in self.doctor.actions[-50:]:
            history.write(f"{_clock(action['ts'])} {action['repair']} on #{action['finding']}: "
                          f"{action.get('verdict', 'in progress')}")
        for notice in self.doctor.notices[-20:]:
            history.write(f"notice: {notice}")
        self.refresh_findings()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # ---- drawing -------------------------------------------------------------------------
    def refresh_findings(self) -> None:
        table = self.query_one("#doctor-findings", DataTable)
        findings = self.doctor.findings(open_only=self.open_only)
        findings = sorted(findings, key=lambda f: (f.state not in ("open", "proposed", "acting"), -f.id))
        selected = self.selected_id()
        table.clear()
        self._rows = []
        for f in findings:
            style = SEVERITY_STYLE.get(f.severity, "")
            title = Text("REPLAY ", style="bold black on yellow") if self.doctor.replayed else Text()
            title.append(sanitize(f.title) + (f"  ×{f.count}" if f.count > 1 else ""))
            table.add_row(Text(str(f.id)), Text(f.severity, style=style), Text(sanitize(f.detector)), Text(f.state), title,
                          key=str(f.id))  # Text cells: a plugin's detector id is not markup
            self._rows.append(f.id)
        if selected in self._rows:
            table.move_cursor(row=self._rows.index(selected))
        self.refresh_status()
        self.show_detail()

    def refresh_status(self) -> None:
        d = self.doctor
        kill = Text(" KILL SWITCH ON ", style="bold white on red") if d.kill_switch else Text("auto: allowed", "green")
        parts = [Text("doctor  "), kill]
        if d.dry_run:
            parts.append(Text("  dry run", "yellow"))
        if d.busy:
            parts.append(Text("  repair in progress", "bold yellow"))
        if d.start_limit_hit:
            parts.append(Text("  start limit reached: automatic restarts stopped (l or :reset-limit resets it)",
                              "bold red"))
        open_count = len(d.findings(open_only=True))
        parts.append(Text(f"  {open_count} open"))
        canary = d.last_canary
        if canary is not None:
            parts.append(Text(f"  canary {'ok' if canary.ok else 'FAILED'} {_clock(canary.ts)}",
                              "green" if canary.ok else "red"))
        parts.append(Text("  (all findings)" if not self.open_only else "  (open only)", "dim"))
        self.query_one("#doctor-status", Static).update(Text.assemble(*parts))

    def selected_id(self) -> int | None:
        table = self.query_one("#doctor-findings", DataTable)
        if not self._rows or table.cursor_row is None or not 0 <= table.cursor_row < len(self._rows):
            return None
        return self._rows[table.cursor_row]

    def show_detail(self) -> None:
        detail = self.query_one("#doctor-detail", Static)
        fid = self.selected_id()
        if fid is None:
            detail.update("no finding selected")
            return
        try:
            f = self.doctor.get(fid)
        except Exception:  # noqa: BLE001 - it aged out of the list
            detail.update("no finding selected")
            return
        text = Text()
        text.append(f"#{f.id} {f.severity.upper()}  ", style=SEVERITY_STYLE.get(f.severity, ""))
        text.append(sanitize(f.title) + "\n", style="bold")
        text.append(sanitize(f.narrated) + "\n", style="italic")
        ladder = f.evidence.get("ladder")
        if isinstance(ladder, list) and ladder:
            text.append("\nwhat to do (NVIDIA's ladder)\n", style="underline")
            text.append("".join(sanitize(str(step)) + "\n" for step in ladder))
        text.append(f"{f.detector} · {f.state} · seen {f.count}× · first {_clock(f.ts)} · last {_clock(f.last_ts)}\n")
        if f.journal_id:
            text.append(f"journal fnd:{f.journal_id}" + (f" act:{f.action_id}" if f.action_id else "") + "\n", "dim")
        text.append("\nevidence\n", style="underline")
        text.append(sanitize(json.dumps(f.evidence, indent=2, default=str)) + "\n")
        text.append("\nrepair\n", style="underline")
        if f.proposed:
            spec = self.doctor.registry.repairs.get(f.proposed)
            text.append(f"{f.proposed}: {spec.changes if spec else ''}\n")
            if f.state in ("open", "proposed"):
                text.append("a accept · r reject · s silence\n", style="bold")
        elif f.repairs:
            skipped = next((h.get("skipped") for h in reversed(f.history) if h.get("what") == "no_repair"), None)
            text.append("no applicable repair" + (": " + "; ".join(skipped) if skipped else "") + "\n")
        else:
            text.append("none suggested (see the evidence)\n")
        if f.history:
            text.append("\nhistory\n", style="underline")
            for h in f.history:
                extra = {k: v for k, v in h.items() if k not in ("ts", "what")}
                text.append(f"{_clock(h['ts'])} {h['what']} {sanitize(json.dumps(extra, default=str))[:160]}\n")
        detail.update(text)

    # ---- doctor events (UI thread) ---------------------------------------------------------
    def on_doctor_update(self, message: DoctorUpdate) -> None:
        event = message.event
        f = event.finding
        history = self.query_one("#doctor-history", RichLog)
        if event.kind == "finding" and f is not None:
            history.write(f"{_clock(event.ts)} found #{f.id} [{f.severity}] {sanitize(f.title)}")
        elif event.kind in ("action", "proposed", "resolved"):
            label = f"#{f.id} " if f is not None else ""
            history.write(f"{_clock(event.ts)} {event.kind} {label}{sanitize(event.message)}")
        elif event.kind == "notice":
            history.write(f"{_clock(event.ts)} notice: {sanitize(event.message)}")
        if not _app_toasts(self.app):  # an app that toasts on every screen does it
            toast_doctor_event(self.app, event, replayed=self.doctor.replayed)
        if event.kind != "updated" or self.is_current:
            self.refresh_findings()

    @on(DataTable.RowHighlighted, "#doctor-findings")
    def _row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    # ---- keys ----------------------------------------------------------------------------------
    def _decide(self, verb: str, call: Callable[[int], str | None]) -> None:
        if self.readonly:
            self.app.notify("read-only mode: the doctor takes no action", severity="warning")
            return
        fid = self.selected_id()
        if fid is None:
            self.app.notify("select a finding first", severity="warning")
            return

        def work() -> None:
            try:
                error = call(fid)
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback in the UI
                error = str(exc)
            self.app.call_from_thread(self._decided, verb, fid, error)

        self.run_worker(work, thread=True, group="doctor-decide", name=f"doctor-{verb}", exit_on_error=False)

    def _decided(self, verb: str, fid: int, error: str | None) -> None:
        if error:
            self.app.notify(f"{verb} #{fid}: {error}", severity="warning")
        else:
            self.app.notify(f"{verb} #{fid}")
        self.refresh_findings()

    def action_accept(self) -> None:
        self._decide("accepted", self.doctor.accept)

    def action_reject(self) -> None:
        self._decide("rejected", self.doctor.reject)

    def action_silence(self) -> None:
        self._decide(f"silenced for {self.silence_s / 60:.0f} min", lambda fid: self.doctor.silence(fid, self.silence_s))

    def action_kill_switch(self) -> None:
        """Toggled off the UI thread (the doctor journals it); its notice arrives as a toast."""
        wanted = not self.doctor.kill_switch

        def work() -> None:
            self.doctor.kill_switch = wanted
            self.app.call_from_thread(self.refresh_status)

        self.run_worker(work, thread=True, exclusive=True, group="doctor-kill-switch", exit_on_error=False)

    def action_explain(self) -> None:
        """The local model explains the selected finding from the journal's evidence."""
        fid = self.selected_id()
        if fid is None:
            self.app.notify("select a finding first", severity="warning")
            return
        try:
            finding = self.doctor.get(fid)
        except Exception as exc:  # noqa: BLE001 - it aged out of the list
            self.app.notify(str(exc), severity="warning")
            return
        if finding.journal_id is None:
            self.app.notify(f"finding #{fid} is not in the journal (replayed, or no journal): "
                            "explain reads the journal's evidence", severity="warning")
            return
        from llmos_tui.ui.explain_view import open_explain

        open_explain(self.app, finding.journal_id)

    def action_reset_limit(self) -> None:
        """The start limit resets through the Operator (the doctor's rail; journaled as a notice)."""
        reset = self.reset_start_limit
        if reset is None:
            self.app.notify("the start limit resets from the cockpit (l, :reset-limit)", severity="warning")
            return

        def work() -> None:
            try:
                line, ok = reset(), True
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback in the UI
                line, ok = str(exc), False
            self.app.call_from_thread(self.app.notify, line, severity="information" if ok else "warning")
            self.app.call_from_thread(self.refresh_status)

        self.run_worker(work, thread=True, exclusive=True, group="doctor-reset-limit", exit_on_error=False)

    def action_toggle_open(self) -> None:
        self.open_only = not self.open_only
        self.refresh_findings()

    def action_canary(self) -> None:
        if self.doctor.supervisor is None:
            self.app.notify("no engine attached", severity="warning")
            return

        def work() -> None:
            result = self.doctor.run_canary()
            self.app.call_from_thread(self._canary_done, result)

        self.run_worker(work, thread=True, exclusive=True, group="doctor-canary", name="doctor-canary",
                        exit_on_error=False)

    def _canary_done(self, result: "CanaryResult") -> None:
        if result.ok:
            self.app.notify(f"canary ok: {result.gen_tokens} tokens in {result.wall_ms:.0f} ms")
        else:
            self.app.notify(f"canary failed: {result.reason}", severity="error")
        self.refresh_status()


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "--:--:--"


def toast_doctor_event(app: "App[object]", event: "DoctorEvent", *, replayed: bool = False) -> None:
    """A notification for what the operator should see at once, whatever screen is shown."""
    f = event.finding
    mark = "REPLAY " if replayed else ""  # a trace's trouble, not this box's
    if event.kind == "finding" and f is not None and f.severity != "info":
        app.notify(sanitize(f"{f.title}\n{f.narrated}"), title=f"{mark}doctor: {f.severity}",
                   severity=NOTIFY_SEVERITY.get(f.severity, "information"))
    elif event.kind == "action":
        failed = event.data.get("state") == "failed"
        app.notify(sanitize(event.message), title="doctor", severity="error" if failed else "information")
    elif event.kind == "notice":
        app.notify(sanitize(event.message), title="doctor", severity="warning")


def _app_toasts(app: "App[object]") -> bool:
    from llmos_tui.ui.app import LlmosApp

    return isinstance(app, LlmosApp) and app.doctor_toasts
