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
  (journaled as ``adapt_drift``, handed to ``on_drift``). Wired to an Operator, the drift is
  published on the engine's event bus, where the doctor's ``tuning.drift`` detector turns it into
  a finding whose repair, ``tuning.retune``, runs a short study in an idle window: suggested by
  default, run by itself under ``[doctor] "tuning.drift" = "auto"``, verified A/B and applied
  through the change transaction (undoable), under the doctor's rails (kill switch, one action
  at a time, backoff, the start limit).

``policy()`` is a plain dict for the dashboard: per context the best choice, its estimated
rate, the baseline's, and the estimated gain.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

MODES = ("off", "shadow", "on")
PROMPT_CLASSES = ((64, "short"), (512, "medium"), (10**12, "long"))


# ---- context ------------------------------------------------------------------------------
class HostLoad:
    """Cores kept busy by processes other than ours: this process and the engine child (``engine_pid``,
    a callable: the engine restarts with a new pid). Any other process, our own children included
    (a tuner's trial, a script's load generator), is load the engine competes with."""

    def __init__(self, ncpu: int | None = None, engine_pid: Callable[[], int | None] | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.ncpu = ncpu or psutil.cpu_count() or 1
        self._me = psutil.Process()
        self._engine_pid = engine_pid or (lambda: None)
        self._engine: Any = None
        self._last: tuple[float, float, float, tuple[int, ...]] | None = None
        self.scan_budget_s = 0.02
        self._no_proc = not os.path.isdir("/proc/self/task")  # no Linux /proc: never scan
        self._scan_retry_at = 0.0  # a scan over budget: the CPU-time view until then, then a new try
        self.scan_retry_s = 30.0
        self.last_other = 0.0

    def _own_procs(self) -> list[Any]:
        procs = [self._me]
        pid = self._engine_pid()
        if pid:
            if self._engine is None or self._engine.pid != pid:
                try:
                    self._engine = self._psutil.Process(pid)
                except self._psutil.Error:
                    self._engine = None
            if self._engine is not None:
                procs.append(self._engine)
        return procs

    def _own_cpu(self) -> tuple[float, tuple[int, ...]]:
        total = 0.0
        procs = self._own_procs()
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                continue
        return total, tuple(p.pid for p in procs)

    def sample(self) -> float:
        """Cores other processes keep busy now. On Linux: their runnable threads at this instant.
        Elsewhere: other processes' CPU time since the last call (a lagging view: a load that
        started during the last request is seen late)."""
        running = self._runnable()
        if running is not None:
            self.last_other = max(0.0, min(float(self.ncpu), running))
            return self.last_other
        return self._cpu_time_other()

    @staticmethod
    def _running_in(pid: str) -> int:
        """Runnable threads of one process (0 when it is gone)."""
        n = 0
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return 0
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            # the state follows the command name in parentheses (which may hold spaces)
            end = stat.rfind(b")")
            if stat[end + 2:end + 3] == b"R":
                n += 1
        return n

    def _runnable(self) -> float | None:
        """Runnable threads of other processes at this instant, from /proc/*/task/*/stat (our own
        process and the engine left out: llama.cpp's threads spin a while after each token, and the
        caller itself runs); None where /proc is not Linux's, or when the box has so many threads
        that one scan takes over ``scan_budget_s`` (then the CPU-time view for ``scan_retry_s``)."""
        if self._no_proc or time.monotonic() < self._scan_retry_at:
            return None
        started = time.perf_counter()
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return None
        own = {str(p.pid) for p in self._own_procs()}
        n = 0
        for pid in pids:
            if pid not in own:
                n += self._running_in(pid)
            # over budget (a box with many threads, or our own busy threads holding the GIL between
            # the reads): give up this scan at once, not seconds later, and use the CPU-time view
            if time.perf_counter() - started > self.scan_budget_s:
                self._scan_retry_at = time.monotonic() + self.scan_retry_s
                return None
        return float(n)

    def _cpu_time_other(self) -> float:
        """Other processes' busy cores since the last call (the first call: a baseline, 0)."""
        t = self._psutil.cpu_times()
        busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) \
            + getattr(t, "steal", 0.0)
        now = time.monotonic()
        own, who = self._own_cpu()
        if self._last is not None and self._last[3] == who:
            t0, busy0, own0, _ = self._last
            dt = now - t0
            if dt > 0.02:
                self.last_other = max(0.0, min(self.ncpu, ((busy - busy0) - (own - own0)) / dt))
                self._last = (now, busy, own, who)
        else:  # the first call, or the engine restarted (a new pid's times start at 0): a new baseline
            self._last = (now, busy, own, who)
        return self.last_other


