"""The autoscaling timer: Prometheus in, `scaling.decide()`, the Deployment's replicas out.

Why a timer of its own rather than part of the reconcile pass: it runs only for policies with
`spec.autoscaling.enabled` (Kopf starts and stops it as the flag changes), at its own pace
(`OperatorConfig.autoscale_interval_s`, HPA's sync period), and its failures (Prometheus down)
must never hold back a config push, nor the reverse.

Each pass:

1. reads the Deployment's `spec.replicas` (none yet: the first reconcile has not created it, so
   the pass waits for the next tick);
2. runs the policy's query (`prometheus.query_value`); any failure means "no metric", never a
   guessed number;
3. calls the pure `scaling.decide()` with the in-memory stabilization history of the policy;
4. patches the Deployment's replicas when the decision changes them, with an Event saying why;
5. records desiredReplicas, queueSize, lastScaleTime and the MetricsAvailable and Scaling
   conditions, then raises `kopf.TemporaryError` when the metric was missing, so that Kopf
   retries with back-off.

The stabilization history lives in Kopf's per-object memo: deleting the policy drops it, and the
timer's start (operator start, autoscaling switched on) starts it over (`_start_windows`).
The autoscaler's status is written by a patch function that first checks, on the freshest body,
that autoscaling is still on, so a pass that races with switching it off writes nothing.
Switching it off clears that status and posts one Event. The `autoscaling-switch` handler looks
at the body (autoscaling off, the autoscaler's fields still there) as well as at the old value, so
it also acts when the switch arrives while Kopf still counts the policy as being created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, cast

import httpx
import kopf

from carpool_operator import conditions, kube, prometheus, scaling, settings, spec

__all__ = ["AutoscalerState", "register", "retry_delay", "run_pass", "state_of"]

_STATUS_FIELDS = ("desiredReplicas", "queueSize")
_TYPES = (conditions.Type.METRICS_AVAILABLE, conditions.Type.SCALING)


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


def state_of(memo: MutableMapping[str, Any]) -> AutoscalerState:
    state = memo.get("carpool_autoscaler")
    if not isinstance(state, AutoscalerState):
        state = memo["carpool_autoscaler"] = AutoscalerState()
    return state


def _enabled(spec_: Mapping[str, Any] | None) -> bool:
    autoscaling = (spec_ or {}).get("autoscaling")
    return isinstance(autoscaling, Mapping) and autoscaling.get("enabled") is True


def _params(autoscaling: spec.AutoscalingSpec) -> scaling.ScalingParams:
    return scaling.ScalingParams(
        min_replicas=autoscaling.min_replicas,
        max_replicas=autoscaling.max_replicas,
        target_queue_size=autoscaling.target_queue_size,
        scale_up_window_s=autoscaling.scale_up_stabilization_s,
        scale_down_window_s=autoscaling.scale_down_stabilization_s,
    )


def retry_delay(config: settings.OperatorConfig, retry: int) -> float:
    """Back-off after a failed pass: the pass interval, doubling, up to retry_max_delay_s."""
    interval = config.autoscale_interval_s
    return float(min(interval * 2 ** min(retry, 30), max(interval, config.retry_max_delay_s)))


def _status_writer(
    fields: Mapping[str, Any], updates: tuple[conditions.Condition, ...]
) -> Callable[[MutableMapping[str, Any]], None]:
    """A patch function: the autoscaler's status, written only while autoscaling is still on."""
    set_conditions = conditions.updater(updates)

    def apply(body: MutableMapping[str, Any]) -> None:
        if not _enabled(body.get("spec")):
            return
        set_conditions(body)
        status = body["status"]
        for key, value in fields.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value

    return apply


def _left_over(body: Mapping[str, Any]) -> bool:
    """Whether autoscaling is off while the status still carries the autoscaler's fields."""
    if _enabled(body.get("spec")):
        return False
    status = body.get("status")
    if not isinstance(status, Mapping):
        return False
    found = status.get("conditions")
    conditions_ = found if isinstance(found, list) else []
    return any(key in status for key in _STATUS_FIELDS) or any(
        isinstance(c, Mapping) and c.get("type") in _TYPES for c in conditions_
    )


def _clear_status(body: MutableMapping[str, Any]) -> None:
    """A patch function: the autoscaler's status and conditions removed (autoscaling is off)."""
    if not _left_over(body):
        return
    status = body["status"]
    for key in _STATUS_FIELDS:
        status.pop(key, None)
    if isinstance(status.get("conditions"), list):
        status["conditions"] = [c for c in status["conditions"] if c.get("type") not in _TYPES]


