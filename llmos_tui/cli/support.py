"""What every subcommand handler shares: one line on stderr for any failure, never a traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from llmos_tui.errors import LlmosError

Handler = Callable[[argparse.Namespace], int]


def error(message: str) -> int:
    print(f"llmos-tui: error: {message}", file=sys.stderr)
    return 1


def guarded(handler: Handler) -> Handler:
    """Exit code 1 and one line for an error (an unexpected one says it is a bug), 0 for a
    closed pipe (`status | head`), 130 for Ctrl-C."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except LlmosError as exc:
            return error(str(exc))
        except BrokenPipeError:
            return 0
        except KeyboardInterrupt:
            return 130
        except OSError as exc:
            return error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except Exception as exc:  # a bug: still one line for the operator
            name = handler.__name__.removeprefix("cmd_").lstrip("_")
            return error(f"{name} failed: internal error ({type(exc).__name__}: {exc}); please report it")

    return run
