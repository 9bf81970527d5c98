"""Make model output safe for a terminal: no control characters, no escape sequences.

A model can emit ESC [ ... sequences that move the cursor, retitle the window or worse;
they are shown as visible text, never passed raw.
"""

from __future__ import annotations

import re

# CSI, OSC, DCS/SOS/PM/APC strings and lone two-byte escapes (7-bit and 8-bit forms)
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[@-Z\\-_]"
    r"|\x1b",
    re.DOTALL,
)
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