@dataclass(frozen=True)
class Context:
    ui: str  # streaming | idle
    free_cores: int  # cores the other processes leave (rounded, at least 1)
    prompt: str  # short | medium | long

    @property
    def key(self) -> str:
        return f"{self.ui}/free{self.free_cores}/{self.prompt}"


def thread_grid(ncpu: int) -> list[int]:
    """Thread counts worth trying: powers of two, half, all but one, all (not every number on a big box)."""
    values = {1, ncpu, max(1, ncpu // 2), max(1, ncpu - 1)}
    p = 2
    while p < ncpu:
        values.add(p)
        p *= 2
    return sorted(values)


def _free_of(key: str) -> int | None:
    """The free-core count of a context key (``idle/free2/short`` -> 2)."""
    for part in key.split("/"):
        if part.startswith("free") and part[4:].isdigit():
            return int(part[4:])
    return None


def prompt_class(tokens: int) -> str:
    for limit, name in PROMPT_CLASSES:
        if tokens < limit:
            return name
    return "long"


# ---- the bandit ---------------------------------------------------------------------------
@dataclass
class _Stat:
    """Discounted mean and variance of log(rate) for one arm in one context."""

    w: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    n: int = 0

    def add(self, x: float, gamma: float) -> None:
        self.w *= gamma
        self.m2 *= gamma
        self.w += 1.0
        delta = x - self.mean
        self.mean += delta / self.w
        self.m2 += delta * (x - self.mean)
        self.n += 1

    def sd(self, prior_sd: float) -> float:
        if self.w < 2:
            return prior_sd
        var = self.m2 / max(self.w - 1.0, 1.0)
        # shrink towards the prior noise: a few equal samples do not mean no noise
        return math.sqrt((var * self.w + prior_sd**2 * 2) / (self.w + 2))


class KnobBandit:
    """Thompson sampling over one knob's values, per context key."""

    def __init__(self, values: list[Any], baseline: Any, *, gamma: float = 0.97, prior_sd: float = 0.15,
                 rng: random.Random | None = None,
                 prior: Callable[[str, Any], float | None] | None = None) -> None:
        self.prior = prior  # (key, value) -> log-rate a context that has not tried it expects (else pooled)
        self.values = list(values)
        self.baseline = baseline if baseline in values else values[-1]
        self.gamma = gamma
        self.prior_sd = prior_sd
        self.stats: dict[str, dict[Any, _Stat]] = {}
        self.rng = rng or random.Random(0xADA)

    def _ctx(self, key: str) -> dict[Any, _Stat]:
        stats = self.stats.setdefault(key, {})
        for v in self.values:  # an arm added later (a new baseline) starts untried everywhere
            if v not in stats:
                stats[v] = _Stat()
        return stats

    def pooled(self, value: Any, where: Callable[[str], bool] | None = None) -> float | None:
        """The arm's mean over every context (``where``: those whose key it accepts), weighted by
        how much each has seen of it (the prior of a context that has not tried it)."""
        w = m = 0.0
        for key, stats in self.stats.items():
            if where is not None and not where(key):
                continue
            s = stats.get(value)
            if s is not None and s.w > 0:
                m += s.mean * s.w
                w += s.w
        return m / w if w else None

    def expected(self, key: str, value: Any) -> float | None:
        """What a context that has not tried ``value`` expects of it (log-rate): the prior hook's
        answer, else the arm's mean over every context."""
        if self.prior is not None:
            guess = self.prior(key, value)
            if guess is not None:
                return guess
        return self.pooled(value)

    def best(self, key: str, allowed: list[Any]) -> Any:
        """The arm with the highest estimated mean; untried arms lose to tried ones; a context
        that has tried nothing follows what the other contexts learned, else the baseline."""
        stats = self._ctx(key)
        tried = [v for v in allowed if stats[v].w > 0]
        if not tried:
            pooled = {v: self.expected(key, v) for v in allowed}
            known = [v for v in allowed if pooled[v] is not None]
            if known:
                return max(known, key=lambda v: pooled[v])
            return self.baseline if self.baseline in allowed else allowed[-1]
        return max(tried, key=lambda v: stats[v].mean)

    def sample(self, key: str, allowed: list[Any]) -> Any:
        stats = self._ctx(key)
        tried = [stats[v].mean for v in allowed if stats[v].w > 0]
        optimistic = max(tried) if tried else 0.0
        draws = {}
        for v in allowed:
            s = stats[v]
            if s.w > 0:
                draws[v] = self.rng.gauss(s.mean, s.sd(self.prior_sd) / math.sqrt(s.w))
            else:  # untried here: centred on what other contexts learned of it, else the best known; wide
                prior = self.expected(key, v)
                draws[v] = self.rng.gauss(optimistic if prior is None else prior, self.prior_sd * 2)
        return max(draws, key=draws.get)

    def update(self, key: str, value: Any, rate: float) -> None:
        if rate and rate > 0:
            self._ctx(key)[value].add(math.log(rate), self.gamma)

    def estimate(self, key: str, value: Any) -> float | None:
        s = self.stats.get(key, {}).get(value)
        return math.exp(s.mean) if s is not None and s.w > 0 else None

    def count(self, key: str, value: Any) -> int:
        s = self.stats.get(key, {}).get(value)
        return s.n if s else 0


@dataclass
class Decision:
    context: Context
    n_threads: int
    n_threads_batch: int
    explored: bool
    applied: bool  # False in shadow mode (or when stopped): the baseline ran
    best: tuple[int, int]
    ts: float = field(default_factory=time.time)


class OnlineAdapter:
    """The learner. Call :meth:`before_request` before each chat request and :meth:`after_reply`
    with its metrics (or :meth:`attach` it to a supervisor to learn from ``request_done``)."""

    def __init__(
        self,
        supervisor: Any,
        *,
        mode: str = "off",
        max_threads: int | None = None,
        max_explore_share: float = 0.2,
        readonly: bool = False,
        stopped: Callable[[], bool] | None = None,
        is_bad: Callable[[int, int], str | None] | None = None,
        record_event: Callable[[str, dict[str, Any]], Any] | None = None,
        summary_every: int = 50,
        explained: Callable[[], str | None] | None = None,
        on_drift: Callable[[dict[str, Any]], Any] | None = None,
        baseline_tps: float | None = None,
        drift_window: int = 20,
        drift_drop: float = 0.25,
        host_load: Any = None,
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
        self.drift: dict[str, Any] | None = None
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
        def on_event(ev: Any) -> None:
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

    def after_reply(self, metrics: dict[str, Any]) -> None:
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
    def _summary(self, *, flush: bool) -> dict[str, Any]:
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

    def _journal(self, kind: str, data: dict[str, Any]) -> None:
        if self.record_event is None:
            return
        try:
            self.record_event(kind, data)
        except Exception:  # noqa: BLE001 - the journal's trouble is not the engine's
            pass

    def policy(self) -> dict[str, Any]:
        """For the dashboard: per context, the best threads, estimated rates, and the gain."""
        contexts: dict[str, Any] = {}
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


def for_operator(op: Any, *, mode: str = "shadow", **options: Any) -> OnlineAdapter:
    """An adapter wired to an Operator: its supervisor, the journal (summaries, the bad-list),
    ``--readonly``, the doctor's kill switch. It learns from the supervisor's replies
    (:meth:`OnlineAdapter.attach`); the chat path calls ``before_request`` before each send."""
    from llmos_tui.engine.params import EngineParams

    sup = op.supervisor
    changes = getattr(op, "changes", None)
    writer = getattr(op, "journal_writer", None)
    doctor = getattr(op, "doctor", None)

    cache: dict[tuple[Any, ...], tuple[float, str | None]] = {}

    def is_bad(n: int, nb: int) -> str | None:
        """The journal's bad-list, read at most once a minute per choice (not on every request)."""
        if changes is None:
            return None
        key = (n, nb, tuple(sorted(sup.params.to_dict().items())))
        hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < 60:
            return hit[1]
        try:
            why = changes.bad_reason(EngineParams.from_mapping({"n_threads": n, "n_threads_batch": nb}, sup.params))
        except Exception:  # noqa: BLE001
            why = None
        cache[key] = (time.monotonic(), why)
        return why

    def record(kind: str, data: dict[str, Any]) -> Any:
        return writer.record_event(kind, data) if writer is not None else None

    def explained() -> str | None:
        """A reason the doctor already knows for a slower engine (GPU throttling, thermal or power
        limits, memory pressure): then it is not drift and re-tuning would learn the fault."""
        if doctor is None:
            return None
        try:
            for f in doctor.findings(open_only=True):
                if f.detector.startswith("gpu.") or f.detector in ("engine.memory_growth", "telemetry.anomaly"):
                    return f"{f.detector}: {f.title}"
        except Exception:  # noqa: BLE001
            return None
        return None

    def on_drift(drift: dict[str, Any]) -> None:
        sup.publish("adapt_drift", **drift)  # the doctor's tuning.drift finding; its policy decides

    adapter = OnlineAdapter(
        sup, mode=mode, readonly=bool(getattr(op.config, "readonly", False)),
        stopped=lambda: bool(getattr(doctor, "kill_switch", False)), is_bad=is_bad, record_event=record,
        explained=explained, on_drift=on_drift, **options,
    )
    adapter.attach()
    return adapter
