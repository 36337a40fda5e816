"""The autoscaling arithmetic: HPA's rule, its tolerance band, the bounds and the windows."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from carpool_operator import scaling

pytestmark = pytest.mark.unit

Reason = scaling.Reason


def params(**overrides: float) -> scaling.ScalingParams:
    values: dict[str, float] = {
        "min_replicas": 1,
        "max_replicas": 8,
        "target_queue_size": 8,
        "scale_up_window_s": 0,
        "scale_down_window_s": 0,
    }
    values.update(overrides)
    return scaling.ScalingParams(
        min_replicas=int(values["min_replicas"]),
        max_replicas=int(values["max_replicas"]),
        target_queue_size=values["target_queue_size"],
        scale_up_window_s=values["scale_up_window_s"],
        scale_down_window_s=values["scale_down_window_s"],
    )


@pytest.mark.parametrize(
    ("current", "queue_total", "expected"),
    [
        pytest.param(2, 16, 2, id="exactly-on-target"),
        pytest.param(2, 17.6, 2, id="10pc-above-is-tolerated"),
        pytest.param(2, 14.4, 2, id="10pc-below-is-tolerated"),
        pytest.param(5, 44, 5, id="upper-edge-of-5-is-tolerated"),
        pytest.param(5, 44.1, 6, id="past-upper-edge-of-5"),
        pytest.param(2, 17.7, 3, id="just-past-the-upper-edge"),
        pytest.param(2, 14.3, 2, id="just-past-the-lower-edge-still-ceils-to-2"),
        pytest.param(4, 28.7, 4, id="lower-edge-of-4"),
        pytest.param(4, 28.0, 4, id="past-lower-edge-ceils-to-4"),
        pytest.param(4, 23.9, 3, id="clearly-below"),
        pytest.param(1, 40, 5, id="surge-on-one-replica"),
        pytest.param(3, 0, 0, id="zero-metric"),
        pytest.param(0, 20, 3, id="no-replicas-no-ratio"),
    ],
)
def test_raw_recommendation_follows_hpa_average_value_rule(
    current: int, queue_total: float, expected: int
) -> None:
    assert scaling.raw_recommendation(current, queue_total, 8, 0.1) == expected


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_raw_recommendation_refuses_a_nonsense_metric(bad: float) -> None:
    with pytest.raises(ValueError, match="queue_total"):
        scaling.raw_recommendation(2, bad, 8, 0.1)


@pytest.mark.parametrize(
    ("current", "queue_total", "p", "desired", "reason"),
    [
        pytest.param(1, 40, params(), 5, Reason.SCALED_UP, id="scale-up"),
        pytest.param(5, 8, params(), 1, Reason.SCALED_DOWN, id="scale-down-without-window"),
        pytest.param(2, 17, params(), 2, Reason.WITHIN_TOLERANCE, id="tolerance-band"),
        pytest.param(2, 10, params(), 2, Reason.STEADY, id="outside-band-but-ceil-is-current"),
        pytest.param(1, 200, params(), 8, Reason.SCALED_UP, id="capped-at-max"),
        pytest.param(8, 200, params(), 8, Reason.AT_MAXIMUM, id="already-at-max"),
        pytest.param(3, 0, params(), 1, Reason.SCALED_DOWN, id="zero-metric-goes-to-min"),
        pytest.param(2, 0, params(min_replicas=2), 2, Reason.AT_MINIMUM, id="zero-metric-at-min"),
        pytest.param(1, 0, params(min_replicas=3), 3, Reason.SCALED_UP, id="raised-to-min"),
        pytest.param(12, 90, params(), 8, Reason.SCALED_DOWN, id="above-max-brought-down"),
        pytest.param(0, 20, params(), 3, Reason.SCALED_UP, id="from-zero-replicas"),
    ],
)
def test_decide_single_evaluation(
    current: int, queue_total: float, p: scaling.ScalingParams, desired: int, reason: scaling.Reason
) -> None:
    decision = scaling.decide(now=100.0, current=current, queue_total=queue_total, params=p, history=None)
    assert (decision.desired, decision.reason) == (desired, reason)
    assert decision.changed == (desired != current)
    assert f"target {p.target_queue_size:g}" in decision.message
    assert f"queue {queue_total:g}" in decision.message


@pytest.mark.parametrize(
    ("current", "p", "desired", "reason"),
    [
        pytest.param(3, params(), 3, Reason.NO_METRIC, id="held"),
        pytest.param(1, params(min_replicas=2), 2, Reason.SCALED_UP, id="below-min-raised"),
        pytest.param(9, params(max_replicas=4), 4, Reason.SCALED_DOWN, id="above-max-capped"),
    ],
)
def test_missing_metric_holds_within_bounds(
    current: int, p: scaling.ScalingParams, desired: int, reason: scaling.Reason
) -> None:
    decision = scaling.decide(now=5.0, current=current, queue_total=None, params=p, history=None)
    assert (decision.desired, decision.reason, decision.recommended) == (desired, reason, None)
    assert "no metric" in decision.message


def run(steps: Sequence[tuple[float, float | None]], p: scaling.ScalingParams, current: int = 1) -> list[int]:
    """Evaluate a (time, queue_total) sequence, applying each decision; return the replica counts."""
    history: scaling.History | None = None
    counts = []
    for now, queue_total in steps:
        decision = scaling.decide(
            now=now, current=current, queue_total=queue_total, params=p, history=history
        )
        history, current = decision.history, decision.desired
        counts.append(current)
    return counts


def test_scale_down_waits_for_the_whole_down_window() -> None:
    p = params(scale_down_window_s=10)
    # Surge to 4 replicas at t=0, then the queue empties at t=1: replicas stay until the surge's
    # recommendation is older than the window (t > 10), then drop to minReplicas.
    steps = [(0.0, 32.0)] + [(float(t), 0.0) for t in range(1, 13)]
    counts = run(steps, p)
    assert counts[0] == 4
    assert counts[1:10] == [4] * 9
    assert counts[10:] == [1, 1, 1]


def test_scale_down_goes_to_the_highest_recommendation_in_the_window() -> None:
    p = params(scale_down_window_s=5)
    # 4 replicas, then recommendations 3, 2, 1 at t=1, 2, 3: the window's highest rules.
    steps = [(0.0, 32.0), (1.0, 24.0), (2.0, 16.0), (3.0, 8.0)] + [(float(t), 8.0) for t in range(4, 10)]
    counts = run(steps, p)
    assert counts == [4, 4, 4, 4, 4, 3, 2, 1, 1, 1]


def test_scale_up_window_buys_replicas_only_for_a_sustained_surge() -> None:
    p = params(scale_up_window_s=3)
    # A one-tick spike buys nothing; a surge from t=3 buys replicas once the last calm sample (t=2)
    # is a full window old.
    steps = [(0.0, 0.0), (1.0, 40.0), (2.0, 0.0), (3.0, 40.0), (4.0, 40.0), (5.0, 40.0), (6.0, 40.0)]
    counts = run(steps, p)
    assert counts == [1, 1, 1, 1, 1, 5, 5]


def test_oscillating_load_does_not_flap() -> None:
    p = params(scale_down_window_s=6)
    # The load alternates between 4 and 1 replicas' worth every second.
    steps = [(float(t), 32.0 if t % 2 == 0 else 8.0) for t in range(20)]
    counts = run(steps, p)
    assert counts == [4] * 20


def test_without_windows_an_oscillating_load_does_flap() -> None:
    steps = [(float(t), 32.0 if t % 2 == 0 else 8.0) for t in range(6)]
    assert run(steps, params()) == [4, 1, 4, 1, 4, 1]


def test_first_evaluation_seeds_the_window_with_the_current_count() -> None:
    # After a restart the operator finds 4 replicas and an empty queue: it keeps them for a window.
    p = params(scale_down_window_s=10)
    counts = run([(float(t), 0.0) for t in range(0, 12)], p, current=4)
    assert counts[:10] == [4] * 10
    assert counts[10:] == [1, 1]


def test_windows_shorter_than_the_evaluation_interval_do_not_block_scaling() -> None:
    p = params(scale_up_window_s=1, scale_down_window_s=2)
    counts = run([(0.0, 32.0), (15.0, 0.0), (30.0, 40.0)], p, current=1)
    assert counts == [1, 1, 5]


def test_missing_metric_records_nothing_and_keeps_the_window() -> None:
    p = params(scale_down_window_s=5)
    counts = run([(0.0, 32.0), (1.0, None), (2.0, None), (3.0, 0.0), (6.0, 0.0)], p)
    assert counts == [4, 4, 4, 4, 1]


def test_history_is_pruned_to_the_longest_window() -> None:
    p = params(scale_up_window_s=2, scale_down_window_s=4)
    history: scaling.History | None = None
    for t in range(100):
        decision = scaling.decide(now=float(t), current=1, queue_total=8.0, params=p, history=history)
        history = decision.history
    assert history is not None
    assert [r.at for r in history] == [96.0, 97.0, 98.0, 99.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"min_replicas": -1}, "min_replicas must be >= 0, got -1", id="negative-min"),
        pytest.param({"min_replicas": 5, "max_replicas": 3}, "max_replicas (3)", id="max-below-min"),
        pytest.param({"target_queue_size": 0}, "target_queue_size must be > 0, got 0", id="zero-target"),
        pytest.param({"scale_down_window_s": -1}, "down=-1", id="negative-window"),
        pytest.param({"tolerance": 1.5}, "tolerance must be in [0, 1), got 1.5", id="tolerance"),
    ],
)
def test_params_refuse_bad_values_naming_them(kwargs: dict[str, float], message: str) -> None:
    values: dict[str, float] = {"min_replicas": 1, "max_replicas": 8, "target_queue_size": 8, **kwargs}
    with pytest.raises(ValueError) as error:
        scaling.ScalingParams(**values)  # type: ignore[arg-type]
    assert message in str(error.value)
