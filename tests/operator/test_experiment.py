"""spec.experiment parsed, and the experiment's arithmetic: replica shares, quantiles from
buckets, the two tests against the control, the promotion rule."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from carpool_operator import experiment, spec
from serving import metrics as serving_metrics
from serving import settings as serving_settings
from serving import significance

pytestmark = pytest.mark.unit

TWO = {
    "variants": [
        {"name": "a", "weight": 50, "strategy": "adaptive", "batching": {"maxWaitTimeMs": 20}},
        {"name": "b", "weight": 50, "strategy": "batch_optimized"},
    ]
}


def parse(raw: dict[str, Any]) -> spec.PolicySpec:
    return spec.parse(raw, name="demo", namespace="ml")


def test_variants_take_the_policy_knobs_they_leave_out() -> None:
    policy = parse(
        {
            "strategy": "adaptive",
            "batching": {"maxBatchSize": 16, "maxWaitTimeMs": 10},
            "adaptive": {"latencyThresholdMs": 120},
            "serving": {"replicas": 2},
            "experiment": TWO,
        }
    )
    assert policy.experiment is not None
    a, b = policy.experiment.variants
    assert policy.experiment.control is a
    assert (a.batching.strategy, a.batching.max_wait_time_ms, a.batching.max_batch_size) == (
        "adaptive",
        20,
        16,
    )
    assert (b.batching.strategy, b.batching.max_wait_time_ms, b.batching.latency_threshold_ms) == (
        "batch_optimized",
        10,
        120,
    )
    assert policy.batching.max_wait_time_ms == 10  # the policy's own config is untouched
    assert policy.experiment.promote is None and policy.experiment.significance == 0.05


def test_every_knob_of_a_variant_is_read_where_the_policy_declares_it() -> None:
    # One declaration (Knob paths on BatchingConfig): each knob set on a variant reaches it.
    values = {
        "enable": False,
        "strategy": "single_request",
        "max_batch_size": 7,
        "max_wait_time_ms": 3.0,
        "min_batch_size": 2,
        "max_queue_size": 9,
        "load_threshold": 0.4,
        "latency_threshold_ms": 99.0,
    }
    variant: dict[str, Any] = {"name": "x"}
    for field, path in serving_settings.PATH_BY_FIELD.items():
        *objects, key = path.split(".")
        node = variant
        for name in objects:
            node = node.setdefault(name, {})
        node[key] = values[field]
    policy = parse({"serving": {"replicas": 2}, "experiment": {"variants": [{"name": "a"}, variant]}})
    assert policy.experiment is not None
    assert policy.experiment.variants[1].batching.model_dump(mode="json") == values


@pytest.mark.parametrize(
    ("experiment_", "extra", "message"),
    [
        pytest.param({"variants": [{"name": "a"}]}, {}, "must name 2 to 8 variants, got 1", id="one-variant"),
        pytest.param(
            {"variants": [{"name": "a"}, {"name": "a"}]}, {}, "variants[1].name repeats", id="same-name"
        ),
        pytest.param(
            {"variants": [{"name": "A"}, {"name": "b"}]},
            {},
            "variants[0].name must be a DNS label",
            id="bad-name",
        ),
        pytest.param(
            {"variants": [{"name": "a"}, {"name": "b", "batching": {"maxBatchSize": 0}}]},
            {},
            "spec.experiment.variants[1].batching.maxBatchSize",
            id="bad-knob",
        ),
        pytest.param(
            {"variants": [{"name": "a"}, {"name": "b", "batching": {"minBatchSize": 64}}]},
            {},
            "spec.experiment.variants[1].batching.minBatchSize",
            id="min-above-inherited-max",
        ),
        pytest.param(
            {"variants": [{"name": "a"}, {"name": "b", "strategy": "fastest"}]},
            {},
            "spec.experiment.variants[1].strategy",
            id="bad-strategy",
        ),
        pytest.param(TWO, {"serving": {"replicas": 1}}, "replicas (1) must be at least", id="too-few-pods"),
        pytest.param({**TWO, "promote": {"after": "1h"}}, {}, "promote needs Prometheus", id="no-prometheus"),
        pytest.param(
            {**TWO, "prometheusUrl": "http://p:9090", "promote": {"after": "soon"}},
            {},
            "promote.after must be a duration",
            id="bad-duration",
        ),
        pytest.param(
            {**TWO, "prometheusUrl": "http://p:9090", "promote": {"metric": "p50"}},
            {},
            "promote.metric must be one of p99, throughput, errors",
            id="bad-metric",
        ),
    ],
)
def test_what_cannot_work_is_refused_naming_the_field(
    experiment_: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    raw = {"serving": {"replicas": 2}, **extra, "experiment": experiment_}
    with pytest.raises(
        spec.InvalidSpec,
        match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)"),
    ):
        parse(raw)


def test_the_promotion_rule_and_its_defaults() -> None:
    policy = parse(
        {
            "serving": {"replicas": 2},
            "autoscaling": {"prometheusUrl": "http://prom:9090"},
            "experiment": {**TWO, "promote": {"after": "1h30m", "metric": "errors"}},
        }
    )
    assert policy.experiment is not None
    assert policy.experiment.prometheus_url == "http://prom:9090"
    assert policy.experiment.promote == spec.PromoteRule(after_s=5400, metric="errors", min_samples=1000)


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        pytest.param(2, [50, 50], [1, 1], id="even"),
        pytest.param(4, [50, 50], [2, 2], id="even-4"),
        pytest.param(10, [90, 10], [9, 1], id="ninety-ten"),
        pytest.param(3, [99, 1], [2, 1], id="each-at-least-one"),
        pytest.param(7, [1, 1, 1], [3, 2, 2], id="remainder-to-the-first"),
    ],
)
def test_replicas_follow_the_weights(total: int, weights: list[int], expected: list[int]) -> None:
    assert experiment.split_replicas(total, weights) == expected
    assert sum(expected) == total


def _buckets(latencies: list[float]) -> list[tuple[float, float]]:
    bounds = [*serving_metrics.LATENCY_BUCKETS, math.inf]
    return [(bound, float(sum(1 for value in latencies if value <= bound))) for bound in bounds]


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    buckets = [(0.01, 0.0), (0.025, 50.0), (0.05, 100.0), (math.inf, 100.0)]
    assert experiment.quantile(0.5, buckets) == pytest.approx(0.025)
    assert experiment.quantile(0.25, buckets) == pytest.approx(0.0175)
    assert experiment.quantile(0.99, buckets) == pytest.approx(0.0495)
    assert experiment.quantile(0.99, [(0.01, 1.0), (math.inf, 100.0)]) == 0.01  # the +Inf bucket
    assert experiment.quantile(0.5, [(0.01, 0.0), (math.inf, 0.0)]) is None


def test_mann_whitney_on_prometheus_buckets_separates_shifted_latencies_only() -> None:
    rng = random.Random(7)
    fast = [rng.lognormvariate(math.log(0.012), 0.4) for _ in range(800)]
    slow = [rng.lognormvariate(math.log(0.020), 0.4) for _ in range(800)]
    same = [rng.lognormvariate(math.log(0.012), 0.4) for _ in range(800)]

    def bins(values: list[float]) -> list[float]:
        return experiment.Measured({}, _buckets(values), 1, 60.0).bins

    shifted = significance.mann_whitney_binned(bins(slow), bins(fast))
    assert shifted is not None and shifted < 1e-6
    alike = significance.mann_whitney_binned(bins(same), bins(fast))
    assert alike is not None and alike > 0.01
    assert significance.mann_whitney_binned([0, 0], [3, 4]) is None


def _measured(errors: int, requests: int, latencies: list[float], pods: int = 1) -> experiment.Measured:
    return experiment.Measured({"ok": requests - errors, "error": errors}, _buckets(latencies), pods, 600.0)


def _trial(metric: str, **promote: Any) -> spec.ExperimentSpec:
    policy = parse(
        {
            "serving": {"replicas": 2},
            "experiment": {**TWO, "prometheusUrl": "http://p:9090", "promote": {"metric": metric, **promote}},
        }
    )
    assert policy.experiment is not None
    return policy.experiment


def test_promotion_waits_for_its_duration_and_samples_then_picks_a_significant_winner() -> None:
    rng = random.Random(3)
    slow = _measured(5, 2000, [rng.lognormvariate(math.log(0.030), 0.3) for _ in range(2000)])
    fast = _measured(5, 2000, [rng.lognormvariate(math.log(0.012), 0.3) for _ in range(2000)])
    trial = _trial("p99", after="10m", minSamples=1000)
    assert experiment.decide(trial, {"a": slow, "b": fast}, 300, 0.05).reason == "Running"
    few = _measured(0, 10, [0.01] * 10)
    assert experiment.decide(trial, {"a": slow, "b": few}, 700, 0.05).reason == "CollectingSamples"
    verdict = experiment.decide(trial, {"a": slow, "b": fast}, 700, 0.05)
    assert verdict.winner is not None and (verdict.reason, verdict.winner.name) == ("Promoted", "b")
    kept = experiment.decide(trial, {"a": fast, "b": slow}, 700, 0.05)
    assert kept.winner is not None and (kept.reason, kept.winner.name) == ("ControlKept", "a")


def test_promotion_on_errors_needs_a_significantly_lower_error_rate() -> None:
    latencies = [0.01] * 3000
    trial = _trial("errors", after="1m", minSamples=100)
    better = experiment.decide(
        trial, {"a": _measured(90, 3000, latencies), "b": _measured(30, 3000, latencies)}, 120, 0.05
    )
    assert better.reason == "Promoted"
    chance = experiment.decide(
        trial, {"a": _measured(31, 3000, latencies), "b": _measured(30, 3000, latencies)}, 120, 0.05
    )
    assert chance.reason == "ControlKept"


def test_the_winner_becomes_the_spec_and_the_experiment_goes() -> None:
    trial = _trial("p99")
    patch = experiment.spec_patch(trial.variants[0])
    assert patch["experiment"] is None
    assert patch["strategy"] == "adaptive" and patch["batching"]["maxWaitTimeMs"] == 20
    merged = parse({**{k: v for k, v in patch.items() if v is not None}, "serving": {"replicas": 2}})
    assert merged.batching == trial.variants[0].batching


def test_the_status_entry_of_a_variant() -> None:
    trial = _trial("p99")
    control = _measured(2, 1000, [0.010] * 500 + [0.040] * 500, pods=2)
    variant = _measured(20, 1000, [0.020] * 1000, pods=2)
    entry = experiment.variant_status(
        trial.variants[1], 2, variant, experiment.compare(variant, control, 0.05)
    )
    assert entry["requests"] == 1000 and entry["errors"] == 20 and entry["errorRate"] == 0.02
    assert entry["throughput"] == pytest.approx(1000 / 600, abs=0.001)
    assert entry["throughputPerPod"] == pytest.approx(1000 / 1200, abs=0.001)
    assert entry["p50Ms"] == pytest.approx(17.5) and entry["p99Ms"] == pytest.approx(24.85)
    assert entry["versusControl"]["errorRateSignificant"] is True
    assert (
        entry["strategy"] == "batch_optimized"
        and entry["configHash"] == trial.variants[1].batching.config_hash()
    )
