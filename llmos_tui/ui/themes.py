"""Themes are data files (TOML, one textual.theme.Theme each) in themes/ and the user's theme folder.

Four ship with llmos-tui: ``dark`` (the default), ``light``, ``high-contrast`` and ``16-colour``
(the terminal's own ANSI palette only). A file that does not parse, names an unknown key or a
colour Textual cannot read is one line in the problems and is skipped; a configured theme that
is not available falls back to the default with one line. ``NO_COLOR`` (any value) is honoured
by Textual itself: it drops every colour from the screen, whatever the theme.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.theme import Theme

from llmos_tui.config import Config
from llmos_tui.core.themes import ALIASES, DEFAULT_THEME, SHIPPED, read_theme, read_themes, resolve

if TYPE_CHECKING:
    from llmos_tui.ui.app import LlmosApp

__all__ = ["ALIASES", "DEFAULT_THEME", "SHIPPED", "load_theme", "load_themes", "resolve", "install", "names",
           "switch"]


def load_theme(path: Path) -> Theme:
    """One theme file; ValueError (or TOMLDecodeError) with the reason when it is not usable."""
    theme = Theme(**read_theme(path))  # type: ignore[arg-type]  # the keys are Theme's fields (checked)
    try:
        theme.to_color_system()  # parses every colour: a typo is found here, not when it is shown
    except Exception as exc:  # noqa: BLE001 - Textual's colour errors have several types
        raise ValueError(f"bad colour ({exc})") from None
    return theme


def load_themes(folders: list[Path]) -> tuple[list[Theme], list[str]]:
    """Every theme file found; problems come back as one line each (a bad file never stops the app)."""
    return read_themes(folders, load_theme)


# ---- the app's side: install, choose, switch, keep -------------------------------------------
def install(app: "LlmosApp", config: Config) -> list[str]:
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
    app.saved_theme = name  # what the config already says (or the fallback): nothing to write
    app.theme_changed_signal.subscribe(app, lambda theme: _keep(app, config, theme.name))
    return problems


def names(app: App[int]) -> list[str]:
    shipped = [n for n in SHIPPED if n in app.available_themes]
    return shipped + sorted(n for n in app.available_themes if n not in shipped)


def switch(app: App[int], wanted: str) -> str | None:
    """`:theme NAME`: switch live (kept in the config by the signal); a line when unknown."""
    name = resolve(wanted, app.available_themes)
    if name is None:
        return f"unknown theme {wanted!r} (known: {', '.join(names(app))})"
    app.theme = name
    return None


def _keep(app: "LlmosApp", config: Config, name: str) -> None:
    if name == app.saved_theme:
        return
    app.saved_theme = name

    def work() -> None:
        from llmos_tui.config import save_ui_theme

        try:
            path = save_ui_theme(config, name)
        except Exception as exc:  # noqa: BLE001 - one line; the theme still applies for this session
            app.call_from_thread(app.notify, f"theme {name} applied but not saved: {exc}", severity="warning")
            return
        app.call_from_thread(app.notify, f"theme {name} (kept in {path})")

    app.run_worker(work, thread=True, group="save-theme", exclusive=True, exit_on_error=False)
