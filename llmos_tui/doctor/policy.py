"""The policy: per detector or severity, whether a finding is ignored, suggested, or repaired
automatically — and the guard rails of automatic action.

From the ``[doctor]`` table of the config, for example::

    [doctor]
    default = "suggest"            # off | suggest | auto
    "engine.crashed" = "auto"      # per detector id
    "severity.critical" = "auto"   # per severity (a detector's own entry wins)
    hysteresis = 2                 # a telemetry finding must hold this many passes before auto action
    grace_s = 10                   # no telemetry detection this long after a (re)load
    backoff_s = 5                  # wait after a failed attempt before the next on the same finding; doubles
    backoff_max_s = 300
    start_limit_burst = 3          # at most this many automatic restarts ...
    start_limit_interval_s = 120   # ... within this many seconds, then stop and tell the operator
    dry_run = false                # journal what would be done, do nothing
    kill_switch = false            # no automatic action at all
    canary_period_s = 300          # periodic canary (0: off)
    canary_timeout_s = 15
    verify_requests = 3            # requests of the finding's own shape that verify a metric repair
    [doctor."engine.tps_drop"]     # a table: the mode plus the detector's own settings
    mode = "suggest"
    baseline = 12
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from llmos_tui.doctor.api import SEVERITIES
from llmos_tui.errors import ConfigError

MODES = ("off", "suggest", "auto")

# Out of the box the doctor heals what leaves the engine unable to serve — a crash, a crash
# loop, an out-of-memory, a hang (the canary, the forward-progress watchdog) — by a restart, then the smallest
# reconfiguration, under the rails (backoff, start limit, one action at a time, canary,
# rollback, kill switch). What would change quality or speed only suggests. These sit below
# the operator's own table: a detector's entry, a severity's, or an explicit ``default``.
BUILTIN_MODES: dict[str, str] = {
    "engine.crashed": "auto",
    "engine.crash_loop": "auto",
    "engine.oom": "auto",
    "engine.canary": "auto",
    "engine.stalled": "auto",
}

_NUMBERS: dict[str, tuple[type, float, float]] = {
    "hysteresis": (int, 1, 1000),
    "grace_s": (float, 0, 3600),
    "backoff_s": (float, 0, 86400),
    "backoff_max_s": (float, 0, 86400),
    "start_limit_burst": (int, 1, 1000),
    "start_limit_interval_s": (float, 0, 86400),
    "canary_period_s": (float, 0, 86400),
    "canary_timeout_s": (float, 0.1, 3600),
    "canary_max_tokens": (int, 1, 256),
    "ready_timeout_s": (float, 0.1, 3600),
    "silence_s": (float, 1, 86400 * 30),
    "operator_quiet_s": (float, 0, 3600),
    "interval": (float, 0.01, 3600),
    "verify_requests": (int, 1, 20),
}
_FLAGS = ("dry_run", "kill_switch")


@dataclass
class Policy:
    default: str = "suggest"
    modes: dict[str, str] = field(default_factory=dict)  # detector id or "severity.X" -> mode
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # detector id -> its own settings
    hysteresis: int = 2
    grace_s: float = 10.0
    backoff_s: float = 5.0
    backoff_max_s: float = 300.0
    start_limit_burst: int = 3
    start_limit_interval_s: float = 120.0
    canary_period_s: float = 300.0
    canary_timeout_s: float = 15.0
    canary_max_tokens: int = 8
    ready_timeout_s: float = 120.0
    silence_s: float = 3600.0
    operator_quiet_s: float = 30.0
    interval: float = 1.0  # the doctor's own tick when it has no sampler
    verify_requests: int = 3
    dry_run: bool = False
    kill_switch: bool = False
    default_set: bool = False  # the table named a default: it wins over the built-in modes
    builtin_modes: dict[str, str] = field(default_factory=lambda: dict(BUILTIN_MODES))

    def mode_for(self, detector_id: str, severity: str) -> str:
        if detector_id in self.modes:
            return self.modes[detector_id]
        key = f"severity.{severity}"
        if key in self.modes:
            return self.modes[key]
        if not self.default_set and detector_id in self.builtin_modes:
            return self.builtin_modes[detector_id]
        return self.default

    def source_of(self, detector_id: str, severity: str) -> str:
        """Where the mode for this detector comes from (for `doctor` and the doctor screen)."""
        if detector_id in self.modes:
            return f"[doctor] {detector_id!r}"
        if f"severity.{severity}" in self.modes:
            return f"[doctor] severity.{severity}"
        if not self.default_set and detector_id in self.builtin_modes:
            return "built-in default"
        return "[doctor] default" if self.default_set else "default"

    def settings_for(self, detector_id: str) -> dict[str, Any]:
        return self.settings.get(detector_id, {})

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None, where: str = "[doctor]") -> "Policy":
        """Build from the ``[doctor]`` table; a bad key or value raises ConfigError naming it."""
        policy = cls()
        for key, value in (table or {}).items():
            if key == "default":
                policy.default = _mode(value, f"{where} default")
                policy.default_set = True
            elif key in _NUMBERS:
                kind, lo, hi = _NUMBERS[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{where} {key} must be a number, got {value!r}")
                if not lo <= value <= hi:
                    raise ConfigError(f"{where} {key} must be between {lo:g} and {hi:g}, got {value!r}")
                setattr(policy, key, kind(value))
            elif key in _FLAGS:
                if not isinstance(value, bool):
                    raise ConfigError(f"{where} {key} must be true or false, got {value!r}")
                setattr(policy, key, value)
            elif key.startswith("severity."):
                if key.split(".", 1)[1] not in SEVERITIES:
                    raise ConfigError(f"{where} {key}: severity must be one of {', '.join(SEVERITIES)}")
                policy.modes[key] = _mode(value, f"{where} {key}")
            elif isinstance(value, str):
                policy.modes[key] = _mode(value, f"{where} {key!r}")
            elif isinstance(value, Mapping):
                own = dict(value)
                if "mode" in own:
                    policy.modes[key] = _mode(own.pop("mode"), f"{where} {key!r}.mode")
                policy.settings[key] = own
            else:
                raise ConfigError(f"{where} {key!r} must be off, suggest, auto or a table, got {value!r}")
        return policy


def _mode(value: Any, where: str) -> str:
    if value not in MODES:
        raise ConfigError(f"{where} must be one of {', '.join(MODES)}, got {value!r}")
    return value
