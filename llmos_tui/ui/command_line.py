"""The `:` command line (k9s style): every screen and action by name, with completion.

``:doctor``, ``:journal kind:crashed``, ``:tune``, ``:undo cfg:12``, ``:theme light``,
``:explain 3``, ``:quit`` … Tab completes (the command, then its argument: theme names,
finding ids, undoable journal entries, journal kinds); Up/Down pick a suggestion; Enter runs;
Esc closes. Commands that change the engine ask first, and are greyed out with ``--readonly``.

The registry (:func:`commands`) is plain data over the app, so the palette, the help and the
tests read the same list. What a command does is the app's own action or the core's
(``operator.undo`` is the change transaction), never a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

JOURNAL_KINDS = ("config", "event", "finding", "action", "study", "trial", "chat", "kind:crashed",
                 "kind:loaded", "kind:undo", "kind:tuner", "kind:repair", "kind:load_failed")


@dataclass
class Command:
    name: str
    help: str
    run: Callable[[Any, str], Any]  # (app, argument) -> None
    args: str = ""  # what the argument is, for the suggestion line ("NAME", "[FILTER]", "ID")
    destructive: bool = False  # changes the engine or what the doctor may do: asks first, read-only greys it
    aliases: tuple[str, ...] = ()
    complete: Callable[[Any], list[str]] | None = None  # (app) -> candidate arguments
    needs_arg: bool = False
    confirm: Callable[[Any, str], str] | None = None  # the question, when destructive depends on the argument
    is_destructive: Callable[[str], bool] | None = None

    def destructive_for(self, arg: str) -> bool:
        return self.is_destructive(arg) if self.is_destructive is not None else self.destructive


@dataclass
class Suggestion:
    insert: str  # what the line becomes
    label: str
    help: str
    disabled: bool = False
    why: str = ""


# ---- the registry -------------------------------------------------------------------------------
def commands(app: Any) -> list[Command]:
    """Every command, in the order the suggestions list them."""

    def mode(name: str) -> Callable[[Any, str], None]:
        return lambda a, _arg: a.action_mode(name)

    def journal(a: Any, arg: str) -> None:
        a.action_mode("journal")
        if arg and "journal" in a.screen_factories:
            a.call_after_refresh(_set_journal_filter, a, arg)

    def open_finding_ids(a: Any) -> list[str]:
        doctor = getattr(a.operator, "doctor", None)
        if doctor is None:
            return []
        return [str(f.id) for f in sorted(doctor.findings(open_only=True), key=lambda f: -f.id)]

    return [
        Command("dashboard", "the telemetry dashboard", mode("dashboard"), aliases=("dash", "gpu")),
        Command("chat", "chat with the model", mode("chat")),
        Command("doctor", "findings, evidence, repairs", mode("doctor"), aliases=("dr",)),
        Command("journal", "the journal, optionally filtered (kind:crashed, finding, text…)", journal,
                args="[FILTER]", aliases=("j", "log"), complete=lambda a: list(JOURNAL_KINDS)),
        Command("tune", "the tuning screen", _open_tune, aliases=("tuning",)),
        Command("help", "every key and its binding id", lambda a, _arg: a.action_help(), aliases=("keys", "?")),
        Command("theme", "switch the theme (kept in the config)", _theme, args="NAME", needs_arg=True,
                complete=_theme_names),
        Command("undo", "revert a journaled change (cfg:N or act:N) through the change transaction", _undo,
                args="ID", destructive=True, needs_arg=True, complete=lambda a: list(getattr(a, "undoable_ids", [])),
                confirm=lambda a, arg: f"Undo {arg}? The previous configuration is applied to the engine "
                                       f"(the engine reloads) and the undo is journaled."),
        Command("restart", "restart the engine with its current settings", lambda a, _arg: a.action_restart_engine(),
                destructive=True, confirm=lambda a, arg: "Restart the engine? A reply in progress is lost."),
        Command("explain", "ask the local model to explain a finding (from the journal's evidence)", _explain,
                args="fnd:N", needs_arg=True, complete=_explain_ids),
        Command("accept", "apply the repair the doctor proposes for finding N", _doctor_verb("accept"),
                args="N", destructive=True, needs_arg=True, complete=open_finding_ids,
                confirm=lambda a, arg: f"Apply the proposed repair of finding #{arg}? It changes the engine "
                                       f"(journaled, verified, rolled back if it fails)."),
        Command("reject", "reject the repair proposed for finding N", _doctor_verb("reject"), args="N",
                needs_arg=True, complete=open_finding_ids),
        Command("silence", "silence finding N for the doctor's silence period", _doctor_verb("silence"), args="N",
                needs_arg=True, complete=open_finding_ids),
        Command("canary", "run the canary prompt now", _canary),
        Command("killswitch", "stop (on) or allow (off) automatic repairs", _kill_switch, args="on|off",
                needs_arg=True, complete=lambda a: ["on", "off"],
                is_destructive=lambda arg: arg.strip().lower() == "off",
                confirm=lambda a, arg: "Turn the kill switch off? The doctor may then change the engine on its own."),
        Command("adapt", "online thread learner: off, shadow (shows what it would do) or on", _adapt,
                args="off|shadow|on", needs_arg=True, complete=lambda a: ["off", "shadow", "on"],
                is_destructive=lambda arg: arg.strip().lower() == "on",
                confirm=lambda a, arg: "Let the learner pick the engine's threads per request?"),
        Command("new", "start a new conversation", _chat_action("action_new_chat")),
        Command("chats", "resume an earlier chat", _chat_action("action_open_chat")),
        Command("quit", "leave llmos-tui", lambda a, _arg: a.exit(0), aliases=("q", "exit")),
    ]


def find(app: Any, name: str) -> Command | None:
    name = name.strip().lower()
    for command in commands(app):
        if name == command.name or name in command.aliases:
            return command
    return None


def suggest(app: Any, line: str, *, readonly: bool = False) -> list[Suggestion]:
    """What Tab can complete ``line`` to: commands first, then the chosen command's arguments."""
    text = line.lstrip(":").lstrip()
    head, space, rest = text.partition(" ")
    out: list[Suggestion] = []
    if not space:
        word = head.lower()
        every = commands(app)
        ranked = [c for c in every if c.name.startswith(word) or any(a.startswith(word) for a in c.aliases)]
        ranked += [c for c in every if c not in ranked and word and word in c.name]
        for c in ranked:
            off = readonly and c.destructive
            out.append(Suggestion(c.name + (" " if c.args else ""), c.name + (f" {c.args}" if c.args else ""),
                                  c.help, off, "read-only" if off else ""))
        return out
    command = find(app, head)
    if command is None or command.complete is None:
        return out
    arg = rest.strip()
    try:
        candidates = command.complete(app)
    except Exception:  # noqa: BLE001 - a completion that fails offers nothing
        candidates = []
    matches = [c for c in candidates if c.lower().startswith(arg.lower())]
    matches += [c for c in candidates if c not in matches and arg and arg.lower() in c.lower()]
    for candidate in matches[:30]:
        off = readonly and command.destructive_for(candidate)
        out.append(Suggestion(f"{command.name} {candidate}", f"{command.name} {candidate}", command.help, off,
                              "read-only" if off else ""))
    return out


