"""The forward-cost model: fitted from warm-up shapes, refreshed from traffic, anchored to the fit."""

from __future__ import annotations

import pytest

from serving.batching.cost import CPU_SEED, CostModel, OnlineCost, fit

pytestmark = pytest.mark.unit

TRUE = CostModel(fixed_s=0.004, per_token_s=0.0001)
WARMUP_SHAPES = [(1, 16), (1, 48), (8, 32), (16, 48)]


def timings(model: CostModel, shapes: list[tuple[int, int]]) -> list[tuple[int, int, float]]:
    return [(b, n, model.estimate(b, n)) for b, n in shapes]


def test_fit_recovers_both_terms_from_varied_shapes() -> None:
    fitted = fit(timings(TRUE, WARMUP_SHAPES))
    assert fitted is not None
    assert fitted.fixed_s == pytest.approx(TRUE.fixed_s)
    assert fitted.per_token_s == pytest.approx(TRUE.per_token_s)


@pytest.mark.parametrize(
    "samples",
    [
        pytest.param([], id="none"),
        pytest.param([(8, 32, 0.03)], id="one"),
        pytest.param([(8, 32, 0.03), (8, 32, 0.04)], id="one-shape"),
        pytest.param([(1, 16, 0.05), (16, 48, 0.01)], id="slower-when-smaller"),
    ],
)
def test_fit_declines_samples_that_cannot_pin_both_terms(samples: list[tuple[int, int, float]]) -> None:
    assert fit(samples) is None


def test_reseed_uses_the_warmup_fit() -> None:
    cost = OnlineCost()
    cost.reseed(timings(TRUE, WARMUP_SHAPES))
    assert cost.model.fixed_s == pytest.approx(TRUE.fixed_s)
    assert cost.model.per_token_s == pytest.approx(TRUE.per_token_s)


def test_reseed_scales_the_seed_when_warmup_cannot_be_fitted() -> None:
    cost = OnlineCost()
    cost.reseed([(8, 32, 2 * CPU_SEED.estimate(8, 32))])
    assert cost.model.fixed_s == pytest.approx(2 * CPU_SEED.fixed_s)
    assert cost.model.per_token_s == pytest.approx(2 * CPU_SEED.per_token_s)


def test_traffic_moves_the_model_towards_what_is_measured() -> None:
    cost = OnlineCost()
    cost.reseed(timings(TRUE, WARMUP_SHAPES))
    slower = CostModel(TRUE.fixed_s * 2, TRUE.per_token_s * 2)
    for b, n in [(32, 40), (8, 20), (16, 58), (1, 30)] * 50:
        cost.observe(b, n, slower.estimate(b, n))
    assert cost.model.estimate(16, 40) == pytest.approx(slower.estimate(16, 40), rel=0.05)
    assert cost.samples == 200


def test_alike_batches_cannot_drag_the_fixed_term_away() -> None:
    cost = OnlineCost()
    cost.reseed(timings(TRUE, WARMUP_SHAPES))
    for _ in range(300):  # one shape only: the two terms are not separable from these
        cost.observe(32, 50, TRUE.estimate(32, 50) * 1.1)
    assert cost.model.estimate(32, 50) == pytest.approx(TRUE.estimate(32, 50) * 1.1, rel=0.05)
    assert 0.5 * TRUE.fixed_s < cost.model.fixed_s < 2 * TRUE.fixed_s
