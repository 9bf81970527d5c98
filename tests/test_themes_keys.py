"""Themes as files (four shipped, a broken one is a notice, the choice kept in the config, NO_COLOR)
and keys by id (the help screen shows the ids, [ui.keys] remaps them, unknown ids and clashes are
one line each) — through Textual's pilot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmos_tui.config import load_config, save_ui_theme
from llmos_tui.core.wiring import build_core
from llmos_tui.errors import ConfigError
from llmos_tui.paths import REPO_THEMES
from llmos_tui.ui.app import LlmosApp
from llmos_tui.core import keys, themes
from llmos_tui.core.keys import check_keymap
from llmos_tui.ui.help_screen import HelpScreen
from llmos_tui.ui.themes import SHIPPED, load_themes
from tests.pilot import notices, wait_for


def make_app(config_text: str = "", **overrides) -> LlmosApp:
    paths_config = load_config().paths.config_file
    if config_text:
        paths_config.parent.mkdir(parents=True, exist_ok=True)
        paths_config.write_text(config_text)
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, **overrides})
    operator = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    return LlmosApp(operator, start_screen="chat", start_engine=False)


def test_the_four_shipped_themes_load_and_16_colour_uses_only_ansi_colours() -> None:
    themes, problems = load_themes([REPO_THEMES])
    assert not problems
    by_name = {t.name: t for t in themes}
    assert set(SHIPPED) <= set(by_name)
    ansi = by_name["16-colour"]
    assert ansi.ansi
    colours = [getattr(ansi, f) for f in ("primary", "secondary", "accent", "warning", "error", "success",
                                          "foreground", "background", "surface", "panel", "boost")]
    colours += list(ansi.variables.values())
    assert all(c.startswith("ansi_") or c == "none" for c in colours), colours
    assert by_name["high-contrast"].background == "#000000" and by_name["high-contrast"].foreground == "#ffffff"


async def test_broken_theme_file_is_one_notice_and_the_default_applies(llmos_home: Path) -> None:
    folder = load_config().paths.user_themes
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text('name = "broken"\nprimary = "not-a-colour"\n')
    (folder / "garbage.toml").write_text("this is [not toml\n")
    app = make_app('[ui]\ntheme = "broken"\n')
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.theme == "dark"
        lines = notices(app)
        broken = [n for n in lines if "broken.toml" in n]
        assert len(broken) == 1 and "\n" not in broken[0] and "bad colour" in broken[0]
        assert any("garbage.toml" in n for n in lines)
        assert any("theme 'broken' is not available" in n and "using dark" in n for n in lines)
    app.operator.close()


async def test_a_live_switch_is_kept_in_the_config_with_its_comments(llmos_home: Path) -> None:
    text = '# my settings\n[chat]\nmax_tokens = 64  # short\n\n[ui]\ntheme = "light"  # for daytime\n'
    app = make_app(text)
    path = app.operator.config.paths.config_file
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.theme == "light"
        app.theme = "high-contrast"  # what the command palette's theme picker does
        await wait_for(pilot, lambda: 'theme = "high-contrast"' in path.read_text())
        app.switch_theme("16")  # `:theme 16` takes the alias
        await wait_for(pilot, lambda: 'theme = "16-colour"' in path.read_text())
        app.switch_theme("no-such-theme")
        await pilot.pause()
        assert app.theme == "16-colour"
        assert any("unknown theme 'no-such-theme'" in n for n in notices(app))
    assert path.read_text() == text.replace('theme = "light"', 'theme = "16-colour"')
    assert load_config().theme == "16-colour"
    app.operator.close()


def test_save_theme_refuses_rather_than_rewrite_an_odd_file(tmp_path: Path) -> None:
    config = load_config()
    config.source = tmp_path / "c.toml"
    config.source.write_text('ui = { theme = "light" }\n')
    with pytest.raises(ConfigError, match="set it by hand"):
        save_ui_theme(config, "dark")
    assert config.source.read_text() == 'ui = { theme = "light" }\n'


async def test_no_color_drops_every_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        svg = app.export_screenshot()
    # the screenshot's own window chrome (the three title-bar buttons, its default text fill) is not the app
    chrome = {"ff5f57", "febc2e", "28c840", "c5c8c6"}
    colours = {c.lower() for c in re.findall(r"#([0-9a-fA-F]{6})\b", svg)} - chrome
    assert colours
    coloured = {c for c in colours if len({c[0:2].lower(), c[2:4].lower(), c[4:6].lower()}) > 1}
    assert not coloured, coloured
    app.operator.close()


async def test_help_screen_shows_each_key_with_its_binding_id() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = {(key, binding_id) for key, binding_id, _d, _w in app.screen.rows}
        assert ("F2", "app.dashboard") in rows or ("f2", "app.dashboard") in rows
        assert any(binding_id == "chat.new" for _k, binding_id in rows)
        assert any(binding_id == "app.command" for _k, binding_id in rows)
    app.operator.close()


async def test_keys_remap_by_id_and_bad_entries_are_one_line_each() -> None:
    app = make_app('[ui.keys]\n"app.journal" = "f9"\ndashboard = "f2"\n"app.chat" = "f4"\n')
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        lines = notices(app)
        unknown = [n for n in lines if "'dashboard'" in n]
        assert len(unknown) == 1 and "unknown binding id" in unknown[0] and "app.dashboard" in unknown[0]
        clash = [n for n in lines if "app.chat" in n and "clashes" in n]
        assert len(clash) == 1 and "app.doctor" in clash[0]
        await pilot.press("f9")
        await wait_for(pilot, lambda: app.current_mode == "journal")
        await pilot.press("f3")  # app.chat kept its default key
        await wait_for(pilot, lambda: app.current_mode == "chat")
    app.operator.close()


def test_unquoted_dotted_ids_in_toml_are_read_as_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[ui.keys]\napp.help = "f10"\n"chat.new" = "ctrl+n, ctrl+t"\n')
    config = load_config(path)
    assert config.keys == {"app.help": "f10", "chat.new": "ctrl+n,ctrl+t"}
    usable, problems = check_keymap(config.keys)
    assert usable and not problems
    path.write_text('[ui.keys]\n"app.help" = "f 1"\n')
    with pytest.raises(ConfigError, match="keys are names separated by commas"):
        load_config(path)


def test_config_init_writes_every_key_and_check_validates(llmos_home: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "llmos_tui.cli", "config", *args], capture_output=True,
                              text=True, timeout=60)

    first = cli("--init")
    assert first.returncode == 0, first.stderr
    path = load_config().paths.config_file
    sample = path.read_text()
    again = cli("--init")
    assert again.returncode == 1 and "exists; nothing written" in again.stderr and path.read_text() == sample
    assert cli("--check").returncode == 0
    # every key, uncommented at its default, is still a valid file: the sample names only real keys
    every = re.sub(r'^# ("[a-z_.]+"|[a-z_]+) = ', r"\1 = ", sample, flags=re.M)
    uncommented = re.findall(r'^("[a-z_.]+"|[a-z_]+) = ', every, flags=re.M)
    assert {"n_ctx", "max_tokens", "interval", "theme", '"app.dashboard"', '"doctor.explain"', "listen",
            "kill_switch", "mode", "on_finding", "max_per_min", "queue_size", "stall_s", "log_prompts"} <= set(uncommented)
    path.write_text(every)
    checked = cli("--check")
    assert checked.returncode == 0, checked.stderr
    assert load_config().exporter_listen == "127.0.0.1:9464" and load_config().keys["app.dashboard"] == "f2"
    path.write_text('[ui]\ntheme = "nope"\n[ui.keys]\ndashboard = "f2"\n')
    bad = cli("--check")
    assert bad.returncode == 1
    assert "theme 'nope' is not available" in bad.stderr and "unknown binding id 'dashboard'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 2


def test_the_key_catalogue_is_what_the_screens_bind_and_spells_keys_as_textual() -> None:
    """core/keys.py is plain data; every screen's bindings come from it, key names as Textual's."""
    import dataclasses

    from textual.binding import Binding
    from textual.keys import _normalize_key_list
    from textual.theme import BUILTIN_THEMES, Theme

    import llmos_tui.ui.app  # noqa: F401 - imports every screen
    import llmos_tui.ui.command_line  # noqa: F401
    import llmos_tui.ui.explain_view  # noqa: F401
    import llmos_tui.ui.fleet_screen  # noqa: F401
    import llmos_tui.ui.journal_screen  # noqa: F401
    import llmos_tui.ui.tuning_screen  # noqa: F401
    from llmos_tui.ui import doctor_screen  # noqa: F401

    from textual.dom import DOMNode

    seen = {}
    stack: list[type] = [DOMNode]
    while stack:
        for cls in stack.pop().__subclasses__():
            stack.append(cls)
            if cls.__module__.startswith("llmos_tui."):
                for b in cls.__dict__.get("BINDINGS", ()) or ():
                    if isinstance(b, Binding) and b.id:
                        seen[(b.id, cls.__name__)] = (b.key, b.action)
    data = {(k.id, k.scope): (k.keys, k.action) for k in keys.KEYS}
    assert seen == data
    for k in keys.KEYS:
        assert keys.normalize_keys(k.keys) == _normalize_key_list(k.keys)
    for typed in ("?", ":", "/", "@", "-", "+", "_", "ctrl+x", "a,?"):
        assert keys.normalize_keys(typed) == _normalize_key_list(typed), typed
    assert themes.FIELDS == {f.name for f in dataclasses.fields(Theme)}
    assert set(themes.BUILTIN) == set(BUILTIN_THEMES)
    assert ("doctor.reset_limit", "l", "Reset start limit (DoctorScreen)") in keys.describe_catalog()


def test_config_init_theme_copies_a_shipped_theme_that_then_wins(llmos_home: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "llmos_tui.cli", "config", *args], capture_output=True,
                              text=True, timeout=60)

    done = cli("--init-theme", "16-color")  # an alias of 16-colour
    assert done.returncode == 0, done.stderr
    copy = load_config().paths.user_themes / "16-colour.toml"
    assert copy.read_text() == (REPO_THEMES / "16-colour.toml").read_text()
    again = cli("--init-theme", "16-colour")
    assert again.returncode == 1 and "exists; nothing written" in again.stderr
    missing = cli("--init-theme", "nope")
    assert missing.returncode == 1 and "no shipped theme 'nope'" in missing.stderr
    copy.write_text(copy.read_text().replace('primary = "ansi_blue"', 'primary = "ansi_red"'))
    loaded, problems = load_themes([REPO_THEMES, copy.parent])
    assert not problems
    assert [t.primary for t in loaded if t.name == "16-colour"][-1] == "ansi_red"  # the user's copy is the later one
    forced = cli("--init-theme", "16-colour", "--force")
    assert forced.returncode == 0 and (copy.parent / "16-colour.toml.bak").exists()
