"""Shared fixtures: the embedded demo model on real llama.cpp, and an isolated llmos home."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import Supervisor
from llmos_tui.journal import Journal
from llmos_tui.paths import DEMO_MODEL


@pytest.fixture(autouse=True)
def llmos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config/data/state folders (never the developer's own)."""
    home = tmp_path / "llmos-home"
    monkeypatch.setenv("LLMOS_TUI_HOME", str(home))
    return home


@pytest.fixture
def demo_params() -> EngineParams:
    assert DEMO_MODEL.exists(), "the embedded demo model is missing: run scripts/make_demo_model.py"
    return EngineParams(model_path=str(DEMO_MODEL), n_ctx=1024, n_threads=2, n_threads_batch=2)


@pytest.fixture
def core_config(llmos_home: Path, demo_params: EngineParams):
    """A Config on the test's own LLMOS_TUI_HOME (journal, plugins, themes there) running the demo model."""
    from llmos_tui.config import Config
    from llmos_tui.paths import default_paths

    return Config(engine=demo_params, paths=default_paths())


@pytest.fixture
def make_core(core_config):
    """``make_core(mode="oneshot", **options)``: the wired core (``build_core``) on the test's home
    with the demo model, closed at the end of the test. The engine is not started: call
    ``op.start_engine()``. No status endpoint unless ``endpoint=True``."""
    from llmos_tui.core.wiring import build_core

    built = []

    def make(mode: str = "oneshot", **options):
        options.setdefault("endpoint", False)
        op = build_core(core_config, mode, **options)
        built.append(op)
        return op

    yield make
    for op in reversed(built):
        op.close()


@pytest.fixture
def core(make_core):
    """The one-shot wired core (journal, change transaction, doctor not started, telemetry on demand)."""
    return make_core("oneshot")


@pytest.fixture
def supervisor(demo_params: EngineParams):
    sup = Supervisor(demo_params)
    sup.start(timeout=60)
    yield sup
    sup.stop()


def write_refused_gguf(path: Path) -> Path:
    """A well-formed GGUF header that llama.cpp refuses: llama metadata, but no tensors."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def bad_models(tmp_path: Path) -> dict[str, Path]:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a model\n")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(DEMO_MODEL.read_bytes()[: DEMO_MODEL.stat().st_size // 3])
    return {
        "missing": tmp_path / "absent.gguf",
        "not_gguf": not_gguf,
        "truncated": truncated,
        "refused": write_refused_gguf(tmp_path / "refused.gguf"),
    }


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(predicate, timeout: float = 20.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.fixture
def journal(tmp_path: Path):
    """A real journal file in the test's own folder."""
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


@contextlib.contextmanager
def running_daemon(home: Path, overrides: dict, settings, *, name: str, **daemon_kwargs):
    """A real daemon (``serve.daemon.Daemon``) on its own thread, with ``LLMOS_TUI_HOME`` = ``home``
    while it runs, ready with its engine loaded; stopped and the variable put back on exit. The
    module-scoped daemon fixtures of the serve, attach and fleet tests share it."""
    from llmos_tui.config import load_config
    from llmos_tui.engine.supervisor import EngineState
    from llmos_tui.serve.daemon import Daemon

    before = os.environ.get("LLMOS_TUI_HOME")
    os.environ["LLMOS_TUI_HOME"] = str(home)
    lines: list[str] = []
    d = Daemon(load_config(overrides=overrides), settings, say=lines.append, **daemon_kwargs)
    d.lines = lines  # type: ignore[attr-defined]
    d.home = home  # type: ignore[attr-defined]
    thread = threading.Thread(target=d.run, name=name, daemon=True)
    thread.start()
    try:
        assert d.ready.wait(30), lines
        assert wait_for(lambda: d.operator.supervisor.state == EngineState.READY, 60), lines
        yield d
    finally:
        d.stop("test end")
        thread.join(30)
        if before is None:
            os.environ.pop("LLMOS_TUI_HOME", None)
        else:
            os.environ["LLMOS_TUI_HOME"] = before
