"""Themes are data files (TOML, one textual.theme.Theme each) in themes/ and the user's theme folder."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from textual.theme import Theme

FIELDS = {f.name for f in dataclasses.fields(Theme)}


def load_theme(path: Path) -> Theme:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - FIELDS
    if unknown:
        raise ValueError(f"unknown theme keys {', '.join(sorted(unknown))}")
    if "name" not in data or "primary" not in data:
        raise ValueError("a theme needs at least name and primary")
    return Theme(**data)


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
                problems.append(f"theme {path}: {exc}")
    return themes, problems
