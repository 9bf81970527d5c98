"""What the plain subcommands write to a terminal: a file name, a GGUF's metadata or a log line with
escape sequences in it must not retitle the window, write the clipboard or move the cursor."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

from llmos_tui.paths import DEMO_MODEL
from llmos_tui.textsafe import terminal_safe

ESC, BEL = "\x1b", "\x07"


def test_terminal_safe_keeps_colours_and_erases_and_drops_the_rest() -> None:
    assert terminal_safe(f"a{ESC}]0;PWNED{BEL}b") == "ab"  # window title (OSC 0)
    assert terminal_safe(f"{ESC}]52;c;ZXZpbA=={BEL}x") == "x"  # clipboard write (OSC 52)
    assert terminal_safe(f"{ESC}]8;;http://x{BEL}link{ESC}]8;;{BEL}") == "link"  # hyperlink
    assert terminal_safe(f"{ESC}Pq#0{ESC}\\ok") == "ok"  # DCS (sixel and friends)
    assert terminal_safe(f"{ESC}[2A{ESC}[10;1fup{ESC}[5;10H") == "up"  # cursor movement (a home with a place too)
    assert terminal_safe(f"{ESC}c reset") == "c reset" and terminal_safe(f"lone{ESC}") == "lone"
    assert terminal_safe("back\x08space\x00") == "back^Hspace^@"
    kept = f"{ESC}[1;31mred{ESC}[0m {ESC}[H{ESC}[2J{ESC}[K tab\tcr\rnl\n"
    assert terminal_safe(kept) == kept  # colours, home / erase (live views), tabs, progress bars


def test_a_hostile_file_name_reaches_the_terminal_without_its_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    evil = folder / f"x{ESC}]0;PWNED{BEL}{ESC}[2Ay.gguf"
    shutil.copy(DEMO_MODEL, evil)
    master, slave = pty.openpty()
    env = {**os.environ, "LLMOS_TUI_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "llmos_tui.cli", "models", "--dir", str(folder)],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = out.decode("utf-8", "replace")
    assert f"{folder}/xy.gguf" in text, text  # listed, read from its header, the escapes gone
    assert ESC not in text and BEL not in text


def test_a_gguf_whose_metadata_carries_escapes_shows_its_name_without_them(tmp_path: Path) -> None:
    """A downloaded GGUF's general.name reached the dashboard raw: it retitled the terminal (OSC 0) and
    cleared the screen. The header's strings and llama.cpp's log lines (which print the metadata) are
    sanitized where they enter the core, so every face shows them safely."""
    from llmos_tui.engine.gguf_info import read_model_info
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.supervisor import Supervisor

    evil = tmp_path / "evil.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force",
                    "--general-name", f"evil{ESC}]0;PWNED{BEL}{ESC}[2J{ESC}[31mred",
                    "--general-description", f"about{ESC}]52;c;ZXZpbA=={BEL}", str(DEMO_MODEL), str(evil)],
                   check=True, capture_output=True, timeout=60)
    info = read_model_info(evil)
    assert info.name == "evilred" and info.description == "about"
    sup = Supervisor(EngineParams(model_path=str(evil), n_ctx=256, n_threads=1, n_threads_batch=1))
    sup.start(timeout=60)
    try:
        lines = [line.text for line in sup.logs()]
        assert any("evil" in line and "red" in line for line in lines), "llama.cpp printed the name"
        assert not any(ESC in line or BEL in line for line in lines)
    finally:
        sup.stop()
