"""The `:` command line (k9s style): every screen and action by name, with completion.

``:doctor``, ``:journal kind:crashed``, ``:tune``, ``:undo cfg:12``, ``:theme light``,
``:explain 3``, ``:reset-limit``, ``:quit`` … Tab completes (the command, then its argument:
theme names, finding ids, undoable journal entries, journal kinds); Up/Down pick a
suggestion; Enter runs; Esc closes. Commands that change the engine ask first, and are greyed
out with ``--readonly``.

The commands are the core's one table (``llmos_tui.core.commands``: the same as the console's
``/`` commands and the help screen's list) plus the TUI's own few (screens, theme, explain,
chat, quit) in :data:`FACE`. A core command runs its handler on a worker thread over the
Operator and its line comes back as a notice; nothing here changes the engine itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from llmos_tui.core import commands as core
from llmos_tui.core.commands import JOURNAL_KINDS, Command
from llmos_tui.ui import keymap
from llmos_tui.ui.themes import SHIPPED

if TYPE_CHECKING:
    from llmos_tui.ui.app import LlmosApp


@dataclass(frozen=True)
class FaceCommand:
    """A command only the TUI can carry out (a screen, the theme, a view): its spec in the
    core's shape, and what the app does."""

    spec: Command
    run: Callable[["LlmosApp", str], None]
    complete: Callable[["LlmosApp"], list[str]] | None = None


@dataclass
class Suggestion:
    insert: str  # what the line becomes
    label: str
    help: str
    disabled: bool = False
    why: str = ""


# ---- the TUI's own commands --------------------------------------------------------------------
def _mode(name: str) -> Callable[["LlmosApp", str], None]:
    return lambda app, _arg: app.action_mode(name)


def _journal(app: "LlmosApp", arg: str) -> None:
    app.action_mode("journal")
    if arg and "journal" in app.screen_factories:
        app.call_after_refresh(_set_journal_filter, app, arg)


def _set_journal_filter(app: "LlmosApp", text: str) -> None:
    try:
        app.screen.query_one("#journal-filter", Input).value = text
    except Exception:  # noqa: BLE001 - another journal screen, without a filter box
        app.notify("the journal screen has no filter here", severity="warning")


def _open_tune(app: "LlmosApp", _arg: str) -> None:
    if "tuning" not in app.screen_factories:
        app.notify("the tuning screen is not available here (`llmos-tui tune` runs a study)", severity="warning")
        return
    app.action_mode("tuning")


def _theme_names(app: "LlmosApp") -> list[str]:
    names = [n for n in SHIPPED if n in app.available_themes]
    return names + sorted(n for n in app.available_themes if n not in names)


def _explain(app: "LlmosApp", arg: str) -> None:
    """``fnd:N`` is the journal's finding N; ``N`` / ``#N`` the doctor screen's finding N."""
    from llmos_tui.ui.explain_view import open_explain

    text = arg.strip()
    doctor = app.operator.doctor
    try:
        if text.startswith("fnd:"):
            journal_id = int(text[4:])
        else:
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


def _explain_ids(app: "LlmosApp") -> list[str]:
    doctor = app.operator.doctor
    if doctor is None:
        return []
    return [f"fnd:{f.journal_id}" for f in sorted(doctor.findings(), key=lambda f: -f.id) if f.journal_id]


def _chat_action(name: str) -> Callable[["LlmosApp", str], None]:
    def go(app: "LlmosApp", _arg: str) -> None:
        app.action_mode("chat")

        def then() -> None:
            from llmos_tui.ui.chat_screen import ChatScreen

            screen = app.screen
            if isinstance(screen, ChatScreen):
                if name == "new":
                    screen.action_new_chat()
                else:
                    screen.action_open_chat()

        app.call_after_refresh(then)

    return go


