"""Settings: one TOML file in the user's config folder, overridden by command-line options.

Every bad value becomes a ConfigError that names the file, the key and the value.

    [engine]            # any EngineParams field
    model_path = "~/models/qwen2.5-7b-instruct-q4_k_m.gguf"
    n_ctx = 8192
    n_gpu_layers = -1

    [chat]
    system_prompt = "You are a helpful assistant."
    max_tokens = 512
    temperature = 0.7

    [telemetry]
    interval = 1.0

    [journal]
    path = "~/.local/share/llmos-tui/journal.sqlite"

    [rollups]           # the flight recorder's telemetry means (the journal screen, `report`)
    keep_10s_hours = 48     # 10-second means are kept this long
    keep_1min_days = 30     # 1-minute means this long
    max_journal_mb = 256    # the journal file's bound: past it the oldest rollups go first

    [hooks]             # commands run on events, the event as JSON on stdin (core/hooks.py)
    on_finding = "CMD"
    on_action = "CMD"
    on_change = "CMD"
    timeout_s = 10
    max_per_min = 20

    [ui]
    theme = "dark"      # dark, light, high-contrast, 16-colour, or a file in the themes folder
    [ui.keys]           # binding id (quoted: it has a dot) = keys; the help screen shows the ids
    "app.dashboard" = "f2,ctrl+b"

    [exporter]
    listen = "127.0.0.1:9464"   # serve Prometheus /metrics from the TUI too (loopback unless an address says otherwise)

    [doctor]            # policy per detector or severity (off / suggest / auto); read by the doctor
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

TomlValue = Union[str, int, float, bool, list["TomlValue"], dict[str, "TomlValue"], None]
Table = dict[str, TomlValue]  # a TOML table as read (or an override mapping)

from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import ConfigError
from llmos_tui.journal.rollups import RollupRetention
from llmos_tui.paths import DEMO_MODEL, Paths, default_paths


@dataclass
class ChatSettings:
    system_prompt: str = ""
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1

    def sampling(self) -> dict[str, float | int | None]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
        }


@dataclass
class Config:
    engine: EngineParams
    chat: ChatSettings = field(default_factory=ChatSettings)
    telemetry_interval: float = 1.0
    journal_path: Path | None = None
    theme: str = "dark"
    keys: dict[str, str] = field(default_factory=dict)
    exporter_listen: str | None = None  # [exporter] listen: the TUI serves /metrics there too
    adapt_mode: str = "off"  # [adapt] mode: off | shadow (show what it would do) | on
    min_ctx: int = 0  # [engine] min_ctx: the context a change may never go below (the operator's need)
    doctor: Table = field(default_factory=dict)
    hooks: Table = field(default_factory=dict)  # [hooks], checked by parse_hooks
    on_event: str | None = None  # --on-event CMD: a hook for every event kind
    rollups: RollupRetention = field(default_factory=RollupRetention)
    readonly: bool = False
    source: Path | None = None
    paths: Paths = field(default_factory=default_paths)

    @property
    def uses_demo_model(self) -> bool:
        return Path(self.engine.model_path) == DEMO_MODEL

    @property
    def journal_file(self) -> Path:
        return self.journal_path or self.paths.journal


def _section(data: Table, name: str, where: str) -> Table:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table, got {value!r}")
    return value


def _number(value: TomlValue, key: str, where: str, kind: type, lo: float, hi: float) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = kind(str(value))
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
    value = kind(value)
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be between {lo} and {hi}, got {value}")
    return value


def load_config(
    path: Path | None = None,
    *,
    overrides: dict[str, object] | None = None,
    paths: Paths | None = None,
) -> Config:
    """Read the config file (if any), then apply command-line overrides (engine params and friends)."""
    paths = paths or default_paths()
    path = Path(path).expanduser() if path else paths.config_file
    data: Table = {}
    where = str(path)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start}); a config file is TOML") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    elif overrides and overrides.get("config_explicit"):
        raise ConfigError(f"config file not found: {where}")

    engine_values = dict(_section(data, "engine", where))
    engine_values.setdefault("model_path", str(DEMO_MODEL))
    try:
        engine = EngineParams.from_mapping(engine_values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: [engine] {exc}") from None
    if engine.model_path:
        engine = EngineParams.from_mapping({"model_path": str(Path(engine.model_path).expanduser())}, engine)

    chat_data = _section(data, "chat", where)
    chat = ChatSettings()
    for key, value in chat_data.items():
        if key == "system_prompt":
            chat.system_prompt = str(value)
        elif key == "max_tokens":
            chat.max_tokens = _number(value, "chat.max_tokens", where, int, 1, 1_000_000)
        elif key == "temperature":
            chat.temperature = _number(value, "chat.temperature", where, float, 0.0, 5.0)
        elif key == "top_p":
            chat.top_p = _number(value, "chat.top_p", where, float, 0.0, 1.0)
        elif key == "top_k":
            chat.top_k = _number(value, "chat.top_k", where, int, 0, 100_000)
        elif key == "repeat_penalty":
            chat.repeat_penalty = _number(value, "chat.repeat_penalty", where, float, 0.0, 10.0)
        else:
            raise ConfigError(f"{where}: unknown key chat.{key}")

    telemetry = _section(data, "telemetry", where)
    interval = _number(telemetry.get("interval", 1.0), "telemetry.interval", where, float, 0.05, 3600)
    journal = _section(data, "journal", where)
    journal_path = Path(str(journal["path"])).expanduser() if "path" in journal else None
    ui = _section(data, "ui", where)
    keys = parse_keys(ui.get("keys", {}), where)
    exporter = _section(data, "exporter", where)
    exporter_listen = None
    for key, value in exporter.items():
        if key != "listen":
            raise ConfigError(f"{where}: unknown key exporter.{key} (known: listen)")

        parse_listen(str(value))  # a bad address is said now, not when the TUI starts
        exporter_listen = str(value)

    adapt = _section(data, "adapt", where)
    adapt_mode = "off"
    for key, value in adapt.items():
        if key != "mode":
            raise ConfigError(f"{where}: unknown key adapt.{key} (known: mode)")
        if value not in ("off", "shadow", "on"):
            raise ConfigError(f"{where}: adapt.mode must be off, shadow or on, got {value!r}")
        adapt_mode = value

    hooks = parse_hooks(_section(data, "hooks", where), f"{where}: [hooks]")
    rollups = parse_rollups(_section(data, "rollups", where), where)

    config = Config(
        hooks=hooks,
        rollups=rollups,
        adapt_mode=adapt_mode,
        engine=engine,
        chat=chat,
        telemetry_interval=interval,
        journal_path=journal_path,
        theme=str(ui.get("theme", "dark")),
        keys=keys,
        exporter_listen=exporter_listen,
        doctor=dict(_section(data, "doctor", where)),
        source=path if path.exists() else None,
        paths=paths,
    )
    if overrides:
        apply_overrides(config, overrides)
    return config


HOOK_EVENTS = ("on_finding", "on_action", "on_change")


def parse_hooks(table: Table, where: str = "[hooks]") -> Table:
    """``[hooks]``: each of HOOK_EVENTS a non-empty command string, ``timeout_s`` 0-600 seconds,
    ``max_per_min`` 1-10000; anything else is a ConfigError naming the key and the value."""
    for key, value in table.items():
        if key in HOOK_EVENTS:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where} {key} must be a command string, got {value!r}")
        elif key == "timeout_s":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
                raise ConfigError(f"{where} timeout_s must be a number of seconds above 0 and at most 600, "
                                  f"got {value!r}")
        elif key == "max_per_min":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10_000:
                raise ConfigError(f"{where} max_per_min must be a whole number from 1 to 10000, got {value!r}")
        else:
            raise ConfigError(f"{where} unknown key {key!r} (known: {', '.join(HOOK_EVENTS)}, timeout_s, "
                              f"max_per_min)")
    return dict(table)


_ROLLUP_KEYS = {  # key -> (RollupRetention field, unit in seconds or bytes, lowest, highest)
    "keep_10s_hours": ("keep_10s_s", 3600.0, 0.1, 24 * 365),
    "keep_1min_days": ("keep_1min_s", 86400.0, 0.01, 3650),
    "max_journal_mb": ("max_bytes", 1024.0 * 1024, 1, 1024 * 1024),
}


def parse_rollups(table: Table, where: str) -> RollupRetention:
    """``[rollups]``: how long each resolution is kept and the journal file's size bound."""
    values: dict[str, float] = {}
    for key, value in table.items():
        if key not in _ROLLUP_KEYS:
            raise ConfigError(f"{where}: unknown key rollups.{key} (known: {', '.join(_ROLLUP_KEYS)})")
        name, unit, lo, hi = _ROLLUP_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: rollups.{key} must be a number, got {value!r}")
        number = _number(value, f"rollups.{key}", where, float, lo, hi)
        values[name] = number * unit
    return RollupRetention(**values)


