"""The one percentile of the product: nearest rank, a measured figure."""

from __future__ import annotations

import pytest

from serving.percentiles import percentile

pytestmark = pytest.mark.unit

HUNDRED = [float(i) for i in range(1, 101)]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([], 50, None, id="empty"),
        pytest.param([1.0], 99, 1.0, id="one"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.0, id="even-count-median-is-the-lower"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 0, 1.0, id="zero-is-the-smallest"),
        pytest.param(HUNDRED, 95, 95.0, id="p95-of-100"),
        pytest.param(HUNDRED, 99, 99.0, id="p99-of-100"),
        pytest.param(HUNDRED, 100, 100.0, id="p100-is-the-largest"),
        pytest.param([0.01] * 9 + [5.0], 95, 5.0, id="p95-of-10-is-the-slowest"),
        pytest.param([0.01] * 19 + [5.0], 95, 0.01, id="p95-of-20-leaves-the-one-outlier-out"),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_a_percentile_is_a_measured_figure_that_at_least_q_percent_do_not_exceed() -> None:
    values = sorted([0.013, 0.2, 0.011, 0.5, 0.012, 0.04, 0.9, 0.015, 0.02, 3.1, 0.018])
    for q in range(101):
        found = percentile(values, q)
        assert found in values
        assert sum(v <= found for v in values) >= q / 100 * len(values)
        assert sum(v < found for v in values) < max(q / 100 * len(values), 1)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_a_percentile_outside_0_to_100_is_refused_with_the_value(q: float) -> None:
    with pytest.raises(ValueError, match=f"got {q}"):
        percentile([1.0], q)
