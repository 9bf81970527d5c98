"""The prompt-toolkit face: `llmos-tui chat`."""

from llmos_tui.console.app import run_console

__all__ = ["run_console"]
