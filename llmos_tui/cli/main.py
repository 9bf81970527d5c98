"""`llmos-tui` and its subcommands. Heavy imports (Textual, llama.cpp) happen only where needed."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from llmos_tui import __version__
from llmos_tui.errors import LlmosError

ENGINE_OPTIONS: list[tuple[str, str, Any]] = [
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
]

# Subcommand modules contributed by each part of the core; each has register(subparsers).
SUBCOMMAND_MODULES = (
    "llmos_tui.cli.telemetry",
    "llmos_tui.cli.journal",
    "llmos_tui.cli.doctor",
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
    return parent


def build_parser() -> argparse.ArgumentParser:
    engine = _engine_parent(defaults=False)
    parser = argparse.ArgumentParser(
        prog="llmos-tui",
        parents=[_engine_parent()],
        description="A terminal cockpit for a local LLM: telemetry, chat, doctor, tuning, journal.",
        epilog="Run without a subcommand to start the TUI. `llmos-tui info` prints every path it uses.",
    )
    parser.add_argument("--version", action="version", version=f"llmos-tui {__version__}")
    parser.add_argument("--readonly", action="store_true", help="disable every action that changes the engine")
    parser.add_argument("--replay", metavar="FILE", help="drive the dashboard from a recorded trace")
    parser.add_argument("--replay-speed", type=float, default=1.0, metavar="X", help="replay speed factor (0: as fast as possible)")
    parser.add_argument("--screen", choices=("dashboard", "chat", "doctor", "journal"), help="screen to open first")
    parser.add_argument("--interval", type=float, metavar="SECONDS", help="telemetry sampling interval")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = sub.add_parser("chat", parents=[engine], help="plain console chat (SSH, dumb terminals, pipes)")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="reply length limit")
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    chat.add_argument("--no-metrics", action="store_true", help="do not print the metrics line after replies")
    chat.set_defaults(func=_cmd_chat)

    models = sub.add_parser("models", help="list GGUF files found where people keep them")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--dir", action="append", default=[], metavar="DIR", help="also search DIR")
    models.set_defaults(func=_cmd_models)

    info = sub.add_parser("info", parents=[engine], help="print every path llmos-tui reads and writes, and the settings")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)

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

    overrides: dict[str, Any] = {
        "model": getattr(args, "model", None),
        "journal": getattr(args, "journal", None),
        "interval": getattr(args, "interval", None),
        "readonly": getattr(args, "readonly", False),
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

    return run_app(config, replay=args.replay, replay_speed=args.replay_speed, screen=args.screen)


def _cmd_chat(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from llmos_tui.console import run_console

    return run_console(config, show_metrics=not args.no_metrics)


def _cmd_models(args: argparse.Namespace) -> int:
    from llmos_tui.engine.discovery import discover, search_roots
    from llmos_tui.engine.gguf_info import human_bytes

    roots = search_roots() + [("extra", Path(d).expanduser()) for d in args.dir]
    found = discover(roots)
    if args.json:
        print(json.dumps([
            {"path": str(f.path), "source": f.source, "label": f.label,
             "info": f.info.to_dict() if f.info else None, "error": f.error}
            for f in found
        ], indent=2))
        return 0
    if not found:
        print("no GGUF files found; searched: " + ", ".join(str(r) for _s, r in roots))
        return 0
    rows = [("MODEL", "SOURCE", "SIZE", "ARCH", "QUANT", "CTX", "PATH")]
    for f in found:
        if f.info:
            i = f.info
            rows.append((f.label, f.source, human_bytes(i.size_bytes), i.architecture, i.quantization,
                         str(i.context_length or "?"), str(f.path)))
        else:
            rows.append((f.label, f.source, "-", "-", "-", "-", f"{f.path}  ({f.error})"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(len(widths))) + "  " + r[-1])
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None) or _cmd_tui
    try:
        return int(func(args) or 0)
    except LlmosError as exc:
        print(f"llmos-tui: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
