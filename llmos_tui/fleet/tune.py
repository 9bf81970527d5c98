"""Distributed tuning: one study per hardware class, its trials spread over the boxes of the class.

    executor = RayExecutor()                                   # or LocalExecutor / SimulatedExecutor
    report = FleetTuner(executor, journal, trials=40).run()    # every box the executor knows

- **Hardware classes**: boxes with the same GPU model and count and the same model file (name and
  size) share one study (a CPU-only box: the same core count too, the CPU is its hardware).
- **Batches**: a free box gets a proposal of ``Study.ask_batch`` (the constant liar: the points
  running elsewhere are lied about), so k boxes run k different trials. ``per_box`` (default 1)
  caps the trials one box runs at a time: concurrent trials on one GPU distort each other, so the
  driver is the serialiser, whatever the executor.
- **Failures are results**: a refusal, a crash, a box that dies mid-trial (the executor's error)
  or one that does not answer by the trial's deadline (``wait`` with a timeout, then cancel) is a
  failed trial with its reason, told to the study and journaled, never a hang.
- **Journal**: the study (``settings.fleet``: class, boxes) and each trial with its box
  (``metrics.box``) in the head's journal; a head that restarts resumes every study of the class
  still ``running`` or ``stopped`` from it. Warm start: every earlier trial in the head's journal
  of the same class (fleet studies, and single-box studies with the same model and GPU).
- **Rolling apply**: the winner is verified A/B on each box by the box itself (its own verdict,
  ``tuning.verdict``) and applied through that box's change transaction, box by box; the roll
  stops at the first box whose verification (or apply) fails.

The driver never imports Ray: ``TrialExecutor`` is the seam. ``RayExecutor`` (trials as Ray tasks
placed by node label ``llmos/box=<name>``), ``LocalExecutor`` (threads, for tests) and
``SimulatedExecutor`` (a virtual clock, for the benchmark) implement it.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait as futures_wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.journal import Journal
    from llmos_tui.tuning.study import Study

log = logging.getLogger("llmos_tui.fleet.tune")

JsonDict = dict[str, Any]
TrialFn = Callable[[str, JsonDict, JsonDict], JsonDict]  # (box, params, spec) -> result
OUTCOMES = ("ok", "oom", "crash", "timeout", "error", "refused", "budget")
RESUMABLE = ("running", "stopped")


# ---- boxes and classes -------------------------------------------------------------------------
@dataclass
class BoxInfo:
    """What the head knows of a box: its hardware, the space of its parameters, what runs there."""

    name: str
    hardware: JsonDict  # gpu_name, gpu_count, model_key, cpu_count
    space: JsonDict  # tuning.space.Space.to_dict()
    defaults: JsonDict = field(default_factory=dict)  # the running configuration as a point of the space
    build: str = ""
    timeout_s: float | None = None  # the box's own first trial budget

    @classmethod
    def from_describe(cls, name: str, data: Mapping[str, Any]) -> "BoxInfo":
        return cls(name, dict(data.get("hardware") or {}), dict(data.get("space") or {}),
                   dict(data.get("defaults") or {}), str(data.get("build") or ""),
                   float(data["timeout_s"]) if data.get("timeout_s") else None)


def hardware_class(hardware: Mapping[str, Any]) -> str:
    """``"NVIDIA H100 x2 | model.gguf:123"``; without a GPU the CPU's core count is the hardware."""
    gpus = int(hardware.get("gpu_count") or 0)
    what = f"{hardware.get('gpu_name') or 'GPU'} x{gpus}" if gpus else f"CPU x{int(hardware.get('cpu_count') or 0)}"
    return f"{what} | {hardware.get('model_key') or '?'}"


def group_by_class(boxes: list[BoxInfo]) -> dict[str, list[BoxInfo]]:
    out: dict[str, list[BoxInfo]] = {}
    for box in boxes:
        out.setdefault(hardware_class(box.hardware), []).append(box)
    return out


