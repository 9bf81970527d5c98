"""The daemon's settings: the ``[serve]`` table of the config file, then the command line.

    [serve]
    listen = "127.0.0.1:8080"   # loopback by default; any other address needs a token
    token_file = "~/.config/llmos-tui/serve.token"   # or token = "...", or $LLMOS_TUI_SERVE_TOKEN
    queue_size = 16             # requests waiting for the single engine; one more gets 429
    wait_s = 60                 # how long a queued request waits (for its turn or a restart): then 503
    drain_s = 30                # a change or shutdown lets in-flight replies finish this long, then cuts them
    stall_s = 120               # a reply with no new text this long is cut and the hung engine restarted
    max_body_bytes = 1048576    # a larger request body gets 413
    max_tokens = 4096           # the most a request may ask for (and never more than the context)
    default_max_tokens = 512    # when a request names none
    log_prompts = false         # journal the prompt and reply text of API requests (metrics always)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from llmos_tui.config import Config, is_loopback, parse_listen as config_parse_listen
from llmos_tui.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8080"
TOKEN_ENV = "LLMOS_TUI_SERVE_TOKEN"
_INTS = {"queue_size": (1, 10_000), "max_body_bytes": (1024, 1 << 30), "max_tokens": (1, 10_000_000),
         "default_max_tokens": (1, 10_000_000)}
_FLOATS = {"wait_s": (0.1, 86_400.0), "drain_s": (0.0, 3_600.0), "stall_s": (0.5, 86_400.0)}


@dataclass(frozen=True)
class ServeSettings:
    listen: str = DEFAULT_LISTEN
    token: str | None = None
    queue_size: int = 16
    wait_s: float = 60.0
    drain_s: float = 30.0
    stall_s: float = 120.0
    max_body_bytes: int = 1 << 20
    max_tokens: int = 4096
    default_max_tokens: int = 512
    log_prompts: bool = False

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    def with_overrides(self, **values: object) -> "ServeSettings":
        return replace(self, **{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]

    def check(self) -> "ServeSettings":
        """Refuse what must not start: an address beyond loopback without a token."""
        host, _port = parse_listen(self.listen)
        if not is_loopback(host) and not self.token:
            raise ConfigError(f"serve: listening on {host} (beyond loopback) needs a bearer token: set "
                              f"${TOKEN_ENV}, --token-file FILE or [serve] token_file")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(f"serve: default_max_tokens ({self.default_max_tokens}) is above max_tokens "
                              f"({self.max_tokens})")
        return self


def parse_listen(text: str) -> tuple[str, int]:
    """The daemon's listen address (config.parse_listen with the daemon's default and name)."""
    return config_parse_listen(text, DEFAULT_LISTEN, "serve:")


def read_token_file(path: str | Path) -> str:
    file = Path(path).expanduser()
    try:
        token = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"serve: cannot read the token file {file}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"serve: the token file {file} is empty")
    if file.stat().st_mode & 0o077:
        raise ConfigError(f"serve: the token file {file} is readable by others (chmod 600 it)")
    return token


def load_settings(config: Config) -> ServeSettings:
    """The ``[serve]`` table of the config file that ``config`` was read from (defaults without
    one), and the token from ``$LLMOS_TUI_SERVE_TOKEN`` when the file names none."""
    table: dict[str, object] = {}
    where = str(config.source) if config.source else "config"
    if config.source is not None:
        try:
            data = tomllib.loads(Path(config.source).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        section = data.get("serve", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: [serve] must be a table")
        table = dict(section)
    values: dict[str, object] = {}
    for key, value in table.items():
        if key == "listen":
            try:
                parse_listen(str(value))
            except ConfigError as exc:
                raise ConfigError(f"{where}: serve.listen: {exc}") from None
            values["listen"] = str(value)
        elif key == "token":
            values["token"] = str(value)
        elif key == "token_file":
            values["token"] = read_token_file(str(value))
        elif key == "log_prompts":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: serve.log_prompts must be true or false, got {value!r}")
            values["log_prompts"] = value
        elif key in _INTS or key in _FLOATS:
            kind, (lo, hi) = (int, _INTS[key]) if key in _INTS else (float, _FLOATS[key])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ConfigError(f"{where}: serve.{key} must be a number between {lo} and {hi}, got {value!r}")
            values[key] = kind(value)
        else:
            known = ", ".join(["listen", "token", "token_file", "log_prompts", *_INTS, *_FLOATS])
            raise ConfigError(f"{where}: unknown key serve.{key} (known: {known})")
    if "token" not in values and os.environ.get(TOKEN_ENV):
        values["token"] = os.environ[TOKEN_ENV].strip() or None
    return ServeSettings(**values)  # type: ignore[arg-type]
