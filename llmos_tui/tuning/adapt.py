"""Online adaptation while serving: a contextual bandit over the engine's live-changeable threads.

llama.cpp changes its generation and prompt-processing thread counts without a reload
(``llama_set_n_threads``; ``Supervisor.set_threads``). Before each request the learner looks at
the context — is the UI streaming, how many cores the host's *other* processes leave free
(psutil), how long the prompt is — and picks the pair (``n_threads``, ``n_threads_batch``),
rewarded by the reply's generation tok/s. One bandit over pairs, not one per knob: measured here
with the cores contended, ``n_threads_batch=2`` cut the *generation* rate of ``n_threads=1`` by a
third, so the knobs are not independent when the box is busy.

Thompson sampling on the log of the rate (the noise here is multiplicative, about 11 %), with
discounted statistics so that it follows a box that changes. Guard rails:

- off by default; ``shadow`` first: it computes and shows what it would do, applies nothing;
- exploration (a choice other than the current best) on at most ``max_explore_share`` of the
  requests; never a choice the journal marks bad (``is_bad``) or one that failed here;
- ``readonly`` and the doctor's kill switch (``stopped``) stop it: the configured threads are
  restored and it only watches;
- journaled summarised: a ``adapt_summary`` event every ``summary_every`` requests and on mode
  changes, never one per request;
- drift: when the served rate in a quiet context falls well below the rate it learned (or the
  tuner's baseline) for a whole window and ``explained()`` has no reason, it raises a drift
  (journaled as ``adapt_drift``, handed to ``on_drift``). Wired by ``tuning.learner.build_learner``,
  the drift is published on the engine's event bus, where the doctor's ``tuning.drift`` detector turns it into
  a finding whose repair, ``tuning.retune``, runs a short study in an idle window: suggested by
  default, run by itself under ``[doctor] "tuning.drift" = "auto"``, verified A/B and applied
  through the change transaction (undoable), under the doctor's rails (kill switch, one action
  at a time, backoff, the start limit).

``policy()`` is a plain dict for the dashboard: per context the best choice, its estimated
rate, the baseline's, and the estimated gain.

This module is the policy; the maths is ``tuning.bandit``, the host's load ``telemetry.hostload``,
the wiring from the core's parts ``tuning.learner``.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Protocol

from llmos_tui.telemetry.hostload import HostLoad
from llmos_tui.tuning.bandit import (PROMPT_CLASSES, Context, Decision, KnobBandit, _free_of,  # noqa: F401
                                     prompt_class, thread_grid)

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.supervisor import EngineEvent

MODES = ("off", "shadow", "on")
JsonDict = dict[str, object]
Pair = tuple[int, int]


class LiveEngine(Protocol):
    """What the learner needs of the serving engine (a Supervisor)."""

    @property
    def params(self) -> "EngineParams": ...

    @property
    def pid(self) -> int | None: ...

    def set_threads(self, n_threads: int, n_threads_batch: int) -> object: ...

    def subscribe(self, listener: Callable[..., None]) -> Callable[[], None]: ...


class LoadGauge(Protocol):
    def sample(self) -> float: ...


class OnlineAdapter:
    """The learner. Call :meth:`before_request` before each chat request and :meth:`after_reply`
    with its metrics (or :meth:`attach` it to a supervisor to learn from ``request_done``)."""

    def __init__(
        self,
        supervisor: LiveEngine,
        *,
        mode: str = "off",
        max_threads: int | None = None,
        max_explore_share: float = 0.2,
        readonly: bool = False,
        stopped: Callable[[], bool] | None = None,
        is_bad: Callable[[int, int], str | None] | None = None,
        record_event: Callable[[str, JsonDict], object] | None = None,
        summary_every: int = 50,
        explained: Callable[[], str | None] | None = None,
        on_drift: Callable[[JsonDict], object] | None = None,
        baseline_tps: float | None = None,
        drift_window: int = 20,
        drift_drop: float = 0.25,
        host_load: LoadGauge | None = None,
        seed: int = 0xADA,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"adapt mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.supervisor = supervisor
        self.mode = mode
        ncpu = max_threads or os.cpu_count() or 1
        self.values = thread_grid(ncpu)
        params = supervisor.params
        self.baseline = (min(params.n_threads, ncpu), min(params.n_threads_batch, ncpu))
        self.arms = sorted({(n, nb) for n in self.values for nb in self.values} | {self.baseline})
        self.bandit = KnobBandit(self.arms, self.baseline, rng=random.Random(seed), prior=self._arm_prior)
        self.max_explore_share = max_explore_share
        self.readonly = readonly
        self.stopped = stopped or (lambda: False)
        self.is_bad = is_bad
        self.record_event = record_event
        self.summary_every = summary_every
        self.explained = explained or (lambda: None)
        self.on_drift = on_drift
        self.baseline_tps = baseline_tps
        self.drift_window = drift_window
        self.drift_drop = drift_drop
        self.host = host_load if host_load is not None else HostLoad(ncpu, engine_pid=lambda: supervisor.pid)
        self.ncpu = ncpu
        self.requests = 0
        self.explored = 0
        self.ambiguous = 0  # replies during which the host's load changed: not learned from
        self.failed: set[tuple[int, int]] = set()
        self.current: tuple[int, int] | None = None  # what the engine runs now (None: its params)
        self.pending: Decision | None = None
        self.window: deque[tuple[str, int, int, bool]] = deque()  # for the summary: ctx, n, nb, explored
        self.quiet_rates: deque[float] = deque(maxlen=drift_window)
        self.learned_quiet: float | None = None
        self.drift: JsonDict | None = None
        self.last_drift_ts = 0.0
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None

    # ---- switches --------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True when it may change the engine now (mode on, not read-only, no kill switch)."""
        return self.mode == "on" and not self.readonly and not self.stopped()

    def set_mode(self, mode: str, *, reason: str = "") -> None:
        if mode not in MODES:
            raise ValueError(f"adapt mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == self.mode:
            return
        before, self.mode = self.mode, mode
        if mode != "on":
            self._restore()
        self._journal("adapt_mode", {"from": before, "to": mode, "reason": reason, **self._summary(flush=True)})

    def _restore(self) -> None:
        """Back to the configured threads (what the journal says runs)."""
        if self.current is not None and self.current != self.baseline:
            try:
                self.supervisor.set_threads(*self.baseline)
            except Exception:  # noqa: BLE001 - a dead engine reloads with its params anyway
                pass
        self.current = None

    def attach(self) -> Callable[[], None]:
        """Learn from the supervisor's ``request_done`` events (the chat path still calls
        before_request)."""
        def on_event(ev: EngineEvent) -> None:
            if ev.kind == "request_done" and ev.data.get("status") == "done":
                self.after_reply(ev.data.get("metrics") or {})
            elif ev.kind in ("loaded", "crashed"):
                self.current = None  # a fresh child runs its params' threads
                if ev.kind == "loaded":
                    self._on_reload()
        self._unsubscribe = self.supervisor.subscribe(on_event)
        return self._unsubscribe

    def _arm_prior(self, key: str, arm: tuple[int, int]) -> float | None:
        """What an untried arm should expect in context ``key`` (log-rate): its mean in the contexts
        with the same free cores (the load is what changes the best threads), else its mean over
        all contexts scaled by the share of its threads the free cores can run (a generation
        thread on a busy core waits for it: llama.cpp's threads synchronise every token), so a
        busy box does not explore oversubscribed choices on an optimistic guess."""
        free = _free_of(key)
        same_load = self.bandit.pooled(arm, where=lambda k: k != key and _free_of(k) == free)
        if same_load is not None:
            return same_load
        pooled = self.bandit.pooled(arm)
        if pooled is None or free is None:
            return pooled
        return pooled + math.log(min(1.0, free / max(1, arm[0])))

    def _on_reload(self) -> None:
        """A (re)load: a changed configuration (a repair, a re-tune, an undo) is the new baseline,
        and the quiet rate is learned afresh against it."""
        params = self.supervisor.params
        baseline = (min(params.n_threads, self.ncpu), min(params.n_threads_batch, self.ncpu))
        with self._lock:
            if baseline != self.baseline:
                self.baseline = baseline
                self.bandit.baseline = baseline
                if baseline not in self.arms:
                    self.arms = sorted(set(self.arms) | {baseline})
                    self.bandit.values = list(self.arms)
                self.learned_quiet = None
                self.quiet_rates.clear()

    # ---- per request -----------------------------------------------------------------------
    def _free_cores(self) -> int:
        return max(1, min(self.ncpu, int(round(self.ncpu - self.host.sample()))))

    def context(self, *, streaming: bool, prompt_tokens: int) -> Context:
        return Context("streaming" if streaming else "idle", self._free_cores(), prompt_class(prompt_tokens))

    def _allowed(self) -> list[tuple[int, int]]:
        arms = []
        for n, nb in self.arms:
            if (n, nb) in self.failed:
                continue
            if self.is_bad is not None and self.is_bad(n, nb):
                continue
            arms.append((n, nb))
        return arms or [self.baseline]

    def before_request(self, *, streaming: bool = False, prompt_tokens: int = 0) -> Decision | None:
        """Choose the threads for the next request (and, when on, set them). None when off."""
        if self.mode == "off":
            return None
        with self._lock:
            ctx = self.context(streaming=streaming, prompt_tokens=prompt_tokens)
            allowed = self._allowed()
            best_n, best_nb = self.bandit.best(ctx.key, allowed)
            n, nb = self.bandit.sample(ctx.key, allowed)
            explored = (n, nb) != (best_n, best_nb)
            if explored and self.explored + 1 > self.max_explore_share * (self.requests + 1):
                n, nb, explored = best_n, best_nb, False  # the exploration budget is spent
            applied = self.active
            if self.mode == "on" and not applied:
                self._restore()  # read-only or the kill switch: the configured threads
            if applied and (n, nb) != (self.current or self.baseline):
                try:
                    self.supervisor.set_threads(n, nb)
                    self.current = (n, nb)
                except Exception:  # noqa: BLE001 - the engine refused: never again, serve as configured
                    self.failed.add((n, nb))
                    applied = False
                    self.current = None
            decision = Decision(ctx, n, nb, explored, applied, (best_n, best_nb))
            self.pending = decision
            return decision

    def after_reply(self, metrics: JsonDict) -> None:
        """Learn from a finished reply's metrics (``gen_tps``, ``prompt_tps``, ``prompt_eval_tokens``)."""
        with self._lock:
            d, self.pending = self.pending, None
            if d is None:
                return
            ran = (d.n_threads, d.n_threads_batch) if d.applied else (self.current or self.baseline)
            gen_tps = metrics.get("gen_tps")
            # a load that came or went during the reply makes its rate belong to neither context:
            # it is not learned from (counted as ambiguous)
            steady = self._free_cores() == d.context.free_cores
            if not steady:
                self.ambiguous += 1
            if gen_tps and int(metrics.get("gen_tokens") or 0) >= 4 and steady:
                self.bandit.update(d.context.key, ran, float(gen_tps))
                if d.context.free_cores == self.ncpu and ran == d.best:
                    self._watch_drift(float(gen_tps), d.context)
            self.requests += 1
            self.explored += int(d.explored)  # in shadow mode too: what it would do
            self.window.append((d.context.key, d.n_threads, d.n_threads_batch, d.explored))
            if self.summary_every and len(self.window) >= self.summary_every:
                self._journal("adapt_summary", self._summary(flush=True))

    # ---- drift -------------------------------------------------------------------------------
    def _watch_drift(self, rate: float, ctx: Context) -> None:
        self.quiet_rates.append(rate)
        if len(self.quiet_rates) < self.drift_window:
            return
        median = statistics.median(self.quiet_rates)
        reference = self.baseline_tps or self.learned_quiet
        if reference is None:
            self.learned_quiet = median  # the first full window is the reference
            return
        if median < (1 - self.drift_drop) * reference and time.time() - self.last_drift_ts > 600:
            why_not = self.explained()
            if why_not:
                return  # the doctor explains it (throttling, a known co-tenant): not drift
            self.last_drift_ts = time.time()
            self.drift = {"kind": "retune", "reason": f"served {median:.1f} tok/s in a quiet context, "
                          f"{1 - median / reference:.0%} below the reference {reference:.1f} tok/s",
                          "median_tps": median, "reference_tps": reference, "context": ctx.key,
                          "window": self.drift_window}
            self._journal("adapt_drift", self.drift)
            if self.on_drift is not None:
                try:
                    self.on_drift(dict(self.drift))
                except Exception:  # noqa: BLE001
                    pass
            self.quiet_rates.clear()

    # ---- reporting ---------------------------------------------------------------------------
    def _summary(self, *, flush: bool) -> JsonDict:
        choices: dict[str, dict[str, int]] = {}
        explored = 0
        for key, n, nb, ex in self.window:
            slot = choices.setdefault(key, {})
            slot[f"{n}/{nb}"] = slot.get(f"{n}/{nb}", 0) + 1
            explored += int(ex)
        out = {"mode": self.mode, "requests": len(self.window), "total_requests": self.requests,
               "explored": explored, "choices": choices, "policy": self.policy()["contexts"],
               "estimated_gain": self.policy()["estimated_gain"]}
        if flush:
            self.window.clear()
        return out

    def _journal(self, kind: str, data: JsonDict) -> None:
        if self.record_event is None:
            return
        try:
            self.record_event(kind, data)
        except Exception:  # noqa: BLE001 - the journal's trouble is not the engine's
            pass

    def policy(self) -> JsonDict:
        """For the dashboard: per context, the best threads, estimated rates, and the gain."""
        contexts: dict[str, JsonDict] = {}
        gains, weights = [], []
        for key in sorted(self.bandit.stats):
            best = self.bandit.best(key, self.arms)
            est = self.bandit.estimate(key, best)
            base = self.bandit.estimate(key, self.baseline)
            n = sum(self.bandit.count(key, a) for a in self.arms)
            gain = (est / base - 1) if est and base else None
            contexts[key] = {"n_threads": best[0], "n_threads_batch": best[1], "est_gen_tps": est,
                             "baseline_gen_tps": base, "gain": gain, "requests": n,
                             "tried": {f"{a[0]}/{a[1]}": self.bandit.count(key, a) for a in self.arms}}
            if gain is not None:
                gains.append(gain)
                weights.append(n)
        estimated = sum(g * w for g, w in zip(gains, weights)) / sum(weights) if weights else None
        return {"mode": self.mode, "active": self.active, "baseline": {"n_threads": self.baseline[0],
                "n_threads_batch": self.baseline[1]}, "current": self.current, "requests": self.requests,
                "explore_share": self.explored / self.requests if self.requests else 0.0,
                "ambiguous": self.ambiguous,
                "max_explore_share": self.max_explore_share, "contexts": contexts, "estimated_gain": estimated,
                "drift": self.drift}


__all__ = ["MODES", "OnlineAdapter", "HostLoad", "KnobBandit", "Context", "Decision", "prompt_class",
           "thread_grid"]
