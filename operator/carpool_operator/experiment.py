"""A live A/B experiment of batching configs, computed without I/O.

The operator runs an experiment as replica groups: one Deployment per variant, every one selected
by the policy's one Service, each with replicas in proportion to its weight (`split_replicas`) and
its own batching config. This module turns what Prometheus measured of each variant (request
counts by outcome and the latency histogram's buckets, over the experiment's window) into the
figures of `status.experiment`, tests each variant against the control (the first), and decides
whether the promotion rule names a winner.

The tests, and what Prometheus allows:

- error rate: a two-sided two-proportion z-test on (errors, requests) of the variant and the
  control; exact counts, so the test is the textbook one (normal approximation, fine from a few
  hundred requests per variant);
- latency: Prometheus keeps no single latencies, only a histogram's bucket counts. A two-sided
  Mann-Whitney U test on those binned samples (latencies in one bucket count as ties, with the tie
  correction) asks whether one variant's latencies tend to be larger. It is exact about order
  across buckets and blind within one: two variants whose latencies share buckets look alike. The
  p50 and p99 shown are interpolated within buckets as `histogram_quantile` does, so they are only
  as fine as the buckets (serving.metrics.LATENCY_BUCKETS);
- throughput: a count per window, with no variance to test against; it is reported per pod
  (requests per second divided by the variant's pods) and never called significant. Under
  traffic that does not saturate the pods it mostly measures each variant's share of the traffic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from carpool_operator import spec
from serving import settings as serving_settings
from serving.significance import mann_whitney_binned, two_proportions

__all__ = [
    "ERROR_OUTCOMES",
    "Comparison",
    "Measured",
    "Verdict",
    "compare",
    "decide",
    "experiment_hash",
    "quantile",
    "spec_patch",
    "split_replicas",
    "variant_replicas",
    "variant_status",
]

ERROR_OUTCOMES = frozenset({"error", "rejected", "unavailable", "expired", "timeout"})
"""Outcomes of carpool_requests_total counted as errors (`invalid` is the client's, `ok` is fine)."""


def split_replicas(total: int, weights: Sequence[int]) -> list[int]:
    """`total` pods shared in proportion to `weights` (largest remainder), each variant at least one."""
    count = len(weights)
    if total < count:
        raise ValueError(f"{total} replicas cannot give each of {count} variants a pod")
    whole = sum(weights)
    exact = [total * weight / whole for weight in weights]
    shares = [math.floor(value) for value in exact]
    order = sorted(range(count), key=lambda i: (-(exact[i] - shares[i]), i))
    for index in order[: total - sum(shares)]:
        shares[index] += 1
    for index in range(count):  # every variant runs: a pod from the largest share
        if shares[index] == 0:
            shares[max(range(count), key=lambda i: (shares[i], -i))] -= 1
            shares[index] = 1
    return shares


def variant_replicas(policy: spec.PolicySpec) -> dict[str, int]:
    """Each variant's pods during an experiment: spec.serving.replicas split by weight."""
    if policy.experiment is None:
        return {}
    variants = policy.experiment.variants
    split = split_replicas(policy.serving.replicas, [v.weight for v in variants])
    return {variant.name: count for variant, count in zip(variants, split, strict=True)}


def experiment_hash(experiment: spec.ExperimentSpec) -> str:
    """Identifies the variants and their configs: a change starts the experiment's window over."""
    body = [(v.name, v.weight, v.batching.config_hash()) for v in experiment.variants]
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    """One variant over the window: requests by outcome, latency buckets (upper bound -> count,
    cumulative, `inf` last) and the pods that served it."""

    outcomes: Mapping[str, float]
    buckets: Sequence[tuple[float, float]]
    pods: int
    window_s: float

    @property
    def requests(self) -> int:
        return round(sum(self.outcomes.values()))

    @property
    def errors(self) -> int:
        return round(sum(v for outcome, v in self.outcomes.items() if outcome in ERROR_OUTCOMES))

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def throughput(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0

    @property
    def throughput_per_pod(self) -> float:
        return self.throughput / self.pods if self.pods else 0.0

    @property
    def bins(self) -> list[float]:
        """Non-cumulative counts per bucket."""
        counts, below = [], 0.0
        for _, cumulative in self.buckets:
            counts.append(max(cumulative - below, 0.0))
            below = max(cumulative, below)
        return counts


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """`histogram_quantile(q, ...)` of cumulative buckets, as Prometheus interpolates it."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for index, (upper, cumulative) in enumerate(buckets):
        if cumulative >= rank:
            if math.isinf(upper):
                return buckets[index - 1][0] if index > 0 else None
            if cumulative == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    """A variant against the control."""

    errors_p: float | None
    latency_p: float | None
    significance: float

    @property
    def errors_significant(self) -> bool:
        return self.errors_p is not None and self.errors_p < self.significance

    @property
    def latency_significant(self) -> bool:
        return self.latency_p is not None and self.latency_p < self.significance


def compare(variant: Measured, control: Measured, significance: float) -> Comparison:
    return Comparison(
        errors_p=two_proportions(variant.errors, variant.requests, control.errors, control.requests),
        latency_p=mann_whitney_binned(variant.bins, control.bins),
        significance=significance,
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def variant_status(
    variant: spec.Variant, replicas: int, measured: Measured | None, comparison: Comparison | None
) -> dict[str, Any]:
    """One entry of status.experiment.variants."""
    entry: dict[str, Any] = {
        "name": variant.name,
        "weight": variant.weight,
        "replicas": replicas,
        "strategy": str(variant.batching.effective_strategy),
        "configHash": variant.batching.config_hash(),
    }
    if measured is None:
        return entry
    p50, p99 = quantile(0.5, measured.buckets), quantile(0.99, measured.buckets)
    entry.update(
        {
            "pods": measured.pods,
            "requests": measured.requests,
            "errors": measured.errors,
            "errorRate": _round(measured.error_rate, 6),
            "throughput": _round(measured.throughput, 3),
            "throughputPerPod": _round(measured.throughput_per_pod, 3),
            "p50Ms": _round(None if p50 is None else p50 * 1000, 3),
            "p99Ms": _round(None if p99 is None else p99 * 1000, 3),
        }
    )
    if comparison is not None:
        entry["versusControl"] = {
            "errorRatePValue": _round(comparison.errors_p, 6),
            "errorRateSignificant": comparison.errors_significant,
            "latencyPValue": _round(comparison.latency_p, 6),
            "latencySignificant": comparison.latency_significant,
            "test": "two-proportion z-test (errors); Mann-Whitney U on histogram buckets (latency)",
        }
    return {key: value for key, value in entry.items() if value is not None}


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the promotion rule ends the experiment now, and with which variant."""

    winner: spec.Variant | None
    reason: str
    message: str


def _better(metric: str, variant: Measured, control: Measured, comparison: Comparison) -> bool:
    if metric == "errors":
        rate, base = variant.error_rate, control.error_rate
        return comparison.errors_significant and rate is not None and base is not None and rate < base
    if metric == "p99":
        p99, base = quantile(0.99, variant.buckets), quantile(0.99, control.buckets)
        median, base_median = quantile(0.5, variant.buckets), quantile(0.5, control.buckets)
        if None in (p99, base, median, base_median):
            return False
        # Lower p99 and a significant shift of the whole distribution in the same direction.
        return comparison.latency_significant and p99 <= base and median <= base_median  # type: ignore[operator]
    # throughput: per pod, higher, and errors not significantly worse
    worse_errors = comparison.errors_significant and (variant.error_rate or 0) > (control.error_rate or 0)
    return variant.throughput_per_pod > control.throughput_per_pod and not worse_errors


def _score(metric: str, measured: Measured) -> float:
    if metric == "errors":
        return measured.error_rate or 0.0
    if metric == "p99":
        return quantile(0.99, measured.buckets) or math.inf
    return -measured.throughput_per_pod


def decide(
    experiment: spec.ExperimentSpec,
    measured: Mapping[str, Measured],
    elapsed_s: float,
    significance: float,
) -> Verdict:
    """Apply spec.experiment.promote: after its duration, with enough requests in every variant,
    the best variant better than the control (significantly, for errors and p99) wins; when none
    is, the control wins and the experiment ends all the same."""
    rule = experiment.promote
    if rule is None:
        return Verdict(
            None, "Running", "no promotion rule: the experiment runs until spec.experiment is removed"
        )
    if elapsed_s < rule.after_s:
        return Verdict(None, "Running", f"{elapsed_s:.0f} s of {rule.after_s} s before promotion")
    short = [
        v.name
        for v in experiment.variants
        if v.name not in measured or measured[v.name].requests < rule.min_samples
    ]
    if short:
        return Verdict(
            None,
            "CollectingSamples",
            f"variant(s) {', '.join(short)} below {rule.min_samples} requests (minSamples)",
        )
    control = measured[experiment.control.name]
    better = [
        v
        for v in experiment.variants[1:]
        if _better(rule.metric, measured[v.name], control, compare(measured[v.name], control, significance))
    ]
    if not better:
        return Verdict(
            experiment.control,
            "ControlKept",
            f"no variant beat the control {experiment.control.name!r} on {rule.metric} "
            f"at significance {significance:g}",
        )
    winner = min(better, key=lambda v: _score(rule.metric, measured[v.name]))
    return Verdict(winner, "Promoted", f"variant {winner.name!r} beat the control on {rule.metric}")


def spec_patch(winner: spec.Variant) -> dict[str, Any]:
    """A merge patch of the policy's spec: the winner's knobs, and no experiment."""
    patch: dict[str, Any] = {"experiment": None}
    values = winner.batching.model_dump(mode="json")
    for field, path in serving_settings.PATH_BY_FIELD.items():
        *objects, key = path.split(".")
        node = patch
        for name in objects:
            node = node.setdefault(name, {})
        node[key] = values[field]
    return patch
