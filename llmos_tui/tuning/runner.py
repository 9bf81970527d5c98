"""The tuner: a study of the runtime parameters, each trial in a fresh engine child, the serving
engine paused meanwhile, every trial journaled, the winner verified A/B against what runs and
applied (on request) through the one change transaction.

    tuner = Tuner(supervisor, changes, journal, sampler, config)
    report = tuner.run(trials=12, objective="tg", apply=True)   # blocking; stop() from another thread

A study is four steps over a ``StudyConfig`` resolved once from the options (and stored in the
study's journal row, so a resume is ``StudyConfig.from_row``): **prepare** (the objective, the
space, the budgets, the journal row), **warm start** (earlier trials of this study and of the
journal), **loop** (the trials), **conclude** (re-measure a trial that beat the kept best by more
than the noise, verify the best candidate A/B, apply). The engine's span — pause, trials,
verification, apply, resume — runs inside ``changes.holding("tuner std:N")``: another caller's
change or restart meanwhile is refused naming the tuner. Without a change transaction the tuner
refuses to pause a serving engine.

Events for faces (``subscribe(fn)``; fn gets a dict with ``kind``): ``study`` (started or
resumed), ``warmstart``, ``trial``, ``note``, ``verify_round``, ``verdict``, ``applied``, ``state``,
``done``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import ConfigError, LlmosError
from llmos_tui.journal.port import JournalPort
from llmos_tui.tuning.measure import BenchSpec, TrialResult, default_timeout, llama_cpp_version, measure
from llmos_tui.tuning.objective import Objective, make_objective
from llmos_tui.tuning.slo import measure_service, plan
from llmos_tui.tuning.report import StudyReport, TrialRecord
from llmos_tui.tuning.study_config import StudyConfig
from llmos_tui.tuning.verdict import Verdict, VerifyDesign, ab_verify

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.config import Config
    from llmos_tui.engine.gguf_info import ModelInfo
    from llmos_tui.engine.memfit import Correction
    from llmos_tui.engine.supervisor import Supervisor
    from llmos_tui.journal import Journal
    from llmos_tui.telemetry.sampler import Sampler
    from llmos_tui.tuning.ports import ChangesPort
    from llmos_tui.tuning.prior import Preference
    from llmos_tui.tuning.space import Space
    from llmos_tui.tuning.study import Study
    from llmos_tui.tuning.warmstart import Fingerprint, Prior

log = logging.getLogger("llmos_tui.tuning")

STRATEGIES = ("gp", "rf", "et", "random")
MIB = 1024 * 1024
NOISE = 0.11  # two runs of one configuration differ by about this much here, until a study measures its own
Config_ = dict[str, object]  # one point of the space
JsonDict = dict[str, object]
Listener = Callable[[JsonDict], None]

__all__ = ["Tuner", "TunerBusy", "StudyReport", "TrialRecord", "StudyConfig", "parse_budget", "learned_rules",
           "gpu_info", "trial_budget"]


class TunerBusy(LlmosError):
    """A study already runs."""


def gpu_info() -> dict[str, object] | None:
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
        raise ConfigError(f"bad budget {text!r}: expected a percentage (90%) or MiB (6000, 6GiB)") from None


def _plain(value: object) -> object:
    """numpy scalars (from scikit-optimize) to plain Python, before JSON, SQLite or llama.cpp see them."""
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (str, bytes)):
        try:
            return item()
        except Exception:  # noqa: BLE001
            return value
    return value


def plain_config(config: Mapping[str, object]) -> Config_:
    return {str(k): _plain(v) for k, v in config.items()}


def _key(config: Mapping[str, object]) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(plain_config(config).items()))


# llama.cpp's refusals that hold for every configuration with that value, not only the one tried
_RULES = (
    (re.compile(r"\bK cache type (\w+) with block size \d+ does not divide"), "type_k"),
    (re.compile(r"\bV cache type (\w+) with block size \d+ does not divide"), "type_v"),
)
Rule = tuple[tuple[str, object], ...]


def learned_rules(reason: str, config: Mapping[str, object] | None = None) -> list[Rule]:
    """The rules a failure supports beyond its own configuration: the head size refuses a quantised
    cache type. llama.cpp checks the block size only with flash attention on (measured: the demo
    model's q8_0 K cache runs with flash_attn=off), so the rule keeps the failing flash_attn value.
    (Models whose header says the head size never get here: their space leaves such types out.)"""
    out = []
    for pattern, dim in _RULES:
        m = pattern.search(reason or "")
        if m:
            rule: Rule = ((dim, m.group(1)),)
            if config and "flash_attn" in config:
                rule += (("flash_attn", config["flash_attn"]),)
            out.append(rule)
    return out


def trial_budget(spec: BenchSpec, model_bytes: int, first_ok_wall_s: float | None = None) -> float:
    """A trial's time budget: before any measurement, from the model's size (load) and the bench's
    work; once a configuration was measured, four times its wall time (a slower configuration
    than that is not worth its wait) plus a floor for the load. Never a fixed number."""
    if first_ok_wall_s is None:
        return default_timeout(spec, model_bytes)
    return max(15.0, 4.0 * first_ok_wall_s + 5.0 + model_bytes / 2**30 * 2)


@dataclass
class Prepared:
    """What the preparation step resolved: everything the other steps read."""

    cfg: StudyConfig
    obj: Objective
    spec: BenchSpec
    info: "ModelInfo"
    running: EngineParams  # what served before the study (resumes after it)
    base: EngineParams  # running at the study's context: the verification's A
    n_ctx: int
    gpu: dict[str, object] | None
    space: "Space"
    preference: "Preference"
    fp: "Fingerprint"
    vram_limit: float | None
    rss_limit: float | None
    settings: JsonDict
    previous: list[JsonDict] = field(default_factory=list)  # a resumed study's trials
    timeout: float = 60.0
    timeout_from_rate: bool = False
    timeouts_doubled: int = 0
    # the measured fit: memory readings (newest first) of this model from the journal and this study
    memory: list[Mapping[str, object]] = field(default_factory=list)
    # a service-level objective: the journal's request shapes its trials replay
    shapes: list[Mapping[str, object]] = field(default_factory=list)


class Tuner:
    """Runs studies over one serving supervisor; one study at a time."""

    def __init__(self, supervisor: "Supervisor", changes: "ChangesPort | None", journal: object,
                 sampler: "Sampler | None", config: "Config | None", *,
                 measure_fn: Callable[..., TrialResult] | None = None) -> None:
        self.supervisor = supervisor
        self.changes = changes
        self.journal = journal if isinstance(journal, JournalPort) else JournalPort(journal, who="tuner")
        self.sampler = sampler
        self.config = config
        self.measure_fn = measure_fn if measure_fn is not None else measure  # looked up now: tests may swap it
        self.service_fn = measure_service  # a service-level objective's trial (tuning.slo)
        self.state = "idle"  # idle | running | verifying | applying | stopping
        self.study_id: int | None = None
        self.report: StudyReport | None = None
        self._stop = threading.Event()
        self._run_lock = threading.Lock()
        self._child: "Supervisor | None" = None
        self._listeners: list[Listener] = []
        self.thread: threading.Thread | None = None
        self.rules: dict[Rule, str] = {}  # ((dim, value), ...) -> why it never works
        self._space: "Space | None" = None
        self._prior_origin: dict[tuple[tuple[str, object], ...], str] = {}

    # ---- events -----------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, **data: object) -> None:
        event: JsonDict = {"kind": kind, "study_id": self.study_id, **data}
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                log.exception("tuner listener failed")

    def _set_state(self, state: str) -> None:
        self.state = state
        self._emit("state", state=state)

    @staticmethod
    def refusal_cap(trials: int) -> int:
        """How many configurations refused before loading a study may meet before it stops."""
        return max(20, 2 * trials)

    def _note(self, report: StudyReport, text: str) -> None:
        report.notes.append(text)
        self._emit("note", text=text)

    # ---- journal (through the one port) -------------------------------------------
    def _j(self, fn: Callable[..., object], default: object = None) -> object:
        return self.journal.safe(fn, default)

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

    def start_in_background(self, **options: object) -> threading.Thread:
        def run() -> None:
            try:
                self.run(**options)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - reported through events
                log.exception("tuning study failed")

        self.thread = threading.Thread(target=run, name="tuner", daemon=True)
        self.thread.start()
        return self.thread

    def resume(self, study_id: int, **options: object) -> StudyReport:
        return self.run(resume=study_id, **options)  # type: ignore[arg-type]

    # ---- the study --------------------------------------------------------------
    def run(self, config: StudyConfig | None = None, *, resume: int | None = None,
            **options: object) -> StudyReport:
        """Run (or resume) a study; blocking. ``config`` or the options of ``StudyConfig`` (trials,
        objective, weights, vram_budget, rss_budget, ctx, strategy, seed, spec, verify,
        verify_rounds, min_gain, apply, trial_timeout, n_initial, warm_start, baseline,
        start_points); a resumed study takes its stored configuration, options given again win."""
        if not self._run_lock.acquire(blocking=False):
            raise TunerBusy(f"a study already runs (std:{self.study_id})")
        self._stop.clear()
        try:
            if resume is None:
                cfg = config or StudyConfig.from_options(**options)
                return self._study(cfg, None)
            row = self.journal.safe(lambda j: j.get_study(int(resume)))
            if not isinstance(row, Mapping):
                raise LlmosError(f"no study std:{resume} in the journal (or the journal is not open)")
            stored = StudyConfig.from_row(row)
            cfg = stored.with_options(**(config.to_row() if config else options))
            return self._study(cfg, int(resume))
        finally:
            self._child = None
            self.state = "idle"
            self._emit("state", state="idle")
            self._run_lock.release()

    def _study(self, cfg: StudyConfig, resume: int | None) -> StudyReport:
        from llmos_tui.tuning.study import Study

        prep = self._prepare(cfg, resume)
        kwargs: dict[str, object] = {"strategy": cfg.strategy, "seed": cfg.seed, "maximize": prep.obj.maximize,
                                     "preference": prep.preference}
        if cfg.n_initial is not None:
            kwargs["n_initial"] = cfg.n_initial
        study = Study(prep.space, **kwargs)  # type: ignore[arg-type]
        report = StudyReport(self.study_id, "done", prep.obj.to_dict(), running=prep.running.to_dict(),
                             baseline=prep.base.to_dict(), apply_asked=cfg.apply)
        self.report = report
        self._emit("study", resumed=resume is not None, objective=prep.obj.to_dict(), trials=cfg.trials,
                   space=prep.space.to_dict(), strategy=cfg.strategy, note=prep.obj.note,
                   prior=study.preference.describe() if study.preference is not None else "")
        held = prep.settings.get("held") or {}
        if isinstance(held, dict) and held:
            from llmos_tui.tuning.prior import WHY_UNTOUCHED

            self._note(report, f"held at the running values ({prep.obj.name}: {WHY_UNTOUCHED[prep.obj.name]}): "
                               + " ".join(f"{k}={v}" for k, v in held.items()))
        fix = self.memory_correction(prep, prep.base)
        if fix is not None and (prep.rss_limit is not None or prep.vram_limit is not None):
            self._note(report, f"pre-flight: {fix.describe()}")
        seeds = self._warm_start(prep, study, report)
        try:
            with self._engine_span() as was_serving:
                if was_serving:
                    self._emit("note", text="serving engine paused for the study")
                self._set_state("running")
                self._loop(prep, study, seeds, report)
                self._conclude(prep, study, report)
        except Exception as exc:  # noqa: BLE001 - a study's failure is its report, said once
            report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
            report.message = f"the study failed: {exc}" if isinstance(exc, LlmosError) else \
                f"the study failed: {report.error}"
            if cfg.apply and report.apply_outcome is None:
                report.apply_outcome = {"state": "failed", "ok": False, "message": report.message}
            if not isinstance(exc, LlmosError):
                log.exception("tuning study failed")
        self._j(lambda j: j.end_study(self.study_id, status=report.status, result=self._result(report)))
        self._emit("done", report=report.to_dict())
        return report

    @staticmethod
    def _result(report: StudyReport) -> JsonDict:
        return {"best": report.best, "verdict": report.verdict, "applied": report.apply_outcome,
                "message": report.message, "warm_start": report.warm_start, "notes": list(report.notes),
                **({"plateau": report.plateau} if report.plateau else {}),
                **({"error": report.error} if report.error else {})}

    # ---- applying a finished study's best later (the tuning screen's "apply best") --------------
    def apply_best(self, report: Mapping[str, object]) -> JsonDict:
        """Apply a finished study's verified best, under the same rule as ``apply=True``: only when
        its verdict is significant and the verdict's baseline (its A) is what runs now; otherwise
        refused, saying why (a new study verifies against what runs). What became of it is recorded
        in the study's journal result (``applied``)."""
        verdict = report.get("verdict") or {}
        best = report.get("best") or {}
        baseline = report.get("baseline") or report.get("running")
        study_id = report.get("study_id")
        assert isinstance(verdict, Mapping) and isinstance(best, Mapping)
        if self.running:
            outcome: JsonDict = {"state": "refused", "ok": False, "message": "a study runs: apply when it is done"}
        elif not best or not verdict.get("significant"):
            outcome = {"state": "refused", "ok": False,
                       "message": f"nothing verified to apply ({verdict.get('message') or 'no verdict'})"}
        elif self.changes is None:
            outcome = {"state": "refused", "ok": False, "message": "no change transaction: nothing applied"}
        else:
            params = EngineParams.from_mapping(best["params"])  # type: ignore[arg-type]
            a = EngineParams.from_mapping(baseline) if isinstance(baseline, Mapping) else None  # type: ignore[arg-type]
            now = self.supervisor.params.replace(n_ctx=params.n_ctx)
            gpu = gpu_info()
            if a is None or not _same_run(now, a.replace(n_ctx=params.n_ctx), gpu):
                outcome = {"state": "refused", "ok": False,
                           "message": "the verdict's baseline no longer runs (the configuration changed since the "
                                      "study): nothing applied; a new study verifies against what runs now"}
            else:
                running = self.supervisor.params
                params = params.replace(seed=running.seed, use_mmap=running.use_mmap, repack=running.repack)
                reason = (f"std:{study_id} verified {float(verdict.get('estimate') or 0):.3f}x "  # type: ignore[arg-type]
                          f"({verdict.get('rounds')} rounds, p={float(verdict.get('p_value') or 0):.4f})")  # type: ignore[arg-type]
                outcome = self.changes.propose(params, source="tuner", reason=reason, kind="tune",
                                               proposed_by="operator").to_dict()
        if isinstance(study_id, int):
            def record(j: "Journal") -> None:
                result = dict(j.get_study(study_id).get("result") or {})
                result["applied"] = outcome
                j.set_study_result(study_id, result)

            self._j(record)
        return outcome

    # ---- step 1: preparation ------------------------------------------------------
    def _prepare(self, cfg: StudyConfig, resume: int | None) -> Prepared:
        from llmos_tui.engine.gguf_info import read_model_info
        from llmos_tui.tuning import warmstart as WS
        from llmos_tui.tuning.prior import Preference, held_values, physical_cores
        from llmos_tui.tuning.space import build_space

        sup = self.supervisor
        running = sup.params
        self.study_id = None
        self.rules = {}
        self._prior_origin = {}
        traffic = self._j(lambda j: j.chat_traffic()) if cfg.objective == "traffic" else None
        obj = make_objective(cfg.objective, weights=cfg.weights, traffic=traffic)  # type: ignore[arg-type]
        shapes: list[Mapping[str, object]] = []
        if obj.service is not None:  # what the daemon served: the load each trial replays
            found = self._j(lambda j: j.request_shapes(), [])
            shapes = list(found) if isinstance(found, list) else []
            plan(shapes, obj.service.clients)  # none to replay: one clear line before any work
        spec = cfg.spec
        info = sup.model_info or read_model_info(running.model_path)
        n_ctx = int(cfg.ctx or running.n_ctx or info.context_length or 2048)
        if n_ctx < spec.tokens:
            raise LlmosError(f"the bench needs {spec.tokens} tokens of context; --ctx is {n_ctx}")
        gpu = gpu_info()
        cpu_count = os.cpu_count() or 1
        total = gpu.get("vram_total_mib") if gpu else None
        vram_limit = parse_budget(cfg.vram_budget, float(total) if isinstance(total, (int, float)) else None) \
            if gpu else None
        if gpu and vram_limit is not None:
            vram_limit = min(vram_limit, float(gpu["vram_free_mib"]) + self._own_vram_mib())  # type: ignore[arg-type]
        rss_limit = parse_budget(cfg.rss_budget, _host_total_mib()) if cfg.rss_budget is not None else None
        held = held_values(obj.name, running, service=obj.service is not None)  # what the objective never touches
        fixed: dict[str, object] = {"n_ctx": n_ctx, **held}
        space = build_space(info, cpu_count=cpu_count, gpu=gpu, n_ctx=n_ctx, fixed=fixed)
        self._space = space
        layers = space.dimension("n_gpu_layers")
        preference = Preference.for_machine(obj.prior_name, logical_cores=cpu_count, physical_cores=physical_cores(),
                                            gpu=layers is not None,
                                            max_gpu_layers=max(layers.values) if layers else None)  # type: ignore[type-var]
        build = llama_cpp_version()
        fp = WS.fingerprint(info, build=build, cpu_count=cpu_count, gpu=gpu)
        settings: JsonDict = {"study_config": cfg.to_row(), "objective": obj.to_dict(), "strategy": cfg.strategy,
                              "seed": cfg.seed, "trials": cfg.trials, "spec": spec.to_dict(), "n_ctx": n_ctx,
                              "vram_budget_arg": cfg.vram_budget, "rss_budget_arg": cfg.rss_budget,
                              "vram_budget_mib": vram_limit, "rss_budget_mib": rss_limit,
                              "features": dict(fp.features), "running": running.to_dict(),
                              "prior": preference.to_dict(), "held": held}
        previous: list[JsonDict] = []
        if resume is None:
            name = f"{obj.label} {os.path.basename(running.model_path)}"
            sid = self._j(lambda j: j.start_study(space.to_dict(), obj.name, name=name, model_path=running.model_path,
                                                  model_key=fp.model_key, build=build, machine=dict(fp.machine),
                                                  settings=settings))
            self.study_id = int(sid) if isinstance(sid, int) else None
        else:
            self.study_id = resume
            self._j(lambda j: j.resume_study(resume))
            rows = self._j(lambda j: j.trials(resume, kind="trial"), [])
            previous = list(rows) if isinstance(rows, list) else []
        timeout = cfg.trial_timeout or trial_budget(spec, int(info.size_bytes or 0))
        if obj.service is not None and not cfg.trial_timeout:
            timeout = max(timeout, 300.0)  # a replay of many requests, not one bench
            settings["shapes"] = len(shapes)
        return Prepared(cfg, obj, spec, info, running, running.replace(n_ctx=n_ctx), n_ctx, gpu, space, preference,
                        fp, vram_limit, rss_limit, settings, previous, timeout, memory=self._memory_readings(),
                        shapes=shapes)

    def _memory_readings(self) -> list[Mapping[str, object]]:
        """What the journal has seen of real peak memory: trials' readings and loads' (newest first)."""
        from llmos_tui.engine import memfit

        return memfit.readings_from_journal(lambda kind, n: self._j(lambda j: j.events(kind, limit=n), []))

    def memory_correction(self, prep: Prepared, params: EngineParams) -> "Correction | None":
        """The measured-fit correction for ``params``' device and this model, from ``prep.memory``."""
        from llmos_tui.engine import memfit

        device = memfit.device_of(params, bool(prep.gpu))
        return memfit.correction(prep.memory, memfit.model_key(params.model_path, prep.info.size_bytes), device)

    # ---- step 2: the warm start ------------------------------------------------------
    def _warm_start(self, prep: Prepared, study: "Study", report: StudyReport) -> list["Prior"]:
        """Tell the study what is known (a resumed study's own trials, the journal's earlier
        studies) and return the points to measure first."""
        from llmos_tui.tuning import warmstart as WS

        cfg, space = prep.cfg, prep.space
        for row in prep.previous:
            config = plain_config(row.get("params") or {})  # type: ignore[arg-type]
            value = row.get("value")
            ok = row.get("outcome") == "ok" and isinstance(value, (int, float))
            reason = str(row.get("reason") or "")
            study.tell(config, float(value) if ok else None, ok=ok, reason=reason)  # type: ignore[arg-type]
            self._learn(reason, config)
            metrics = row.get("metrics")
            metrics = metrics if isinstance(metrics, dict) else {}
            report.trials.append(TrialRecord(len(report.trials) + 1, config, str(row["outcome"]),
                                             float(value) if ok else None, reason, "resumed",
                                             row.get("id"),  # type: ignore[arg-type]
                                             str(metrics.get("summary", "")), ran=bool(metrics.get("ran", True))))
        try:
            defaults = plain_config(space.defaults(prep.base))
        except Exception:  # noqa: BLE001 - a space without defaults: start points as given
            defaults = {}
        untouched = prep.settings.get("held") or {}  # what the objective never touches (_prepare)
        seeds = []
        for c in cfg.start_points:
            point = plain_config(c)
            held = {k: v for k, v in point.items() if k in untouched and v != untouched[k]}
            if held:  # e.g. a tg study holds the prompt's knobs at the running values
                self._note(report, "start point: " + " ".join(f"{k}={v}" for k, v in held.items())
                           + f" left out: this study holds {'them' if len(held) > 1 else 'it'} at "
                           + " ".join(f"{k}={untouched[k]}" for k in held))
            point = {k: v for k, v in point.items() if k not in held}
            seeds.append(WS.Prior({**defaults, **point}, None, True, "", 1.0, "asked for", "start"))
        baseline_seed = None
        if cfg.baseline and not prep.previous and defaults and space.allowed(defaults) is None:
            exact = all(getattr(prep.base, k, None) == v for k, v in defaults.items())
            baseline_seed = WS.Prior(defaults, None, True, "", 1.0, "the running configuration" if exact
                                     else "the running configuration (nearest point of the space)", "start")
        if cfg.warm_start:
            history = self._j(lambda j: j.tuning_history(exclude_study=self.study_id), []) or []
            configs = self._j(lambda j: j.configs(500), []) or []
            bad = [c for c in configs if c.standing == "bad"  # type: ignore[attr-defined, union-attr]
                   and int((c.params or {}).get("n_ctx") or 0) == prep.n_ctx]  # type: ignore[attr-defined]
            ws = WS.build(history, prep.fp, space, prep.obj, spec=prep.spec.to_dict(), bad_configs=bad)  # type: ignore[arg-type]
            for prior in ws.told:
                if prior.ok:
                    self._prior_origin.setdefault(_key(prior.config), prior.origin)
                    study.prior(prior.config, prior.value, ok=True, weight=prior.weight)
                else:  # llama.cpp's reason teaches the space the most general rule it supports
                    space.learn_infeasible(prior.config, prior.reason, memory_cone=False)
                    self._learn(prior.reason, prior.config)
            seeds.extend(ws.seeds)
            if any(p.kind == "exact" for p in ws.told):
                baseline_seed = None  # the journal knows this machine: start from its best, not from here
            report.warm_start = ws.summary()
            self._emit("warmstart", summary=report.warm_start, told=[p.to_dict() for p in ws.told],
                       seeds=[p.to_dict() for p in seeds])
        if baseline_seed is not None:
            seeds.insert(len(cfg.start_points), baseline_seed)
        self._j(lambda j: j.set_study_result(self.study_id, {"settings_note": report.warm_start}))
        return seeds

    # ---- the engine's span ------------------------------------------------------------
    @contextmanager
    def _engine_span(self) -> Iterator[bool]:
        """Hold the engine's life cycle for the study (``tuner std:N``), pause a serving engine
        through the change transaction, and resume it at the end (an apply reloads it itself)."""
        sup = self.supervisor
        serving = sup.state.value not in ("stopped", "failed", "crashed", "paused")
        changes = self.changes
        if changes is None:
            if serving:
                raise LlmosError("no change transaction: the tuner will not pause a serving engine "
                                 "(stop it first, or run the study from a core)")
            yield False
            return
        who = f"tuner std:{self.study_id}"
        with changes.holding(who):
            if serving:
                sup.cancel()
                paused = changes.pause(source=who, reason=f"tuning std:{self.study_id}")
                if not paused.ok:
                    raise LlmosError(f"the serving engine could not be paused: {paused.message}")
            try:
                yield serving
            finally:
                if serving and not sup.is_ready:
                    back = changes.resume(source=who, reason="the study ended")
                    if not back.ok:
                        log.warning("the serving engine did not come back after the study: %s", back.message)

    # ---- step 3: the loop -------------------------------------------------------------
    def _loop(self, prep: Prepared, study: "Study", seeds: list["Prior"], report: StudyReport) -> None:
        """Trials until the budget: a configuration refused before any load (the model's header, the
        memory estimate) takes no time and does not count, up to ``refusal_cap`` of them (each one
        also rules out what it implies, so a finite space runs out sooner or later)."""
        done = sum(1 for t in report.trials if t.ran)
        refused = len(report.trials) - done
        cap = self.refusal_cap(prep.cfg.trials)
        while done < prep.cfg.trials and not self._stop.is_set():
            if refused >= cap:
                report.message = (f"stopped after {refused} configurations refused before loading (the memory "
                                  f"estimate or the model's header; at most {cap} for a budget of "
                                  f"{prep.cfg.trials} trials)")
                break
            why = study.plateau() if prep.cfg.stop_on_plateau and not seeds else None
            if why is not None:  # the surrogate expects nothing more worth a trial: stop, say what it saved
                report.plateau = {"reason": why, "trials": done, "budget": prep.cfg.trials,
                                  "saved": prep.cfg.trials - done}
                self._note(report, f"stopped on a plateau after {done} of {prep.cfg.trials} trials "
                                   f"({prep.cfg.trials - done} saved): {why}")
                break
            config, origin = self._next(study, seeds, report)
            if config is None:
                space = prep.space
                last = space.reasons[-1] if space.reasons else ""
                report.message = (f"nothing left to try: every configuration of the space is ruled out "
                                  f"({len(space.rules)} learned rule(s)" + (f"; the last: {last}" if last else "") + ")")
                break
            record = self._measure_trial(prep, study, config, origin, report)
            if record is None:  # stopped mid-trial: not a result
                break
            if record.ran:
                done += 1
            else:
                refused += 1
            self._emit("trial", trial=record.to_dict(), done=done, total=prep.cfg.trials,
                       best=self._best_of(prep, study))

    def _measure_trial(self, prep: Prepared, study: "Study", config: Config_, origin: str,
                       report: StudyReport) -> TrialRecord | None:
        record = self._trial(prep, study, config, origin, len(report.trials) + 1)
        if record is None:
            return None
        report.trials.append(record)
        self._adapt_budget(prep, record, report)
        return record

    def _adapt_budget(self, prep: Prepared, record: TrialRecord, report: StudyReport) -> None:
        """The first measured configuration sets the trials' budget; a timeout before any
        measurement (a loaded box, a slow disk) doubles it, and a timed-out running configuration
        says so."""
        if prep.cfg.trial_timeout is not None:
            return
        if record.ok and not prep.timeout_from_rate:
            prep.timeout = trial_budget(prep.spec, int(prep.info.size_bytes or 0), record.wall_s)
            prep.timeout_from_rate = True
            self._emit("note", text=f"trial budget {prep.timeout:.0f} s (from the first measured run, "
                                    f"{record.wall_s:.1f} s)")
        elif record.outcome == "timeout" and not prep.timeout_from_rate and prep.timeouts_doubled < 3:
            before = prep.timeout
            prep.timeout *= 2
            prep.timeouts_doubled += 1
            who = ("the running configuration itself" if record.origin.startswith("the running configuration")
                   else f"trial #{record.index}")
            self._note(report, f"{who} ran past its {before:.0f} s budget before anything was measured: "
                               f"the budget is now {prep.timeout:.0f} s (a loaded box or a slow load)")

    def _next(self, study: "Study", seeds: list["Prior"], report: StudyReport) -> tuple[Config_ | None, str]:
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

    def _ordered(self, config: Config_) -> Config_:
        names = self._space.names if self._space is not None else []
        return {**{n: config[n] for n in names if n in config}, **{k: v for k, v in config.items() if k not in names}}

    def _learn(self, reason: str, config: Mapping[str, object] | None = None) -> None:
        for rule in learned_rules(reason, config):
            self.rules.setdefault(rule, reason)

    def _ruled_out(self, config: Mapping[str, object]) -> str | None:
        for rule, reason in self.rules.items():
            if all(config.get(k) == v for k, v in rule):
                what = " ".join(f"{k}={v}" for k, v in rule)
                return f"{what} never works for this model (learned: {reason})"
        return None

    def _refusal(self, prep: Prepared, params: EngineParams) -> TrialResult | None:
        """What is known without running: the header's cache-type rule, the VRAM budget."""
        from llmos_tui.engine import vram
        from llmos_tui.engine.kvcache import cache_type_refusal

        if params.flash_attn != "off":
            why = cache_type_refusal(prep.info, params.type_k, params.type_v)
            if why is not None:
                return TrialResult(False, "refused", f"{why} (the model's header; not run)")
        from llmos_tui.engine import memfit

        device = memfit.device_of(params, bool(prep.gpu))
        limit = prep.vram_limit if device == "gpu" else prep.rss_limit
        fix = self.memory_correction(prep, params)
        if fix is not None and limit is not None:  # the measured fit: the estimate as corrected by what ran
            why = memfit.refusal(params, prep.info, device, limit, fix)
            return TrialResult(False, "budget", why) if why else None
        if prep.vram_limit is not None and params.n_gpu_layers != 0:
            est = vram.estimate(params, prep.info)
            if est.total / MIB > prep.vram_limit:
                return TrialResult(False, "budget", f"needs about {est.summary()}, over the VRAM budget of "
                                                    f"{prep.vram_limit:.0f} MiB (estimate, not run)")
        if device == "cpu" and limit is not None:
            why = memfit.refusal(params, prep.info, device, limit, None)
            return TrialResult(False, "budget", why) if why else None
        return None

    def _trial(self, prep: Prepared, study: "Study", config: Config_, origin: str, index: int) -> TrialRecord | None:
        params: EngineParams | None = None
        memory: JsonDict | None = None
        try:
            params = prep.space.to_params(config, prep.base)
        except LlmosError as exc:
            result: TrialResult | None = TrialResult(False, "refused", str(exc))
        else:
            result = self._refusal(prep, params)
        ran = result is None and params is not None
        if ran:
            started = time.monotonic()
            result = self._measure(prep, params)
            self._child = None
            if self._stop.is_set() and not result.ok:
                return None  # we stopped it: not the configuration's failure
            result.wall_s = result.wall_s or time.monotonic() - started
            memory = self._record_memory(prep, params, result)
            if result.ok and prep.rss_limit is not None and (result.peak_rss_mb or 0) > prep.rss_limit:
                result = _over_budget(result, f"peak RSS {result.peak_rss_mb:.0f} MiB over the budget of "
                                              f"{prep.rss_limit:.0f} MiB")
            if result.ok and prep.vram_limit is not None and (result.peak_vram_mb or 0) > prep.vram_limit:
                result = _over_budget(result, f"peak VRAM {result.peak_vram_mb:.0f} MiB over the budget of "
                                              f"{prep.vram_limit:.0f} MiB")
        assert result is not None
        value = prep.obj.value(result) if result.ok else None
        ok = result.ok and value is not None and math.isfinite(value)
        if result.ok and not ok:
            result = _over_budget(result, "the objective could not be computed from the bench")
            result.outcome = "error"
        try:
            study.tell(config, value if ok else None, ok=ok, reason=result.reason)
        except (ValueError, KeyError) as exc:  # a start point outside the space: journaled, not modelled
            log.info("trial %s not told to the surrogate: %s", index, exc)
        self._learn(result.reason, config)
        metrics = {**result.metrics(), "summary": result.summary(), "origin": origin, "ran": ran,
                   "engine_params": params.to_dict() if params is not None else None, "budget_s": prep.timeout}
        if memory is not None:
            metrics["memory"] = memory  # the measured peak beside the estimate
        final = result
        trial_id = self._j(lambda j: j.record_trial(self.study_id, config, final.outcome,
                                                    value=value if ok else None, metrics=metrics,
                                                    reason=final.reason))
        return TrialRecord(index, config, result.outcome, value if ok else None, result.reason, origin,
                           trial_id if isinstance(trial_id, int) else None, result.summary(), result.wall_s, ran)

    def _measure(self, prep: Prepared, params: EngineParams) -> TrialResult:
        """One measurement: the bench, or for a service-level objective the replayed load."""
        if prep.obj.service is not None:
            return self.service_fn(params, prep.obj.service, prep.shapes, timeout=prep.timeout,
                                   on_child=self._track_child)
        return self.measure_fn(params, prep.spec, timeout=prep.timeout, on_child=self._track_child)

    def _record_memory(self, prep: Prepared, params: EngineParams, result: TrialResult) -> JsonDict | None:
        """The trial's real peak (VRAM on a GPU, the child's RSS on a CPU) beside the estimate, into
        the journal and into this study's readings (the next pre-flight's correction sees it)."""
        from llmos_tui.engine import memfit

        device = memfit.device_of(params, bool(prep.gpu))
        measured = result.peak_vram_mb if device == "gpu" else result.peak_rss_mb
        try:
            record = memfit.reading(params, prep.info, device, measured, "trial")
        except LlmosError:
            return None
        if record is None:
            return None
        record["study_id"] = self.study_id
        prep.memory.insert(0, record)
        self._j(lambda j: j.record_event(memfit.EVENT_KIND, record))
        return record

    def _track_child(self, child: "Supervisor") -> None:
        self._child = child
        if self._stop.is_set():
            threading.Thread(target=child.stop, daemon=True).start()

    # ---- step 4: the conclusion ----------------------------------------------------------
    def _conclude(self, prep: Prepared, study: "Study", report: StudyReport) -> None:
        cfg = prep.cfg
        if not self._stop.is_set():
            self._confirm(prep, study, report)
        stopped = self._stop.is_set()
        report.ranking = _ranking(report.trials, prep.obj)
        report.best = self._candidate(prep, study, report)
        if stopped:
            report.status = "stopped"
            report.message = (f"stopped after {len(report.trials)} trial(s); "
                              f"resume with `llmos-tui tune --resume {self.study_id}`")
            self._not_applied(report, "the study was stopped")
            return
        if report.best is None:
            report.status = "failed" if not report.message else "done"
            report.message = report.message or "no configuration could be measured (every trial failed)"
            self._not_applied(report, "nothing was measured")
            return
        if not cfg.verify:
            report.message = "the best candidate was not verified (verification off): nothing applied"
            self._not_applied(report, "verification off")
            return
        best_params = EngineParams.from_mapping(report.best["params"])  # type: ignore[arg-type]
        if _same_run(best_params, prep.base, prep.gpu):
            report.verdict = {"significant": False, "message": "the running configuration is the best found",
                              "median": 1.0}
            report.message = "the current configuration is already as good as any tried"
            self._not_applied(report, "the running configuration is the best found", state="nothing to apply")
            return
        self._set_state("verifying")
        verdict = self._verify(prep, prep.base, best_params)
        report.verdict = verdict.to_dict()
        self._emit("verdict", verdict=report.verdict)
        if self._stop.is_set():
            report.status = "stopped"
            report.message = f"stopped during verification; resume with --resume {self.study_id}"
            self._not_applied(report, "stopped during verification")
            return
        report.message = verdict.message
        if not verdict.significant:
            self._not_applied(report, "nothing verified faster", state="nothing to apply")
            return
        if cfg.apply:
            self._set_state("applying")
            result = self._apply(prep, best_params, verdict, prep.base)
            report.applied = report.apply_outcome = result
            report.message += f"; {result.get('message', '')}"
            self._emit("applied", result=result)

    @staticmethod
    def _not_applied(report: StudyReport, why: str, *, state: str = "not applied") -> None:
        if report.apply_asked and report.apply_outcome is None:
            report.apply_outcome = {"state": state, "ok": False, "message": f"{why}: nothing applied"}

    def _confirm(self, prep: Prepared, study: "Study", report: StudyReport) -> None:
        """Re-measure, whatever the budget, every configuration whose runs are fewer than the
        study's ``min_reps`` and whose mean beats the kept best by more than the noise (or leads
        when nothing is repeated yet): one lucky run never ends a study unchecked."""
        for _ in range(4 * max(1, len(report.trials))):
            if self._stop.is_set():
                return
            pending = self._unconfirmed(prep, study, report)
            if not pending:
                return
            config = pending[0]
            record = self._measure_trial(prep, study, config, "confirm (beat the kept best by more than the noise)",
                                         report)
            if record is None:
                return
            self._emit("trial", trial=record.to_dict(), done=len(report.trials), total=prep.cfg.trials,
                       best=self._best_of(prep, study))

    def _unconfirmed(self, prep: Prepared, study: "Study", report: StudyReport) -> list[Config_]:
        rows = [r for r in study.ranking() if prep.space.allowed(r[0]) is None]
        if not rows:
            return []
        tried = {_key(t.config): t for t in report.trials}
        kept = study.best()
        if kept is None:
            return []
        noise = _noise(report.trials)
        out: list[Config_] = []
        for config, mean, _, n in rows:
            if n >= study.min_reps or _key(config) not in tried:
                continue
            if kept[2] < study.min_reps:  # nothing repeated yet: the leader needs its second run
                if _key(config) == _key(kept[0]):
                    out.append(dict(config))
                continue
            margin = (1 + noise) if prep.obj.maximize else 1 / (1 + noise)
            if prep.obj.better(mean, kept[1] * margin):
                out.append(dict(config))
        return out

    def _candidate(self, prep: Prepared, study: "Study", report: StudyReport) -> JsonDict | None:
        """The best candidate: the best mean among the measured configurations (after the
        confirmations, one that beat the kept best by more than the noise has been repeated),
        not merely the best repeated one."""
        rows = [r for r in study.ranking() if prep.space.allowed(r[0]) is None]
        if not rows:
            return None
        config, mean, _, n = rows[0]
        best = _best_dict((config, mean, n), prep.space, prep.base)
        best["spread"] = next((r["spread"] for r in report.ranking if r["config"] == best["config"]), None)
        unconfirmed = [r for r in rows[1:] if r[3] < study.min_reps and prep.obj.better(r[1], mean)]
        best["unconfirmed_faster"] = len(unconfirmed)  # 0 by construction: said, and tested
        return best

    def _best_of(self, prep: Prepared, study: "Study") -> JsonDict | None:
        best = study.best()
        return _best_dict(best, prep.space, prep.base) if best else None

    def _verify(self, prep: Prepared, running: EngineParams, best: EngineParams) -> Verdict:
        design = VerifyDesign.capped(prep.cfg.verify_rounds, min_gain=prep.cfg.min_gain)

        def once(params: EngineParams, label: str) -> float | None:
            result = self._measure(prep, params)
            self._child = None
            if self._stop.is_set():
                return None
            value = prep.obj.value(result) if result.ok else None
            config = {k: v for k, v in params.to_dict().items() if k not in ("model_path", "seed", "use_mmap")}
            self._j(lambda j: j.record_trial(self.study_id, config, result.outcome, value=value,
                                             metrics={**result.metrics(), "summary": result.summary(),
                                                      "arm": label}, reason=result.reason, kind="verify"))
            return value

        def on_round(i: int, a: float | None, b: float | None) -> None:
            self._emit("verify_round", round=i + 1, rounds=design.max_rounds, a=a, b=b, order=design.order(i))

        return ab_verify(lambda: once(running, "A (running)"), lambda: once(best, "B (candidate)"),
                         design=design, speedup=prep.obj.speedup, should_stop=self._stop.is_set, on_round=on_round)

    def _apply(self, prep: Prepared, best: EngineParams, verdict: Verdict, baseline: EngineParams) -> JsonDict:
        """Apply a verified candidate, if the verdict's baseline (its A) is what still runs;
        otherwise verify again against what runs, and refuse when that does not verify."""
        changes = self.changes
        if changes is None:
            return {"state": "refused", "ok": False, "message": "no change transaction: nothing applied"}
        now = self.supervisor.params.replace(n_ctx=prep.n_ctx)
        if not _same_run(now, baseline, prep.gpu):
            self._emit("note", text="the running configuration changed since the verdict: verifying again")
            verdict = self._verify(prep, now, best)
            if not verdict.significant:
                return {"state": "refused", "ok": False,
                        "message": f"the verdict's baseline no longer runs, and against what runs now the candidate "
                                   f"is not verified ({verdict.message}): nothing applied"}
        reason = (f"std:{self.study_id} verified {verdict.estimate:.3f}x "
                  f"(CI {verdict.ci_low:.3f}-{verdict.ci_high:.3f}, {verdict.rounds} rounds, p={verdict.p_value:.4f})")
        running = self.supervisor.params
        best = best.replace(seed=running.seed, use_mmap=running.use_mmap, repack=running.repack)
        # the engine is paused: the change reloads it with the new parameters (or rolls back)
        result = changes.propose(best, source="tuner", reason=reason, kind="tune", proposed_by="auto")
        return result.to_dict()

    def _own_vram_mib(self) -> float:
        """The serving engine's own GPU memory: paused during the study, so it counts as free."""
        sample = self.sampler.latest if self.sampler is not None else None
        if sample is None or not sample.gpus:
            return 0.0
        pid = self.supervisor.pid
        own = 0
        for proc in sample.gpus[0].processes or []:
            if (proc.is_engine or (pid and proc.pid == pid)) and proc.used_memory:
                own += proc.used_memory
        return own / MIB


def _noise(trials: list[TrialRecord]) -> float:
    """The relative spread of repeated configurations in this study (the median of their
    coefficients of variation), or the machine's usual 11 % before any repeat."""
    groups: dict[tuple[tuple[str, object], ...], list[float]] = {}
    for t in trials:
        if t.ok and t.value is not None:
            groups.setdefault(_key(t.config), []).append(t.value)
    spreads = [statistics.stdev(v) / statistics.fmean(v) for v in groups.values() if len(v) > 1 and statistics.fmean(v)]
    return statistics.median(spreads) if spreads else NOISE


def _same_run(a: EngineParams, b: EngineParams, gpu: Mapping[str, object] | None) -> bool:
    """The same configuration as llama.cpp runs it (without a GPU, n_gpu_layers and n_cpu_moe change nothing)."""
    da, db = a.to_dict(), b.to_dict()
    if not gpu:
        for name in ("n_gpu_layers", "n_cpu_moe"):
            da.pop(name), db.pop(name)
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


def _best_dict(best: tuple[Mapping[str, object], float, int], space: "Space", base: EngineParams) -> JsonDict:
    config, mean, n = best
    config = plain_config(config)
    try:
        params = space.to_params(config, base).to_dict()
    except Exception:  # noqa: BLE001
        params = {**base.to_dict(), **config}
    return {"config": config, "mean": float(mean), "n": int(n), "params": params}


def _ranking(trials: list[TrialRecord], obj: Objective, top: int = 5) -> list[JsonDict]:
    groups: dict[tuple[tuple[str, object], ...], list[float]] = {}
    configs: dict[tuple[tuple[str, object], ...], Config_] = {}
    for t in trials:
        if t.ok and t.value is not None:
            groups.setdefault(_key(t.config), []).append(t.value)
            configs[_key(t.config)] = t.config
    rows: list[JsonDict] = []
    for key, values in groups.items():
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) / mean if len(values) > 1 and mean else None
        rows.append({"config": configs[key], "mean": mean, "n": len(values), "spread": spread,
                     "min": min(values), "max": max(values)})
    rows.sort(key=lambda r: r["mean"], reverse=obj.maximize)  # type: ignore[arg-type, return-value]
    return rows[:top]
