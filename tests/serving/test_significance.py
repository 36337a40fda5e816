"""The significance tests the experiment and the bench's comparison share: hand-worked values,
a real difference found, a chance one not, and nothing to test where there is nothing."""

from __future__ import annotations

import random

import pytest

from serving import significance

pytestmark = pytest.mark.unit


def test_the_two_proportion_test_finds_a_real_difference_and_not_a_chance_one() -> None:
    significant = significance.two_proportions(60, 2000, 20, 2000)
    assert significant is not None and significant < 0.001
    alike = significance.two_proportions(21, 2000, 20, 2000)
    assert alike is not None and alike > 0.5
    assert significance.two_proportions(0, 100, 0, 100) == 1.0
    assert significance.two_proportions(1, 0, 0, 100) is None
    # by hand: 10% vs 15% of 500 each, pooled 12.5%, z = 0.05 / 0.02092 = 2.390, p = 0.0168
    assert significance.two_proportions(50, 500, 75, 500) == pytest.approx(0.0168, abs=0.0002)


def test_mann_whitney_separates_shifted_samples_only() -> None:
    rng = random.Random(1)
    fast = [rng.gauss(0.010, 0.002) for _ in range(300)]
    slow = [rng.gauss(0.013, 0.002) for _ in range(300)]
    same = [rng.gauss(0.010, 0.002) for _ in range(300)]
    shifted = significance.mann_whitney(slow, fast)
    assert shifted is not None and shifted < 1e-6
    alike = significance.mann_whitney(same, fast)
    assert alike is not None and alike > 0.01
    # by hand: U = 0 of 3 x 3, mean 4.5, variance 5.25, z = 1.964, p = 0.0495
    assert significance.mann_whitney([1, 2, 3], [4, 5, 6]) == pytest.approx(0.0495, abs=0.0005)
    assert significance.mann_whitney([], [1.0]) is None
    assert significance.mann_whitney([2.0, 2.0], [2.0, 2.0]) == 1.0  # all tied: nothing to find


def test_single_samples_and_buckets_give_the_same_test_where_each_value_is_its_own_bucket() -> None:
    a, b = [1.0, 3.0, 3.0, 5.0, 8.0], [2.0, 3.0, 4.0, 4.0, 9.0, 9.0]
    values = sorted(set(a) | set(b))
    bins_a = [float(a.count(v)) for v in values]
    bins_b = [float(b.count(v)) for v in values]
    assert significance.mann_whitney(a, b) == pytest.approx(significance.mann_whitney_binned(bins_a, bins_b))
    assert significance.mann_whitney_binned([0, 0], [3, 4]) is None


def test_the_sign_test_is_exact() -> None:
    assert significance.sign_test([1.0] * 6) == pytest.approx(2 / 64)
    assert significance.sign_test([1.0, -1.0, 2.0]) == 1.0
    assert significance.sign_test([0.0]) is None
