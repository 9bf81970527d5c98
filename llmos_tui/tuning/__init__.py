"""The tuner: Bayesian search over llama.cpp's runtime parameters, each trial a real benchmark
in a fresh engine child, warm-started from the journal, the winner verified before it is applied.

Modules: ``study_config`` (what a study was asked: resolved once, stored in its journal row),
``space`` (what may be tried), ``study`` (scikit-optimize ask/tell), ``measure`` (one trial),
``objective`` (what "faster" means), ``warmstart`` (the journal's earlier trials), ``verify``
(the sequential A/B test against what runs), ``report`` (trials and the study's report),
``runner`` (the ``Tuner``: prepare, warm start, loop, conclude), ``ports`` (what the tuner needs
of the change transaction). The online learner: ``bandit`` (maths), ``adapt`` (policy),
``learner`` (wiring from the core's parts).
Nothing here imports scikit-optimize, scikit-learn or Textual at import time.
"""
