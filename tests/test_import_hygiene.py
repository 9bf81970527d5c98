"""The headless rule, enforced: no core module imports Textual or prompt-toolkit, the journal
imports no engine, core, doctor or face, and heavy libraries stay off the start path.
Each check imports in a fresh interpreter and reads ``sys.modules``."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import llmos_tui

FACES = ("llmos_tui.ui", "llmos_tui.console")
HEAVY = ("sklearn", "scipy", "skopt", "plotext", "textual_plotext", "prometheus_client")


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(llmos_tui.__path__, "llmos_tui.")
                  if not m.name.endswith("__main__"))


def _imported_by(modules: list[str]) -> dict[str, list[str]]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _each(modules: list[str]) -> dict[str, list[str]]:
    """What each module pulls in on its own (one interpreter per module, in one go)."""
    code = (
        "import importlib, json, subprocess, sys\n"
        f"res = {{}}\n"
        f"for name in {modules!r}:\n"
        "    out = subprocess.run([sys.executable, '-c', f'import importlib, json, sys; importlib.import_module({name!r}); '"
        " 'print(json.dumps(sorted(sys.modules)))'], capture_output=True, text=True)\n"
        "    res[name] = json.loads(out.stdout) if out.returncode == 0 else ['IMPORT-FAILED: ' + out.stderr[-300:]]\n"
        "print(json.dumps(res))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_no_core_module_imports_a_face_library() -> None:
    core = [m for m in _modules() if not m.startswith(FACES)]
    assert "llmos_tui.core.wiring" in core and "llmos_tui.journal.store" in core
    loaded = _imported_by(core)
    faces = [m for m in loaded if m.split(".")[0] in ("textual", "prompt_toolkit") or m.startswith(FACES)]
    assert faces == [], f"core modules pulled in face libraries: {faces[:10]}"


def test_the_journal_is_a_leaf() -> None:
    journal = [m for m in _modules() if m.startswith("llmos_tui.journal")]
    for name, loaded in _each(journal).items():
        assert not loaded[0].startswith("IMPORT-FAILED"), loaded
        bad = [m for m in loaded if m.startswith(("llmos_tui.engine", "llmos_tui.core", "llmos_tui.doctor",
                                                   "llmos_tui.ui", "llmos_tui.console", "llmos_tui.tuning"))]
        assert bad == [], f"{name} imports {bad}"


def test_heavy_libraries_stay_off_the_start_path() -> None:
    for name, loaded in _each(["llmos_tui.cli.main", "llmos_tui.core.wiring", "llmos_tui.doctor",
                               "llmos_tui.tuning"]).items():
        assert not loaded[0].startswith("IMPORT-FAILED"), loaded
        heavy = sorted({m.split(".")[0] for m in loaded if m.split(".")[0] in HEAVY})
        assert heavy == [], f"importing {name} loads {heavy}"
