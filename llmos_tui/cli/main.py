"""`llmos-tui` and its subcommands. Heavy imports (Textual, llama.cpp) happen only where needed."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from llmos_tui import __version__
from llmos_tui.errors import LlmosError

ENGINE_OPTIONS: list[tuple[str, str, type]] = [
    ("--n-gpu-layers", "layers to offload to the GPU (-1: all)", int),
    ("--n-ctx", "context window in tokens (0: the model's own)", int),
    ("--n-batch", "logical batch size for prompt processing", int),
    ("--n-ubatch", "physical batch size", int),
    ("--n-threads", "threads for generation", int),
    ("--n-threads-batch", "threads for prompt processing", int),
    ("--flash-attn", "flash attention: auto, on, off", str),
    ("--type-k", "K cache type: f16, q8_0, q4_0, ...", str),
    ("--type-v", "V cache type (quantised needs flash attention)", str),
    ("--seed", "sampling seed", int),
    ("--repack", "weight repacking (AMX, x86/ARM): auto (off on AMX CPUs: llama.cpp#20824), on, off", str),
]

# Subcommand modules contributed by each part of the core; each has register(subparsers).
SUBCOMMAND_MODULES = (
    "llmos_tui.cli.chat",
    "llmos_tui.cli.models",
    "llmos_tui.cli.info",
    "llmos_tui.cli.telemetry",
    "llmos_tui.cli.journal",
    "llmos_tui.cli.doctor",
    "llmos_tui.cli.quantize",
    "llmos_tui.cli.exporter",
    "llmos_tui.cli.config_cmd",
    "llmos_tui.cli.tune",
    "llmos_tui.cli.serve",
    "llmos_tui.cli.report",
    "llmos_tui.cli.fleet",
)


def _engine_parent(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The model/engine options. Subcommands take them too (`llmos-tui chat --n-ctx 512`), but
    without defaults: argparse would otherwise overwrite a value given before the subcommand."""
    parent = argparse.ArgumentParser(add_help=False, argument_default=None if defaults else argparse.SUPPRESS)
    group = parent.add_argument_group("model and engine")
    group.add_argument("--model", "-m", metavar="PATH", help="GGUF model file (default: config, else the embedded demo model)")
    group.add_argument("--config", metavar="FILE", help="config file (default: the user's config folder)")
    group.add_argument("--journal", metavar="PATH", help="journal SQLite file (default: the user's data folder)")
    for flag, text, kind in ENGINE_OPTIONS:
        group.add_argument(flag, type=str, metavar=kind.__name__.upper(), help=text)
    parent.add_argument("--on-event", metavar="CMD",
                        help="run CMD on every doctor finding, action and configuration change (the event as "
                             "JSON on stdin; beside any [hooks] command, with the same rate cap and time limit)")
    return parent


def add_attach_options(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """--attach / --no-attach: a face of a running daemon (`llmos-tui serve`), or its own core.
    A subcommand takes them without defaults (they would overwrite a value given before it)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--attach", metavar="SOCKET", default=None if defaults else argparse.SUPPRESS,
                       help="attach to the daemon with this control socket (default: the daemon serving this "
                            "journal, when one runs)")
    group.add_argument("--no-attach", action="store_true", default=False if defaults else argparse.SUPPRESS,
                       help="run an embedded core even when a daemon serves this journal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmos-tui",
        parents=[_engine_parent()],
        description="A terminal cockpit for a local LLM: telemetry, chat, doctor, tuning, journal.",
        epilog="Run without a subcommand to start the TUI. `llmos-tui info` prints every path it uses.",
    )
    parser.add_argument("--version", action="version", version=f"llmos-tui {__version__}")
    parser.add_argument("--readonly", action="store_true", help="disable every action that changes the engine")
    parser.add_argument("--replay", metavar="FILE", help="drive the dashboard from a recorded trace (demo: the packaged synthetic incident)")
    parser.add_argument("--replay-speed", type=float, default=1.0, metavar="X", help="replay speed factor (0: as fast as possible, at most one sample per millisecond)")
    parser.add_argument("--screen", choices=("dashboard", "chat", "doctor", "journal", "tuning", "fleet"), help="screen to open first")
    parser.add_argument("--interval", type=float, metavar="SECONDS", help="telemetry sampling interval")
    add_attach_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def config_from_args(args: argparse.Namespace):
    from llmos_tui.config import load_config

    overrides: dict[str, object] = {
        "model": getattr(args, "model", None),
        "journal": getattr(args, "journal", None),
        "interval": getattr(args, "interval", None),
        "readonly": getattr(args, "readonly", False),
        "on_event": getattr(args, "on_event", None),
        "config_explicit": bool(getattr(args, "config", None)),
    }
    for flag, _text, _kind in ENGINE_OPTIONS:
        key = flag.lstrip("-").replace("-", "_")
        overrides[key] = getattr(args, key, None)
    config = load_config(Path(args.config) if getattr(args, "config", None) else None, overrides=overrides)
    if getattr(args, "system", None) is not None:
        config.chat.system_prompt = args.system
    if getattr(args, "max_tokens", None) is not None:
        if args.max_tokens < 1:
            raise LlmosError(f"--max-tokens must be at least 1, got {args.max_tokens}")
        config.chat.max_tokens = args.max_tokens
    if getattr(args, "temperature", None) is not None:
        if not 0 <= args.temperature <= 5:
            raise LlmosError(f"--temperature must be between 0 and 5, got {args.temperature}")
        config.chat.temperature = args.temperature
    return config


def _cmd_tui(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from llmos_tui.ui.app import run_app

    return run_app(config, replay=args.replay, replay_speed=args.replay_speed, screen=args.screen,
                   attach=args.attach, no_attach=args.no_attach)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None) or _cmd_tui
    streams = sys.stdout, sys.stderr
    if getattr(func, "__name__", "") not in INTERACTIVE:  # they draw the terminal themselves, model text sanitized
        from llmos_tui.textsafe import TerminalGuard

        sys.stdout, sys.stderr = (TerminalGuard(s) if _is_tty(s) else s for s in streams)
    try:
        return int(func(args) or 0)
    except LlmosError as exc:
        print(f"llmos-tui: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        sys.stdout, sys.stderr = streams


# the faces that own the terminal (Textual, prompt_toolkit): they sanitize what they show themselves
INTERACTIVE = frozenset({"_cmd_tui", "_cmd_chat"})


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