async def run_pass(
    api: kube.Api,
    config: settings.OperatorConfig,
    body: kopf.Body,
    patch: kopf.Patch,
    state: AutoscalerState,
    *,
    now: float,
    retry: int = 0,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> scaling.Decision | None:
    """One autoscaling pass over a policy (see the module's docstring); `now` is monotonic."""
    log = logger or logging.getLogger(__name__)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    generation = body["metadata"].get("generation")
    try:
        policy = spec.parse(body.get("spec") or {}, name=name, namespace=namespace)
    except spec.InvalidSpec as exc:
        log.debug("not autoscaling an invalid spec (the reconciler reports it): %s", exc)
        return None
    auto = policy.autoscaling
    if not auto.enabled or auto.prometheus_url is None:
        return None

    try:
        deployment = await api.get(kube.DEPLOYMENTS, namespace, name)
    except kube.NotFound:
        log.debug("Deployment %s/%s does not exist yet; autoscaling waits for it", namespace, name)
        return None
    except (kube.ApiError, httpx.HTTPError) as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=retry_delay(config, retry)) from exc
    replicas = (deployment.get("spec") or {}).get("replicas")
    current = replicas if isinstance(replicas, int) else 1  # the API server's default

    query = prometheus.render_query(auto.query, namespace=namespace, policy=name)
    failure: prometheus.PrometheusError | None = None
    try:
        queue: float | None = await prometheus.query_value(
            auto.prometheus_url,
            query,
            timeout_s=min(prometheus.DEFAULT_TIMEOUT_S, config.autoscale_interval_s),
        )
    except prometheus.PrometheusError as exc:
        queue, failure = None, exc

    decision = scaling.decide(
        now=now, current=current, queue_total=queue, params=_params(auto), history=state.history
    )
    state.history = decision.history

    fields: dict[str, Any] = {"desiredReplicas": decision.desired, "queueSize": queue}
    if decision.changed:
        try:
            await kube.scale_deployment(api, namespace, name, decision.desired)
        except (kube.ApiError, httpx.HTTPError) as exc:
            raise kopf.TemporaryError(
                f"scaling {name} to {decision.desired}: {exc}", delay=retry_delay(config, retry)
            ) from exc
        fields["lastScaleTime"] = conditions.timestamp(datetime.datetime.now(datetime.UTC))
        kube.post_event(body, reason=str(decision.reason), message=decision.message)
        log.info("%s", decision.message)

    if failure is None:
        state.reported = None
        metrics = conditions.Condition(
            conditions.Type.METRICS_AVAILABLE,
            conditions.Status.TRUE,
            "QueryOK",
            f"{query} = {queue:g}"[:1000],
            generation,
        )
    else:
        held = (
            f"{decision.current} -> {decision.desired} replicas to stay within the bounds"
            if decision.changed
            else f"holding {decision.desired} replicas"
        )
        message = f"{failure}; {held}"
        metrics = conditions.Condition(
            conditions.Type.METRICS_AVAILABLE,
            conditions.Status.FALSE,
            failure.reason,
            message[:1000],
            generation,
        )
        if state.reported != str(failure):
            state.reported = str(failure)
            kube.post_event(body, reason="MetricsUnavailable", message=message, warning=True)
    scaling_condition = conditions.Condition(
        conditions.Type.SCALING,
        conditions.Status.TRUE if decision.changed else conditions.Status.FALSE,
        str(decision.reason),
        decision.message[:1000],
        generation,
    )
    patch.fns.append(cast(kopf.PatchFn, _status_writer(fields, (metrics, scaling_condition))))

    if failure is not None:
        raise kopf.TemporaryError(f"{failure.reason}: {failure}", delay=retry_delay(config, retry))
    return decision


def register(
    registry: kopf.OperatorRegistry, config: settings.OperatorConfig, api: Callable[[], kube.Api]
) -> None:
    """Declare the autoscaling handlers on `registry`; `api()` gives the operator's API client."""

    def _start_windows(memo: Any, **_: Any) -> float:
        # Called by Kopf each time the timer starts for a policy: the windows start over.
        state_of(memo).history = None
        return 0.0

    def _autoscaling_on(spec: kopf.Spec, **_: Any) -> bool:
        return _enabled(spec)

    @kopf.timer(
        *spec.RESOURCE,
        registry=registry,
        id="autoscale",
        interval=config.autoscale_interval_s,
        initial_delay=_start_windows,
        when=_autoscaling_on,
    )
    async def autoscale(
        body: kopf.Body,
        patch: kopf.Patch,
        memo: Any,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        retry: int = 0,  # not in Kopf's TimerFn protocol, hence the default
        **_: Any,
    ) -> None:
        state_of(memo).ran = True
        await run_pass(
            api(),
            config,
            body,
            patch,
            state_of(memo),
            now=asyncio.get_running_loop().time(),
            retry=retry,
            logger=logger,
        )

    @kopf.on.field(
        *spec.RESOURCE, registry=registry, id="autoscaling-switch", field="spec.autoscaling.enabled"
    )
    async def switch(old: Any, body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        # Decided mostly on the body rather than on old and new: a switch that lands while Kopf
        # still counts the policy as being created reaches this handler as a creation (old is
        # None), after a timer pass may already have written the autoscaler's status.
        if _enabled(body.get("spec")):
            return
        left_over = _left_over(body)
        if left_over:
            patch.fns.append(cast(kopf.PatchFn, _clear_status))
        state, generation = state_of(memo), body["metadata"].get("generation")
        if (old is True or left_over or state.ran) and state.switched_off != generation:
            state.switched_off = generation
            state.ran = False
            kube.post_event(
                body,
                reason="AutoscalingDisabled",
                message="autoscaling turned off: spec.serving.replicas sets the replica count again",
            )
