"""`?` / F1: every key that works where the operator is, with the binding id that remaps it,
and the commands of the `:` line (the core's command table and the TUI's own).

The key catalogue itself is plain data in ``llmos_tui.core.keys``; this screen shows it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from llmos_tui.core.commands import Command

Row = tuple[str, str, str, str]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]
    CSS_PATH = "help.tcss"

    def __init__(self, rows: list[Row], commands: Sequence[Command] = ()) -> None:
        super().__init__()
        self.rows = rows
        self.commands = list(commands)

    def compose(self) -> ComposeResult:
        table = Table(title="Keys", expand=True, show_edge=False)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column(Text("id (for [ui.keys])"), no_wrap=True)
        table.add_column("action")
        table.add_column("where", style="dim")
        for key, binding_id, description, where in self.rows:
            table.add_row(Text(key), Text(binding_id or "-", style="cyan"), Text(description), Text(where))
        with VerticalScroll():
            yield Static(table)
            if self.commands:
                yield Static(command_table(self.commands))
            yield Static("Esc closes · : opens the command line · remap a key in the config: "
                         "[ui.keys] \"app.dashboard\" = \"f2,ctrl+b\"", markup=False)

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


def command_table(commands: Sequence[Command]) -> Table:
    """The `:` commands: one row each, engine-changing ones marked (they ask first, read-only refuses them)."""
    table = Table(title="Commands (: opens the line)", expand=True, show_edge=False)
    table.add_column("command", style="bold", no_wrap=True)
    table.add_column("does")
    for command in commands:
        rule = command.changes_engine
        marks = " · may change the engine" if callable(rule) else " · changes the engine" if rule else ""
        aliases = f"  [{', '.join(command.aliases)}]" if command.aliases else ""
        table.add_row(Text(":" + command.usage()), Text(command.help + marks + aliases))
    return table


def collect_bindings(screen: Screen[object]) -> list[Row]:
    """Every binding that is active on screen (its own, focused widgets', the app's):
    (key as shown, binding id or "", description, where)."""
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if isinstance(active.node, Input):  # line-editing keys of the prompt: standard, not ours
            continue
        description = binding.description or binding.action
        if (key, description) in seen or binding.action in ("", "noop"):
            continue
        seen.add((key, description))
        where = type(active.node).__name__.replace("Screen", "").replace("LlmosApp", "everywhere") or "everywhere"
        rows.append((screen.app.get_key_display(binding), binding.id or "", description, where))
    # App keys a focused text box hides from the chain (`:` and `?` are taken before it; see the app)
    shown = {r[1] for r in rows if r[1]}
    keymap = screen.app._keymap or {}
    for bindings in screen.app._bindings.key_to_bindings.values():
        for binding in bindings:
            if binding.id and binding.id not in shown and binding.show is not None:
                shown.add(binding.id)
                if binding.id in keymap:
                    binding = dataclasses.replace(binding, key=keymap[binding.id])
                rows.append((screen.app.get_key_display(binding), binding.id, binding.description or binding.action,
                             "everywhere"))
    rows.sort(key=lambda r: (r[3] != "everywhere", r[1] or "~", r[0]))
    return rows
