"""`llmos-tui config --init | --check | --init-theme NAME`: a commented sample with every key; a
check of the file; a shipped theme copied into the user theme folder to edit.

``--init`` writes the sample to the config file (never over an existing one; ``--force`` keeps
the old one aside as ``config.toml.bak``) or to stdout with ``--print``. Every key is there,
commented out at its default, so the sample changes nothing until a line is uncommented.
``--check`` reads the file as the TUI would and also checks what only the TUI would notice later:
the theme, the binding ids of ``[ui.keys]`` and their clashes, the doctor's policy, the
exporter's address. Exit 0 when it is valid (notes may be printed), 1 when it is not.
``--init-theme NAME`` copies the shipped theme NAME (``dark``, ``light``, ``high-contrast``,
``16-colour``) into the user theme folder, where a file of the same theme name wins over the
shipped one (never over an existing copy; ``--force`` keeps the old one as ``FILE.bak``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmos_tui.cli.support import guarded

if TYPE_CHECKING:
    from llmos_tui.config import Config

# the sections something reads (config.load_config, and serve.settings for [serve]): another is a note
KNOWN_SECTIONS = ("engine", "chat", "telemetry", "journal", "rollups", "ui", "doctor", "exporter", "adapt", "hooks",
                  "serve")
UI_KEYS = ("theme", "keys")


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "config",
        help="write a commented sample config (--init) or check the config file (--check)",
        description="Write a commented sample config with every key (--init), or check a config file (--check).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--init", action="store_true", help="write the sample to the config file (or --print it)")
    what.add_argument("--check", action="store_true", help="validate the config file; exit 1 when it is not valid")
    what.add_argument("--init-theme", metavar="NAME",
                      help="copy the shipped theme NAME into the user theme folder to edit (it then wins)")
    parser.add_argument("--print", action="store_true", help="with --init: print the sample instead of writing it")
    parser.add_argument("--force", action="store_true",
                        help="with --init or --init-theme: replace an existing file (kept as FILE.bak)")
    parser.add_argument("--file", metavar="FILE", help="the config file (default: --config, else the user's)")
    parser.set_defaults(func=cmd_config)


def _target(args: argparse.Namespace) -> Path:
    from llmos_tui.paths import default_paths

    chosen = args.file or getattr(args, "config", None)
    return Path(chosen).expanduser() if chosen else default_paths().config_file


@guarded
def cmd_config(args: argparse.Namespace) -> int:
    if args.init:
        return _init(args)
    if args.init_theme:
        return _init_theme(args.init_theme, force=args.force)
    path = _target(args)
    if not path.exists() and not (args.file or getattr(args, "config", None)):
        print(f"no config file at {path}: the defaults apply (`llmos-tui config --init` writes a sample)")
        return 0
    return _check(path)


# ---- --init ---------------------------------------------------------------------------------------
def sample_config() -> str:
    from llmos_tui.doctor.policy import MODES
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.config import DEFAULT_EXPORTER_LISTEN as DEFAULT_LISTEN
    from llmos_tui.paths import DEMO_MODEL, default_paths

    defaults = EngineParams()
    engine_notes = {
        "model_path": "GGUF model file (default: the embedded demo model)",
        "n_gpu_layers": "layers offloaded to the GPU; -1 all that fit",
        "n_ctx": "context window in tokens; 0 the model's own",
        "n_batch": "logical batch for prompt processing",
        "n_ubatch": "physical batch",
        "n_threads": "threads for generation (default: half the cores)",
        "n_threads_batch": "threads for prompt processing",
        "flash_attn": "auto, on or off",
        "type_k": "K cache type: f16, q8_0, q4_0, ...",
        "type_v": "V cache type (a quantised V cache needs flash attention)",
        "seed": "sampling seed",
        "use_mmap": "map the model file instead of reading it",
        "repack": "weight repacking (AMX, x86/ARM): auto (off on AMX CPUs), on or off",
    }
    out = [
        "# llmos-tui configuration. Every key is shown at its default, commented out:",
        "# uncomment a line to change it. `llmos-tui config --check` validates this file;",
        "# `llmos-tui info` prints every path llmos-tui reads and writes.",
        "",
        "[engine]",
    ]
    for name in EngineParams.field_names():
        value = str(DEMO_MODEL) if name == "model_path" else getattr(defaults, name)
        out.append(f"# {name} = {_toml(value)}".ljust(44) + f"  # {engine_notes.get(name, '')}".rstrip())
    out += [
        "",
        "[chat]",
        '# system_prompt = ""',
        "# max_tokens = 512                         # reply length limit",
        "# temperature = 0.7",
        "# top_p = 0.95",
        "# top_k = 40",
        "# repeat_penalty = 1.1",
        "",
        "[telemetry]",
        "# interval = 1.0                           # seconds between samples",
        "",
        "[journal]",
        f"# path = {_toml(str(default_paths().journal))}",
        "",
        "[rollups]",
        "# keep_10s_hours = 48                      # the flight recorder's 10-second means are kept this long",
        "# keep_1min_days = 30                      # its 1-minute means this long",
        "# max_journal_mb = 256                     # the journal file's bound: past it the oldest rollups go first",
        "",
        "[ui]",
        '# theme = "dark"                           # dark, light, high-contrast, 16-colour, or a file in the themes folder',
        "",
        "[ui.keys]",
        "# binding id = keys (comma list). The ids are quoted: they hold a dot. The help screen (? or F1)",
        "# shows each key's id; an unknown id or a key two bindings would share is reported by name.",
    ]
    for binding_id, keys, description in _bindings():
        out.append(f"# {_toml(binding_id)} = {_toml(keys)}".ljust(44) + f"  # {description}")
    out += [
        "",
        "[doctor]",
        f"# default = \"suggest\"                      # {' | '.join(MODES)}: what the doctor does with a finding",
        '# "engine.crashed" = "auto"                # per detector id',
        '# "severity.critical" = "auto"             # per severity (a detector\'s own entry wins)',
        "# hysteresis = 2                           # passes a telemetry finding must hold before auto action",
        "# grace_s = 10                             # no telemetry detection this long after a (re)load",
        "# backoff_s = 5                            # first wait before repeating an action (from its end); doubles",
        "# backoff_max_s = 300",
        "# start_limit_burst = 3                    # at most this many automatic restarts ...",
        "# start_limit_interval_s = 120             # ... within this many seconds",
        "# dry_run = false                          # journal what would be done, do nothing",
        "# kill_switch = false                      # no automatic action at all",
        "# canary_period_s = 300                    # periodic canary (0: off)",
        "# canary_timeout_s = 15",
        "# silence_s = 3600                         # how long `s` silences a finding",
        "",
        "[exporter]",
        f"# listen = {_toml(DEFAULT_LISTEN)}                # the TUI serves Prometheus /metrics here too; "
        "0.0.0.0:9464 for every interface",
        "",
        "[adapt]",
        '# mode = "off"                             # off | shadow | on: the online thread learner while chatting',
        "",
        "[hooks]                                    # commands run on events, the event as JSON on stdin",
        '# on_finding = "logger -t llmos-tui"       # also on_action, on_change',
        "# timeout_s = 10                           # a hook running longer is killed",
        "# max_per_min = 20                         # per event kind; more in a minute are dropped and counted",
        "",
        *_serve_sample(),
    ]
    return "\n".join(out)


def _serve_sample() -> list[str]:
    """``[serve]``, the daemon's table (serve/settings.py), at its defaults."""
    from llmos_tui.serve.settings import ServeSettings

    d = ServeSettings()
    rows = [
        ("listen", _toml(d.listen), "loopback; another address needs a token (token_file or $LLMOS_TUI_SERVE_TOKEN)"),
        ("queue_size", d.queue_size, "requests waiting for the engine; one more gets 429"),
        ("wait_s", d.wait_s, "a queued request waits this long for its turn or a restart, then 503"),
        ("drain_s", d.drain_s, "a change or shutdown lets replies finish this long, then cuts them"),
        ("stall_s", d.stall_s, "a reply with no new text this long is cut and the engine restarted"),
        ("max_body_bytes", d.max_body_bytes, "a larger request body gets 413"),
        ("max_tokens", d.max_tokens, "the most a request may ask for (never more than the context)"),
        ("default_max_tokens", d.default_max_tokens, "when a request names none"),
        ("log_prompts", _toml(d.log_prompts), "journal prompt and reply text (metrics always)"),
    ]
    return ["[serve]                                    # `llmos-tui serve`, the daemon",
            *(f"# {f'{k} = {v}':<40} # {why}" for k, v, why in rows), ""]


