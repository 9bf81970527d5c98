"""Where a daemon's control socket lives, and finding the running ones (no third-party imports).

A face decides whether to attach before it loads the daemon's client (httpx) or server
(Starlette): this module is all it needs for that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from llmos_tui.errors import LlmosError

if TYPE_CHECKING:
    from llmos_tui.config import Config
    from llmos_tui.serve.attached import AttachedOperator

PREFIX = "llmos-tui-serve-"
SUFFIX = ".sock"


def socket_path(runtime_dir: Path, pid: int | None = None) -> Path:
    """``<runtime_dir>/llmos-tui-serve-<pid>.sock``: the control socket of the daemon ``pid``."""
    return Path(runtime_dir) / f"{PREFIX}{pid or os.getpid()}{SUFFIX}"


def find_daemons(runtime_dir: Path) -> list[Path]:
    """The control sockets of this user's running daemons (those of dead processes skipped)."""
    folder = Path(runtime_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            pid = int(path.name[len(PREFIX):-len(SUFFIX)])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:
            pass
        found.append(path)
    return found


def attach_face(config: "Config", socket: str | None, *, face: str) -> "AttachedOperator | None":
    """What a face (TUI, console) drives when a daemon runs: the attached operator of the daemon
    serving ``config``'s journal, or of ``socket`` (``--attach``); None when there is none, or
    when the serve extra is not installed (then ``--attach`` is an error). ``config.readonly``
    (``--readonly``) attaches read-only."""
    if not socket and not find_daemons(config.paths.runtime_dir):
        return None  # the common case, decided without loading the client
    try:
        from llmos_tui.serve.attached import attach
    except ModuleNotFoundError as exc:
        if socket:
            raise LlmosError(f"--attach needs the serve extra ({exc.name} is missing): "
                             "pip install 'llmos-tui[serve]'") from None
        return None
    return attach(config, socket=socket, face=face, readonly=config.readonly)
