"""One measuring pass of a live experiment: Prometheus in, `status.experiment` out, and the
promotion of a winner when spec.experiment.promote says so.

A pass of its own, like the autoscaler's: it runs only while spec.experiment is set (a Kopf timer,
declared in `handlers`), at its own pace (`OperatorConfig.experiment_interval_s`), and Prometheus
being down never holds back a reconcile.

1. parse the spec (an invalid one, or none with an experiment, stops here);
2. the experiment's start: `status.experiment.startTime`, kept while the variants and their configs
   stay the same (`experiment.experiment_hash`), started over when they change;
3. three queries over the window since the start, by variant: request counts by outcome
   (carpool_requests_total), the latency histogram's buckets (carpool_request_latency_seconds),
   the pods that answer (carpool_model_ready); the scrape gives the series the labels `namespace`
   and `policy`, as for autoscaling, and the pods the label `variant` (CARPOOL_VARIANT);
4. the figures and each variant's test against the control (`experiment.variant_status`);
5. `experiment.decide`: with a winner, the spec takes its knobs and loses spec.experiment (one
   merge patch), an Event and the Experiment condition say so.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import kopf

from carpool_operator import conditions, experiment, kube, prometheus, settings, spec

__all__ = ["Outcome", "mark_ended", "measure", "selector"]

Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """status.experiment, the Experiment condition, and the spec patch of a promotion (if any)."""

    status: dict[str, Any]
    condition: conditions.Condition
    spec_patch: dict[str, Any] | None = None


def selector(policy: spec.PolicySpec) -> str:
    return f'namespace="{policy.namespace}", policy="{policy.name}", variant!=""'


def _parse_time(raw: Any) -> datetime.datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


async def _measure_all(
    url: str, policy: spec.PolicySpec, window_s: int, timeout_s: float
) -> dict[str, experiment.Measured]:
    where = selector(policy)
    window = f"[{window_s}s]"
    requests = await prometheus.query_vector(
        url,
        f"sum by (variant, outcome) (increase(carpool_requests_total{{{where}}}{window}))",
        timeout_s=timeout_s,
    )
    buckets = await prometheus.query_vector(
        url,
        f"sum by (variant, le) (increase(carpool_request_latency_seconds_bucket{{{where}}}{window}))",
        timeout_s=timeout_s,
    )
    pods = await prometheus.query_vector(
        url,
        f"count by (variant) (max by (variant, instance) (carpool_model_ready{{{where}}}))",
        timeout_s=timeout_s,
    )
    outcomes: dict[str, dict[str, float]] = {}
    for labels, value in requests:
        by_outcome = outcomes.setdefault(labels.get("variant", ""), {})
        outcome = labels.get("outcome", "")
        by_outcome[outcome] = by_outcome.get(outcome, 0.0) + value
    histogram: dict[str, list[tuple[float, float]]] = {}
    for labels, value in buckets:
        try:
            upper = float(labels.get("le", ""))
        except ValueError:
            continue
        histogram.setdefault(labels.get("variant", ""), []).append((upper, value))
    pod_count = {labels.get("variant", ""): int(value) for labels, value in pods}
    measured = {}
    for variant in policy.experiment.variants if policy.experiment else ():
        if variant.name not in outcomes and variant.name not in histogram:
            continue
        rows = sorted(histogram.get(variant.name, []))
        # increase() of cumulative buckets need not stay monotonic (extrapolation): make it so
        cumulative, top = [], 0.0
        for upper, value in rows:
            top = max(top, value)
            cumulative.append((upper, top))
        measured[variant.name] = experiment.Measured(
            outcomes=outcomes.get(variant.name, {}),
            buckets=cumulative,
            pods=pod_count.get(variant.name, 0),
            window_s=float(window_s),
        )
    return measured


async def measure(
    config: settings.OperatorConfig, body: kopf.Body, *, now: datetime.datetime, logger: Logger | None = None
) -> Outcome | None:
    """One pass (see the module's docstring); None when there is no valid experiment to measure."""
    log = logger or logging.getLogger(__name__)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    generation = body["metadata"].get("generation")
    try:
        policy = spec.parse(body.get("spec") or {}, name=name, namespace=namespace)
    except spec.InvalidSpec as exc:
        log.debug("not measuring an invalid spec (the reconciler reports it): %s", exc)
        return None
    trial = policy.experiment
    if trial is None:
        return None
    previous = (body.get("status") or {}).get("experiment") or {}
    digest = experiment.experiment_hash(trial)
    started = _parse_time(previous.get("startTime")) if previous.get("hash") == digest else None
    started = started or now
    elapsed_s = max((now - started).total_seconds(), 0.0)
    shares = experiment.variant_replicas(policy)
    status: dict[str, Any] = {
        "phase": "Running",
        "hash": digest,
        "startTime": conditions.timestamp(started),
        "control": trial.control.name,
        "significance": trial.significance,
        "windowSeconds": int(elapsed_s),
    }
    measured: dict[str, experiment.Measured] = {}
    problem: str | None = None
    if trial.prometheus_url is None:
        problem = "no Prometheus to read the figures from: set spec.experiment.prometheusUrl"
    elif elapsed_s >= 1:
        try:
            timeout_s = min(prometheus.DEFAULT_TIMEOUT_S, config.experiment_interval_s)
            measured = await _measure_all(trial.prometheus_url, policy, math.ceil(elapsed_s), timeout_s)
        except prometheus.PrometheusError as exc:
            problem = f"{exc.reason}: {exc}"
    control = measured.get(trial.control.name)
    entries = []
    for index, variant in enumerate(trial.variants):
        figures = measured.get(variant.name)
        comparison = (
            experiment.compare(figures, control, trial.significance)
            if index > 0 and figures is not None and control is not None
            else None
        )
        entries.append(experiment.variant_status(variant, shares[variant.name], figures, comparison))
    status["variants"] = entries
    if problem is not None:
        status["message"] = problem[:1000]
        return Outcome(
            status,
            conditions.experiment(
                running=True, reason="FiguresUnavailable", message=problem, generation=generation
            ),
        )
    verdict = experiment.decide(trial, measured, elapsed_s, trial.significance)
    status["message"] = verdict.message
    if verdict.winner is None:
        return Outcome(
            status,
            conditions.experiment(
                running=True, reason=verdict.reason, message=verdict.message, generation=generation
            ),
        )
    status["phase"] = verdict.reason
    status["winner"] = verdict.winner.name
    status["endTime"] = conditions.timestamp(now)
    message = (
        f"{verdict.message}: spec.strategy, spec.batching and spec.adaptive now hold variant "
        f"{verdict.winner.name!r} (config {verdict.winner.batching.config_hash()}); the experiment ended"
    )
    kube.post_event(body, reason="ExperimentPromoted", message=message)
    log.info("%s", message)
    return Outcome(
        status,
        conditions.experiment(running=False, reason=verdict.reason, message=message, generation=generation),
        spec_patch=experiment.spec_patch(verdict.winner),
    )


def mark_ended(body: MutableMapping[str, Any]) -> None:
    """A patch function (for Kopf's `patch.fns`, applied to the freshest body): once
    spec.experiment was removed by hand, the last figures stay, marked Ended, and so does the
    Experiment condition. A promotion, which removes spec.experiment itself, has already
    written its own phase by then, and is left as it is."""
    if (body.get("spec") or {}).get("experiment") is not None:
        return
    status = body.get("status")
    previous = status.get("experiment") if isinstance(status, Mapping) else None
    if not isinstance(previous, MutableMapping) or previous.get("phase") != "Running":
        return
    message = "spec.experiment was removed: the policy's own batching config serves again"
    previous.update({"phase": "Ended", "message": message})
    generation = (body.get("metadata") or {}).get("generation")
    conditions.updater(
        (conditions.experiment(running=False, reason="Ended", message=message, generation=generation),)
    )(body)