def run(app: Any, line: str) -> None:
    """Run one command line: unknown, incomplete or read-only ones are one line; destructive ones ask."""
    text = line.strip().lstrip(":").strip()
    if not text:
        return
    head, _space, arg = text.partition(" ")
    arg = arg.strip()
    command = find(app, head)
    if command is None:
        close = [s.label for s in suggest(app, head)][:3]
        app.notify(f"unknown command :{head}" + (f" (did you mean {', '.join(close)}?)" if close else
                                                 " (Tab lists the commands)"), severity="warning")
        return
    if command.needs_arg and not arg:
        app.notify(f":{command.name} needs {command.args}: {command.help}", severity="warning")
        return
    destructive = command.destructive_for(arg)
    if destructive and app.operator.config.readonly:
        app.notify(f"read-only mode: :{command.name} is disabled", severity="warning")
        return
    if destructive:
        question = command.confirm(app, arg) if command.confirm else f"Run :{text}?"

        def answered(yes: bool | None) -> None:
            if yes:
                command.run(app, arg)

        app.push_screen(Confirm(question), answered)
        return
    command.run(app, arg)


# ---- what the commands do ----------------------------------------------------------------------
def _set_journal_filter(app: Any, text: str) -> None:
    try:
        app.screen.query_one("#journal-filter", Input).value = text
    except Exception:  # noqa: BLE001 - another journal screen, without a filter box
        app.notify("the journal screen has no filter here", severity="warning")