FACE: tuple[FaceCommand, ...] = (
    FaceCommand(Command("dashboard", "the telemetry dashboard", aliases=("dash", "gpu")), _mode("dashboard")),
    FaceCommand(Command("chat", "chat with the model"), _mode("chat")),
    FaceCommand(Command("doctor", "findings, evidence, repairs", aliases=("dr",)), _mode("doctor")),
    FaceCommand(Command("journal", "the journal, optionally filtered (kind:crashed, finding, text…)",
                        args="[FILTER]", aliases=("j", "log")), _journal, lambda app: list(JOURNAL_KINDS)),
    FaceCommand(Command("tune", "the tuning screen", aliases=("tuning",)), _open_tune),
    FaceCommand(Command("fleet", "every box of the fleet (Ray): state, tok/s, findings"), _mode("fleet")),
    FaceCommand(Command("help", "every key and its binding id, and these commands", aliases=("keys", "?")),
                lambda app, _arg: app.action_help()),
    FaceCommand(Command("theme", "switch the theme (kept in the config)", args="NAME", needs_arg=True),
                lambda app, name: app.switch_theme(name), _theme_names),
    FaceCommand(Command("explain", "ask the local model to explain a finding (from the journal's evidence)",
                        args="fnd:N", needs_arg=True), _explain, _explain_ids),
    FaceCommand(Command("new", "start a new conversation"), _chat_action("new")),
    FaceCommand(Command("chats", "resume an earlier chat"), _chat_action("chats")),
    FaceCommand(Command("quit", "leave llmos-tui", aliases=("q", "exit")), lambda app, _arg: app.exit(0)),
)
_FACE = {f.spec.name: f for f in FACE}


def commands() -> list[Command]:
    """Every command of the `:` line, in the order the suggestions list them."""
    return core.merged([f.spec for f in FACE])


def find(name: str) -> Command | None:
    return core.find(commands(), name)


def candidates(app: "LlmosApp", command: Command, cache: dict[str, list[str]] | None = None) -> list[str]:
    """The completion source of ``command``: the face's (over the app) or the core's (over the
    Operator). A slow source (it reads the journal) comes only from ``cache``."""
    face = _FACE.get(command.name)
    if face is not None:
        return face.complete(app) if face.complete is not None else []
    if cache is not None and command.name in cache:
        return cache[command.name]
    if command.complete is None or command.slow:
        return []
    return command.complete(app.operator)


def suggest(app: "LlmosApp", line: str, *, readonly: bool = False,
            cache: dict[str, list[str]] | None = None) -> list[Suggestion]:
    """What Tab can complete ``line`` to: commands first, then the chosen command's arguments."""
    text = line.lstrip(":").lstrip()
    head, space, rest = text.partition(" ")
    out: list[Suggestion] = []
    every = commands()
    if not space:
        word = head.lower()
        ranked = [c for c in every if c.name.startswith(word) or any(a.startswith(word) for a in c.aliases)]
        ranked += [c for c in every if c not in ranked and word and word in c.name]
        for c in ranked:
            off = readonly and c.changes_engine is True
            out.append(Suggestion(c.name + (" " if c.args else ""), c.usage(), c.help, off,
                                  "read-only" if off else ""))
        return out
    command = core.find(every, head)
    if command is None:
        return out
    arg = rest.strip()
    try:
        options = candidates(app, command, cache)
    except Exception:  # noqa: BLE001 - a completion that fails offers nothing
        options = []
    matches = [c for c in options if c.lower().startswith(arg.lower())]
    matches += [c for c in options if c not in matches and arg and arg.lower() in c.lower()]
    for candidate in matches[:30]:
        off = readonly and command.changes_engine_for(candidate)
        out.append(Suggestion(f"{command.name} {candidate}", f"{command.name} {candidate}", command.help, off,
                              "read-only" if off else ""))
    return out


