"""Themes are data files (TOML, one textual.theme.Theme each) in themes/ and the user's theme folder.

Four ship with llmos-tui: ``dark`` (the default), ``light``, ``high-contrast`` and ``16-colour``
(the terminal's own ANSI palette only). A file that does not parse, names an unknown key or a
colour Textual cannot read is one line in the problems and is skipped; a configured theme that
is not available falls back to the default with one line. ``NO_COLOR`` (any value) is honoured
by Textual itself: it drops every colour from the screen, whatever the theme.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from textual.theme import Theme

FIELDS = {f.name for f in dataclasses.fields(Theme)}
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


def load_theme(path: Path) -> Theme:
    """One theme file; ValueError (or TOMLDecodeError) with the reason when it is not usable."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - FIELDS
    if unknown:
        raise ValueError(f"unknown theme keys {', '.join(sorted(unknown))}")
    if "name" not in data or "primary" not in data:
        raise ValueError("a theme needs at least name and primary")
    if "variables" in data and not isinstance(data["variables"], dict):
        raise ValueError("[variables] must be a table")
    theme = Theme(**data)
    try:
        theme.to_color_system()  # parses every colour: a typo is found here, not when it is shown
    except Exception as exc:  # noqa: BLE001 - Textual's colour errors have several types
        raise ValueError(f"bad colour ({exc})") from None
    return theme


def load_themes(folders: list[Path]) -> tuple[list[Theme], list[str]]:
    """Every theme file found; problems come back as one line each (a bad file never stops the app)."""
    themes: list[Theme] = []
    problems: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                themes.append(load_theme(path))
            except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
                problems.append(f"theme file {path} skipped: {str(exc).splitlines()[0]}")
    return themes, problems


def resolve(name: str, available: set[str] | dict[str, object]) -> str | None:
    """The registered theme ``name`` means (exact, alias, case-insensitive), or None."""
    names = set(available)
    if name in names:
        return name
    lowered = name.strip().lower()
    for candidate in (lowered, ALIASES.get(lowered, "")):
        if candidate in names:
            return candidate
    return None


# ---- the app's side: install, choose, switch, keep -------------------------------------------
def install(app, config) -> list[str]:  # type: ignore[no-untyped-def]
    """Register the theme files, apply the configured theme (or the default, with one line),
    and keep every later switch (the command palette's or `:theme`) in the config."""
    from llmos_tui.paths import REPO_THEMES

    themes, problems = load_themes([REPO_THEMES, config.paths.user_themes])
    for theme in themes:
        app.register_theme(theme)
    wanted = config.theme or DEFAULT_THEME
    name = resolve(wanted, app.available_themes)
    if name is None:
        fallback = DEFAULT_THEME if DEFAULT_THEME in app.available_themes else "textual-dark"
        problems.append(f"theme {wanted!r} is not available (known: {', '.join(names(app))}); using {fallback}")
        name = fallback
    app.theme = name
    app._llmos_saved_theme = name  # what the config already says (or the fallback): nothing to write
    app.theme_changed_signal.subscribe(app, lambda theme: _keep(app, config, theme.name))
    return problems


def names(app) -> list[str]:  # type: ignore[no-untyped-def]
    shipped = [n for n in SHIPPED if n in app.available_themes]
    return shipped + sorted(n for n in app.available_themes if n not in shipped)


def switch(app, wanted: str) -> str | None:  # type: ignore[no-untyped-def]
    """`:theme NAME`: switch live (kept in the config by the signal); a line when unknown."""
    name = resolve(wanted, app.available_themes)
    if name is None:
        return f"unknown theme {wanted!r} (known: {', '.join(names(app))})"
    app.theme = name
    return None


def _keep(app, config, name: str) -> None:  # type: ignore[no-untyped-def]
    if name == getattr(app, "_llmos_saved_theme", None):
        return
    app._llmos_saved_theme = name

    def work() -> None:
        from llmos_tui.config import save_ui_theme

        try:
            path = save_ui_theme(config, name)
        except Exception as exc:  # noqa: BLE001 - one line; the theme still applies for this session
            app.call_from_thread(app.notify, f"theme {name} applied but not saved: {exc}", severity="warning")
            return
        app.call_from_thread(app.notify, f"theme {name} (kept in {path})")

    app.run_worker(work, thread=True, group="save-theme", exclusive=True, exit_on_error=False)
