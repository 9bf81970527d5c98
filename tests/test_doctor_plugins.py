"""Plugin loading and isolation: the examples load and work; broken, hung and unsafe plugins
are disabled or refused with a reason, and the session goes on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from llmos_tui.doctor import Doctor, PluginManager, Policy
from llmos_tui.doctor.plugins import unsafe_reason
from llmos_tui.engine.params import EngineParams
from llmos_tui.paths import DEMO_MODEL, REPO_PLUGINS
from llmos_tui.telemetry import Sampler
from llmos_tui.telemetry.sample import Sample


class _Nothing:
    def collect(self, sample: Sample) -> None:
        return None


def doctor_with(manager: PluginManager) -> Doctor:
    return Doctor(None, Sampler(_Nothing(), interval=1.0), None, Policy.from_config({"grace_s": 0}),
                  plugins=manager)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    path = folder / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def test_repo_examples_load_and_work() -> None:
    manager = PluginManager()
    manager.load_all(folders=[("repo", REPO_PLUGINS)], entry_points=False)
    states = {p.name: p for p in manager.list()}
    assert states["example_slow_reply"].state == "loaded"
    assert states["example_slow_reply"].detectors == ["example.slow_reply"]
    assert states["example_fewer_threads"].repairs == ["example.fewer_threads"]
    doctor = doctor_with(manager)
    doctor.sampler.series.add({"ts": 1.0, "engine.ttft_ms": 5000.0})
    doctor.sampler._latest = Sample(ts=1.0)
    found = [f for f in doctor.run_once() if f.detector == "example.slow_reply"]
    assert found and found[0].evidence["ttft_ms"] == 5000.0
    # the example repair, previewed against a running configuration
    spec = manager.registry.repairs["example.fewer_threads"]
    from llmos_tui.doctor.context import EngineHandle, JournalView, RepairContext

    params = EngineParams(model_path=str(DEMO_MODEL), n_threads=2)
    ctx = RepairContext(EngineHandle(None, None), params, None, JournalView(None), found[0])
    assert spec.fn(ctx, found[0]).n_threads == 1


RAISES = '''
from llmos_tui.doctor import detector

@detector("bad.raises", "warning")
def boom(ctx):
    raise RuntimeError("plugin bug")
'''

HANGS = '''
import time
from llmos_tui.doctor import detector

@detector("bad.hangs", "warning", timeout=0.3)
def hang(ctx):
    time.sleep(30)
'''

BROKEN_IMPORT = "import this_module_does_not_exist\n"


def test_plugin_that_raises_or_hangs_is_disabled_and_the_doctor_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    write(folder, "raises.py", RAISES)
    write(folder, "hangs.py", HANGS)
    write(folder, "broken.py", BROKEN_IMPORT)
    manager = PluginManager()
    manager.load_all(folders=[("user", folder)], entry_points=False)
    by_name = {p.name: p for p in manager.list()}
    assert by_name["broken"].state == "failed" and "ModuleNotFoundError" in by_name["broken"].reason
    doctor = doctor_with(manager)
    doctor.sampler._latest = Sample(ts=1.0)
    started = time.monotonic()
    found = doctor.run_once()
    assert time.monotonic() - started < 3.0, "a hung detector is abandoned at its time limit"
    assert by_name["raises"].state == "disabled" and "RuntimeError: plugin bug" in by_name["raises"].reason
    assert by_name["hangs"].state == "disabled" and "0.3 s limit" in by_name["hangs"].reason
    shown = [f for f in found if f.detector == "doctor.plugins"]
    assert len(shown) == 3, "each failed or disabled plugin is shown as a finding, never silently"
    assert any("broken" in f.title and "failed" in f.title for f in shown)
    assert not manager.registry.detectors["bad.raises"].enabled
    # the next pass no longer runs them, and the built-ins still run
    started = time.monotonic()
    doctor.run_once()
    assert time.monotonic() - started < 1.0
    assert manager.registry.detectors["engine.crashed"].enabled


def test_world_writable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    path = write(folder, "sneaky.py", RAISES.replace("bad.raises", "sneaky.raises"))
    os.chmod(folder, 0o777)
    manager = PluginManager()
    manager.load_all(folders=[("user", folder)], entry_points=False)
    info = next(p for p in manager.list() if p.name == "sneaky")
    assert info.state == "refused" and "world-writable" in info.reason
    assert "sneaky.raises" not in manager.registry.detectors
    os.chmod(folder, 0o755)
    os.chmod(path, 0o666)
    assert "world-writable" in (unsafe_reason(path) or "")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_group_writable_by_another_group_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "grp"
    path = write(folder, "p.py", "x = 1\n")
    other_gid = next((g for g in range(1, 65534) if g != os.getgid()), None)
    if os.getuid() != 0:
        pytest.skip("changing a file's group to one we are not in needs root")
    os.chown(folder, -1, other_gid)
    os.chmod(folder, 0o775)
    assert "not yours" in (unsafe_reason(path) or "")
    os.chmod(folder, 0o755)
    assert unsafe_reason(path) is None


def test_plugins_do_not_leak_between_managers(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write(folder, "raises.py", RAISES)
    first = PluginManager()
    first.load_all(folders=[("user", folder)], entry_points=False)
    first.disable(str((folder / "raises.py").resolve()), "test")
    second = PluginManager()
    second.load_all(folders=[("user", folder)], entry_points=False)
    assert second.registry.detectors["bad.raises"].enabled
    assert second.registry.detectors["engine.crashed"] is not first.registry.detectors["engine.crashed"]


def test_an_abandoned_import_never_registers_later(tmp_path, monkeypatch) -> None:
    import time as _time

    from llmos_tui.doctor import plugins as plugin_mod

    monkeypatch.setattr(plugin_mod, "IMPORT_TIMEOUT", 0.2)
    folder = tmp_path / "plugs"
    folder.mkdir(mode=0o755)
    (folder / "slowp.py").write_text(
        "import time\nfrom llmos_tui.doctor import detector\ntime.sleep(0.6)\n"
        "@detector('slowp.det', 'warning')\ndef det(ctx):\n    return []\n"
    )
    manager = plugin_mod.PluginManager()
    info = manager.load_file(folder / "slowp.py", "user")
    assert info.state == "failed" and "abandoned" in info.reason
    _time.sleep(0.8)
    assert "slowp.det" not in manager.registry.detectors