def _open_tune(app: Any, _arg: str) -> None:
    mode = next((m for m in ("tuning", "tune") if m in app.screen_factories), None)
    if mode is None:
        app.notify("the tuning screen is not available here (`llmos-tui tune` runs a study)", severity="warning")
        return
    app.action_mode(mode)


def _theme_names(app: Any) -> list[str]:
    from llmos_tui.ui.themes import SHIPPED

    names = [n for n in SHIPPED if n in app.available_themes]
    return names + sorted(n for n in app.available_themes if n not in names)


def _theme(app: Any, name: str) -> None:
    app.switch_theme(name)


def _undo(app: Any, entry_id: str) -> None:
    from llmos_tui.journal import parse_entry_id

    try:
        parse_entry_id(entry_id)
    except Exception as exc:  # noqa: BLE001
        app.notify(str(exc), severity="warning")
        return
    app.notify(f"undoing {entry_id}…")

    def work() -> None:
        try:
            result = app.operator.undo(entry_id)
            message = getattr(result, "message", None) or str(result)
            ok = getattr(result, "ok", True)
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback in the UI
            message, ok = str(exc), False
        app.call_from_thread(app.notify, message, severity="information" if ok else "warning")

    app.run_worker(work, thread=True, group="engine", exclusive=True, exit_on_error=False)


def _explain(app: Any, arg: str) -> None:
    """``fnd:N`` is the journal's finding N; ``N`` / ``#N`` the doctor screen's finding N."""
    from llmos_tui.ui.explain_view import open_explain

    text = arg.strip()
    try:
        if text.startswith("fnd:"):
            journal_id = int(text[4:])
        else:
            doctor = getattr(app.operator, "doctor", None)
            if doctor is None:
                app.notify("the doctor is not running: give the journal's id, fnd:N", severity="warning")
                return
            finding = doctor.get(int(text.removeprefix("#")))
            if finding.journal_id is None:
                app.notify(f"finding #{finding.id} is not in the journal: explain reads the journal's evidence",
                           severity="warning")
                return
            journal_id = finding.journal_id
    except ValueError:
        app.notify(f":explain takes fnd:N (journal) or N (doctor), got {arg!r}", severity="warning")
        return
    except Exception as exc:  # noqa: BLE001 - no such finding
        app.notify(str(exc), severity="warning")
        return
    open_explain(app, journal_id)


def _explain_ids(app: Any) -> list[str]:
    doctor = getattr(app.operator, "doctor", None)
    if doctor is None:
        return []
    return [f"fnd:{f.journal_id}" for f in sorted(doctor.findings(), key=lambda f: -f.id) if f.journal_id]


