"""`?` / F1: every key that works where the operator is, with the binding id that remaps it.

Also the key catalogue: every binding id llmos-tui defines (the app's and every screen's), and
the check of ``[ui.keys]`` against it — an unknown id or a key that two bindings would share is
one line naming it, and the rest of the keymap still applies.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# Screens of llmos-tui whose bindings can be remapped (imported for the catalogue when the
# CLI checks a config; in the TUI they are imported already). Missing ones are skipped.
SCREEN_MODULES = (
    "llmos_tui.ui.app",
    "llmos_tui.ui.chat_screen",
    "llmos_tui.ui.dashboard",
    "llmos_tui.ui.doctor_screen",
    "llmos_tui.ui.journal_screen",
    "llmos_tui.ui.command_line",
    "llmos_tui.ui.explain_view",
    "llmos_tui.ui.tuning_screen",
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 96; max-width: 100%; max-height: 90%; border: round $accent;
                                   background: $surface; padding: 0 1; }
    """

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

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
            yield Static("Esc closes · : opens the command line · remap a key in the config: "
                         "[ui.keys] \"app.dashboard\" = \"f2,ctrl+b\"", markup=False)

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


def collect_bindings(screen) -> list[tuple[str, str, str, str]]:  # type: ignore[no-untyped-def]
    """Every binding that is active on screen (its own, focused widgets', the app's):
    (key as shown, binding id or "", description, where)."""
    rows: list[tuple[str, str, str, str]] = []
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
        rows.append((screen.app.get_key_display(binding), binding.id or "", description, where))
    # App keys a focused text box hides from the chain (`:` and `?` are taken before it; see the app)
    shown = {r[1] for r in rows if r[1]}
    keymap = getattr(screen.app, "_keymap", {}) or {}
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


# ---- the catalogue and the keymap check -------------------------------------------------------
@dataclass(frozen=True)
class KnownBinding:
    id: str
    keys: tuple[str, ...]  # normalised key names
    description: str
    scope: str  # the class that defines it
    app_wide: bool  # defined on the app: active on every screen


def binding_catalog(*, import_screens: bool = False) -> dict[str, list[KnownBinding]]:
    """Every binding id defined by llmos-tui's app and screens (classes already imported, or
    all of SCREEN_MODULES with ``import_screens``)."""
    from textual.app import App
    from textual.dom import DOMNode
    from textual.keys import _normalize_key_list

    if import_screens:
        for name in SCREEN_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
    catalog: dict[str, list[KnownBinding]] = {}
    for cls in _subclasses(DOMNode):
        if not cls.__module__.startswith("llmos_tui."):
            continue
        for item in cls.__dict__.get("BINDINGS", ()) or ():
            if not isinstance(item, Binding) or not item.id:
                continue
            keys = tuple(k.strip() for k in _normalize_key_list(item.key).split(",") if k.strip())
            known = KnownBinding(item.id, keys, item.description or item.action, cls.__name__, issubclass(cls, App))
            if all(k.scope != known.scope for k in catalog.get(item.id, [])):
                catalog.setdefault(item.id, []).append(known)
    return catalog


def _subclasses(cls: type) -> Iterable[type]:
    seen: set[type] = set()
    stack = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def check_keymap(keymap: Mapping[str, str], catalog: Mapping[str, list[KnownBinding]]) -> tuple[dict[str, str], list[str]]:
    """(the keymap to apply, one line per problem). An unknown id is left out; a key the keymap
    gives to a binding that another binding already answers to (on the same screen, or
    everywhere) is a clash, named, and that entry is left out too."""
    from textual.keys import _normalize_key_list

    problems: list[str] = []
    usable: dict[str, str] = {}
    for binding_id, keys in keymap.items():
        if binding_id not in catalog:
            close = sorted(i for i in catalog if i.split(".")[-1] == binding_id.split(".")[-1])
            hint = f" (did you mean {' or '.join(close)}?)" if close else " (the help screen, ? or F1, lists the ids)"
            problems.append(f"[ui.keys] unknown binding id {binding_id!r}{hint}")
            continue
        usable[binding_id] = _normalize_key_list(keys)

    def keys_of(known: KnownBinding, keymap_now: Mapping[str, str]) -> set[str]:
        if known.id in keymap_now:
            return {k.strip() for k in keymap_now[known.id].split(",") if k.strip()}
        return set(known.keys)

    everything = [k for items in catalog.values() for k in items]
    rejected = True
    while rejected:  # a rejected entry keeps its default keys, which may clash with an earlier one
        rejected = _reject_first_clash(keymap, usable, catalog, everything, keys_of, problems)
    return usable, problems


def _reject_first_clash(keymap, usable, catalog, everything, keys_of, problems) -> bool:  # type: ignore[no-untyped-def]
    for binding_id in list(usable):
        wanted = {k.strip() for k in usable[binding_id].split(",") if k.strip()}
        clashes: list[str] = []
        for mine in catalog[binding_id]:
            for other in everything:
                if other.id == binding_id or not (other.scope == mine.scope or other.app_wide or mine.app_wide):
                    continue
                for key in sorted(wanted & keys_of(other, usable)):
                    clashes.append(f"{key} is already {other.id} ({other.description}, {other.scope})")
        if clashes:
            problems.append(f"[ui.keys] {binding_id} = {keymap[binding_id]!r} clashes: {'; '.join(sorted(set(clashes)))}"
                            f"; {binding_id} keeps its default keys")
            del usable[binding_id]
            return True
    return False


def describe_catalog(catalog: Mapping[str, list[KnownBinding]]) -> list[tuple[str, str, str]]:
    """(id, default keys, description) sorted by id: for `config --init` and the README."""
    rows = []
    for binding_id, items in sorted(catalog.items()):
        first = items[0]
        rows.append((binding_id, ",".join(first.keys), f"{first.description} ({', '.join(k.scope for k in items)})"))
    return rows


def install_keymap(app, keymap: Mapping[str, str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Apply ``[ui.keys]`` to the app after the check: one line per unknown id or clash."""
    if not keymap:
        return []
    usable, problems = check_keymap(keymap, binding_catalog(import_screens=True))
    if usable:
        app.set_keymap(usable)
    return problems