def _bindings() -> list[tuple[str, str, str]]:
    from llmos_tui.core.keys import describe_catalog

    return describe_catalog()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _init(args: argparse.Namespace) -> int:
    text = sample_config()
    if args.print:
        sys.stdout.write(text)
        return 0
    path = _target(args)
    if path.exists() and not args.force:
        print(f"llmos-tui config: {path} exists; nothing written (--force keeps it as {path.name}.bak and "
              f"writes the sample, --print shows the sample)", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.replace(path, path.with_name(path.name + ".bak"))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote a commented sample with every key to {path}")
    return 0


# ---- --check ---------------------------------------------------------------------------------------
def check_file(path: Path) -> tuple[list[str], list[str]]:
    """(errors, notes) for the config file at ``path``."""
    import tomllib

    from llmos_tui.config import load_config
    from llmos_tui.errors import LlmosError

    errors: list[str] = []
    notes: list[str] = []
    if not path.exists():
        return [f"{path}: no such file (`llmos-tui config --init` writes a sample)"], notes
    try:
        config = load_config(path, overrides={"config_explicit": True})
    except LlmosError as exc:
        return [str(exc)], notes
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    for section in data:
        if section not in KNOWN_SECTIONS:
            notes.append(f"{path}: unknown section [{section}] (ignored)")
    ui = data.get("ui") if isinstance(data.get("ui"), dict) else {}
    for key in ui:
        if key not in UI_KEYS:
            notes.append(f"{path}: unknown key ui.{key} (ignored)")
    try:
        from llmos_tui.doctor.policy import Policy

        Policy.from_config(config.doctor)
    except LlmosError as exc:
        errors.append(f"{path}: {exc}")  # the policy names [doctor] and the key itself
    try:
        from llmos_tui.serve.settings import load_settings

        load_settings(config)  # [serve] is read by the daemon alone: checked here all the same
    except LlmosError as exc:
        errors.append(str(exc))
    errors += _check_ui(config)
    return errors, notes


def _check_ui(config: "Config") -> list[str]:
    from llmos_tui.core.keys import check_keymap
    from llmos_tui.core.themes import BUILTIN, read_themes, resolve
    from llmos_tui.paths import REPO_THEMES

    errors: list[str] = []
    themes, problems = read_themes([REPO_THEMES, config.paths.user_themes])
    errors += problems
    available = {str(t["name"]) for t in themes} | set(BUILTIN)
    if resolve(config.theme, available) is None:
        errors.append(f"[ui] theme {config.theme!r} is not available (known: {', '.join(sorted(available))})")
    _usable, key_problems = check_keymap(config.keys)
    errors += key_problems
    return errors


# ---- --init-theme ----------------------------------------------------------------------------------
def _init_theme(name: str, *, force: bool = False) -> int:
    from llmos_tui.core.themes import SHIPPED, shipped_file
    from llmos_tui.paths import REPO_THEMES, default_paths

    source = shipped_file(name, REPO_THEMES)
    if source is None:
        print(f"llmos-tui config: no shipped theme {name!r} (shipped: {', '.join(SHIPPED)}; in {REPO_THEMES})",
              file=sys.stderr)
        return 1
    folder = default_paths().user_themes
    target = folder / source.name
    if target.exists() and not force:
        print(f"llmos-tui config: {target} exists; nothing written (--force keeps it as {target.name}.bak)",
              file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, target.with_name(target.name + ".bak"))
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    os.replace(tmp, target)
    print(f"copied the {source.stem} theme to {target}: edit it there (it wins over the shipped one); "
          f"[ui] theme = \"{source.stem}\" in the config uses it")
    return 0


def _check(path: Path) -> int:
    errors, notes = check_file(path)
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"llmos-tui config: error: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: valid")
    return 0
