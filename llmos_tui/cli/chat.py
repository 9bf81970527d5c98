"""`llmos-tui chat`: the plain console face (SSH, dumb terminals, pipes) over the wired core."""

from __future__ import annotations

import argparse

from llmos_tui.cli.main import _engine_parent, add_attach_options, config_from_args


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    chat = sub.add_parser("chat", parents=[_engine_parent(defaults=False)],
                          help="plain console chat (SSH, dumb terminals, pipes)")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="reply length limit")
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    chat.add_argument("--no-metrics", action="store_true", help="do not print the metrics line after replies")
    chat.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS,
                      help="disable every command that changes the engine (attached: read-only attach)")
    add_attach_options(chat, defaults=False)
    chat.set_defaults(func=_cmd_chat)


def _cmd_chat(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from llmos_tui.console import run_console

    return run_console(config, show_metrics=not args.no_metrics, attach=getattr(args, "attach", None),
                       no_attach=getattr(args, "no_attach", False))
