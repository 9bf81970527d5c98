"""The tuner: Bayesian search over llama.cpp's runtime parameters, each trial a real benchmark
in a fresh engine child, warm-started from the journal, the winner verified before it is applied.

Modules: ``space`` (what may be tried), ``study`` (scikit-optimize ask/tell), ``measure`` (one
trial), ``objective`` (what "faster" means), ``warmstart`` (the journal's earlier trials),
``verify`` (A/B against what runs), ``runner`` (the ``Tuner`` that ties them together).
Nothing here imports scikit-optimize, scikit-learn or Textual at import time.
"""
