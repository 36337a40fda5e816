"""One autoscaling pass of a BatchingPolicy: Prometheus in, `scaling.decide()`, replicas out.

Why a pass of its own rather than part of the reconcile pass: it runs only for policies with
`spec.autoscaling.enabled` (Kopf starts and stops its timer, declared in `handlers`, as the flag
changes), at its own pace (`OperatorConfig.autoscale_interval_s`, HPA's sync period), and its
failures (Prometheus down) must never hold back a config push, nor the reverse.

Each pass, like `reconciler.reconcile`, is a few named steps:

1. `_policy`: parse the spec (an invalid one stops here: the reconciler reports it);
2. `_current_replicas`: the Deployment's `spec.replicas` (none yet: the first reconcile has not
   created it, so the pass waits for the next tick);
3. `_queue_size`: the policy's query (`prometheus.query_value`); any failure means "no metric",
   never a guessed number;
4. `scaling.decide()`, with the in-memory stabilization history of the policy;
5. `_scale`: the Deployment's replicas patched when the decision changes them, with an Event
   saying why;
6. `_outcome`: desiredReplicas, queueSize, lastScaleTime and the MetricsAvailable and Scaling
   conditions (built by `conditions`), and the metric's failure, if any, for which the handler
   retries with back-off (a Warning Event posts each distinct failure once).

The handler writes the outcome on the freshest body, and only while autoscaling is still on
there, so a pass that races with switching it off writes nothing. `switched_off` is the other
half: it posts one Event and tells the handler whether the autoscaler's status is still there
to clear. It looks at the body (autoscaling off, the autoscaler's fields still there) as well as
at the old value, so it also acts when the switch arrives while Kopf still counts the policy as
being created.

During a live experiment (spec.experiment) the autoscaler holds still: the variants' replicas
follow their weights out of spec.serving.replicas, and scaling them on a shared queue metric
would change the experiment's traffic split under it. Scaling says so (False, ExperimentRunning),
and the windows start over when the experiment ends.

The stabilization history lives in `AutoscalerState`, in Kopf's per-object memo: deleting the
policy drops it, and the timer's start (operator start, autoscaling switched on) starts it over.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import kopf

from carpool_operator import conditions, kube, prometheus, scaling, settings, spec

__all__ = [
    "STATUS_FIELDS",
    "AutoscalerState",
    "KubernetesFailed",
    "Outcome",
    "autoscale",
    "left_over",
    "switched_off",
]

STATUS_FIELDS = ("desiredReplicas", "queueSize")
"""The autoscaler's status fields that switching it off removes (lastScaleTime stays, as history)."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclasses.dataclass
class AutoscalerState:
    """What the autoscaler remembers about one policy between passes (in memory only)."""

    history: scaling.History | None = None
    """The stabilization windows' recommendations; None until the first pass after a (re)start."""

    reported: str | None = None
    """The last metrics failure posted as an Event, to post each distinct failure once."""

    switched_off: int | None = None
    """The generation whose switch-off was posted as an Event, to post it once."""

    ran: bool = False
    """A pass ran since autoscaling was last switched off: a switch-off is news even when another
    writer has already dropped the autoscaler's status fields by the time the switch is handled."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What a pass found: status fields to write (None: remove the field), conditions to set, and
    the metric's failure, if any (the handler then retries with back-off)."""

    status: dict[str, Any]
    conditions: tuple[conditions.Condition, ...]
    failure: str | None = None


class KubernetesFailed(Exception):
    """A call to the Kubernetes API failed; the message says which (the handler retries)."""


async def autoscale(
    api: kube.Api,
    config: settings.OperatorConfig,
    body: kopf.Body,
    state: AutoscalerState,
    *,
    now: float,
    logger: Logger | None = None,
) -> Outcome | None:
    """One autoscaling pass (see the module's docstring); `now` is monotonic. None: nothing to do
    yet. Raises KubernetesFailed when the Deployment cannot be read or scaled."""
    log = logger or logging.getLogger(__name__)
    state.ran = True
    policy = _policy(body, log)
    if policy is None or policy.autoscaling.prometheus_url is None:
        return None
    if policy.experiment is not None:
        state.history = None
        return _held_for_experiment(body, policy)
    current = await _current_replicas(api, policy, log)
    if current is None:
        return None
    query = prometheus.render_query(policy.autoscaling.query, namespace=policy.namespace, policy=policy.name)
    queue, failure = await _queue_size(config, policy.autoscaling.prometheus_url, query)
    decision = scaling.decide(
        now=now, current=current, queue_total=queue, params=_params(policy.autoscaling), history=state.history
    )
    state.history = decision.history
    scaled_at = await _scale(api, body, policy, decision, log) if decision.changed else None
    return _outcome(state, body, query, queue, failure, decision, scaled_at)


def _held_for_experiment(body: kopf.Body, policy: spec.PolicySpec) -> Outcome:
    assert policy.experiment is not None
    names = ", ".join(variant.name for variant in policy.experiment.variants)
    message = (
        f"autoscaling holds while the experiment runs: variants {names} share "
        f"spec.serving.replicas ({policy.serving.replicas}) by weight; it resumes when the experiment ends"
    )
    return Outcome(
        status={"desiredReplicas": None, "queueSize": None},
        conditions=(
            conditions.scaling(
                scaled=False,
                reason=scaling.Reason.EXPERIMENT_RUNNING,
                message=message,
                generation=body["metadata"].get("generation"),
            ),
        ),
    )


