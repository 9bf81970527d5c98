"""One study: scikit-optimize's ask/tell over a ``Space``, with noise, repeats and failures as data.

- Integers are encoded as the index of their value (the values are log-spaced, so the surrogate
  sees an ordered axis), categories as skopt ``Categorical``. Asks that the space does not allow
  are mapped to the nearest allowed configuration: a proposal the space never allows is not a trial.
- The objective is modelled on a log scale (tok/s ratios are what matter, and the noise of these
  machines is multiplicative); the GP has a white-noise term (skopt's ``noise="gaussian"``).
- A failed trial is kept out of the surrogate's objective (never scored 0): it teaches the space
  what is infeasible (``Space.learn_infeasible``; out of memory: every configuration that needs at
  least its memory) and is never proposed again.
- "Best" is judged on repeated means: the leader by mean is measured again until it has at least
  ``min_reps`` runs, and ``best()`` prefers a configuration with that many runs.
- Priors (``prior``) warm-start the surrogate; a study with priors starts from the best of them.
- A ``preference`` (``tuning.prior.Preference``: what llama.cpp's design says about where the best
  lies) weights the initial design and the acquisition (``weight ** (beta / n)``, πBO): it steers
  the first trials and fades as measurements accumulate. Random search and grid order ignore it.

scikit-optimize is imported when the first study is made, not when this module is.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import warnings
from typing import TYPE_CHECKING, Any, Mapping

from llmos_tui.tuning.space import Space, plain

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.tuning.prior import Preference

STRATEGIES = ("gp", "rf", "et", "random", "grid")
_ESTIMATORS = {"gp": "GP", "rf": "RF", "et": "ET"}


def _phi(z: float) -> float:
    """The standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class Study:
    GP_RESTARTS = 0  # restarts of the GP's kernel fit per tell (skopt: 2; 0 is 3x faster, same choices on the benches)
    # configurations told a constant-liar value (only ever in ask_batch's throwaway copy): still
    # running on another box, so never "repeated" as a leader before their real result is in
    _lied: frozenset[tuple] = frozenset()

    def __init__(self, space: Space, strategy: str = "gp", seed: int = 0, n_initial: int | None = None,
                 maximize: bool = True, min_reps: int = 2, preference: "Preference | None" = None, pref_beta: float = 5.0):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
        self.space = space
        self.strategy = strategy
        self.seed = int(seed)
        self.maximize = maximize
        self.min_reps = max(1, int(min_reps))
        self.n_initial = int(n_initial) if n_initial is not None else 4
        self.xi = 0.01  # EI's exploration margin (log scale: 1 %)
        self.repeat_after = 1  # a single-run leader is repeated once it has led this many trials (1: at once)
        self.max_candidates = 4000
        # the empirical-Bayes judge: the noise of one run (log scale) before the study has seen any
        # repeat, worth ``noise_prior_df`` degrees of freedom against the pooled repeats
        self.noise_prior = 0.08
        self.noise_prior_df = 2.0
        # plateau stopping: the largest expected improvement (log scale: 0.005 = 0.5 %) below
        # ``plateau_ei`` on ``plateau_patience`` asks in a row, after at least ``plateau_min`` trials,
        # and no measured configuration ``plateau_challenger_p`` likely to beat the kept best (challenger_p)
        self.plateau_ei = 0.005
        self.plateau_patience = 5
        self.plateau_min = 12
        self.plateau_challenger_p = 0.2
        self._plateau_run = 0  # asks in a row with the expected improvement below the threshold
        self.last_ei: float | None = None  # the best expected improvement of the last model ask
        self._judged: tuple[int, dict[tuple, tuple[float, float]]] | None = None
        # every ``local_every``-th model proposal is the best expected improvement among the
        # neighbours (one knob away) of the ``local_top`` best judged configurations (0: never)
        self.local_every = 2
        self.local_top = 3
        self._model_asks = 0
        self._version = 0  # bumped by every tell and prior: the judged means are cached per version
        self.preference = preference if strategy in _ESTIMATORS else None
        self.pref_beta = float(pref_beta)
        self._rng = random.Random(self.seed)
        self._names = space.names
        self._values: dict[tuple, list[float]] = {}  # this study's measurements
        self._configs: dict[tuple, dict[str, object]] = {}
        self._priors: dict[tuple, list[tuple[float, float]]] = {}  # (value, weight)
        self._failed: list[tuple[dict[str, object], str]] = []
        self._order: list[tuple] = []  # trials in order (keys)
        self._grid: list[dict[str, object]] | None = None
        self._grid_pos = 0
        self._opt: Any = None
        self._pending_start: list[dict[str, object]] = []
        if strategy in _ESTIMATORS:
            self._opt = self._make_optimizer()

    # ---- encoding --------------------------------------------------------------
    def _key(self, config: Mapping[str, object]) -> tuple:
        return tuple(plain(config).get(n) for n in self._names)

    def _make_optimizer(self) -> Any:
        from skopt import Optimizer
        from skopt.space import Categorical, Integer

        dims = []
        for d in self.space.dimensions:
            if d.kind == "int" and len(d.values) > 1:
                dims.append(Integer(0, len(d.values) - 1, name=d.name))
            else:
                cats = [str(v) for v in d.values] if d.kind == "cat" else list(range(len(d.values)))
                dims.append(Categorical(cats, name=d.name))
        # skopt's own acquisition search is not used (ask scores the allowed configurations itself):
        # keep its sampling minimal so that tell stays cheap
        kwargs: dict[str, object] = {"acq_func": "EI", "acq_optimizer": "sampling",
                                  "acq_optimizer_kwargs": {"n_points": 16}}
        n_init = max(1, self.n_initial)
        estimator: Any = _ESTIMATORS[self.strategy]
        if estimator == "GP":  # skopt's own GP, with fewer restarts of its kernel fit (each tell refits)
            from skopt.utils import cook_estimator

            estimator = cook_estimator("GP", space=dims, random_state=self.seed, noise="gaussian",
                                       n_restarts_optimizer=self.GP_RESTARTS)
        return Optimizer(dims, base_estimator=estimator, n_initial_points=n_init,
                         initial_point_generator="random", random_state=self.seed, **kwargs)

    def _encode(self, config: Mapping[str, object]) -> list[Any]:
        out = []
        for d in self.space.dimensions:
            v = config[d.name]
            if d.kind == "int":
                out.append(d.values.index(v))
            else:
                out.append(str(v))
        return out

    def _decode(self, x: list[Any]) -> dict[str, object]:
        config = {}
        for d, v in zip(self.space.dimensions, x):
            v = v.item() if hasattr(v, "item") else v
            if d.kind == "int":
                config[d.name] = d.values[int(v)]
            else:
                match = [val for val in d.values if str(val) == str(v)]
                config[d.name] = match[0] if match else str(v)
        return plain(config)

    def _y(self, value: float) -> float:
        """What skopt minimises."""
        v = float(value)
        if self.maximize:
            return -math.log(v) if v > 0 else -v
        return math.log(v) if v > 0 else v

    def _tell_opt(self, config: Mapping[str, object], y: float) -> None:
        if self._opt is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._opt.tell(self._encode(config), float(y))

    # ---- telling -----------------------------------------------------------------
    def tell(self, config: Mapping[str, object], value: float | None, *, ok: bool = True, reason: str = "") -> None:
        """One trial's result. A failure (``ok=False`` or no value) is data about the feasible region."""
        config = plain(config)
        key = self._key(config)
        self._order.append(key)
        self._version += 1
        self._configs[key] = {n: config.get(n) for n in self._names}
        if not ok or value is None or (isinstance(value, float) and not math.isfinite(value)):
            why = reason or "the trial failed"
            self._failed.append((self._configs[key], why))
            self.space.learn_infeasible(self._configs[key], why)
            return
        self._values.setdefault(key, []).append(float(value))
        self._tell_opt(config, self._y(value))

    def prior(self, config: Mapping[str, object], value: float | None, ok: bool = True, weight: float = 1.0) -> None:
        """A warm-start observation (an earlier study's trial). ``weight`` < 1: a weaker prior (another
        model or machine): told to the surrogate shrunk towards the other priors' mean."""
        config = plain(config)
        if not ok or value is None:
            if weight >= 1.0:
                self.space.learn_infeasible(config, "failed in an earlier study")
            return
        if self.space.allowed(config) is not None:
            return
        key = self._key(config)
        self._version += 1
        self._configs.setdefault(key, {n: config.get(n) for n in self._names})
        self._priors.setdefault(key, []).append((float(value), float(weight)))
        y = self._y(value)
        if weight < 1.0:
            ys = [self._y(v) for vs in self._priors.values() for v, _ in vs]
            y = statistics.fmean(ys) + max(0.0, weight) * (y - statistics.fmean(ys))
        self._tell_opt(config, y)

    # ---- asking ------------------------------------------------------------------
    def ask(self) -> dict[str, object]:
        """The next configuration to measure: always allowed, never a known-infeasible one; may be one
        already measured (a repeat)."""
        if next(iter(self.space.configs()), None) is None:
            raise RuntimeError("the space allows no configuration")
        leader = self._leader()
        if leader is not None and self._key(leader) not in self._lied and self.needs_repeat(leader) \
                and self._repeat_due(leader):
            return dict(leader)
        if not self._values and self._priors:
            start = self._best_prior()
            if start is not None:
                return start
        if self.strategy == "grid":
            return self._ask_grid()
        if self.strategy == "random" or self._opt is None:
            return self._ask_random()
        return self._ask_model()

    def _repeat_due(self, leader: Mapping[str, object]) -> bool:
        """Repeat a single-run leader ``repeat_after`` trials after it took the lead (1: at once, the
        next trial: on a noisy plateau a new leader is more often luck than not, and the kept best
        needs its repeat anyway), not during the initial design. With priors (a warm start), at once."""
        if self._priors:
            return True
        if len(self._values) < self.n_initial:
            return False
        key = self._key(leader)
        first = self._order.index(key)
        return self.n_trials - first >= self.repeat_after

    def _ask_random(self) -> dict[str, object]:
        """An unmeasured configuration at random (drawn by the preference's weights, when there is one)."""
        failed = {self._key(f) for f, _ in self._failed}
        fresh = [c for c in self.space.configs() if self._key(c) not in self._values and self._key(c) not in failed]
        pool = fresh or list(self.space.configs())
        if self.preference is not None and len(pool) > 1:
            weights = [self.preference.weight(c) for c in pool]
            return dict(self._rng.choices(pool, weights=weights)[0])
        return dict(self._rng.choice(pool))

    def _ask_grid(self) -> dict[str, object]:
        if self._grid is None:
            self._grid = list(self.space.configs())
            if self._grid:
                self._grid_pos = self.seed % len(self._grid)
        for _ in range(len(self._grid) + 1):
            c = self._grid[self._grid_pos % len(self._grid)]
            self._grid_pos += 1
            if self.space.allowed(c) is None and self._key(c) not in self._values:
                return dict(c)
        return self._ask_random()

    def _ask_model(self) -> dict[str, object]:
        """The surrogate's choice among the allowed configurations (all of them when the space is small,
        a seeded sample otherwise): expected improvement on the fitted model. Before the model has
        enough points, an unmeasured configuration at random (the initial design)."""
        if not self._opt.models:
            return self._ask_random()
        from skopt.acquisition import gaussian_ei

        failed = {self._key(f) for f, _ in self._failed}
        pool = [c for c in self.space.configs() if self._key(c) not in failed
                and len(self._values.get(self._key(c), ())) < max(3, self.min_reps + 1)]
        if not pool:
            return self._ask_random()
        if len(pool) > self.max_candidates:
            pool = self._rng.sample(pool, self.max_candidates)
        X = self._opt.space.transform([self._encode(c) for c in pool])
        model = self._opt.models[-1]
        # the incumbent is the best judged mean, not the luckiest single run (noisy EI's plug-in)
        judged = self.judged()
        y_opt = -max(sc for sc, _ in judged.values()) if judged else (min(self._opt.yi) if self._opt.yi else 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = [float(v) for v in gaussian_ei(X, model, y_opt=y_opt, xi=self.xi)]
        self.last_ei = max(scores) if scores else 0.0
        self._plateau_run = self._plateau_run + 1 if self.last_ei < self.plateau_ei else 0
        if self.preference is not None:  # πBO: the prior's pull fades as trials accumulate
            power = self.pref_beta / max(1, self.n_trials)
            scores = [sc * self.preference.weight(c) ** power for sc, c in zip(scores, pool)]
        candidates = range(len(pool))
        if self.local_every and self._model_asks % self.local_every == self.local_every - 1:
            near = self._near_leaders(pool)  # exploit: the neighbours of the best judged configurations
            if near:
                candidates = near
        self._model_asks += 1
        best = max(candidates, key=lambda i: (scores[i], -i))
        return plain(pool[best])

    def _near_leaders(self, pool: list[dict[str, object]]) -> list[int]:
        """Indexes into ``pool`` of the configurations one knob away from one of the ``local_top``
        best judged configurations: on a broad, noisy plateau the best configurations sit next to
        each other, and the surrogate's global expected improvement keeps wandering off it."""
        judged = self.judged()
        leaders = sorted(judged, key=lambda k: judged[k][0], reverse=True)[: self.local_top]
        if not leaders:
            return []
        out = []
        for i, c in enumerate(pool):
            key = self._key(c)
            if any(sum(a != b for a, b in zip(key, lead)) == 1 for lead in leaders):
                out.append(i)
        return out

    # ---- judging: an empirical-Bayes shrink toward the surrogate ------------------------
    def _u(self, value: float) -> float:
        """A run's utility on a log scale (higher is better, whichever way the objective points)."""
        return -self._y(value)

    def noise(self) -> float:
        """One run's noise: the standard deviation of log values within a configuration, the
        repeats pooled (each configuration's spread around its own mean) with a prior of
        ``noise_prior`` worth ``noise_prior_df`` degrees of freedom (before any repeat, the prior)."""
        ss, df = 0.0, 0
        for vals in self._values.values():
            if len(vals) > 1:
                us = [self._u(v) for v in vals]
                m = statistics.fmean(us)
                ss += sum((u - m) ** 2 for u in us)
                df += len(us) - 1
        prior_df = max(0.0, self.noise_prior_df)
        return math.sqrt((ss + prior_df * self.noise_prior ** 2) / max(1e-9, df + prior_df))

    def _surrogate_means(self, keys: list[tuple]) -> list[float] | None:
        """The fitted surrogate's mean utility at these configurations (None before it has a model)."""
        if self._opt is None or not getattr(self._opt, "models", None):
            return None
        X = self._opt.space.transform([self._encode(self._configs[k]) for k in keys])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mu = self._opt.models[-1].predict(X)
        return [-float(m) for m in mu]

    def judged(self) -> dict[tuple, tuple[float, float]]:
        """Each measured configuration's judged utility (log scale) and its standard error.

        The empirical-Bayes estimate of a configuration's true mean: its observed mean over ``n``
        runs (noise variance ``s²/n``, ``s`` from :meth:`noise`) shrunk toward the surrogate's
        mean there (random search and grid order: the mean of all configurations), weighted by the
        spread of the true means around that prior mean, ``τ²`` (by moments: the mean squared
        residual less the noise's share, at least a quarter of ``s²``). One run of a config is
        pulled halfway or more toward what its neighbours say; four runs are mostly their own:
        a lucky single run cannot outrank a repeated configuration by luck alone."""
        if self._judged is not None and self._judged[0] == self._version:
            return self._judged[1]
        keys = [k for k, v in self._values.items() if v]
        out: dict[tuple, tuple[float, float]] = {}
        if keys:
            s2 = self.noise() ** 2
            means = [statistics.fmean(self._u(v) for v in self._values[k]) for k in keys]
            ns = [len(self._values[k]) for k in keys]
            prior = self._surrogate_means(keys)
            if prior is None:
                prior = [statistics.fmean(means)] * len(keys)
            if len(keys) > 1:
                moments = statistics.fmean((m - p) ** 2 - s2 / n for m, p, n in zip(means, prior, ns))
                tau2 = max(s2 / 4, moments)
            else:
                tau2 = s2
            for k, m, p, n in zip(keys, means, prior, ns):
                precision = n / s2 + 1 / tau2
                out[k] = ((n / s2 * m + p / tau2) / precision, math.sqrt(1 / precision))
        self._judged = (self._version, out)
        return out

    def _score(self, key: tuple) -> float:
        return self.judged()[key][0]

    def _mean(self, key: tuple) -> float:
        return statistics.fmean(self._values[key])

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def _leader(self) -> dict[str, object] | None:
        """The measured configuration judged best, however few its runs."""
        judged = self.judged()
        if not judged:
            return None
        best_key = max(judged, key=lambda k: judged[k][0])
        return dict(self._configs[best_key])

    def _best_prior(self) -> dict[str, object] | None:
        best, best_v = None, None
        for key, vals in self._priors.items():
            strong = [v for v, w in vals if w >= 1.0] or [v for v, _ in vals]
            m = statistics.fmean(strong)
            c = self._configs[key]
            if self.space.allowed(c) is None and (best_v is None or self._better(m, best_v)):
                best, best_v = c, m
        return dict(best) if best is not None else None

    def needs_repeat(self, config: Mapping[str, object]) -> bool:
        """True when this configuration is judged at least as good as the kept best (or nothing is
        repeated yet and it leads) on fewer than ``min_reps`` runs: one lucky run must not decide
        what is applied."""
        key = self._key(config)
        vals = self._values.get(key)
        if not vals or len(vals) >= self.min_reps:
            return False
        if self.space.allowed(plain(config)) is not None:
            return False
        kept = self.best()
        if kept is None:
            return True
        if kept[2] < self.min_reps:
            return True
        return self._score(key) >= self._score(self._key(kept[0]))

    def ranking(self) -> list[tuple[dict[str, object], float, float, int]]:
        """(config, observed mean, spread, runs) per measured configuration, best judged first."""
        judged = self.judged()
        rows = []
        for key, vals in self._values.items():
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            rows.append((judged[key][0], dict(self._configs[key]), statistics.fmean(vals), std, len(vals)))
        rows.sort(key=lambda r: r[0], reverse=True)
        return [r[1:] for r in rows]

    def best(self) -> tuple[dict[str, object], float, int] | None:
        """The kept best: the best judged (shrunk) mean among configurations with at least
        ``min_reps`` runs (the best judged single run only while none has that many). Its mean is
        the observed one."""
        rows = [r for r in self.ranking() if self.space.allowed(r[0]) is None]
        if not rows:
            return None
        repeated = [r for r in rows if r[3] >= self.min_reps]
        config, mean, _, n = (repeated or rows)[0]
        return dict(config), mean, n

    # ---- batches (several boxes at once) ---------------------------------------------------
    def ask_batch(self, k: int, pending: "list[Mapping[str, object]] | tuple[()]" = ()) -> list[dict[str, object]]:
        """``k`` different configurations to measure at the same time (k boxes), with the constant
        liar (as skopt's ``ask(n_points=k, strategy="cl_mean")``, but on this study's own acquisition:
        the space's allowed set and the preference hold): each point asked is told, on a throwaway
        copy of the study, the mean value seen so far (a lie: see ``_lie``), so the next ask looks
        elsewhere.
        ``pending``: configurations already running on other boxes, lied about first. The study
        itself learns nothing from the lies; its random stream moves on as if it had asked."""
        if k <= 0:
            return []
        models = self._opt.models if self._opt is not None else None
        if models:  # the shadow needs the newest surrogate only
            self._opt.models = models[-1:]
        try:
            shadow = copy.deepcopy(self)
        finally:
            if models:
                self._opt.models = models
        shadow._freeze_surrogate()
        seen = {shadow._key(c) for c in pending}
        for config in pending:
            shadow._lie(config)
        out: list[dict[str, object]] = []
        for _ in range(4 * k + 8):
            if len(out) >= k:
                break
            config = shadow.ask()
            if shadow._key(config) in seen and shadow._opt is not None and shadow.strategy in _ESTIMATORS:
                config = shadow._ask_model()  # a repeat the lies did not prevent: the acquisition's choice
            if shadow._key(config) in seen:
                config = shadow._ask_random()
            shadow._lie(config)
            if shadow._key(config) not in seen:
                seen.add(shadow._key(config))
                out.append(plain(config))
        self._rng.setstate(shadow._rng.getstate())
        return out

    def _freeze_surrogate(self) -> None:
        """Keep the GP's fitted hyperparameters while lies are told (a lie moves the posterior, it
        teaches nothing about length scales): each refit is then one Cholesky, not an optimisation."""
        opt = self._opt
        model = opt.models[-1] if opt is not None and opt.models else None
        kernel = getattr(model, "kernel_", None)
        if kernel is None:  # RF / ET, or no model yet: nothing to freeze
            return
        from sklearn.base import clone
        from sklearn.gaussian_process.kernels import WhiteKernel
        from skopt.learning.gaussian_process.gpr import _param_for_white_kernel_in_Sum

        kernel = copy.deepcopy(kernel)
        present, param = _param_for_white_kernel_in_Sum(kernel)
        noise = getattr(model, "noise_", None)
        if present and noise is not None:  # skopt zeroes the fitted noise term: put the fitted level back
            kernel.set_params(**{param: WhiteKernel(noise_level=noise, noise_level_bounds="fixed")})
        opt.base_estimator_ = clone(opt.base_estimator_).set_params(kernel=kernel, optimizer=None)

    def _lie(self, config: Mapping[str, object]) -> None:
        """Tell the constant liar's value: ``cl_mean``, the mean of the configurations' means
        (Ginsbourger et al.'s constant liar; skopt names it cl_mean). The best value (cl_min) made
        each running point a co-leader of this study's judged best, and the shadow then spent the
        batch on repeats and fallbacks: on the recorded surface 4 boxes needed twice the trials of
        one (boxes4 1.9x); with the mean the batch spreads over the surrogate's next-best points
        (2.8x, no more misses). A lied point is never asked again as a leader to repeat: it is
        still running on another box."""
        values = [statistics.fmean(vs) for vs in self._values.values() if vs] or \
            [v for vs in self._priors.values() for v, _ in vs]
        lie = statistics.fmean(values) if values else 1.0
        self.tell(config, lie)
        self._lied = self._lied | {self._key(config)}

    # ---- stopping on a plateau ---------------------------------------------------------
    def plateau(self) -> str | None:
        """Why the study may stop now (None: keep going): the surrogate's largest expected
        improvement stayed under ``plateau_ei`` for the last ``plateau_patience`` proposals, at
        least ``plateau_min`` trials were run, the kept best is repeated with nothing judged better
        waiting for its repeat, and no measured configuration has a ``plateau_challenger_p`` chance
        of beating it (``challenger_p``: on a plateau inside the noise the runs cannot rank the
        contenders yet, and stopping there left the kept best outside the top 5 % in 7 of 100
        replays of the recorded surface, against 1 with the whole budget; with this condition, 1).
        Random search and grid order never stop early."""
        if self._opt is None or self.n_trials < self.plateau_min or self._plateau_run < self.plateau_patience:
            return None
        kept = self.best()
        if kept is None or kept[2] < self.min_reps:
            return None
        leader = self._leader()
        if leader is not None and self.needs_repeat(leader):
            return None
        if self.challenger_p() >= self.plateau_challenger_p:
            return None
        return (f"plateau: expected improvement under {self.plateau_ei * 100:.1f} % for "
                f"{self._plateau_run} proposals in a row after {self.n_trials} trials, and no configuration "
                f"measured has a {self.plateau_challenger_p * 100:.0f} % chance to beat the kept best")

    def challenger_p(self) -> float:
        """The largest chance that another measured configuration is truly better than the kept best:
        P(its true mean > the kept best's) under both judged posteriors (normal, log scale). Near
        0.5 where the runs cannot yet tell contenders apart (a plateau inside the noise: the study
        goes on, its kept best is not settled); 0 with nothing else measured."""
        kept = self.best()
        if kept is None:
            return 0.0
        judged = self.judged()
        lead = self._key(kept[0])
        m_lead, se_lead = judged[lead]
        best = 0.0
        for key, (m, se) in judged.items():
            if key != lead and self.space.allowed(self._configs[key]) is None:
                best = max(best, _phi((m - m_lead) / max(1e-9, math.hypot(se, se_lead))))
        return best

    @property
    def infeasible(self) -> list[tuple[dict[str, object], str]]:
        return [(dict(c), r) for c, r in self._failed]

    @property
    def n_trials(self) -> int:
        return len(self._order)


__all__ = ["Study", "STRATEGIES"]