def parse_keys(value: TomlValue, where: str) -> dict[str, str]:
    """``[ui.keys]``: binding id -> comma list of keys. An unquoted dotted id (``app.help = "f1"``)
    is a nested table in TOML; it is read back as the dotted id it was meant to be."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [ui.keys] must map binding ids to key strings")
    flat: dict[str, str] = {}

    def walk(table: Table, prefix: str) -> None:
        for key, keys in table.items():
            name = f"{prefix}{key}"
            if isinstance(keys, dict):
                walk(keys, name + ".")
            elif not isinstance(keys, str):
                raise ConfigError(f"{where}: [ui.keys] {name} must be a string of keys like \"f2,ctrl+b\", got {keys!r}")
            elif not keys.strip() or any(not k.strip() or " " in k.strip() for k in keys.split(",")):
                raise ConfigError(f"{where}: [ui.keys] {name} = {keys!r}: keys are names separated by commas, "
                                  f"like \"f2,ctrl+b\"")
            else:
                flat[name] = ",".join(k.strip() for k in keys.split(","))

    walk(value, "")
    return flat


def save_ui_theme(config: Config, theme: str) -> Path:
    """Write ``[ui] theme`` back to the config file, touching nothing else (comments, order and
    every other key stay as the user wrote them). The edited text is parsed again before it
    replaces the file; if anything but the theme would change, the file is left alone."""
    import os
    import re

    path = config.source or config.paths.config_file
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); the theme was not saved") from None
    line = f"theme = {_toml_string(theme)}"
    lines = text.splitlines(keepends=True)
    header = re.compile(r"^\s*\[\s*ui\s*\]\s*(#.*)?$")
    any_header = re.compile(r"^\s*\[")
    theme_key = re.compile(r"^\s*(theme|\"theme\"|'theme')\s*=")
    start = next((i for i, raw in enumerate(lines) if header.match(raw.rstrip("\r\n"))), None)
    if start is None:
        # no [ui] header: add one at the end (after a [ui.keys] is fine in TOML); an inline or
        # dotted [ui] makes the check below refuse instead
        sep = "" if not text or text.endswith("\n") else "\n"
        new_text = f"{text}{sep}{'' if not text else chr(10)}[ui]\n{line}\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if any_header.match(lines[i])), len(lines))
        at = next((i for i in range(start + 1, end) if theme_key.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, line + "\n")
        else:
            comment = re.search(r"\s+#.*$", lines[at].rstrip("\r\n"))
            ending = "\r\n" if lines[at].endswith("\r\n") else "\n"
            lines[at] = line + (comment.group(0) if comment and _quotes_balanced(lines[at][:comment.start()]) else "") + ending
        new_text = "".join(lines)
    try:
        after = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        after = None
    expected = {**before, "ui": {**before.get("ui", {}), "theme": theme}}
    if after != expected:
        raise ConfigError(f"{path}: cannot set [ui] theme without changing other keys; set it by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, path)
    config.theme = theme
    config.source = path
    return path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quotes_balanced(text: str) -> bool:
    return text.count('"') % 2 == 0 and text.count("'") % 2 == 0


def apply_overrides(config: Config, overrides: dict[str, object]) -> None:
    engine_changes = {k: v for k, v in overrides.items() if k in EngineParams.field_names() and v is not None}
    if overrides.get("model"):
        engine_changes["model_path"] = str(Path(overrides["model"]).expanduser())
    if engine_changes:
        config.engine = EngineParams.from_mapping(engine_changes, config.engine)
    if overrides.get("journal"):
        config.journal_path = Path(overrides["journal"]).expanduser()
    if overrides.get("interval") is not None:
        config.telemetry_interval = _number(overrides["interval"], "--interval", "command line", float, 0.05, 3600)
    if overrides.get("readonly"):
        config.readonly = True
    if overrides.get("on_event") is not None:
        command = str(overrides["on_event"])
        if not command.strip():
            raise ConfigError("--on-event needs a command, got an empty one")
        config.on_event = command


DEFAULT_EXPORTER_LISTEN = "127.0.0.1:9464"


# ---- the listen address -----------------------------------------------------------------------
def parse_listen(text: str | None, default: str = DEFAULT_EXPORTER_LISTEN, what: str = "exporter") -> tuple[str, int]:
    """``"9464"`` / ``":9464"`` / ``"127.0.0.1:9464"`` / ``"[::1]:9464"`` -> (host, port).

    A missing host means loopback, never "every interface": binding wider needs an address.
    ``what`` names the setting in the error (the exporter's, the daemon's).
    """
    value = (text or default).strip() or default
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "", value
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} listen address {text!r}: the port must be a number (e.g. {default})") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} listen address {text!r}: the port must be between 0 and 65535")
    return (host or "127.0.0.1"), port


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
