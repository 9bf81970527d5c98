"""The doctor's own statistics (no SciPy or scikit-learn in the UI process), checked against
SciPy and scikit-learn, which the development environment has."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from llmos_tui.doctor.iforest import IsolationForest
from llmos_tui.doctor.stats import linear_fit, mann_whitney_less, shift_down


def test_mann_whitney_matches_scipy_exact_and_asymptotic() -> None:
    mannwhitneyu = pytest.importorskip("scipy.stats").mannwhitneyu
    rng = random.Random(1)
    for trial in range(200):
        n1, n2 = rng.randint(3, 12), rng.randint(3, 15)
        digits = 0 if trial % 3 == 0 else 6  # a third with ties
        x = [round(rng.gauss(0, 1), digits) for _ in range(n1)]
        y = [round(rng.gauss(0.5, 1), digits) for _ in range(n2)]
        assert mann_whitney_less(x, y) == pytest.approx(float(mannwhitneyu(x, y, alternative="less").pvalue),
                                                        abs=1e-12)


def test_linear_fit_matches_scipy_linregress() -> None:
    linregress = pytest.importorskip("scipy.stats").linregress
    rng = random.Random(2)
    for _ in range(100):
        n = rng.randint(8, 300)
        xs = [i + rng.random() for i in range(n)]
        ys = [0.01 * rng.random() * i + rng.gauss(0, 1) for i in range(n)]
        slope, intercept, r, p = linear_fit(xs, ys)
        fit = linregress(xs, ys)
        assert (slope, intercept, r) == pytest.approx((fit.slope, fit.intercept, fit.rvalue), rel=1e-9, abs=1e-12)
        assert p == pytest.approx(fit.pvalue, rel=1e-9, abs=1e-300)


def test_shift_down_finds_a_real_drop_and_not_noise() -> None:
    assert shift_down([100, 101, 99, 100, 102, 98], [80, 79, 81, 80, 78]).p_value < 0.01
    assert shift_down([100, 101, 99, 100, 102, 98], [100, 99, 101, 100, 102]).p_value > 0.2


def test_isolation_forest_scores_like_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.ensemble")
    rng = random.Random(0)
    train = [[rng.gauss(50, 2), rng.gauss(70, 1), rng.gauss(200, 5)] for _ in range(60)]
    ordinary, outlier = [50, 70, 200], [80, 90, 300]
    ours = IsolationForest(50, seed=0).fit(train).score_samples([ordinary, outlier])
    theirs = sk.IsolationForest(n_estimators=50, random_state=0).fit(train).score_samples([ordinary, outlier])
    assert ours[1] < -0.6 < ours[0], "the outlier crosses the detector's default threshold, the ordinary point not"
    assert ours == pytest.approx(list(theirs), abs=0.06)


def test_the_doctor_and_the_tui_never_import_scipy_or_sklearn() -> None:
    code = ("import sys, llmos_tui.doctor, llmos_tui.doctor.builtin, llmos_tui.doctor.stats, llmos_tui.ui.app\n"
            "from llmos_tui.doctor import PluginManager\n"
            "m = PluginManager(); m.load_all(folders=[], entry_points=False)\n"
            "print(sorted(k for k in ('scipy', 'sklearn', 'numpy') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
