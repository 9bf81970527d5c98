"""The TUI's side of the key catalogue (``llmos_tui.core.keys``): Textual bindings built from
the data, and ``[ui.keys]`` applied to the app."""

from __future__ import annotations

from typing import Mapping

from textual.app import App
from textual.binding import Binding

from llmos_tui.core import keys


def bindings(scope: str) -> list[Binding]:
    """The catalogue's bindings of ``scope`` (a class name) as Textual bindings."""
    return [Binding(k.keys, k.action, k.description, show=k.show, priority=k.priority, id=k.id)
            for k in keys.for_scope(scope)]


def install_keymap(app: App[int], keymap: Mapping[str, str]) -> list[str]:
    """Apply ``[ui.keys]`` to the app after the check: one line per unknown id or clash."""
    if not keymap:
        return []
    usable, problems = keys.check_keymap(keymap)
    if usable:
        app.set_keymap(usable)
    return problems
