"""`llmos-tui info`: every path llmos-tui reads and writes, and the settings in force."""

from __future__ import annotations

import argparse
import json

from llmos_tui import __version__
from llmos_tui.cli.main import _engine_parent, config_from_args


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    info = sub.add_parser("info", parents=[_engine_parent(defaults=False)],
                          help="print every path llmos-tui reads and writes, and the settings")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from llmos_tui.engine.discovery import search_roots

    config = config_from_args(args)
    data = {
        "version": __version__,
        "config_file": str(config.source or config.paths.config_file) + ("" if config.source else " (absent)"),
        "paths": {**config.paths.as_dict(), "journal": str(config.journal_file)},
        "model_search": [f"{s}: {r}" for s, r in search_roots()],
        "engine": config.engine.to_dict(),
        "chat": config.chat.sampling() | {"system_prompt": config.chat.system_prompt},
        "telemetry_interval": config.telemetry_interval,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"llmos-tui {__version__}")
    print(f"config file   {data['config_file']}")
    for key, value in data["paths"].items():
        print(f"{key:<13} {value}")
    print("model search  " + "\n              ".join(data["model_search"]))
    print("engine        " + config.engine.summary())
    print(f"model         {config.engine.model_path}")
    return 0
