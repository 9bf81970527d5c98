"""`llmos-tui` and its subcommands: one module per subcommand, all over the one composition root."""

from llmos_tui.cli.main import ENGINE_OPTIONS, _engine_parent, build_parser, config_from_args, main

__all__ = ["ENGINE_OPTIONS", "build_parser", "config_from_args", "main", "_engine_parent"]
