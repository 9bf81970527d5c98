"""The A/B verdict: ABBA order, a one-sided t-test on log ratios against a practical gain, a
sequential design with a bounded false-positive rate, and its measured error rates."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_tui.tuning.verdict import VerifyDesign, ab_verify, judge, t_quantile, t_sf

ROOT = Path(__file__).resolve().parent.parent


def test_student_t_matches_its_tables():
    assert t_sf(0.0, 5) == pytest.approx(0.5)
    assert t_sf(2.015, 5) == pytest.approx(0.05, abs=2e-4)  # t(0.95, 5) = 2.015
    assert t_sf(4.541, 3) == pytest.approx(0.01, abs=2e-4)  # t(0.99, 3) = 4.541
    assert t_quantile(0.025, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_sf(-2.015, 5) == pytest.approx(0.95, abs=2e-4)


def test_the_order_alternates_abba():
    design = VerifyDesign()
    assert [design.order(i) for i in range(8)] == ["AB", "BA", "BA", "AB", "AB", "BA", "BA", "AB"]
    calls: list[str] = []
    ab_verify(lambda: calls.append("A") or 100.0, lambda: calls.append("B") or 130.0)
    assert "".join(calls[:8]) == "ABBABAAB"


def test_a_clear_gain_is_verified_at_the_first_look_and_a_tie_is_not():
    v = judge([1.3, 1.25, 1.35, 1.28])
    assert v.significant and v.rounds == 4 and v.p_value < VerifyDesign().alpha_per_look
    assert not judge([1.3, 0.9, 1.2, 1.0]).significant
    one = judge([1.5])
    assert not one.significant and "too few" in one.message  # one round proves nothing
    assert not judge([1.5, 1.5]).significant  # nor two: the first look is at 4 rounds


def test_a_gain_below_the_practical_minimum_is_not_verified_however_steady():
    assert not judge([1.01] * 4).significant  # +1 %, every round: under the 2 % minimum
    assert judge([1.05] * 4).significant
    assert not judge([1.05] * 4, VerifyDesign(min_gain=0.10)).significant


def test_undecided_rounds_are_added_up_to_the_cap():
    rng = random.Random(3)
    # a real 6 % gain in 4 % noise: not decided at 4 rounds, decided later
    v = ab_verify(lambda: 100 * math.exp(rng.gauss(0, 0.04)), lambda: 106 * math.exp(rng.gauss(0, 0.04)))
    assert v.rounds > 4 and len(v.looks) >= 2 and v.rounds <= 12
    assert [lk["rounds"] for lk in v.looks] == list(range(4, v.rounds + 1, 2))
    same = ab_verify(lambda: 100.0, lambda: 100.0)  # no gain at all: futile at the first look
    assert not same.significant and same.rounds == 4


def test_a_two_round_cap_is_raised_to_a_verdict_that_can_be_trusted():
    design = VerifyDesign.capped(2)
    assert design.looks == (4,) and design.max_rounds == 4
    v = ab_verify(lambda: 100.0, lambda: 200.0, design=design)
    assert v.rounds == 4 and v.significant


def test_a_failed_candidate_ends_the_verification_unverified():
    v = ab_verify(lambda: 100.0, lambda: None)
    assert not v.significant and "candidate failed" in v.message and v.rounds == 0


def test_the_false_positive_rate_is_bounded_on_heavy_tailed_noise():
    """Same configuration, noise with outliers: at most alpha verified (here far less)."""
    rng = random.Random(7)

    def noisy() -> float:
        return 100 * math.exp(rng.gauss(0, 0.05) + (rng.choice([0, 0, 0, 0.4, -0.4]) if rng.random() < 0.2 else 0))

    verified = sum(ab_verify(noisy, noisy).significant for _ in range(400))
    assert verified / 400 <= 0.05


def test_bench_verify_meets_its_targets_and_prints_the_exact_last_line():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_verify.py"), "--sims", "400"],
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    import re

    m = re.fullmatch(r"false_verified=(\d\.\d{3}) power10=(\d\.\d{3}) median_rounds=(\d+(\.\d+)?)", lines[-1])
    assert m, lines[-1]
    assert out.returncode == 0, out.stdout
    assert float(m.group(1)) <= 0.05 and float(m.group(2)) >= 0.80 and float(m.group(3)) <= 8
    assert sum("met" in ln for ln in lines if ln.startswith("target ")) == 3


def test_bench_verify_exits_non_zero_when_a_target_is_not_met():
    """The loaded box's noise (16 % per rep) cannot give 80 % power at 10 %: it says NOT MET, exit 1."""
    loaded = ROOT / "tests" / "data" / "surface_bench_2core_loaded.csv"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_verify.py"), "--sims", "300",
                          "--surface", str(loaded)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "NOT MET" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("false_verified=")
