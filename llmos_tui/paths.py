"""Where llmos-tui reads and writes: XDG folders (platformdirs), overridable by env vars.

LLMOS_TUI_HOME, when set, puts config, data, cache and state under one folder
(handy for tests and for running several isolated instances).
"""

from __future__ import annotations

import os
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "llmos-tui"
PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_MODEL = PACKAGE_DIR / "data" / "demo.gguf"
REPO_PLUGINS = PACKAGE_DIR.parent / "plugins"


def _shipped_themes() -> Path:
    """The top-level themes/ of a source tree, else where the wheel's data files put it
    (pyproject: [tool.setuptools] data-files -> PREFIX/share/llmos-tui/themes)."""
    if (PACKAGE_DIR.parent / "pyproject.toml").is_file() and (PACKAGE_DIR.parent / "themes").is_dir():
        return PACKAGE_DIR.parent / "themes"
    installed = [Path(base) / "share" / APP / "themes" for base in (sysconfig.get_path("data"), site.getuserbase())]
    return next((p for p in installed if p.is_dir()), installed[0])


REPO_THEMES = _shipped_themes()


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path
    state_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def journal(self) -> Path:
        return self.data_dir / "journal.sqlite"

    @property
    def user_plugins(self) -> Path:
        return self.config_dir / "plugins"

    @property
    def user_themes(self) -> Path:
        return self.config_dir / "themes"

    @property
    def runtime_dir(self) -> Path:
        """Owner-only folder for the status endpoint of each running llmos-tui (Unix sockets)."""
        home = os.environ.get("LLMOS_TUI_HOME")
        if home:
            return Path(home).expanduser() / "run"
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime:
            return Path(runtime) / APP
        return self.state_dir / "run"

    @property
    def chat_history(self) -> Path:
        return self.state_dir / "chat_history"

    def as_dict(self) -> dict[str, str]:
        return {
            "config_file": str(self.config_file),
            "journal": str(self.journal),
            "user_plugins": str(self.user_plugins),
            "repo_plugins": str(REPO_PLUGINS),
            "user_themes": str(self.user_themes),
            "repo_themes": str(REPO_THEMES),
            "chat_history": str(self.chat_history),
            "runtime_dir": str(self.runtime_dir),
            "demo_model": str(DEMO_MODEL),
            "cache_dir": str(self.cache_dir),
        }


def default_paths() -> Paths:
    home = os.environ.get("LLMOS_TUI_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "config", root / "data", root / "cache", root / "state")
    return Paths(
        Path(platformdirs.user_config_dir(APP)),
        Path(platformdirs.user_data_dir(APP)),
        Path(platformdirs.user_cache_dir(APP)),
        Path(platformdirs.user_state_dir(APP)),
    )
