"""`llmos-tui serve`: the headless daemon with an OpenAI-compatible HTTP API (see llmos_tui.serve)."""

from __future__ import annotations

import argparse

from llmos_tui.cli.main import _engine_parent, config_from_args
from llmos_tui.errors import LlmosError


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "serve", parents=[_engine_parent(defaults=False)],
        help="serve the model over an OpenAI-compatible HTTP API (a headless daemon, foreground)",
        description="Run the headless core (engine, doctor, journal, telemetry) as a daemon that serves "
                    "/v1/chat/completions, /v1/completions, /v1/models, /health and /metrics. Loopback by "
                    "default; another address needs a bearer token. SIGTERM drains and stops.")
    parser.add_argument("--listen", metavar="HOST:PORT", default=None,
                        help="address to serve on (default: [serve] listen, else 127.0.0.1:8080)")
    parser.add_argument("--token-file", metavar="FILE", default=None,
                        help="bearer token clients must send (owner-only file; or $LLMOS_TUI_SERVE_TOKEN)")
    parser.add_argument("--queue-size", type=int, metavar="N", default=None,
                        help="requests that may wait for the engine (one more gets 429; default 16)")
    parser.add_argument("--log-prompts", action="store_true", default=None,
                        help="journal the prompt and reply text of API requests (default: metrics only)")
    # also after `serve` (as `llmos-tui --readonly serve`): a box agent starts its daemon with
    # `serve ARGS`, and `fleet up --readonly` makes a read-only box. SUPPRESS keeps the value given
    # before `serve` when it is not given here
    parser.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS,
                        help="refuse every change of the engine (also changes that come over the fleet)")
    parser.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        from llmos_tui.serve.daemon import Daemon
        from llmos_tui.serve.settings import load_settings, read_token_file
    except ModuleNotFoundError as exc:
        raise LlmosError(f"serve needs the serve extra ({exc.name} is missing): pip install 'llmos-tui[serve]'") from None
    if args.queue_size is not None and args.queue_size < 1:
        raise LlmosError(f"--queue-size must be at least 1, got {args.queue_size}")
    settings = load_settings(config).with_overrides(
        listen=args.listen, queue_size=args.queue_size, log_prompts=args.log_prompts,
        token=read_token_file(args.token_file) if args.token_file else None)
    return Daemon(config, settings).run()
