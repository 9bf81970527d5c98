"""`llmos-tui chat` as a real subprocess: piped stdin, an interactive terminal, bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pexpect
import psutil
import pytest

from llmos_tui.textsafe import sanitize
from tests.conftest import cli_env

CLI = [sys.executable, "-m", "llmos_tui.cli"]


def run_cli(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=cli_env())


def test_piped_prompt_writes_only_the_answer() -> None:
    result = run_cli("chat", "--n-threads", "2", "--temperature", "0", stdin="What is VRAM?\n")
    assert result.returncode == 0, result.stderr
    answer = result.stdout.strip()
    assert len(answer.split()) >= 4, answer
    assert "tok/s" not in result.stdout and "llmos-tui" not in result.stdout  # no banner, no metrics
    assert "\x1b" not in result.stdout


def test_empty_stdin_is_a_clear_error() -> None:
    result = run_cli("chat", stdin="")
    assert result.returncode == 2
    assert result.stderr.strip() == "llmos-tui: error: no prompt on stdin"


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("missing", "model not found"), ("not_gguf", "not a GGUF file"), ("truncated", "truncated"),
     ("refused", "llama.cpp refused")],
)
def test_bad_model_exits_nonzero_with_one_line(bad_models, kind: str, fragment: str) -> None:
    result = run_cli("chat", "--model", str(bad_models[kind]), stdin="hi\n")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_parameter_exits_nonzero_naming_it() -> None:
    result = run_cli("chat", "--n-ctx", "huge", stdin="hi\n")
    assert result.returncode == 2
    assert result.stderr.strip() == "llmos-tui: error: n_ctx must be an integer, got 'huge'"


def enter(child: pexpect.spawn, text: str) -> None:
    """Type a line and press Enter as a terminal does (CR; LF is Ctrl-J, which adds a line)."""
    child.send(text + "\r")


def test_interactive_session_with_slash_commands(llmos_home: Path) -> None:
    env = cli_env() | {"PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(CLI[0], [*CLI[1:], "chat", "--n-threads", "2"], env=env, encoding="utf-8",
                          timeout=30, dimensions=(40, 120))
    try:
        child.expect("llmos demo")
        child.expect(">")
        enter(child, "/help")
        child.expect("/params")
        enter(child, "/model")
        child.expect("chat template yes")
        enter(child, "/params n_ctx=512")
        child.expect(r"applied \(cfg:\d+\): .*ctx=512")
        enter(child, "/params n_ctx=nope")
        child.expect("error: refused: n_ctx must be an integer, got 'nope'")
        enter(child, "What is the KV cache?")
        child.expect(r"gen tok")  # the metrics line after the reply
        enter(child, "/reset")
        child.expect("new conversation")
        child.expect(">")
        enter(child, "/restart")
        child.expect("ready")
        child.expect(">")
        (worker,) = psutil.Process(child.pid).children(recursive=True)
        worker.kill()
        worker.wait(5)
        # the console runs the same doctor as the TUI: the crash is a one-line notice, and the
        # default policy restarts the engine and verifies it
        child.expect(r"\[doctor\] error: engine crashed")
        child.expect(r"\[doctor\] engine.restart verified")
        enter(child, "What is VRAM?")
        child.expect("gen tok")
        enter(child, "/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    history = (llmos_home / "state" / "chat_history").read_text()
    assert "What is the KV cache?" in history


def test_piped_params_words_and_exit_code_follow_the_change_result() -> None:
    """/params: an applied change is said on stdout; a refused one is an error line with its state word
    and a non-zero exit, whatever else went well."""
    applied = run_cli("chat", "--n-threads", "2", stdin="/params n_ctx=512\n")
    assert applied.returncode == 0, applied.stderr
    assert re.search(r"applied \(cfg:\d+\): .*ctx=512", applied.stdout), applied.stdout
    refused = run_cli("chat", "--n-threads", "2", stdin="/params n_ctx=nope\n/params\n")
    assert refused.returncode == 1, refused.stdout
    assert "llmos-tui: error: refused: n_ctx must be an integer, got 'nope'" in refused.stderr
    assert re.search(r"ctx=\d+", refused.stdout.splitlines()[-1])  # /params alone shows what runs


def test_console_commands_come_from_the_core_table_and_reset_the_start_limit() -> None:
    from llmos_tui.config import load_config
    from llmos_tui.console.app import _slash, help_text
    from llmos_tui.core.commands import COMMANDS
    from llmos_tui.core.wiring import build_core

    text = help_text()
    assert all(f"/{c.name}" in text for c in COMMANDS)
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "readonly": True})
    op = build_core(config, "oneshot", telemetry=False, endpoint=False)
    said: list[str] = []
    errors: list[str] = []
    try:
        op.doctor.runner.start_limit_hit = True
        _slash(op, "/reset-limit", said.append, errors.append)
        assert not op.doctor.start_limit_hit and "start limit reset" in "".join(said), (said, errors)
        _slash(op, "/restart", said.append, errors.append)  # read-only: refused before anything runs
        assert errors == ["read-only mode: /restart is disabled (it would change the engine)"]
        _slash(op, "/frob", said.append, errors.append)
        assert errors[-1] == "unknown command /frob; /help lists them"
    finally:
        op.close()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text\nline two\tok", "plain text\nline two\tok"),
        ("\x1b[2J\x1b[Hclear", "clear"),
        ("title\x1b]0;pwned\x07 after", "title after"),
        ("bell\x07 back\x08", "bell^G back^H"),
        ("cr\rover", "cr\nover"),
        ("c1 \x9b31m red", "c1  red"),
    ],
)
def test_model_output_never_reaches_the_terminal_raw(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown
