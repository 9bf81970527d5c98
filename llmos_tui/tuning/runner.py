"""The tuner: a study of the runtime parameters, each trial in a fresh engine child, the serving
engine paused meanwhile, every trial journaled, the winner verified A/B against what runs and
applied (on request) through the one change transaction.

    tuner = Tuner(supervisor, changes, journal_writer, sampler, config)
    report = tuner.run(trials=12, objective="tg", apply=True)   # blocking; stop() from another thread

Events for faces (``subscribe(fn)``; fn gets a dict with ``kind``): ``study`` (started or
resumed), ``warmstart``, ``trial``, ``verify_round``, ``verdict``, ``applied``, ``state``, ``done``.
"""

from __future__ import annotations

import logging
import math
import re
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import LlmosError
from llmos_tui.tuning.measure import BenchSpec, TrialResult, default_timeout, llama_cpp_version, measure
from llmos_tui.tuning.objective import Objective, make_objective

log = logging.getLogger("llmos_tui.tuning")

STRATEGIES = ("gp", "rf", "et", "random")
MIB = 1024 * 1024


@dataclass
class TrialRecord:
    index: int  # 1-based within the study (resumed trials keep their numbers)
    config: dict[str, Any]
    outcome: str
    value: float | None
    reason: str = ""
    origin: str = "optimiser"  # optimiser | repeat | warm start: <where from> | resumed
    trial_id: int | None = None  # trl:N
    summary: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "config": self.config, "outcome": self.outcome, "value": self.value,
                "reason": self.reason, "origin": self.origin, "trial_id": self.trial_id, "summary": self.summary,
                "wall_s": self.wall_s}


@dataclass
class StudyReport:
    study_id: int | None
    status: str  # done | stopped | failed
    objective: dict[str, Any]
    trials: list[TrialRecord] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)  # config, mean, n, spread
    best: dict[str, Any] | None = None
    running: dict[str, Any] | None = None  # the configuration that ran before the study
    verdict: dict[str, Any] | None = None
    applied: dict[str, Any] | None = None
    warm_start: str = ""
    message: str = ""
    error: str = ""

    @property
    def exit_code(self) -> int:
        if self.status == "stopped":
            return 130
        if self.status == "failed" or self.best is None:
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"study_id": self.study_id, "study": f"std:{self.study_id}" if self.study_id else None,
                "status": self.status, "objective": self.objective,
                "trials": [t.to_dict() for t in self.trials], "ranking": self.ranking, "best": self.best,
                "running": self.running, "verdict": self.verdict, "applied": self.applied,
                "warm_start": self.warm_start, "message": self.message, "error": self.error,
                "exit_code": self.exit_code}


class TunerBusy(LlmosError):
    """A study already runs."""


def gpu_info() -> dict[str, Any] | None:
    """The first GPU from NVML (name, total and free MiB), or None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                return None
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            return {"name": name, "vram_total_mib": int(mem.total // MIB), "vram_free_mib": int(mem.free // MIB)}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML, no GPU
        return None


def parse_budget(text: str | float | int | None, total_mib: float | None) -> float | None:
    """``"90%"`` of ``total_mib``, or a number of MiB (``"6000"``, ``"6000MiB"``, ``"6GiB"``)."""
    if text is None or text == "":
        return None
    raw = str(text).strip().lower().replace(" ", "")
    try:
        if raw.endswith("%"):
            if not total_mib:
                return None
            pct = float(raw[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return total_mib * pct / 100
        for suffix, scale in (("gib", 1024.0), ("gb", 1024.0), ("mib", 1.0), ("mb", 1.0)):
            if raw.endswith(suffix):
                return float(raw[: -len(suffix)]) * scale
        return float(raw)
    except ValueError:
        from llmos_tui.errors import ConfigError

        raise ConfigError(f"bad budget {text!r}: expected a percentage (90%) or MiB (6000, 6GiB)") from None


def _plain(value: Any) -> Any:
    """numpy scalars (from scikit-optimize) to plain Python, before JSON, SQLite or llama.cpp see them."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except Exception:  # noqa: BLE001
            return value
    return value


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in config.items()}


def _key(config: dict[str, Any]) -> tuple:
    return tuple(sorted(plain_config(config).items()))


# llama.cpp's refusals that hold for every configuration with that value, not only the one tried
_RULES = (
    (re.compile(r"\bK cache type (\w+) with block size \d+ does not divide"), "type_k"),
    (re.compile(r"\bV cache type (\w+) with block size \d+ does not divide"), "type_v"),
)


def learned_rules(reason: str, config: dict[str, Any] | None = None) -> list[tuple[tuple[str, Any], ...]]:
    """The rules a failure supports beyond its own configuration: the head size refuses a quantised
    cache type. llama.cpp checks the block size only with flash attention on (measured: the demo
    model's q8_0 K cache runs with flash_attn=off), so the rule keeps the failing flash_attn value."""
    out = []
    for pattern, dim in _RULES:
        m = pattern.search(reason or "")
        if m:
            rule: tuple[tuple[str, Any], ...] = ((dim, m.group(1)),)
            if config and "flash_attn" in config:
                rule += (("flash_attn", config["flash_attn"]),)
            out.append(rule)
    return out


class Tuner:
    """Runs studies over one serving supervisor; one study at a time."""

    def __init__(self, supervisor: Any, changes: Any = None, journal_writer: Any = None, sampler: Any = None,
                 config: Any = None, *, measure_fn: Callable[..., TrialResult] = measure) -> None:
        self.supervisor = supervisor
        self.changes = changes
        self.journal = journal_writer
        self.sampler = sampler
        self.config = config
        self.measure_fn = measure_fn
        self.state = "idle"  # idle | running | verifying | applying | stopping
        self.study_id: int | None = None
        self.report: StudyReport | None = None
        self._stop = threading.Event()
        self._run_lock = threading.Lock()
        self._child: Any = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.thread: threading.Thread | None = None
        self.rules: dict[tuple[tuple[str, Any], ...], str] = {}  # ((dim, value), ...) -> why it never works
        self._space: Any = None
        self._prior_origin: dict[tuple, str] = {}  # a configuration told from the journal -> where from

    @classmethod
    def for_operator(cls, op: Any) -> "Tuner":
        return cls(op.supervisor, getattr(op, "changes", None), op.journal_writer, op.sampler, op.config)

    # ---- events -----------------------------------------------------------------
    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, **data: Any) -> None:
        event = {"kind": kind, "study_id": self.study_id, **data}
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                log.exception("tuner listener failed")

    def _set_state(self, state: str) -> None:
        self.state = state
        self._emit("state", state=state)

    # ---- journal ----------------------------------------------------------------
    def _j(self, fn: Callable[[Any], Any], default: Any = None, *, timeout: float = 30.0) -> Any:
        target = self.journal
        if target is None:
            return default
        try:
            if hasattr(target, "submit"):
                return target.submit(fn).result(timeout)
            return fn(target)
        except Exception as exc:  # noqa: BLE001 - a journal problem is said, not fatal to the study
            log.warning("tuner could not use the journal: %s", exc)
            return default

    # ---- control ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state != "idle"

    def stop(self) -> None:
        """Stop cleanly: the trial in flight is abandoned (not journaled), the study is left
        ``stopped`` and resumable, the serving engine resumes."""
        self._stop.set()
        if self.state != "idle":
            self._set_state("stopping")
        child = self._child
        if child is not None:
            threading.Thread(target=child.stop, name="tuner-stop-trial", daemon=True).start()

    def start_in_background(self, **options: Any) -> threading.Thread:
        def run() -> None:
            try:
                self.run(**options)
            except Exception:  # noqa: BLE001 - reported through events
                log.exception("tuning study failed")

        self.thread = threading.Thread(target=run, name="tuner", daemon=True)
        self.thread.start()
        return self.thread

    def resume(self, study_id: int, **options: Any) -> StudyReport:
        return self.run(resume=study_id, **options)

    # ---- the study --------------------------------------------------------------
    def run(self, *, trials: int | None = None, objective: str = "tg", weights: dict[str, float] | None = None,
            vram_budget: str | float | None = "90%", rss_budget: str | float | None = None, ctx: int | None = None,
            strategy: str = "gp", resume: int | None = None, apply: bool = False, spec: BenchSpec | None = None,
            seed: int = 0, verify_rounds: int = 4, trial_timeout: float | None = None, n_initial: int | None = None,
            warm_start: bool = True, verify: bool = True, baseline: bool = True,
            start_points: list[dict[str, Any]] | None = None) -> StudyReport:
        """Run (or resume) a study; blocking. ``baseline``: the running configuration is the first
        point measured. ``start_points``: configurations the operator wants measured first (even
        outside what the space would propose)."""
        if not self._run_lock.acquire(blocking=False):
            raise TunerBusy(f"a study already runs (std:{self.study_id})")
        self._stop.clear()
        try:
            return self._run(trials=trials, objective=objective, weights=weights, vram_budget=vram_budget,
                             rss_budget=rss_budget, ctx=ctx, strategy=strategy, resume=resume, apply=apply,
                             spec=spec, seed=seed, verify_rounds=verify_rounds, trial_timeout=trial_timeout,
                             n_initial=n_initial, warm_start=warm_start, verify=verify, baseline=baseline,
                             start_points=start_points)
        finally:
            self._child = None
            self.state = "idle"
            self._emit("state", state="idle")
            self._run_lock.release()

    def _run(self, *, trials: int | None, objective: str, weights: dict[str, float] | None, vram_budget: Any,
             rss_budget: Any, ctx: int | None, strategy: str, resume: int | None, apply: bool,
             spec: BenchSpec | None, seed: int, verify_rounds: int, trial_timeout: float | None,
             n_initial: int | None, warm_start: bool, verify: bool, baseline: bool,
             start_points: list[dict[str, Any]] | None) -> StudyReport:
        from llmos_tui.engine.gguf_info import read_model_info
        from llmos_tui.tuning import warmstart as WS
        from llmos_tui.tuning.prior import Preference, physical_cores
        from llmos_tui.tuning.space import build_space
        from llmos_tui.tuning.study import Study

        sup = self.supervisor
        running = sup.params  # what serves now: the verification's A and what resumes
        self.study_id = None
        self.rules = {}
        self._prior_origin = {}
        settings: dict[str, Any] = {}
        previous: list[dict[str, Any]] = []
        if resume is not None:
            study_row = self._j(lambda j: j.get_study(int(resume)))
            if study_row is None:
                raise LlmosError(f"no study std:{resume} in the journal (or the journal is not open)")
            settings = dict(study_row.get("settings") or {})
            objective = settings.get("objective", {}).get("name", objective)
            weights = settings.get("objective", {}).get("weights", weights)
            strategy = settings.get("strategy", strategy)
            seed = int(settings.get("seed", seed))
            ctx = settings.get("n_ctx", ctx)
            vram_budget = settings.get("vram_budget_arg", vram_budget)
            rss_budget = settings.get("rss_budget_arg", rss_budget)
            if spec is None and settings.get("spec"):
                spec = BenchSpec(**settings["spec"])
            if trials is None:
                trials = int(settings.get("trials") or 12)
            previous = self._j(lambda j: j.trials(int(resume), kind="trial"), []) or []
        trials = 12 if trials is None else int(trials)
        if strategy not in STRATEGIES + ("grid",):
            raise LlmosError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
        traffic = self._j(lambda j: j.chat_traffic()) if objective == "traffic" else None
        obj = make_objective(objective, weights=weights, traffic=traffic)
        spec = spec or BenchSpec()
        info = sup.model_info or read_model_info(running.model_path)
        n_ctx = int(ctx or running.n_ctx or info.context_length or 2048)
        if n_ctx < spec.tokens:
            raise LlmosError(f"the bench needs {spec.tokens} tokens of context; --ctx is {n_ctx}")
        base = running.replace(n_ctx=n_ctx)
        gpu = gpu_info()
        cpu_count = os.cpu_count() or 1
        vram_limit = parse_budget(vram_budget, gpu.get("vram_total_mib") if gpu else None) if gpu else None
        if gpu and vram_limit is not None:
            vram_limit = min(vram_limit, float(gpu["vram_free_mib"]) + self._own_vram_mib())
        host_total = _host_total_mib()
        rss_limit = parse_budget(rss_budget, host_total) if rss_budget is not None else None
        space = build_space(info, cpu_count=cpu_count, gpu=gpu, n_ctx=n_ctx, fixed={"n_ctx": n_ctx})
        self._space = space
        layers = space.dimension("n_gpu_layers")
        preference = Preference.for_machine(obj.name, logical_cores=cpu_count, physical_cores=physical_cores(),
                                            gpu=layers is not None, max_gpu_layers=max(layers.values) if layers else None)
        build = llama_cpp_version()
        fp = WS.fingerprint(info, build=build, cpu_count=cpu_count, gpu=gpu)
        timeout = trial_timeout or default_timeout(spec, int(info.size_bytes or 0))
        settings = {**settings, "objective": obj.to_dict(), "strategy": strategy, "seed": seed, "trials": trials,
                    "spec": spec.to_dict(), "n_ctx": n_ctx, "vram_budget_arg": vram_budget,
                    "rss_budget_arg": rss_budget, "vram_budget_mib": vram_limit, "rss_budget_mib": rss_limit,
                    "features": dict(fp.features), "running": running.to_dict(),
                    "prior": preference.to_dict()}
        if resume is None:
            name = f"{obj.label} {os.path.basename(running.model_path)}"
            self.study_id = self._j(lambda j: j.start_study(space.to_dict(), obj.name, name=name,
                                                            model_path=running.model_path, model_key=fp.model_key,
                                                            build=build, machine=dict(fp.machine), settings=settings))
        else:
            self.study_id = int(resume)
            self._j(lambda j: j.resume_study(int(resume)))
        kwargs: dict[str, Any] = {"strategy": strategy, "seed": seed, "maximize": obj.maximize,
                                  "preference": preference}
        if n_initial is not None:
            kwargs["n_initial"] = n_initial
        study = Study(space, **kwargs)
        report = StudyReport(self.study_id, "done", obj.to_dict(), running=running.to_dict())
        self.report = report
        self._emit("study", resumed=resume is not None, objective=obj.to_dict(), trials=trials,
                   space=space.to_dict(), strategy=strategy, note=obj.note,
                   prior=study.preference.describe() if study.preference is not None else "")

        # earlier trials of this study (resume), then the warm start
        for row in previous:
            config = plain_config(row.get("params") or {})
            ok = row.get("outcome") == "ok" and row.get("value") is not None
            study.tell(config, row.get("value") if ok else None, ok=ok, reason=row.get("reason") or "")
            self._learn(row.get("reason") or "", config)
            report.trials.append(TrialRecord(len(report.trials) + 1, config, row["outcome"], row.get("value"),
                                             row.get("reason") or "", "resumed", row["id"],
                                             (row.get("metrics") or {}).get("summary", "")))
        try:
            defaults = plain_config(space.defaults(base))
        except Exception:  # noqa: BLE001 - a space without defaults: start points as given
            defaults = {}
        seeds: list[Any] = [WS.Prior({**defaults, **plain_config(c)}, None, True, "", 1.0, "asked for", "start")
                            for c in start_points or []]
        baseline_seed = None
        if baseline and resume is None and defaults and space.allowed(defaults) is None:
            exact_running = all(getattr(base, k, None) == v for k, v in defaults.items())
            baseline_seed = WS.Prior(defaults, None, True, "", 1.0, "the running configuration" if exact_running
                                     else "the running configuration (nearest point of the space)", "start")
        if warm_start:
            history = self._j(lambda j: j.tuning_history(exclude_study=self.study_id), []) or []
            bad = self._j(lambda j: j.configs(500), []) or []
            bad = [c for c in bad if getattr(c, "standing", "") == "bad" and int((c.params or {}).get("n_ctx") or 0)
                   == n_ctx]
            ws = WS.build(history, fp, space, obj, spec=spec.to_dict(), bad_configs=bad)
            for prior in ws.told:
                if prior.ok:
                    self._prior_origin.setdefault(_key(prior.config), prior.origin)
                    study.prior(prior.config, prior.value, ok=True, weight=prior.weight)
                else:  # llama.cpp's reason teaches the space the most general rule it supports
                    _learn_infeasible(space, prior.config, prior.reason)
                    self._learn(prior.reason, prior.config)
            seeds.extend(ws.seeds)
            if any(p.kind == "exact" for p in ws.told):
                baseline_seed = None  # the journal knows this machine: start from its best, not from here
            report.warm_start = ws.summary()
            self._emit("warmstart", summary=report.warm_start, told=[p.to_dict() for p in ws.told],
                       seeds=[p.to_dict() for p in seeds])
        if baseline_seed is not None:
            seeds.insert(len(start_points or []), baseline_seed)
        settings["warm_start"] = report.warm_start
        self._j(lambda j: j.set_study_result(self.study_id, {"settings_note": report.warm_start}))

        # pause the serving engine (not a configuration change: it comes back with its params)
        was_serving = sup.state.value not in ("stopped", "failed", "crashed", "paused")
        if was_serving:
            sup.cancel()
            sup.pause(f"tuning std:{self.study_id}")
        self._set_state("running")
        resumed_engine = False
        try:
            done = len(report.trials)
            while done < trials and not self._stop.is_set():
                config, origin = self._next(study, seeds, report)
                if config is None:
                    report.message = "the space is exhausted: every allowed configuration was measured"
                    break
                record = self._trial(study, space, config, origin, base, spec, obj, timeout, info, vram_limit,
                                     rss_limit, len(report.trials) + 1)
                if record is None:  # stopped mid-trial: not a result
                    break
                report.trials.append(record)
                done += 1
                best = study.best()
                self._emit("trial", trial=record.to_dict(), done=done, total=trials,
                           best=_best_dict(best, space, base) if best else None)
            stopped = self._stop.is_set()
            report.ranking = _ranking(study, report.trials, obj)
            best = study.best()
            report.best = _best_dict(best, space, base) if best else None
            if report.best is not None:
                report.best["spread"] = next((r["spread"] for r in report.ranking
                                              if r["config"] == report.best["config"]), None)
            if stopped:
                report.status = "stopped"
                report.message = (f"stopped after {len(report.trials)} trial(s); "
                                  f"resume with `llmos-tui tune --resume {self.study_id}`")
            elif report.best is None:
                report.status = "failed" if not report.message else "done"
                report.message = report.message or "no configuration could be measured (every trial failed)"
            # verify the winner against what ran, then apply
            if not stopped and report.best is not None and verify:
                best_params = EngineParams.from_mapping(report.best["params"])
                if _same_run(best_params, base, gpu):
                    report.verdict = {"significant": False, "message": "the running configuration is the best found",
                                      "median": 1.0}
                    report.message = "the current configuration is already as good as any tried"
                else:
                    self._set_state("verifying")
                    verdict = self._verify(base, best_params, spec, obj, timeout, verify_rounds)
                    report.verdict = verdict.to_dict()
                    self._emit("verdict", verdict=report.verdict)
                    if self._stop.is_set():
                        report.status = "stopped"
                        report.message = f"stopped during verification; resume with --resume {self.study_id}"
                    elif verdict.significant:
                        report.message = verdict.message
                        if apply:
                            self._set_state("applying")
                            result = self._apply(best_params, verdict, running)
                            resumed_engine = True
                            report.applied = result
                            report.message += f"; {result.get('message', '')}"
                            self._emit("applied", result=result)
                    else:
                        report.message = verdict.message
            self._j(lambda j: j.end_study(self.study_id, status=report.status,
                                          result={"best": report.best, "verdict": report.verdict,
                                                  "applied": report.applied, "message": report.message,
                                                  "warm_start": report.warm_start}))
        except Exception as exc:
            report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
            report.message = f"the study failed: {report.error}"
            self._j(lambda j: j.end_study(self.study_id, status="failed", result={"error": report.error}))
            log.exception("tuning study failed")
        finally:
            if was_serving and not resumed_engine:
                self._resume_engine()
        self._emit("done", report=report.to_dict())
        return report

    # ---- steps ------------------------------------------------------------------
    def _next(self, study: Any, seeds: list[Any], report: StudyReport) -> tuple[dict[str, Any] | None, str]:
        measured = {_key(t.config) for t in report.trials}
        while seeds:
            prior = seeds.pop(0)
            if _key(prior.config) not in measured and self._ruled_out(prior.config) is None:
                label = prior.origin if prior.kind == "start" else f"warm start: {prior.origin}"
                return plain_config(prior.config), label
        for _ in range(200):  # a proposal a learned rule forbids is told, not measured
            try:
                config = self._ordered(plain_config(study.ask()))
            except (StopIteration, IndexError, RuntimeError):
                return None, ""
            why = self._ruled_out(config)
            if why is None:
                # the study repeats a leader measured too few times: "best" is judged on repeated means
                if _key(config) in measured:
                    return config, "repeat (leader, judged on repeated means)"
                if _key(config) in self._prior_origin:
                    return config, f"warm start: {self._prior_origin[_key(config)]}"
                return config, "optimiser"
            study.tell(config, None, ok=False, reason=why)
        return None, ""

    def _ordered(self, config: dict[str, Any]) -> dict[str, Any]:
        names = [d.name for d in getattr(self._space, "dimensions", [])]
        return {**{n: config[n] for n in names if n in config}, **{k: v for k, v in config.items() if k not in names}}

    def _learn(self, reason: str, config: dict[str, Any] | None = None) -> None:
        for rule in learned_rules(reason, config):
            self.rules.setdefault(rule, reason)

    def _ruled_out(self, config: dict[str, Any]) -> str | None:
        for rule, reason in self.rules.items():
            if all(config.get(k) == v for k, v in rule):
                what = " ".join(f"{k}={v}" for k, v in rule)
                return f"{what} never works for this model (learned: {reason})"
        return None

    def _trial(self, study: Any, space: Any, config: dict[str, Any], origin: str, base: EngineParams, spec: BenchSpec,
               obj: Objective, timeout: float, info: Any, vram_limit: float | None, rss_limit: float | None,
               index: int) -> TrialRecord | None:
        from llmos_tui.engine import vram

        try:
            params = space.to_params(config, base)
        except LlmosError as exc:
            result = TrialResult(False, "refused", str(exc))
            params = None
        else:
            result = None
        if params is not None and vram_limit is not None and params.n_gpu_layers != 0:
            est = vram.estimate(params, info)
            if est.total / MIB > vram_limit:
                result = TrialResult(False, "budget", f"needs about {est.summary()}, over the VRAM budget of "
                                                      f"{vram_limit:.0f} MiB (estimate, not run)")
        if result is None:
            started = time.monotonic()
            result = self.measure_fn(params, spec, timeout=timeout, on_child=self._track_child)
            self._child = None
            if self._stop.is_set() and not result.ok:
                return None  # we stopped it: not the configuration's failure
            result.wall_s = result.wall_s or time.monotonic() - started
            if result.ok and rss_limit is not None and (result.peak_rss_mb or 0) > rss_limit:
                result = _over_budget(result, f"peak RSS {result.peak_rss_mb:.0f} MiB over the budget of "
                                              f"{rss_limit:.0f} MiB")
            if result.ok and vram_limit is not None and (result.peak_vram_mb or 0) > vram_limit:
                result = _over_budget(result, f"peak VRAM {result.peak_vram_mb:.0f} MiB over the budget of "
                                              f"{vram_limit:.0f} MiB")
        value = obj.value(result) if result.ok else None
        ok = result.ok and value is not None and math.isfinite(value)
        if result.ok and not ok:
            result = _over_budget(result, "the objective could not be computed from the bench")
            result.outcome = "error"
        try:
            study.tell(config, value if ok else None, ok=ok, reason=result.reason)
        except (ValueError, KeyError) as exc:  # a start point outside the space: journaled, not modelled
            log.info("trial %s not told to the surrogate: %s", index, exc)
        self._learn(result.reason, config)
        metrics = {**result.metrics(), "summary": result.summary(), "origin": origin,
                   "engine_params": params.to_dict() if params is not None else None}
        trial_id = self._j(lambda j: j.record_trial(self.study_id, config, result.outcome, value=value if ok else None,
                                                    metrics=metrics, reason=result.reason))
        return TrialRecord(index, config, result.outcome, value if ok else None, result.reason, origin, trial_id,
                           result.summary(), result.wall_s)

    def _track_child(self, child: Any) -> None:
        self._child = child
        if self._stop.is_set():
            threading.Thread(target=child.stop, daemon=True).start()

    def _verify(self, running: EngineParams, best: EngineParams, spec: BenchSpec, obj: Objective,
                timeout: float, rounds: int) -> Any:
        from llmos_tui.tuning.verify import ab_verify

        def once(params: EngineParams, label: str) -> float | None:
            result = self.measure_fn(params, spec, timeout=timeout, on_child=self._track_child)
            self._child = None
            if self._stop.is_set():
                return None
            value = obj.value(result) if result.ok else None
            config = {k: v for k, v in params.to_dict().items() if k not in ("model_path", "seed", "use_mmap")}
            self._j(lambda j: j.record_trial(self.study_id, config, result.outcome, value=value,
                                             metrics={**result.metrics(), "summary": result.summary(),
                                                      "arm": label}, reason=result.reason, kind="verify"))
            return value

        def on_round(i: int, a: Any, b: Any) -> None:
            self._emit("verify_round", round=i + 1, rounds=rounds, a=a, b=b)

        return ab_verify(lambda: once(running, "A (running)"), lambda: once(best, "B (candidate)"),
                         rounds=rounds, speedup=obj.speedup, should_stop=self._stop.is_set, on_round=on_round)

    def _apply(self, best: EngineParams, verdict: Any, running: EngineParams) -> dict[str, Any]:
        changes = self.changes
        if changes is None:
            self._resume_engine()
            return {"state": "refused", "ok": False, "message": "no change transaction: nothing applied"}
        reason = (f"std:{self.study_id} verified {verdict.median:.3f}x "
                  f"(CI {verdict.ci_low:.3f}-{verdict.ci_high:.3f}, {verdict.rounds} rounds)")
        # the engine is paused: the change reloads it with the new parameters (or rolls back)
        best = best.replace(seed=running.seed, use_mmap=running.use_mmap, repack=running.repack)
        result = changes.propose(best, source="tuner", kind="tune", reason=reason, proposed_by="auto")
        if not self.supervisor.is_ready:
            self._resume_engine()
        return result.to_dict()

    def _resume_engine(self) -> None:
        sup = self.supervisor
        if sup.is_ready:
            return
        try:
            sup.resume()
        except LlmosError as exc:
            log.warning("the serving engine did not come back after the study: %s", exc)

    def _own_vram_mib(self) -> float:
        """The serving engine's own GPU memory: paused during the study, so it counts as free."""
        sample = getattr(self.sampler, "latest", None) if self.sampler is not None else None
        if sample is None or not getattr(sample, "gpus", None):
            return 0.0
        pid = self.supervisor.pid
        own = 0
        for proc in sample.gpus[0].processes or []:
            if (getattr(proc, "is_engine", False) or (pid and proc.pid == pid)) and proc.used_memory:
                own += proc.used_memory
        return own / MIB


