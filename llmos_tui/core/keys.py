"""The key-binding catalogue as plain data: every key llmos-tui's TUI answers to, by id.

The TUI builds its screens' bindings from this table (``llmos_tui.ui.keymap``), the help
screen shows it, `llmos-tui config --init` writes it into the sample and `config --check`
checks ``[ui.keys]`` against it — with no Textual import: it is data.

``[ui.keys]`` remaps by id (``"app.dashboard" = "f2,ctrl+b"``). :func:`check_keymap` answers
one line per problem: an unknown id, or a key that two bindings would share (on the same
screen, or with an app-wide binding); such an entry is left out and the rest still applies.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Mapping

__all__ = ["KeyBinding", "KEYS", "APP_SCOPE", "for_scope", "catalog", "check_keymap", "describe_catalog",
           "normalize_keys"]

APP_SCOPE = "LlmosApp"  # bindings of the app: active on every screen
# Textual's shorter names of some characters' Unicode names (textual.keys.KEY_NAME_REPLACEMENTS)
_REPLACEMENTS = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at",
                 "hyphen_minus": "minus", "plus_sign": "plus", "low_line": "underscore"}


@dataclass(frozen=True)
class KeyBinding:
    id: str  # what [ui.keys] names
    keys: str  # default keys, a comma list of key names ("f2", "ctrl+r", "question_mark")
    action: str  # the action the TUI runs (a Textual action string)
    description: str
    scope: str  # the class that answers it (a screen, a widget, or the app)
    show: bool = True  # shown in the footer
    priority: bool = False  # taken before a focused widget sees the key

    @property
    def app_wide(self) -> bool:
        return self.scope == APP_SCOPE

    @property
    def key_list(self) -> tuple[str, ...]:
        return tuple(k for k in normalize_keys(self.keys).split(",") if k)


KEYS: tuple[KeyBinding, ...] = (
    # everywhere
    KeyBinding("app.help", "f1", "help", "Keys", APP_SCOPE),
    KeyBinding("app.help_q", "question_mark", "help", "Keys", APP_SCOPE, show=False),
    KeyBinding("app.dashboard", "f2", "mode('dashboard')", "Dashboard", APP_SCOPE),
    KeyBinding("app.chat", "f3", "mode('chat')", "Chat", APP_SCOPE),
    KeyBinding("app.doctor", "f4", "mode('doctor')", "Doctor", APP_SCOPE),
    KeyBinding("app.journal", "f5", "mode('journal')", "Journal", APP_SCOPE),
    KeyBinding("app.tune", "f6", "mode('tuning')", "Tune", APP_SCOPE),
    KeyBinding("app.fleet", "f7", "mode('fleet')", "Fleet", APP_SCOPE),
    KeyBinding("app.restart", "ctrl+r", "restart_engine", "Restart engine", APP_SCOPE),
    KeyBinding("app.quit", "ctrl+q", "quit", "Quit", APP_SCOPE, priority=True),
    # also taken before a focused empty text box sees it; a colon typed into text stays text
    KeyBinding("app.command", "colon", "command_line", "Command", APP_SCOPE),
    # chat
    KeyBinding("chat.cancel", "escape", "cancel_reply", "Cancel reply", "ChatScreen"),
    KeyBinding("chat.history_up", "up", "history(-1)", "Earlier prompt", "ChatScreen", show=False),
    KeyBinding("chat.history_down", "down", "history(1)", "Later prompt", "ChatScreen", show=False),
    KeyBinding("chat.new", "ctrl+n", "new_chat", "New chat", "ChatScreen"),
    KeyBinding("chat.open", "ctrl+o", "open_chat", "Earlier chats", "ChatScreen"),
    # doctor
    KeyBinding("doctor.accept", "a", "accept", "Accept", "DoctorScreen"),
    KeyBinding("doctor.reject", "r", "reject", "Reject", "DoctorScreen"),
    KeyBinding("doctor.silence", "s", "silence", "Silence 1 h", "DoctorScreen"),
    KeyBinding("doctor.kill_switch", "k", "kill_switch", "Kill switch", "DoctorScreen"),
    KeyBinding("doctor.canary", "c", "canary", "Canary now", "DoctorScreen"),
    KeyBinding("doctor.filter", "o", "toggle_open", "Open/all", "DoctorScreen"),
    KeyBinding("doctor.explain", "e", "explain", "Explain", "DoctorScreen"),
    KeyBinding("doctor.reset_limit", "l", "reset_limit", "Reset start limit", "DoctorScreen"),
    # journal
    KeyBinding("journal.undo", "u", "undo", "Undo change", "JournalScreen"),
    KeyBinding("journal.filter", "slash", "focus_filter", "Filter", "JournalScreen"),
    KeyBinding("journal.leave_filter", "escape", "leave_filter", "Table", "JournalScreen", show=False),
    KeyBinding("journal.refresh", "ctrl+l", "refresh_now", "Refresh", "JournalScreen"),
    KeyBinding("journal.older", "left_square_bracket", "step_recorder(-1)", "Older telemetry", "JournalScreen"),
    KeyBinding("journal.newer", "right_square_bracket", "step_recorder(1)", "Newer telemetry", "JournalScreen"),
    KeyBinding("journal.confirm_yes", "y", "answer(True)", "Undo", "ConfirmUndo"),
    KeyBinding("journal.confirm_no", "n,escape", "answer(False)", "Cancel", "ConfirmUndo"),
    # tuning
    KeyBinding("tune.start", "s", "start", "Start", "TuningScreen"),
    KeyBinding("tune.stop", "x", "stop", "Stop", "TuningScreen"),
    KeyBinding("tune.stop_esc", "escape", "stop", "Stop", "TuningScreen", show=False),
    KeyBinding("tune.apply", "a", "apply_best", "Apply best", "TuningScreen"),
    KeyBinding("tune.param", "p", "next_param", "Param plot", "TuningScreen"),
    # fleet
    KeyBinding("fleet.sort", "s", "cycle_sort", "Sort", "FleetScreen"),
    KeyBinding("fleet.filter", "slash", "focus_filter", "Filter", "FleetScreen"),
    KeyBinding("fleet.leave_filter", "escape", "leave_filter", "Table", "FleetScreen", show=False),
    KeyBinding("fleet.open_box", "enter", "open_box", "Box details", "FleetScreen"),
    KeyBinding("fleet.box_back", "escape", "back", "Back to the fleet", "BoxScreen"),
    # the command line
    KeyBinding("command.close", "escape", "close", "Close", "CommandLine"),
    KeyBinding("command.complete", "tab", "complete", "Complete", "CommandInput", show=False),
    KeyBinding("command.next", "down", "move(1)", "Next suggestion", "CommandInput", show=False),
    KeyBinding("command.previous", "up", "move(-1)", "Previous suggestion", "CommandInput", show=False),
    KeyBinding("command.confirm_yes", "y", "answer(True)", "Yes", "Confirm"),
    KeyBinding("command.confirm_no", "n,escape", "answer(False)", "No", "Confirm"),
    # explain
    KeyBinding("explain.close", "escape,q", "close", "Close (stops the reply)", "ExplainScreen"),
)


def for_scope(scope: str) -> list[KeyBinding]:
    """The catalogue's bindings of one class (a screen, a widget, the app)."""
    return [k for k in KEYS if k.scope == scope]


