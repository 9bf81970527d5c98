"""Shared by the examples: the few command-line options every one of them takes."""

from __future__ import annotations

import argparse
from typing import Any

from llmos_tui.core import Config, load_config


def parse(description: str, **extra: Any) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="GGUF model (default: the configured one, else the demo model)")
    parser.add_argument("--journal", help="journal SQLite file (default: the user's data folder)")
    parser.add_argument("--n-threads", type=int, default=2, help="engine threads (2)")
    for flag, options in extra.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", **options)
    args = parser.parse_args()
    config = load_config(overrides={"model": args.model, "journal": args.journal,
                                    "n_threads": args.n_threads, "n_threads_batch": args.n_threads})
    return args, config