def run(app: "LlmosApp", line: str) -> None:
    """Run one command line: unknown, incomplete or read-only ones are one line; engine-changing
    ones ask first; a core command runs on a worker thread and says its line as a notice."""
    name, arg = core.split(line)
    if not name:
        return
    command = find(name)
    if command is None:
        close = [s.label for s in suggest(app, name)][:3]
        app.notify(f"unknown command :{name}" + (f" (did you mean {', '.join(close)}?)" if close else
                                                 " (Tab lists the commands)"), severity="warning")
        return
    why = core.refusal(app.operator, command, arg, ":")
    if why:
        app.notify(why, severity="warning")
        return
    face = _FACE.get(command.name)
    if face is not None:
        face.run(app, arg)
        return
    if command.changes_engine_for(arg):
        def answered(yes: bool | None) -> None:
            if yes:
                _execute(app, command, arg)

        app.push_screen(Confirm(command.question(arg)), answered)
        return
    _execute(app, command, arg)


def _execute(app: "LlmosApp", command: Command, arg: str) -> None:
    operator = app.operator
    if command.changes_engine_for(arg):
        app.notify(f":{command.name} {arg}".rstrip() + "…")

    def work() -> None:
        outcome = core.execute(operator, command, arg, ":")
        app.call_from_thread(app.notify, outcome.text, severity="information" if outcome.ok else "warning")

    app.run_worker(work, thread=True, group=f"command-{command.name}",
                   exclusive=command.changes_engine_for(arg), exit_on_error=False)


# ---- the widgets ---------------------------------------------------------------------------------
class Confirm(ModalScreen[bool]):
    """y / n before a command that changes the engine."""

    BINDINGS = keymap.bindings("Confirm")
    CSS_PATH = "command_line.tcss"

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

    BINDINGS = keymap.bindings("CommandInput")

    def action_complete(self) -> None:
        if isinstance(self.screen, CommandLine):
            self.screen.complete()

    def action_move(self, step: int) -> None:
        if isinstance(self.screen, CommandLine):
            self.screen.move(step)


class CommandLine(ModalScreen[str | None]):
    """The line at the bottom of the screen, its suggestions above it."""

    BINDINGS = keymap.bindings("CommandLine")
    CSS_PATH = "command_line.tcss"

    def __init__(self, owner: "LlmosApp", initial: str = "") -> None:
        super().__init__()
        self.owner = owner
        self.readonly = owner.operator.config.readonly
        self.initial = initial
        self.suggestions: list[Suggestion] = []
        self.cache: dict[str, list[str]] = {}  # completions of the slow sources (they read the journal)

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
        self.read_slow_completions()

    @work(thread=True, exclusive=True, group="command-complete", exit_on_error=False)
    def read_slow_completions(self) -> None:
        """The slow completion sources (`:undo`'s journal entries), read off the UI thread."""
        operator = self.owner.operator
        for command in commands():
            if command.slow and command.complete is not None:
                try:
                    self.cache[command.name] = command.complete(operator)
                except Exception:  # noqa: BLE001 - no completion, the command still works
                    self.cache[command.name] = []
        self.app.call_from_thread(self._refresh_if_shown)

    def _refresh_if_shown(self) -> None:
        if self.is_attached:
            self.update_suggestions(self.query_one(CommandInput).value)

    @on(Input.Changed, "#command-input")
    def _changed(self, event: Input.Changed) -> None:
        self.update_suggestions(event.value)

    def update_suggestions(self, line: str) -> None:
        self.suggestions = suggest(self.owner, line, readonly=self.readonly, cache=self.cache)
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


def palette_commands(app: "LlmosApp") -> list[SystemCommand]:
    """The same commands in Textual's command palette (Ctrl+P): each screen and argument-free action,
    and one entry per theme. Engine-changing ones still ask; with --readonly they are left out."""
    readonly = app.operator.config.readonly
    out = []
    for command in commands():
        if command.needs_arg or (command.changes_engine is True and readonly):
            continue
        out.append(SystemCommand(f":{command.name}", command.help, lambda c=command.name: run(app, c)))
    for name in _theme_names(app)[:12]:
        out.append(SystemCommand(f":theme {name}", "switch the theme (kept in the config)",
                                 lambda n=name: run(app, f"theme {n}")))
    return out
