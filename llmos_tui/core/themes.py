"""Theme files as data: where they are, what a file may say, which name a word means.

Themes are TOML files, one Textual theme each: the shipped ones in the top-level ``themes/``
folder (installed with the wheel, ``llmos_tui.paths.REPO_THEMES``) and the user's in the
user theme folder (``paths.user_themes``; ``llmos-tui config --init-theme NAME`` copies a
shipped one there to edit; a user file of the same name wins). This module reads and checks
them without Textual, so the CLI can check a config; the TUI (``llmos_tui.ui.themes``) turns
the data into Textual themes and checks every colour.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Callable, Iterable, TypeVar

__all__ = ["DEFAULT_THEME", "SHIPPED", "ALIASES", "FIELDS", "BUILTIN", "read_theme", "theme_files",
           "read_themes", "resolve", "shipped_file"]

DEFAULT_THEME = "dark"
SHIPPED = ("dark", "light", "high-contrast", "16-colour")
# Other spellings people type, and the names of the themes of earlier releases.
ALIASES = {
    "default": "dark",
    "16": "16-colour",
    "16-color": "16-colour",
    "16colour": "16-colour",
    "16color": "16-colour",
    "ansi": "16-colour",
    "hc": "high-contrast",
    "contrast": "high-contrast",
    "llmos-night": "dark",
    "llmos-paper": "light",
}
# The keys of a textual.theme.Theme (a test checks this against Textual's own dataclass).
FIELDS = frozenset({"name", "primary", "secondary", "warning", "error", "success", "accent", "foreground",
                    "background", "surface", "panel", "boost", "dark", "luminosity_spread", "text_alpha",
                    "variables", "ansi"})
# Textual's own themes, available to every app (a test checks them against Textual's list).
BUILTIN = ("textual-dark", "textual-light", "nord", "gruvbox", "catppuccin-mocha", "dracula", "tokyo-night",
           "monokai", "flexoki", "catppuccin-latte", "solarized-light", "solarized-dark", "ansi-dark", "ansi-light",
           "rose-pine", "rose-pine-moon", "rose-pine-dawn", "atom-one-dark", "atom-one-light",
           "catppuccin-frappe", "catppuccin-macchiato")


def read_theme(path: Path) -> dict[str, object]:
    """One theme file as a mapping; ValueError (or TOMLDecodeError) with the reason when it is not usable."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - FIELDS
    if unknown:
        raise ValueError(f"unknown theme keys {', '.join(sorted(unknown))}")
    if "name" not in data or "primary" not in data:
        raise ValueError("a theme needs at least name and primary")
    if not isinstance(data["name"], str):
        raise ValueError("name must be a string")
    if "variables" in data and not isinstance(data["variables"], dict):
        raise ValueError("[variables] must be a table")
    return data


def theme_files(folders: Iterable[Path]) -> list[Path]:
    """Every ``*.toml`` in ``folders``, in order (a later folder's theme of the same name wins)."""
    return [path for folder in folders if folder.is_dir() for path in sorted(folder.glob("*.toml"))]


T = TypeVar("T")


def read_themes(folders: Iterable[Path], load: "Callable[[Path], T]" = read_theme) -> tuple[list[T], list[str]]:
    """Every usable theme file, read by ``load`` (its data here; the TUI's Theme in ui/themes.py);
    a bad file is one line in the problems and is skipped."""
    themes: list[T] = []
    problems: list[str] = []
    for path in theme_files(folders):
        try:
            themes.append(load(path))
        except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"theme file {path} skipped: {str(exc).splitlines()[0]}")
    return themes, problems


def resolve(name: str, available: Iterable[str]) -> str | None:
    """The registered theme ``name`` means (exact, alias, case-insensitive), or None."""
    names = set(available)
    if name in names:
        return name
    lowered = name.strip().lower()
    for candidate in (lowered, ALIASES.get(lowered, "")):
        if candidate in names:
            return candidate
    return None


def shipped_file(name: str, folder: Path) -> Path | None:
    """The shipped theme file ``name`` (or an alias of it) means, in ``folder``."""
    by_name: dict[str, Path] = {}
    for path in theme_files([folder]):
        try:
            theme_name = read_theme(path)["name"]
        except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError):
            continue
        by_name[str(theme_name)] = path
    chosen = resolve(name, by_name)
    return by_name[chosen] if chosen is not None else None