# ---- the seam: whatever runs a trial on a box ---------------------------------------------------
class TrialExecutor(Protocol):
    """Submit trials to boxes and collect their results; the driver knows nothing else of them."""

    def boxes(self, names: list[str] | None = None) -> list[BoxInfo]: ...

    def submit(self, box: str, params: JsonDict, spec: JsonDict) -> str: ...

    def wait(self, timeout: float) -> list[tuple[str, JsonDict]]:
        """The (handle, result) of trials finished within ``timeout`` seconds (at least one, or [])."""
        ...

    def cancel(self, handle: str) -> None: ...

    def available(self, box: str) -> bool: ...

    def verify(self, box: str, candidate: JsonDict, spec: JsonDict) -> JsonDict: ...

    def apply(self, box: str, changes: JsonDict, reason: str) -> JsonDict: ...

    def now(self) -> float: ...


def failure(outcome: str, reason: str, box: str, params: Mapping[str, Any] | None = None) -> JsonDict:
    return {"ok": False, "outcome": outcome if outcome in OUTCOMES else "error", "value": None, "reason": reason,
            "box": box, "params": dict(params or {}), "wall_s": 0.0}


class LocalExecutor:
    """Trials in threads of this process, each by ``trial_fn(box, params, spec)`` (a fake box in a
    test, a daemon client on one machine). ``verify_fn`` / ``apply_fn``: the box's verdict and change."""

    def __init__(self, boxes: list[BoxInfo], trial_fn: TrialFn, *,
                 verify_fn: Callable[[str, JsonDict, JsonDict], JsonDict] | None = None,
                 apply_fn: Callable[[str, JsonDict, str], JsonDict] | None = None,
                 alive: Callable[[str], bool] | None = None) -> None:
        self._boxes = list(boxes)
        self.trial_fn = trial_fn
        self.verify_fn = verify_fn
        self.apply_fn = apply_fn
        self._alive = alive
        self._pool = ThreadPoolExecutor(max_workers=max(2, 2 * len(boxes)), thread_name_prefix="fleet-trial")
        self._futures: dict[Future[JsonDict], str] = {}
        self._n = 0
        self._lock = threading.Lock()

    def boxes(self, names: list[str] | None = None) -> list[BoxInfo]:
        return [b for b in self._boxes if names is None or b.name in names]

    def submit(self, box: str, params: JsonDict, spec: JsonDict) -> str:
        with self._lock:
            self._n += 1
            handle = f"{box}#{self._n}"

        def run() -> JsonDict:
            try:
                return self.trial_fn(box, dict(params), dict(spec))
            except Exception as exc:  # noqa: BLE001 - a box's error is the trial's result
                return failure("error", f"box {box}: {type(exc).__name__}: {exc}", box, params)

        self._futures[self._pool.submit(run)] = handle
        return handle

    def wait(self, timeout: float) -> list[tuple[str, JsonDict]]:
        if not self._futures:
            time.sleep(min(max(timeout, 0.0), 0.05))
            return []
        done, _ = futures_wait(list(self._futures), timeout=max(0.0, timeout), return_when=FIRST_COMPLETED)
        return [(self._futures.pop(f), f.result()) for f in done]

    def cancel(self, handle: str) -> None:
        for fut, h in list(self._futures.items()):
            if h == handle:
                fut.cancel()  # a running thread cannot be stopped: its late result is dropped
                del self._futures[fut]

    def available(self, box: str) -> bool:
        return self._alive(box) if self._alive is not None else True

    def verify(self, box: str, candidate: JsonDict, spec: JsonDict) -> JsonDict:
        if self.verify_fn is None:
            return {"significant": False, "message": "this executor cannot verify"}
        return self.verify_fn(box, candidate, spec)

    def apply(self, box: str, changes: JsonDict, reason: str) -> JsonDict:
        if self.apply_fn is None:
            return {"ok": False, "message": "this executor cannot apply"}
        return self.apply_fn(box, changes, reason)

    def now(self) -> float:
        return time.monotonic()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SimulatedExecutor(LocalExecutor):
    """A virtual clock: a trial runs at once (``trial_fn``) and finishes ``result["wall_s"]`` simulated
    seconds after its box started it; ``wait`` advances the clock to the next finish (or by its
    timeout). Wall time to a result is then the sum of trial times along each box, as on a fleet
    whose boxes work in parallel, without waiting for it (the benchmark)."""

    def __init__(self, boxes: list[BoxInfo], trial_fn: TrialFn, **kwargs: Any) -> None:
        super().__init__(boxes, trial_fn, **kwargs)
        self.clock = 0.0
        self._queue: dict[str, tuple[float, JsonDict]] = {}

    def submit(self, box: str, params: JsonDict, spec: JsonDict) -> str:
        self._n += 1
        handle = f"{box}#{self._n}"
        try:
            result = self.trial_fn(box, dict(params), dict(spec))
        except Exception as exc:  # noqa: BLE001
            result = failure("error", f"box {box}: {type(exc).__name__}: {exc}", box, params)
        self._queue[handle] = (self.clock + float(result.get("wall_s") or 0.0), result)
        return handle

    def wait(self, timeout: float) -> list[tuple[str, JsonDict]]:
        if not self._queue:
            self.clock += max(0.0, timeout)
            return []
        first = min(t for t, _ in self._queue.values())
        if first > self.clock + timeout:
            self.clock += max(0.0, timeout)
            return []
        self.clock = max(self.clock, first)
        done = [h for h, (t, _) in self._queue.items() if t <= self.clock]
        return [(h, self._queue.pop(h)[1]) for h in done]

    def cancel(self, handle: str) -> None:
        self._queue.pop(handle, None)

    def now(self) -> float:
        return self.clock