def catalog() -> dict[str, list[KeyBinding]]:
    """id -> the bindings with that id (one per class that defines it)."""
    out: dict[str, list[KeyBinding]] = {}
    for item in KEYS:
        out.setdefault(item.id, []).append(item)
    return out


def normalize_keys(keys: str) -> str:
    """A comma list of keys with single characters spelled by name (``?`` -> ``question_mark``),
    as Textual spells them."""
    out = []
    for key in (k.strip() for k in keys.split(",")):
        if not key:
            continue
        if len(key) == 1 and not key.isalnum():
            name = unicodedata.name(key, key).lower().replace("-", "_").replace(" ", "_")
            key = _REPLACEMENTS.get(name, name)
        out.append(key)
    return ",".join(out)


def check_keymap(keymap: Mapping[str, str], known: Mapping[str, list[KeyBinding]] | None = None
                 ) -> tuple[dict[str, str], list[str]]:
    """(the keymap to apply, one line per problem). An unknown id is left out; a key the keymap
    gives to a binding that another binding already answers to (on the same screen, or
    everywhere) is a clash, named, and that entry is left out too."""
    known = catalog() if known is None else known
    problems: list[str] = []
    usable: dict[str, str] = {}
    for binding_id, keys in keymap.items():
        if binding_id not in known:
            close = sorted(i for i in known if i.split(".")[-1] == binding_id.split(".")[-1])
            hint = f" (did you mean {' or '.join(close)}?)" if close else " (the help screen, ? or F1, lists the ids)"
            problems.append(f"[ui.keys] unknown binding id {binding_id!r}{hint}")
            continue
        usable[binding_id] = normalize_keys(keys)
    everything = [k for items in known.values() for k in items]
    while _reject_first_clash(keymap, usable, known, everything, problems):
        pass  # a rejected entry keeps its default keys, which may clash with an earlier one
    return usable, problems


def _keys_of(item: KeyBinding, keymap_now: Mapping[str, str]) -> set[str]:
    if item.id in keymap_now:
        return {k for k in keymap_now[item.id].split(",") if k}
    return set(item.key_list)


def _reject_first_clash(keymap: Mapping[str, str], usable: dict[str, str], known: Mapping[str, list[KeyBinding]],
                        everything: list[KeyBinding], problems: list[str]) -> bool:
    for binding_id in list(usable):
        wanted = {k for k in usable[binding_id].split(",") if k}
        clashes: list[str] = []
        for mine in known[binding_id]:
            for other in everything:
                if other.id == binding_id or not (other.scope == mine.scope or other.app_wide or mine.app_wide):
                    continue
                for key in sorted(wanted & _keys_of(other, usable)):
                    clashes.append(f"{key} is already {other.id} ({other.description}, {other.scope})")
        if clashes:
            problems.append(f"[ui.keys] {binding_id} = {keymap[binding_id]!r} clashes: {'; '.join(sorted(set(clashes)))}"
                            f"; {binding_id} keeps its default keys")
            del usable[binding_id]
            return True
    return False


def describe_catalog(known: Mapping[str, list[KeyBinding]] | None = None) -> list[tuple[str, str, str]]:
    """(id, default keys, description) sorted by id: for `config --init` and the README."""
    known = catalog() if known is None else known
    rows = []
    for binding_id, items in sorted(known.items()):
        first = items[0]
        rows.append((binding_id, ",".join(first.key_list),
                     f"{first.description} ({', '.join(k.scope for k in items)})"))
    return rows