def _doctor_verb(verb: str) -> Callable[[Any, str], None]:
    def go(app: Any, arg: str) -> None:
        doctor = getattr(app.operator, "doctor", None)
        if doctor is None:
            app.notify("the doctor is not running", severity="warning")
            return
        try:
            fid = int(arg.removeprefix("#"))
        except ValueError:
            app.notify(f":{verb} takes a finding number, got {arg!r}", severity="warning")
            return
        if verb != "silence" and app.operator.config.readonly:
            app.notify("read-only mode: the doctor takes no action", severity="warning")
            return
        call = getattr(doctor, verb)

        def work() -> None:
            try:
                error = call(fid)
            except Exception as exc:  # noqa: BLE001
                error = str(exc)
            done = {"accept": "accepted", "reject": "rejected", "silence": "silenced"}[verb]
            app.call_from_thread(app.notify, f"{verb} #{fid}: {error}" if error else f"{done} #{fid}",
                                 severity="warning" if error else "information")

        app.run_worker(work, thread=True, group="doctor-decide", exit_on_error=False)

    return go


def _canary(app: Any, _arg: str) -> None:
    doctor = getattr(app.operator, "doctor", None)
    if doctor is None or doctor.supervisor is None:
        app.notify("no doctor with an engine here", severity="warning")
        return

    def work() -> None:
        result = doctor.run_canary()
        text = f"canary ok: {result.gen_tokens} tokens in {result.wall_ms:.0f} ms" if result.ok else \
            f"canary failed: {result.reason}"
        app.call_from_thread(app.notify, text, severity="information" if result.ok else "error")

    app.run_worker(work, thread=True, group="doctor-canary", exclusive=True, exit_on_error=False)


def _adapt(app: Any, arg: str) -> None:
    try:
        app.notify(app.operator.set_adapt_mode(arg.strip().lower()))
    except Exception as exc:  # noqa: BLE001 - one line, never a crash
        app.notify(str(exc), severity="warning")


def _kill_switch(app: Any, arg: str) -> None:
    doctor = getattr(app.operator, "doctor", None)
    if doctor is None:
        app.notify("the doctor is not running", severity="warning")
        return
    wanted = arg.strip().lower()
    if wanted not in ("on", "off"):
        app.notify(":killswitch takes on or off", severity="warning")
        return

    def work() -> None:
        doctor.kill_switch = wanted == "on"

    app.run_worker(work, thread=True, exclusive=True, group="doctor-kill-switch", exit_on_error=False)


def _chat_action(name: str) -> Callable[[Any, str], None]:
    def go(app: Any, _arg: str) -> None:
        app.action_mode("chat")

        def then() -> None:
            action = getattr(app.screen, name, None)
            if action is not None:
                action()

        app.call_after_refresh(then)

    return go