# ---- the report --------------------------------------------------------------------------------
@dataclass
class ClassReport:
    hardware_class: str
    study_id: int | None
    boxes: list[str]
    trials: list[JsonDict] = field(default_factory=list)  # in the order they finished
    best: JsonDict | None = None
    rollout: list[JsonDict] = field(default_factory=list)  # per box: verdict, applied
    status: str = "done"
    message: str = ""
    resumed: bool = False
    warm_start: int = 0
    plateau_s: float | None = None  # (benchmarks) the executor's time when the kept best first hit a target set

    def to_dict(self) -> JsonDict:
        return {k: getattr(self, k) for k in ("hardware_class", "study_id", "boxes", "trials", "best", "rollout",
                                              "status", "message", "resumed", "warm_start", "plateau_s")}


@dataclass
class _Running:
    handle: str
    box: str
    config: JsonDict
    deadline: float
    started: float
    index: int


@dataclass
class _ClassStudy:
    report: ClassReport
    boxes: list[BoxInfo]
    study: "Study"
    done: int = 0
    running: list[_Running] = field(default_factory=list)


# ---- the driver ---------------------------------------------------------------------------------
class FleetTuner:
    """Runs one study per hardware class over a ``TrialExecutor``; journals at the head."""

    def __init__(self, executor: TrialExecutor, journal: "Journal | None" = None, *, trials: int = 20,
                 per_box: int = 1, objective: str = "tg", strategy: str = "gp", seed: int = 0,
                 spec: Mapping[str, Any] | None = None, trial_timeout: float | None = None,
                 verify: bool = True, apply: bool = True, warm_start: bool = True, resume: bool = True,
                 grace_s: float = 60.0, poll_s: float = 1.0,
                 preference: Callable[[BoxInfo], Any] | None = None,
                 target: Callable[[str, JsonDict | None], bool] | None = None, stop_at_target: bool = False,
                 on_event: Callable[[JsonDict], None] | None = None) -> None:
        if trials < 1 or per_box < 1:
            raise ValueError(f"trials and per_box must be at least 1 (got {trials}, {per_box})")
        self.executor = executor
        self.journal = journal
        self.trials = int(trials)
        self.per_box = int(per_box)
        self.objective = objective
        self.strategy = strategy
        self.seed = int(seed)
        self.spec: JsonDict = {"objective": objective, **dict(spec or {})}
        self.trial_timeout = trial_timeout
        self.verify_winner = verify
        self.apply_winner = apply
        self.warm_start = warm_start
        self.resume = resume
        self.grace_s = float(grace_s)  # beyond a trial's budget: the box's drain, pause and resume
        self.poll_s = float(poll_s)  # how often a running trial's box is checked for being gone
        self.preference = preference
        self.target = target  # (class, kept best) -> reached: the benchmark's plateau clock
        self.stop_at_target = stop_at_target  # the benchmark needs nothing after the plateau
        self.on_event = on_event or (lambda event: None)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # ---- journal -------------------------------------------------------------------------
    def _j(self, fn: Callable[["Journal"], Any], default: Any = None) -> Any:
        if self.journal is None:
            return default
        try:
            return fn(self.journal)
        except Exception as exc:  # noqa: BLE001 - the journal never stops a study
            log.warning("fleet tune: journal: %s", exc)
            return default

    def _fleet_studies(self, cls: str) -> list[JsonDict]:
        rows = self._j(lambda j: j.studies(500), []) or []
        return [r for r in rows if isinstance(r.get("settings"), dict)
                and (r["settings"].get("fleet") or {}).get("hardware_class") == cls]

    # ---- running -------------------------------------------------------------------------
    def run(self, boxes: list[str] | None = None) -> list[ClassReport]:
        """Run (or resume) the study of every hardware class among ``boxes`` (None: every box)."""
        known = self.executor.boxes(boxes)
        if boxes:
            missing = sorted(set(boxes) - {b.name for b in known})
            if missing:
                raise ValueError(f"unknown box(es): {', '.join(missing)}")
        if not known:
            raise ValueError("no box to tune on")
        studies = [self._open(cls, members) for cls, members in sorted(group_by_class(known).items())]
        self._loop(studies)
        for cs in studies:
            self._conclude(cs)
        return [cs.report for cs in studies]

    def _open(self, cls: str, members: list[BoxInfo]) -> _ClassStudy:
        from llmos_tui.tuning.space import Space
        from llmos_tui.tuning.study import Study

        lead = members[0]
        space = Space.from_dict(lead.space)
        pref = self.preference(lead) if self.preference is not None else None
        study = Study(space, strategy=self.strategy, seed=self.seed, maximize=self.objective != "ttft",
                      preference=pref)
        names = [b.name for b in members]
        report = ClassReport(cls, None, names)
        cs = _ClassStudy(report, members, study)
        old = [r for r in self._fleet_studies(cls) if r.get("status") in RESUMABLE
               and r.get("objective") == self.objective] if self.resume else []
        if old:
            row = old[0]  # the newest
            report.study_id = int(row["id"])
            report.resumed = True
            self._j(lambda j: j.resume_study(report.study_id))
            for t in self._j(lambda j: j.trials(report.study_id, kind="trial"), []) or []:
                metrics = t.get("metrics") or {}
                self._tell(cs, dict(t.get("params") or {}), t.get("value"), t.get("outcome") == "ok",
                           str(t.get("reason") or ""))
                report.trials.append({"config": t.get("params"), "box": metrics.get("box"),
                                      "ok": t.get("outcome") == "ok", "value": t.get("value"),
                                      "outcome": t.get("outcome"), "reason": t.get("reason"), "resumed": True})
            cs.done = len(report.trials)
            self.on_event({"kind": "resumed", "class": cls, "study_id": report.study_id, "trials": cs.done})
        else:
            settings = {"fleet": {"hardware_class": cls, "boxes": names, "per_box": self.per_box,
                                  "trials": self.trials, "hardware": dict(lead.hardware)},
                        "spec": dict(self.spec), "strategy": self.strategy, "seed": self.seed}
            sid = self._j(lambda j: j.start_study(dict(lead.space), self.objective,
                                                  name=f"fleet {self.objective} {cls}",
                                                  model_key=str(lead.hardware.get("model_key") or ""), build=lead.build,
                                                  machine={"gpu_name": lead.hardware.get("gpu_name") or "",
                                                           "gpu_count": int(lead.hardware.get("gpu_count") or 0),
                                                           "cpu_count": int(lead.hardware.get("cpu_count") or 0)},
                                                  settings=settings))
            report.study_id = int(sid) if isinstance(sid, int) else None
        if self.warm_start:
            report.warm_start = self._warm(cs)
        return cs

    def _warm(self, cs: _ClassStudy) -> int:
        """Earlier trials of this class in the head's journal (fleet studies of the class, and any
        study of the same model file on the same GPU model) as priors of full weight."""
        hw = cs.boxes[0].hardware
        told = 0
        for row in self._j(lambda j: j.tuning_history(exclude_study=cs.report.study_id), []) or []:
            settings = row.get("settings") or {}
            machine = row.get("machine") or {}
            fleet = settings.get("fleet") or {} if isinstance(settings, dict) else {}
            same = fleet.get("hardware_class") == cs.report.hardware_class or (
                not fleet and row.get("model_key") == hw.get("model_key")
                and (machine.get("gpu_name") or "") == (hw.get("gpu_name") or "")
                and (hw.get("gpu_count") or int(machine.get("cpu_count") or 0) == int(hw.get("cpu_count") or 0)))
            if not same or row.get("objective") != self.objective:
                continue
            config = {k: v for k, v in (row.get("params") or {}).items() if k in cs.study.space.names}
            if len(config) != len(cs.study.space.names):
                continue
            ok = row.get("outcome") == "ok" and isinstance(row.get("value"), (int, float))
            try:
                cs.study.prior(config, float(row["value"]) if ok else None, ok=ok)
                told += 1
            except (ValueError, KeyError):
                continue
        if told:
            self.on_event({"kind": "warmstart", "class": cs.report.hardware_class, "told": told})
        return told

    def _tell(self, cs: _ClassStudy, config: JsonDict, value: Any, ok: bool, reason: str) -> None:
        try:
            cs.study.tell(config, float(value) if ok and value is not None else None, ok=ok, reason=reason)
        except (ValueError, KeyError) as exc:  # a point outside the space: journaled, not modelled
            log.info("fleet tune: a trial not told to the study: %s", exc)

    def _timeout(self, box: BoxInfo) -> float:
        return float(self.trial_timeout or box.timeout_s or 300.0)

    def _loop(self, studies: list[_ClassStudy]) -> None:
        ex = self.executor
        while not self._stop.is_set():
            for cs in studies:
                self._fill(cs)
            running = [r for cs in studies for r in cs.running]
            if not running:
                for cs in studies:
                    if cs.done < self.trials and not cs.report.message:
                        cs.report.message = "no box of the class is available: the study ends short"
                break
            now = ex.now()
            wait_s = max(0.0, min(r.deadline for r in running) - now)
            finished = dict(ex.wait(min(wait_s, self.poll_s)))
            now = ex.now()
            for cs in studies:
                for r in list(cs.running):
                    if r.handle in finished:
                        result = finished[r.handle]
                    elif now >= r.deadline:
                        ex.cancel(r.handle)
                        result = failure("timeout", f"box {r.box} gave no result within {r.deadline - r.started:.0f} s "
                                                    "(dead, partitioned or stuck): the trial is a failure", r.box,
                                         r.config)
                    elif not ex.available(r.box):
                        ex.cancel(r.handle)
                        result = failure("error", f"box {r.box} became unavailable during the trial", r.box, r.config)
                    else:
                        continue
                    cs.running.remove(r)
                    self._record(cs, r, result, now)

        if self._stop.is_set():  # a stopped study abandons its trials in flight (not results: resumed later)
            for cs in studies:
                for r in cs.running:
                    ex.cancel(r.handle)
                cs.running.clear()

    def _fill(self, cs: _ClassStudy) -> None:
        """Give every free box of the class a new trial, all of them from one constant-liar batch."""
        left = self.trials - cs.done - len(cs.running)
        if left <= 0 or (self.stop_at_target and cs.report.plateau_s is not None):
            return
        slots: list[BoxInfo] = []
        for box in cs.boxes:
            busy = sum(1 for r in cs.running if r.box == box.name)
            if not self.executor.available(box.name):
                continue
            slots.extend([box] * max(0, self.per_box - busy))
        slots = slots[:left]
        if not slots:
            return
        try:
            batch = cs.study.ask_batch(len(slots), pending=[r.config for r in cs.running])
        except RuntimeError as exc:  # the space allows nothing (more)
            cs.report.message = str(exc)
            return
        for box, config in zip(slots, batch):
            now = self.executor.now()
            index = cs.done + len(cs.running) + 1
            spec = {**self.spec, "box": box.name, "study": f"std:{cs.report.study_id}", "trial": index,
                    "timeout_s": self._timeout(box)}
            handle = self.executor.submit(box.name, dict(config), spec)
            # the deadline: the trial's own budget plus the box's drain, pause and resume
            cs.running.append(_Running(handle, box.name, dict(config), now + self._timeout(box) + self.grace_s, now,
                                       index))
            self.on_event({"kind": "submitted", "class": cs.report.hardware_class, "box": box.name, "trial": index,
                           "config": dict(config)})
        if len(batch) < len(slots) and not cs.running:
            cs.report.message = "the space is exhausted"

    def _record(self, cs: _ClassStudy, run: _Running, result: JsonDict, now: float) -> None:
        ok = bool(result.get("ok")) and isinstance(result.get("value"), (int, float)) \
            and math.isfinite(float(result["value"]))
        value = float(result["value"]) if ok else None
        outcome = "ok" if ok else (str(result.get("outcome") or "error") if result.get("outcome") != "ok" else "error")
        outcome = outcome if outcome in OUTCOMES else "error"
        reason = str(result.get("reason") or ("" if ok else "the trial failed"))
        self._tell(cs, run.config, value, ok, reason)
        cs.done += 1
        metrics = {"box": run.box, "wall_s": result.get("wall_s"), "values": result.get("values") or {},
                   "summary": result.get("summary") or "", "index": run.index, "fleet": True,
                   "engine_params": result.get("engine_params")}
        if result.get("ran_on") is not None:
            metrics["ran_on"] = result["ran_on"]  # the label of the node the trial really ran on
        trial_id = None
        if cs.report.study_id is not None:
            trial_id = self._j(lambda j: j.record_trial(cs.report.study_id, run.config, outcome, value=value,
                                                        metrics=metrics, reason=reason))
        row = {"index": run.index, "config": run.config, "box": run.box, "ok": ok, "value": value,
               "outcome": outcome, "reason": reason, "trial_id": trial_id, "finished_at": now}
        cs.report.trials.append(row)
        if self.target is not None and cs.report.plateau_s is None:
            best = cs.study.best()
            if self.target(cs.report.hardware_class, best[0] if best else None):
                cs.report.plateau_s = now
        self.on_event({"kind": "trial", "class": cs.report.hardware_class, **row})

    # ---- the conclusion ----------------------------------------------------------------------
    def _conclude(self, cs: _ClassStudy) -> None:
        report = cs.report
        best = cs.study.best()
        if self._stop.is_set():
            report.status = "stopped"
            report.message = f"stopped after {cs.done} trial(s); `fleet tune` again resumes std:{report.study_id}"
            self._end(report)
            return
        if best is None:
            report.status = "done"
            report.message = report.message or "no configuration could be measured (every trial failed)"
            self._end(report)
            return
        config, mean, n = best
        report.best = {"config": config, "mean": mean, "n": n}
        if not self.verify_winner:
            report.message = "the best was not verified (verification off): nothing applied"
        else:
            self._roll(cs, config)
        self._end(report)

    def _roll(self, cs: _ClassStudy, config: JsonDict) -> None:
        """Verify on each box, then apply there; stop at the first box that does not verify."""
        report = cs.report
        for box in cs.boxes:
            if box.defaults and all(box.defaults.get(k) == v for k, v in config.items()):
                report.rollout.append({"box": box.name, "state": "nothing to apply",
                                       "message": "this box already runs the best configuration"})
                continue
            spec = {**self.spec, "box": box.name, "study": f"std:{report.study_id}", "timeout_s": self._timeout(box)}
            verdict = self.executor.verify(box.name, dict(config), spec)
            entry: JsonDict = {"box": box.name, "verdict": verdict}
            self.on_event({"kind": "verdict", "class": report.hardware_class, "box": box.name, "verdict": verdict})
            if not verdict.get("significant"):
                entry["state"] = "not verified"
                report.rollout.append(entry)
                report.message = (f"rolling apply stopped at box {box.name}: {verdict.get('message') or 'not verified'}"
                                  f" ({sum(1 for e in report.rollout if e.get('state') == 'applied')} box(es) applied)")
                return
            if not self.apply_winner:
                entry["state"] = "verified (apply off)"
                report.rollout.append(entry)
                continue
            estimate = verdict.get("estimate")
            reason = (f"fleet std:{report.study_id} verified on {box.name}"
                      + (f" {float(estimate):.3f}x" if isinstance(estimate, (int, float)) else ""))
            applied = self.executor.apply(box.name, dict(config), reason)
            entry["applied"] = applied
            entry["state"] = "applied" if applied.get("ok") else "apply failed"
            report.rollout.append(entry)
            self.on_event({"kind": "applied", "class": report.hardware_class, "box": box.name, "result": applied})
            if not applied.get("ok"):
                report.message = f"rolling apply stopped at box {box.name}: {applied.get('message') or 'apply failed'}"
                return
        done = sum(1 for e in report.rollout if e.get("state") == "applied")
        report.message = f"best {_fmt(config)} applied on {done} of {len(cs.boxes)} box(es)" if self.apply_winner \
            else f"best {_fmt(config)} verified on every box (apply off)"

    def _end(self, report: ClassReport) -> None:
        if report.study_id is None:
            return
        result = {"best": report.best, "rollout": report.rollout, "message": report.message,
                  "fleet": {"hardware_class": report.hardware_class, "boxes": report.boxes}}
        self._j(lambda j: j.end_study(report.study_id, status=report.status, result=result))


def _fmt(config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def summary(reports: list[ClassReport]) -> str:
    lines = []
    for r in reports:
        ok = [t for t in r.trials if t.get("ok")]
        boxes = sorted({str(t.get("box")) for t in r.trials if t.get("box")})
        resumed = " (resumed)" if r.resumed else ""
        lines.append(f"{r.hardware_class}: std:{r.study_id}{resumed}, {len(r.trials)} trial(s) ({len(ok)} ok) "
                     f"on {', '.join(boxes) or 'no box'}; warm start {r.warm_start}")
        if r.best:
            lines.append(f"  best {_fmt(r.best['config'])}: {r.best['mean']:.2f} over {r.best['n']} run(s)")
        for e in r.rollout:
            said = (e.get("verdict") or {}).get("message", e.get("message", ""))
            lines.append(f"  {e['box']}: {e.get('state')} — {said}")
        lines.append(f"  {r.status}: {r.message}")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


__all__ = ["BoxInfo", "ClassReport", "FleetTuner", "LocalExecutor", "SimulatedExecutor", "TrialExecutor",
           "failure", "group_by_class", "hardware_class", "summary"]
