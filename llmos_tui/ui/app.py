"""The Textual app: screens as modes, one key apart, over the headless core (an embedded Operator, or a daemon's, attached)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widgets import Input, TextArea

from llmos_tui.config import Config
from llmos_tui.core.cockpit import Cockpit
from llmos_tui.textsafe import sanitize
from llmos_tui.ui import command_line, keymap, themes
from llmos_tui.ui.help_screen import HelpScreen, collect_bindings
from llmos_tui.ui.messages import DoctorToast, EngineChanged, EngineStartFinished
from llmos_tui.ui.status import EngineStatus

if TYPE_CHECKING:  # pragma: no cover
    from textual.notifications import SeverityLevel


def _chat_screen() -> Screen[None]:
    """The chat screen, imported when first shown: Textual's Markdown (markdown-it, Pygments) costs
    about 3 MB of the cockpit's memory, and a dashboard left open for hours never needs it."""
    from llmos_tui.ui.chat_screen import ChatScreen

    return ChatScreen()


class LlmosApp(App[int]):
    TITLE = "llmos-tui"
    BINDINGS = keymap.bindings("LlmosApp")

    def __init__(self, operator: Cockpit, *, start_screen: str | None = None, start_engine: bool = True) -> None:
        super().__init__()
        self.operator = operator
        self.start_engine = start_engine
        self.screen_factories: dict[str, Callable[[], Screen[None]]] = {"chat": _chat_screen}
        self.screen_factories.update(extra_screens(operator))
        for name, factory in self.screen_factories.items():
            self.add_mode(name, factory)
        self.start_screen = start_screen if start_screen in self.screen_factories else (
            "dashboard" if "dashboard" in self.screen_factories else "chat")
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_doctor: Callable[[], None] | None = None
        self.doctor_toasts = False
        self._clashes_told: set[str] = set()
        self.saved_theme: str | None = None  # the theme the config file holds (themes.install keeps it)

    def notify(self, message: str, *, title: str = "", severity: "SeverityLevel" = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every toast as plain text: its words come from error messages, file names, log lines and
        findings, and one with ``[/]`` in it (a path, a key like ``[ui.keys]``) made Textual's markup
        parser raise and took the cockpit down. No toast here uses markup."""
        super().notify(sanitize(message), title=sanitize(title), severity=severity, timeout=timeout, markup=False)

    def on_mount(self) -> None:
        config = self.operator.config
        self.operator.problems.extend(themes.install(self, config))
        self.operator.problems.extend(keymap.install_keymap(self, config.keys))
        self._unsubscribe = self.operator.supervisor.subscribe(lambda ev: self.post_message(EngineChanged(ev)))
        if self.operator.doctor is not None:
            self.doctor_toasts = True
            self._unsubscribe_doctor = self.operator.doctor.subscribe(lambda ev: self.post_message(DoctorToast(ev)))
        self.switch_mode(self.start_screen)
        for problem in self.operator.problems:
            self.notify(problem, severity="warning", timeout=10)
        attached = self.operator.attached
        if attached:
            self.notify(f"{attached}: quitting leaves it serving", title="Attached", timeout=8)
        if self.start_engine:
            self.operator.start_engine_in_background(lambda error: self.post_message(EngineStartFinished(error)))

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._unsubscribe_doctor is not None:
            self._unsubscribe_doctor()

    def on_doctor_toast(self, message: DoctorToast) -> None:
        from llmos_tui.ui.doctor_screen import toast_doctor_event

        doctor = self.operator.doctor
        toast_doctor_event(self, message.event, replayed=doctor is not None and doctor.replayed)

    # ---- engine events (already on the UI thread) ---------------------------------
    def on_engine_changed(self, message: EngineChanged) -> None:
        event = message.event
        for status in self.screen.query(EngineStatus):
            status.refresh_status()
        if event.kind == "crashed":
            self.notify(f"{self.operator.supervisor.last_error}. Ctrl+R restarts it.", title="Engine crashed",
                        severity="error", timeout=10)
        elif event.kind == "loaded" and self.screen.__class__.__name__ == "ChatScreen":
            self.screen.engine_changed()  # type: ignore[attr-defined]

    def on_engine_start_finished(self, message: EngineStartFinished) -> None:
        if message.error:
            self.notify(message.error, title="Engine did not start", severity="error", timeout=15)
        for status in self.screen.query(EngineStatus):
            status.refresh_status()

    # ---- actions ----------------------------------------------------------------------
    def action_mode(self, name: str) -> None:
        if name not in self.screen_factories:
            self.notify(f"the {name} screen is not available in this build", severity="warning")
            return
        self.switch_mode(name)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(collect_bindings(self.screen), command_line.commands()))

    def action_command_line(self, initial: str = "") -> None:
        self.push_screen(command_line.CommandLine(self, initial),
                         lambda line: line and command_line.run(self, line))

    async def on_event(self, event: events.Event) -> None:
        # An Input swallows printable keys before any binding sees them: `:` is decided here.
        if isinstance(event, events.Key) and not event.is_forwarded and event.key in self._command_keys() \
                and isinstance(self.focused, (Input, TextArea)) and self.check_action("command_line", ()):
            event.stop()
            self.action_command_line()
            return
        await super().on_event(event)

    def _command_keys(self) -> set[str]:
        return set((self._keymap.get("app.command") or "colon").split(","))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "command_line":  # `:` is text in a box that holds text, and inside the command line
            focused = self.focused
            if isinstance(self.screen, (command_line.CommandLine, HelpScreen)):
                return False
            if isinstance(focused, Input) and focused.value:
                return False
            if isinstance(focused, TextArea) and focused.text and not focused.read_only:
                return False
        return True

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from command_line.palette_commands(self)

    def switch_theme(self, name: str) -> None:
        problem = themes.switch(self, name)
        if problem:
            self.notify(problem, severity="warning")

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: DOMNode) -> None:
        """A clash the [ui.keys] check could not see (a plugin's screen): one line, once."""
        names = ", ".join(sorted(f"{b.id or b.action} ({b.key})" for b in clashed_bindings))
        if names not in self._clashes_told:
            self._clashes_told.add(names)
            self.notify(f"[ui.keys] clash on {type(node).__name__}: {names}", severity="warning", timeout=10)

    def action_restart_engine(self) -> None:
        if self.operator.config.readonly:
            self.notify("read-only mode: restarting the engine is disabled", severity="warning")
            return
        self.notify("Restarting the engine…")

        def run() -> None:
            error = self.operator.restart_engine(reason="operator: Ctrl+R")
            self.post_message(EngineStartFinished(error))

        self.run_worker(run, thread=True, group="engine", exclusive=True, exit_on_error=False)


def extra_screens(operator: Cockpit) -> dict[str, Callable[[], Screen[None]]]:
    """Screens contributed by the other parts of the core, wired when they are present."""
    screens: dict[str, Callable[[], Screen[None]]] = {}
    if operator.sampler is not None:
        from llmos_tui.ui.dashboard import DashboardScreen, Policy

        sampler = operator.sampler

        def adapt_policy() -> "Policy | None":
            return operator.adapter.policy() if operator.adapter is not None else None

        screens["dashboard"] = lambda: DashboardScreen(sampler, adapt_policy=adapt_policy)
    if operator.journal_writer is not None:
        from llmos_tui.ui.journal_screen import JournalScreen

        on_undo = None if operator.config.readonly else operator.undo
        screens["journal"] = lambda: JournalScreen(operator.config.journal_file, on_undo=on_undo)
    if operator.doctor is not None:
        from llmos_tui.ui.doctor_screen import DoctorScreen

        doctor = operator.doctor
        screens["doctor"] = lambda: DoctorScreen(doctor, readonly=operator.config.readonly,
                                                 reset_start_limit=lambda: operator.reset_start_limit())
    if operator.mode != "replay":  # a replay drives no engine to tune
        from llmos_tui.ui.tuning_screen import TuningScreen

        screens["tuning"] = lambda: TuningScreen(operator)
    from llmos_tui.ui.fleet_screen import FleetScreen  # Ray is imported when the screen is first shown

    screens["fleet"] = lambda: FleetScreen(operator.config.journal_file)
    return screens


def run_app(config: Config, *, replay: str | None = None, replay_speed: float = 1.0, screen: str | None = None,
            attach: str | None = None, no_attach: bool = False) -> int:
    """The cockpit: attached to the daemon serving this journal (or to the socket ``attach``) when
    one runs — quitting leaves it serving — else over an embedded core (``no_attach`` forces
    that; a replay is always embedded)."""
    from llmos_tui.core.wiring import build_core
    from llmos_tui.serve.sockets import attach_face

    attached = None if (no_attach or replay) else attach_face(config, attach, face="tui")
    operator: Cockpit = attached if attached is not None else build_core(  # type: ignore[assignment]
        config, "replay" if replay else "live", replay=replay, replay_speed=replay_speed, face="tui")
    try:
        app = LlmosApp(operator, start_screen=screen)
        app.run()
    finally:
        operator.close()
    return 0
