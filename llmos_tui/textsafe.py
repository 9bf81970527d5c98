"""Make model output safe for a terminal: no control characters, no escape sequences.

A model can emit ESC [ ... sequences that move the cursor, retitle the window or worse;
they are shown as visible text, never passed raw.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable, TextIO

# the pieces of an escape sequence (7-bit and 8-bit forms)
_CSI = r"(?:\x1b\[|\x9b)"  # control sequence introducer; its parameters and final byte follow:
_CSI_BODY = r"[0-?]*[ -/]*[@-~]"
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"  # OSC, DCS, SOS, PM, APC
# CSI, OSC/DCS/SOS/PM/APC strings and lone two-byte escapes
_ESCAPES = re.compile(rf"{_CSI}{_CSI_BODY}|{_STRING}|\x1b[@-Z\\-_]|\x1b", re.DOTALL)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def sanitize(text: str) -> str:
    """Drop escape sequences; show other control characters as U+FFFD-free caret notation."""
    text = _ESCAPES.sub("", text)
    text = text.replace("\r\n", "\n")
    return _CONTROLS.sub(_caret, text)


def _caret(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if code == 0x0D:  # a bare carriage return would overwrite the line
        return "\n"
    if code < 0x20:
        return "^" + chr(code + 64)
    return ""


# What a command line tool may still write to a terminal: colours (SGR), the cursor home and the
# erases its own live views use. Everything else that reaches a terminal from a file name, a GGUF's
# metadata or a log line is dropped: OSC (window title, clipboard writes, hyperlinks), DCS / SOS / PM /
# APC strings, cursor movement (it can overwrite what was printed), resets and lone escapes.
_KEPT = r"(?:[0-9;]*m|H|[0-3]?J|[0-2]?K)"  # the CSI bodies kept: colours, a bare home, erases
_TERMINAL_UNSAFE = re.compile(rf"{_STRING}|{_CSI}(?!{_KEPT}){_CSI_BODY}|\x1b(?!\[{_KEPT})", re.DOTALL)
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with only the escapes a tool's own output uses (colours, home, erase): no OSC,
    DCS, cursor movement or other control characters (shown as ^X). Tabs, newlines and carriage
    returns (progress bars) stay."""
    text = _TERMINAL_UNSAFE.sub("", text)
    return _TERMINAL_CONTROLS.sub(_caret, text)


class TerminalGuard:
    """A text stream that writes ``terminal_safe`` text to a terminal: the plain subcommands print
    file names, GGUF metadata and llama.cpp's log lines, any of which can carry escape sequences."""

    def __init__(self, stream: "TextIO") -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(terminal_safe(text))
        return len(text)

    def writelines(self, lines: "Iterable[str]") -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> object:  # flush, isatty, fileno, encoding, buffer ...
        return getattr(self._stream, name)