def _policy(body: kopf.Body, log: Logger) -> spec.PolicySpec | None:
    """The policy, when it parses and autoscaling is on."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    try:
        policy = spec.parse(body.get("spec") or {}, name=name, namespace=namespace)
    except spec.InvalidSpec as exc:
        log.debug("not autoscaling an invalid spec (the reconciler reports it): %s", exc)
        return None
    return policy if policy.autoscaling.enabled else None


async def _current_replicas(api: kube.Api, policy: spec.PolicySpec, log: Logger) -> int | None:
    """The Deployment's replicas; None while it does not exist yet."""
    try:
        deployment = await api.get(kube.DEPLOYMENTS, policy.namespace, policy.name)
    except kube.NotFound:
        log.debug(
            "Deployment %s/%s does not exist yet; autoscaling waits for it", policy.namespace, policy.name
        )
        return None
    except (kube.ApiError, httpx.HTTPError) as exc:
        raise KubernetesFailed(f"Kubernetes API: {exc}") from exc
    replicas = (deployment.get("spec") or {}).get("replicas")
    return replicas if isinstance(replicas, int) else 1  # the API server's default


async def _queue_size(
    config: settings.OperatorConfig, url: str, query: str
) -> tuple[float | None, prometheus.PrometheusError | None]:
    """The query's one value, or why there is none."""
    try:
        timeout_s = min(prometheus.DEFAULT_TIMEOUT_S, config.autoscale_interval_s)
        return await prometheus.query_value(url, query, timeout_s=timeout_s), None
    except prometheus.PrometheusError as exc:
        return None, exc


def _params(autoscaling: spec.AutoscalingSpec) -> scaling.ScalingParams:
    return scaling.ScalingParams(
        min_replicas=autoscaling.min_replicas,
        max_replicas=autoscaling.max_replicas,
        target_queue_size=autoscaling.target_queue_size,
        scale_up_window_s=autoscaling.scale_up_stabilization_s,
        scale_down_window_s=autoscaling.scale_down_stabilization_s,
    )


async def _scale(
    api: kube.Api, body: kopf.Body, policy: spec.PolicySpec, decision: scaling.Decision, log: Logger
) -> str:
    """Patch the Deployment's replicas to the decision's, with an Event; return when (status time)."""
    try:
        await kube.scale_deployment(api, policy.namespace, policy.name, decision.desired)
    except (kube.ApiError, httpx.HTTPError) as exc:
        raise KubernetesFailed(f"scaling {policy.name} to {decision.desired}: {exc}") from exc
    scaled_at = conditions.timestamp(datetime.datetime.now(datetime.UTC))
    kube.post_event(body, reason=str(decision.reason), message=decision.message)
    log.info("%s", decision.message)
    return scaled_at


def _outcome(
    state: AutoscalerState,
    body: kopf.Body,
    query: str,
    queue: float | None,
    failure: prometheus.PrometheusError | None,
    decision: scaling.Decision,
    scaled_at: str | None,
) -> Outcome:
    """The status and conditions of the pass; a Warning Event for a metrics failure not yet posted."""
    generation = body["metadata"].get("generation")
    status: dict[str, Any] = {"desiredReplicas": decision.desired, "queueSize": queue}
    if scaled_at is not None:
        status["lastScaleTime"] = scaled_at
    problem: tuple[str, str] | None = None
    if failure is None:
        state.reported = None
    else:
        held = (
            f"{decision.current} -> {decision.desired} replicas to stay within the bounds"
            if decision.changed
            else f"holding {decision.desired} replicas"
        )
        problem = (failure.reason, f"{failure}; {held}")
        if state.reported != str(failure):
            state.reported = str(failure)
            kube.post_event(body, reason="MetricsUnavailable", message=problem[1], warning=True)
    return Outcome(
        status=status,
        conditions=(
            conditions.metrics_available(query=query, value=queue, failure=problem, generation=generation),
            conditions.scaling(
                scaled=decision.changed,
                reason=decision.reason,
                message=decision.message,
                generation=generation,
            ),
        ),
        failure=None if failure is None else f"{failure.reason}: {failure}",
    )


def left_over(body: Mapping[str, Any]) -> bool:
    """Whether autoscaling is off while the status still carries the autoscaler's fields."""
    if spec.autoscaling_enabled(body.get("spec")):
        return False
    status = body.get("status")
    if not isinstance(status, Mapping):
        return False
    found = status.get("conditions")
    conditions_ = found if isinstance(found, list) else []
    return any(key in status for key in STATUS_FIELDS) or any(
        isinstance(c, Mapping) and c.get("type") in conditions.AUTOSCALER_TYPES for c in conditions_
    )


def switched_off(body: kopf.Body, state: AutoscalerState, *, old: Any) -> bool:
    """A change of spec.autoscaling.enabled: when it is now off, post AutoscalingDisabled once per
    generation; return whether the autoscaler's status is left over (for the handler to clear)."""
    # Decided mostly on the body rather than on old and new: a switch that lands while Kopf
    # still counts the policy as being created reaches the handler as a creation (old is
    # None), after a timer pass may already have written the autoscaler's status.
    if spec.autoscaling_enabled(body.get("spec")):
        return False
    stale = left_over(body)
    generation = body["metadata"].get("generation")
    if (old is True or stale or state.ran) and state.switched_off != generation:
        state.switched_off = generation
        state.ran = False
        kube.post_event(
            body,
            reason="AutoscalingDisabled",
            message="autoscaling turned off: spec.serving.replicas sets the replica count again",
        )
    return stale
