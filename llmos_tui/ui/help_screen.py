"""`?` / F1: every key that works where the operator is."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 76; max-height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    """

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table(title="Keys", expand=True, show_edge=False)
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("action")
        table.add_column("where", style="dim")
        for key, description, where in self.rows:
            table.add_row(key, description, where)
        with VerticalScroll():
            yield Static(table)
            yield Static("[dim]Esc closes. Keys can be remapped in [ui.keys] of the config (binding id = keys).[/]")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


def collect_bindings(screen) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """Every binding that is active on screen (its own, focused widgets', the app's)."""
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    from textual.widgets import Input

    for key, active in screen.active_bindings.items():
        binding = active.binding
        if isinstance(active.node, Input):  # line-editing keys of the prompt: standard, not ours
            continue
        description = binding.description or binding.action
        if (key, description) in seen or binding.action in ("", "noop"):
            continue
        seen.add((key, description))
        where = type(active.node).__name__.replace("Screen", "").replace("LlmosApp", "everywhere") or "everywhere"
        rows.append((screen.app.get_key_display(binding), description, where))
    rows.sort(key=lambda r: (r[2] != "everywhere", r[0]))
    return rows
