"""End to end in a real terminal: the installed `llmos-tui` in tmux, driven by send-keys,
read back by capture-pane. Dashboard first, then chat, a streamed reply with its metrics,
the doctor screen, the journal screen, quit."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10).stdout


def wait_for_screen(session: str, *needles: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if all(n in screen for n in needles):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needles} not on screen after {timeout} s:\n{screen}")


def test_the_real_app_in_a_terminal(llmos_home: Path, tmp_path: Path) -> None:
    session = f"llmos-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "run.sh"
    script.write_text(
        f"export LLMOS_TUI_HOME={llmos_home}\n"
        f"{sys.executable} -m llmos_tui.cli --n-threads 2\n"
        f"echo exited-$? > {tmp_path / 'exit'}\nsleep 30\n"
    )
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", f"bash {script}")
    try:
        screen = wait_for_screen(session, "Telemetry", "Engine", "READY")
        assert "No NVIDIA GPU" in screen or "GPU 0" in screen
        tmux("send-keys", "-t", session, "F3")
        wait_for_screen(session, "Type a prompt")
        tmux("send-keys", "-t", session, "What is the KV cache?", "Enter")
        screen = wait_for_screen(session, "What is the KV cache?", "gen tok", "tok/s")
        assert "TTFT" in screen
        tmux("send-keys", "-t", session, "F4")
        wait_for_screen(session, "doctor", "Kill switch")
        tmux("send-keys", "-t", session, "F5")
        wait_for_screen(session, "cfg:1")
        tmux("send-keys", "-t", session, "C-q")
        deadline = time.monotonic() + 15
        while not (tmp_path / "exit").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "exit").read_text().strip() == "exited-0"
    finally:
        tmux("kill-session", "-t", session)
