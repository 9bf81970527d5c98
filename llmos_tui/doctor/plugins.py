"""Plugin discovery, loading and isolation for the doctor.

Plugins come from three places, in this order: the repo's ``plugins/`` folder (examples
that double as documentation), the user's plugin folder (``default_paths().user_plugins``),
and the ``llmos_tui.plugins`` entry-point group. Built-ins load first, through the same API.

Isolation:
- a plugin file in a folder others can write to (world-writable, or group-writable by a
  group that is not the user's own), or a file not owned by the user or root, is refused
  before it is imported, with the reason;
- a plugin that fails to import (or hangs importing) is marked failed with its error;
- at run time the doctor disables a plugin whose detector raises or runs past its time limit.
Every state and reason is listed by ``plugins()`` (the `llmos-tui plugins` command, the
doctor screen): nothing is dropped silently.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import stat
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from llmos_tui.doctor.api import REGISTRY, Registry

log = logging.getLogger("llmos_tui.doctor")

ENTRY_POINT_GROUP = "llmos_tui.plugins"
IMPORT_TIMEOUT = 5.0


@dataclass
class PluginInfo:
    name: str
    origin: str  # builtin, repo, user, entry_point, extra
    path: str = ""
    state: str = "loaded"  # loaded, disabled, refused, failed
    reason: str = ""
    detectors: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.path or self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "path": self.path, "state": self.state,
                "reason": self.reason, "detectors": list(self.detectors), "repairs": list(self.repairs)}


def unsafe_reason(path: Path) -> str | None:
    """Why loading code from ``path`` would let someone else run code as this user, or None."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is None:  # pragma: no cover - Windows: no POSIX modes to judge
        return None
    own_gid = os.getgid()
    for item, what in ((path.parent, "folder"), (path, "file")):
        try:
            st = item.stat()
        except OSError as exc:
            return f"cannot inspect {what} {item}: {exc.strerror or exc}"
        if st.st_uid not in (uid, 0):
            return f"{what} {item} is owned by uid {st.st_uid}, not by you (uid {uid}) or root"
        if st.st_mode & stat.S_IWOTH:
            return f"{what} {item} is world-writable (mode {stat.filemode(st.st_mode)}): anyone could change the code"
        if st.st_mode & stat.S_IWGRP and st.st_gid != own_gid:
            return (f"{what} {item} is writable by group {st.st_gid}, which is not yours "
                    f"(mode {stat.filemode(st.st_mode)})")
    return None


def _run_with_timeout(fn, timeout: float) -> tuple[bool, BaseException | None]:
    """Run fn() in a daemon thread; (finished, error). A hung fn is abandoned."""
    box: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin is an error too
            box["error"] = exc

    thread = threading.Thread(target=run, name="doctor-plugin-import", daemon=True)
    thread.start()
    thread.join(timeout)
    return (not thread.is_alive(), box["error"])


def describe_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class PluginManager:
    """Loads plugins into its own registry and keeps the state of each one."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        self.plugins: dict[str, PluginInfo] = {}
        self._counter = 0

    # ---- loading --------------------------------------------------------------------
    def load_builtins(self) -> PluginInfo:
        with REGISTRY.loading("builtin"):
            import llmos_tui.doctor.builtin  # noqa: F401 - registers on import
            import llmos_tui.doctor.repairs  # noqa: F401
        self.registry.copy_origin(REGISTRY, "builtin")
        return self._record(PluginInfo("builtin", "builtin", state="loaded"), "builtin")

    def load_all(
        self,
        folders: Iterable[tuple[str, Path]] | None = None,
        *,
        entry_points: bool = True,
        builtins: bool = True,
    ) -> list[PluginInfo]:
        """Built-ins, then every ``*.py`` in each (origin, folder), then the entry points."""
        if builtins:
            self.load_builtins()
        if folders is None:
            folders = default_folders()
        for origin, folder in folders:
            self.load_folder(Path(folder), origin)
        if entry_points:
            self.load_entry_points()
        return list(self.plugins.values())

    def load_folder(self, folder: Path, origin: str = "extra") -> list[PluginInfo]:
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            out.append(self.load_file(path, origin))
        return out

    def load_file(self, path: Path, origin: str = "extra") -> PluginInfo:
        path = Path(path).resolve()
        info = PluginInfo(path.stem, origin, str(path))
        reason = unsafe_reason(path)
        if reason:
            info.state, info.reason = "refused", f"refused: {reason}"
            log.warning("plugin %s %s", path, info.reason)
            return self._record(info, None)
        self._counter += 1
        module_name = f"llmos_tui_plugin_{self._counter}_{path.stem}"

        # The import registers into a private registry, copied in only when it finished in
        # time: an abandoned import that registers later reaches nothing.
        staging = Registry()

        def do_import() -> None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            with staging.loading(info.key):
                spec.loader.exec_module(module)

        finished, error = _run_with_timeout(do_import, IMPORT_TIMEOUT)
        if not finished:
            error_text = f"import did not finish within {IMPORT_TIMEOUT:.0f} s (abandoned)"
        elif error is not None:
            error_text = describe_error(error)
        else:
            try:
                self.registry.copy_origin(staging, info.key)
            except ValueError as exc:  # an id another plugin already registered
                error_text = str(exc)
            else:
                return self._record(info, info.key)
        self.registry.drop_origin(info.key)
        info.state, info.reason = "failed", error_text
        log.warning("plugin %s failed to load: %s", path, error_text)
        return self._record(info, None)

    def load_entry_points(self) -> list[PluginInfo]:
        from importlib.metadata import entry_points

        out = []
        try:
            eps = list(entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # noqa: BLE001 - broken metadata must not stop the doctor
            log.warning("cannot read entry points: %s", exc)
            return out
        for ep in eps:
            key = f"entry:{ep.name}"
            info = PluginInfo(ep.name, "entry_point", ep.value)

            def do_load(ep=ep, key=key) -> None:
                with REGISTRY.loading(key):
                    obj = ep.load()
                    if callable(obj) and not isinstance(obj, type(sys)):
                        obj()  # a register() function

            finished, error = _run_with_timeout(do_load, IMPORT_TIMEOUT)
            if finished and error is None:
                self.registry.copy_origin(REGISTRY, key)
                out.append(self._record(info, key))
            else:
                info.state = "failed"
                info.reason = describe_error(error) if error else f"load did not finish within {IMPORT_TIMEOUT:.0f} s"
                out.append(self._record(info, None))
        return out

    def _record(self, info: PluginInfo, origin: str | None) -> PluginInfo:
        if origin is not None:
            detectors, repairs = self.registry.by_origin(origin)
            info.detectors = sorted(d.id for d in detectors)
            info.repairs = sorted(r.id for r in repairs)
            if info.state == "loaded" and not (detectors or repairs):
                info.reason = "registers no detector or repair"
        self.plugins[info.key] = info
        return info

    # ---- run-time isolation -----------------------------------------------------------
    def disable(self, origin: str, reason: str) -> None:
        """Disable every detector and repair of one plugin (a built-in: just the one that failed)."""
        info = self.plugins.get(origin)
        if info is not None:
            info.state, info.reason = "disabled", reason
        detectors, repairs = self.registry.by_origin(origin)
        for spec in [*detectors, *repairs]:
            spec.enabled = False
            spec.error = reason

    def list(self) -> list[PluginInfo]:
        return list(self.plugins.values())


def default_folders() -> list[tuple[str, Path]]:
    from llmos_tui.paths import REPO_PLUGINS, default_paths

    return [("repo", REPO_PLUGINS), ("user", default_paths().user_plugins)]
