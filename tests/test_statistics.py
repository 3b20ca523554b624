"""The statistics against values worked out by hand."""

from __future__ import annotations

from math import comb

import pytest

from codegen_eval.reporting.statistics import ks_for, mcnemar_exact, pass_at_k, pass_hat_k, wilson_interval


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5) = 0.9167
    assert round(pass_at_k(10, 3, 5), 4) == 0.9167
    assert pass_at_k(10, 3, 10) == 1.0  # fewer than k failures: some draw of k always holds a pass
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(5, 5, 5) == 1.0 and pass_at_k(1, 0, 1) == 0.0


def test_pass_at_k_is_stable_where_binomials_are_huge():
    n, c, k = 2000, 7, 100
    exact = 1 - comb(n - c, k) / comb(n, k)  # Python's integers are exact; floats would overflow
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_pass_hat_k_hand_values():
    assert pass_hat_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_hat_k(10, 3, 2) == pytest.approx(3 / 45)  # C(3,2)/C(10,2)
    assert pass_hat_k(10, 3, 5) == 0.0 and pass_hat_k(5, 5, 5) == 1.0
    assert pass_hat_k(10, 8, 5) == pytest.approx(comb(8, 5) / comb(10, 5))


def test_wilson_interval_hand_values():
    low, high = wilson_interval(3, 10)
    assert (round(low, 4), round(high, 4)) == (0.1078, 0.6032)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = wilson_interval(10, 10)
    assert round(low, 4) == 0.7225 and high == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert mcnemar_exact(10, 1) == pytest.approx(24 / 2048)


def test_ks_and_bad_arguments():
    assert ks_for(1) == [1] and ks_for(5) == [1, 5] and ks_for(20) == [1, 5, 10]
    with pytest.raises(ValueError, match="n=3, c=4"):
        pass_at_k(3, 4, 1)
