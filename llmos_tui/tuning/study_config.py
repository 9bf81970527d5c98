"""What a study was asked to do, resolved once from the options and stored in its journal row.

``StudyConfig.from_options(**options)`` checks every option (one clear ``ConfigError`` line per bad
value, before any work starts); ``to_row()`` is what the journal keeps in the study's settings;
``StudyConfig.from_row(row)`` is the resumed study's configuration (options given again win).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Mapping

from llmos_tui.errors import ConfigError
from llmos_tui.tuning.measure import BenchSpec
from llmos_tui.tuning.slo import ServiceObjective, is_service_objective

STRATEGIES = ("gp", "rf", "et", "random", "grid")
OBJECTIVES = ("tg", "pp", "ttft", "mix", "traffic")
Point = dict[str, object]


@dataclass(frozen=True)
class StudyConfig:
    trials: int = 12
    objective: str = "tg"
    weights: Mapping[str, float] | None = None
    vram_budget: str | None = "90%"  # "90%" of the GPU, or MiB ("6000", "6GiB"); None: no budget
    rss_budget: str | None = None
    ctx: int | None = None  # the context requirement (fixed); None: the running n_ctx
    strategy: str = "gp"
    seed: int = 0
    spec: BenchSpec = field(default_factory=BenchSpec)
    verify: bool = True
    verify_rounds: int = 12  # the cap of the sequential A/B design (at least 4)
    min_gain: float = 0.02  # the practical gain a verdict must clear
    apply: bool = False
    trial_timeout: float | None = None  # None: from the model's size, then the first measured rate
    n_initial: int | None = None
    warm_start: bool = True
    baseline: bool = True  # the running configuration is the first point measured
    # stop before the budget on a plateau (Study.plateau). Off by default: over 100 seeds it still adds
    # misses on seven of the nine recorded cases with stopping statistics (bench pp; the MoE and the
    # "bench trials" surfaces' tg, pp and gm: README);
    # `llmos-tui tune --plateau-stop` turns it on
    stop_on_plateau: bool = False
    start_points: tuple[Point, ...] = ()

    @classmethod
    def from_options(cls, **options: object) -> "StudyConfig":
        """The options of ``Tuner.run`` (unknown ones refused), each checked."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown study option(s): {', '.join(unknown)}")
        given = {k: v for k, v in options.items() if v is not None or k in ("vram_budget", "rss_budget")}
        if "start_points" in given:
            given["start_points"] = tuple(dict(p) for p in given["start_points"])  # type: ignore[attr-defined]
        if "spec" in given and isinstance(given["spec"], Mapping):
            given["spec"] = BenchSpec(**given["spec"])
        return cls(**given).checked()  # type: ignore[arg-type]

    def checked(self) -> "StudyConfig":
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"trials must be at least 1, got {self.trials!r}")
        if is_service_objective(self.objective):
            ServiceObjective.parse(self.objective)  # a bad spelling: its one line
        elif self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r} (known: {', '.join(OBJECTIVES)}, "
                              f"or a service level such as 'throughput@4 ttft_p99<=2s')")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r} (known: {', '.join(STRATEGIES)})")
        if self.ctx is not None and int(self.ctx) < 1:
            raise ConfigError(f"ctx must be positive, got {self.ctx!r}")
        if int(self.verify_rounds) < 1:
            raise ConfigError(f"verify rounds must be at least 1, got {self.verify_rounds!r}")
        if not 0 <= float(self.min_gain) < 1:
            raise ConfigError(f"the minimum gain must be within [0, 1), got {self.min_gain!r}")
        if self.trial_timeout is not None and float(self.trial_timeout) <= 0:
            raise ConfigError(f"the trial timeout must be positive, got {self.trial_timeout!r}")
        if self.spec.reps < 1 or self.spec.n_gen < 1 or self.spec.n_prompt < 0 or self.spec.depth < 0:
            raise ConfigError(f"a bad bench: {self.spec.to_dict()}")
        for name in ("vram_budget", "rss_budget"):
            value = getattr(self, name)
            if value is not None:
                check_budget(str(value), name.replace("_", " "))
        return self

    def with_options(self, **options: object) -> "StudyConfig":
        """Options given again over a stored configuration (None: keep the stored value)."""
        given = {k: v for k, v in options.items() if v is not None}
        if "spec" in given and isinstance(given["spec"], Mapping):
            given["spec"] = BenchSpec(**given["spec"])
        return replace(self, **given).checked()  # type: ignore[arg-type]

    def to_row(self) -> dict[str, object]:
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        out["weights"] = dict(self.weights) if self.weights else None
        out["start_points"] = [dict(p) for p in self.start_points]
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> "StudyConfig":
        """A study's configuration from its journal row (``settings["study_config"]``; rows written
        before it existed: their older keys)."""
        settings = row.get("settings") or {}
        assert isinstance(settings, Mapping)
        stored = settings.get("study_config")
        if isinstance(stored, Mapping):
            data = {k: v for k, v in stored.items() if k in {f.name for f in fields(cls)}}
            data["spec"] = BenchSpec(**(data.get("spec") or {}))  # type: ignore[arg-type]
            data["start_points"] = tuple(dict(p) for p in data.get("start_points") or ())  # type: ignore[union-attr]
            return cls(**data).checked()  # type: ignore[arg-type]
        objective = settings.get("objective") or {}
        assert isinstance(objective, Mapping)
        spec = settings.get("spec")
        return cls(trials=int(settings.get("trials") or 12),  # type: ignore[call-overload]
                   objective=str(objective.get("name") or "tg"), weights=objective.get("weights"),  # type: ignore[arg-type]
                   strategy=str(settings.get("strategy") or "gp"), seed=int(settings.get("seed") or 0),  # type: ignore[call-overload]
                   ctx=settings.get("n_ctx"), vram_budget=settings.get("vram_budget_arg"),  # type: ignore[arg-type]
                   rss_budget=settings.get("rss_budget_arg"),  # type: ignore[arg-type]
                   spec=BenchSpec(**spec) if isinstance(spec, Mapping) else BenchSpec()).checked()


def check_budget(text: str, what: str = "budget") -> None:
    """A budget is a percentage (90%) or an amount of MiB (6000, 6000MiB, 6GiB); else one line."""
    raw = text.strip().lower().replace(" ", "")
    number = raw
    if raw.endswith("%"):
        number = raw[:-1]
    else:
        for suffix in ("gib", "gb", "mib", "mb"):
            if raw.endswith(suffix):
                number = raw[: -len(suffix)]
                break
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"bad {what} {text!r}: expected a percentage (90%) or MiB (6000, 6GiB)") from None
    if value <= 0 or (raw.endswith("%") and value > 100):
        raise ConfigError(f"bad {what} {text!r}: a percentage in (0, 100] or a positive amount of MiB")


__all__ = ["StudyConfig", "STRATEGIES", "OBJECTIVES", "check_budget"]