# ---- the widgets ---------------------------------------------------------------------------------
class Confirm(ModalScreen[bool]):
    """y / n before a command that changes the engine."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="command.confirm_yes"),
        Binding("n,escape", "answer(False)", "No", id="command.confirm_no"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 70; max-width: 100%; height: auto; padding: 1 2; border: thick $warning;
                         background: $surface; }
    Confirm Horizontal { height: auto; margin-top: 1; }
    Confirm Button { margin-right: 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            with Horizontal():
                yield Button("Yes (y)", variant="warning", id="yes")
                yield Button("No (n)", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class CommandInput(Input):
    """The line itself: Tab completes, Up/Down walk the suggestions (instead of focus moves)."""

    BINDINGS = [
        Binding("tab", "complete", "Complete", show=False, id="command.complete"),
        Binding("down", "move(1)", "Next suggestion", show=False, id="command.next"),
        Binding("up", "move(-1)", "Previous suggestion", show=False, id="command.previous"),
    ]

    def action_complete(self) -> None:
        self.screen.complete()  # type: ignore[attr-defined]

    def action_move(self, step: int) -> None:
        self.screen.move(step)  # type: ignore[attr-defined]


class CommandLine(ModalScreen[str | None]):
    """The line at the bottom of the screen, its suggestions above it."""

    BINDINGS = [Binding("escape", "close", "Close", id="command.close")]
    DEFAULT_CSS = """
    CommandLine { align: left bottom; background: $background 40%; }
    CommandLine > Vertical { height: auto; max-height: 60%; width: 100%; background: $surface; }
    CommandLine OptionList { height: auto; max-height: 12; border: none; padding: 0 1; background: $surface; }
    CommandLine CommandInput { border: tall $accent; }
    """

    def __init__(self, readonly: bool = False, initial: str = "") -> None:
        super().__init__()
        self.readonly = readonly
        self.initial = initial
        self.suggestions: list[Suggestion] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield OptionList(id="command-suggestions")
            yield CommandInput(value=self.initial, placeholder="command · Tab completes · Enter runs · Esc closes",
                               id="command-input")

    def on_mount(self) -> None:
        field_ = self.query_one(CommandInput)
        field_.focus()
        field_.cursor_position = len(field_.value)
        self.update_suggestions(field_.value)
        self.read_undoable()

    @work(thread=True, exclusive=True, group="command-undoable", exit_on_error=False)
    def read_undoable(self) -> None:
        """The journal's undoable entries, newest first, for `:undo` completion (read off the UI thread)."""
        operator = self.app.operator  # type: ignore[attr-defined]
        if getattr(operator, "journal_writer", None) is None:
            return
        from llmos_tui.journal import Journal

        try:
            with Journal(operator.config.journal_file, readonly=True, check=False) as journal:
                ids = [e.id for e in journal.timeline(kinds="config,action", limit=40) if e.undoable]
        except Exception:  # noqa: BLE001 - no completion, the command still works
            return
        self.app.undoable_ids = ids  # type: ignore[attr-defined]
        self.app.call_from_thread(lambda: self.is_attached and self.update_suggestions(self.query_one(CommandInput).value))

    @on(Input.Changed, "#command-input")
    def _changed(self, event: Input.Changed) -> None:
        self.update_suggestions(event.value)

    def update_suggestions(self, line: str) -> None:
        self.suggestions = suggest(self.app, line, readonly=self.readonly)
        options = self.query_one(OptionList)
        options.clear_options()
        for s in self.suggestions:
            label = Text(s.label, style="dim strike" if s.disabled else "bold")
            label.append("  " + s.help, style="dim")
            if s.why:
                label.append(f"  ({s.why})", style="dim italic")
            options.add_option(Option(label, disabled=s.disabled))
        options.display = bool(self.suggestions)
        if self.suggestions:
            first = next((i for i, s in enumerate(self.suggestions) if not s.disabled), None)
            options.highlighted = first

    def move(self, step: int) -> None:
        options = self.query_one(OptionList)
        if not self.suggestions:
            return
        if step > 0:
            options.action_cursor_down()
        else:
            options.action_cursor_up()

    def complete(self) -> None:
        options = self.query_one(OptionList)
        index = options.highlighted
        if index is None or not 0 <= index < len(self.suggestions):
            return
        chosen = self.suggestions[index]
        field_ = self.query_one(CommandInput)
        field_.value = chosen.insert
        field_.cursor_position = len(field_.value)

    @on(OptionList.OptionSelected, "#command-suggestions")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.complete()
        self.query_one(CommandInput).focus()

    @on(Input.Submitted, "#command-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_close(self) -> None:
        self.dismiss(None)


def palette_commands(app: Any) -> list[Any]:
    """The same commands in Textual's command palette (Ctrl+P): each screen and argument-free action,
    and one entry per theme. Destructive ones still ask; with --readonly they are left out."""
    from textual.app import SystemCommand

    readonly = app.operator.config.readonly
    out = []
    for command in commands(app):
        if command.needs_arg or (command.destructive and readonly):
            continue
        out.append(SystemCommand(f":{command.name}", command.help, lambda c=command.name: run(app, c)))
    for name in _theme_names(app)[:12]:
        out.append(SystemCommand(f":theme {name}", "switch the theme (kept in the config)",
                                 lambda n=name: run(app, f"theme {n}")))
    return out
