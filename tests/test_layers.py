"""The layers, enforced statically: `lint-imports` keeps every contract in pyproject.toml.

import-linter reads the source (function-level and TYPE_CHECKING imports included), so what the
runtime hygiene test (test_import_hygiene.py) cannot see at import time is seen here. The
contracts: journal < engine < telemetry | config < doctor < tuning < compress | exporters < core <
faces (cli | console | ui, independent of each other); nothing outside ui and console imports
textual or prompt_toolkit; nothing in the headless core imports ray.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import llmos_tui

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llmos_tui"
FACES = {"cli", "console", "ui"}

BROKEN_IMPORT = re.compile(r"^-\s+(\S+) -> (\S+) \(l\.", re.MULTILINE)


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` of this interpreter's environment, on the package under ``root``."""
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.exists(), f"{exe} is missing: install the test extra (pip install -e '.[test]': import-linter)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run([str(exe), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _top_level() -> set[str]:
    return {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}


def test_the_tree_under_test_is_the_one_linted() -> None:
    assert Path(llmos_tui.__file__).resolve().parent == PACKAGE, \
        f"llmos_tui is imported from {llmos_tui.__file__}, not {PACKAGE}: run with PYTHONPATH={ROOT}"


def test_lint_imports_keeps_every_contract() -> None:
    done = _lint_imports(ROOT)
    report = f"{done.stdout[-8000:]}{done.stderr[-2000:]}"
    broken = sorted({f"{a} -> {b}" for a, b in BROKEN_IMPORT.findall(done.stdout)})
    assert done.returncode == 0 and "0 broken" in done.stdout, f"a layer contract is broken by {broken}:\n{report}"


def test_every_top_level_module_is_placed() -> None:
    """A new module must say where it stands: in a layer, and in the face-library rule."""
    contracts = _contracts()
    layers = contracts["layers"]
    assert layers["exhaustive"] is True
    placed = {name.strip() for layer in layers["layers"] for name in layer.replace(":", "|").split("|")}
    assert _top_level() == placed, f"not placed in a layer: {_top_level() - placed}; gone: {placed - _top_level()}"
    headless = {m.removeprefix("llmos_tui.") for m in contracts["face-libraries"]["source_modules"]}
    assert headless == _top_level() - {"ui", "console"}
    no_ray = {m.removeprefix("llmos_tui.") for m in contracts["no-ray-in-core"]["source_modules"]}
    assert no_ray == _top_level() - FACES - {"fleet"}  # the fleet is built on Ray (the optional extra)


def test_a_function_level_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The contracts can fail: a copy of the package with a journal function that imports the
    core, an engine function that imports textual and a doctor function that imports ray is refused,
    each named with its line."""
    copy = tmp_path / "tree"
    shutil.copytree(PACKAGE, copy / "llmos_tui", ignore=shutil.ignore_patterns("data", "themes", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for rel, module in (("journal/__init__.py", "llmos_tui.core.wiring"), ("engine/__init__.py", "textual.app"),
                        ("doctor/__init__.py", "ray")):
        path = copy / "llmos_tui" / rel
        path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _smuggled():\n    import {module}  # noqa\n")
    done = _lint_imports(copy)
    assert done.returncode != 0, done.stdout
    out = done.stdout
    assert "llmos_tui.journal is not allowed to import llmos_tui.core" in out, out
    assert "llmos_tui.engine is not allowed to import textual" in out, out
    assert "llmos_tui.doctor is not allowed to import ray" in out, out