def _learn_infeasible(space: Any, config: dict[str, Any], reason: str) -> None:
    learn = getattr(space, "learn_infeasible", None)
    if learn is not None:
        try:
            learn(config, reason)
        except Exception:  # noqa: BLE001
            log.exception("the space could not learn from %r", reason)


def _same_run(a: EngineParams, b: EngineParams, gpu: Any) -> bool:
    """The same configuration as llama.cpp runs it (without a GPU, n_gpu_layers changes nothing)."""
    da, db = a.to_dict(), b.to_dict()
    if not gpu:
        da.pop("n_gpu_layers"), db.pop("n_gpu_layers")
    for d in (da, db):  # llama.cpp's auto enables flash attention wherever it can
        if d["flash_attn"] == "auto":
            d["flash_attn"] = "on"
    return da == db


def _over_budget(result: TrialResult, reason: str) -> TrialResult:
    result.ok, result.outcome, result.reason = False, "budget", reason
    return result


def _host_total_mib() -> float | None:
    try:
        import psutil

        return psutil.virtual_memory().total / MIB
    except Exception:  # noqa: BLE001
        return None


def _best_dict(best: Any, space: Any, base: EngineParams) -> dict[str, Any]:
    config, mean, n = best
    config = plain_config(config)
    try:
        params = space.to_params(config, base).to_dict()
    except Exception:  # noqa: BLE001
        params = {**base.to_dict(), **config}
    return {"config": config, "mean": float(mean), "n": int(n), "params": params}


def _ranking(study: Any, trials: list[TrialRecord], obj: Objective, top: int = 5) -> list[dict[str, Any]]:
    groups: dict[tuple, list[float]] = {}
    configs: dict[tuple, dict[str, Any]] = {}
    for t in trials:
        if t.ok and t.value is not None:
            groups.setdefault(_key(t.config), []).append(t.value)
            configs[_key(t.config)] = t.config
    rows = []
    for key, values in groups.items():
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) / mean if len(values) > 1 and mean else None
        rows.append({"config": configs[key], "mean": mean, "n": len(values), "spread": spread,
                     "min": min(values), "max": max(values)})
    rows.sort(key=lambda r: r["mean"], reverse=obj.maximize)
    return rows[:top]
