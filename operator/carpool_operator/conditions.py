"""Status conditions of a BatchingPolicy: a list-map keyed by `type`, merged without I/O.

Several writers share `status.conditions`: the reconciler owns Ready, ConfigApplied and
ModelsReady, the autoscaler owns MetricsAvailable and Scaling. A JSON merge patch would replace
the whole list, so each writer changes only its own entries on the freshest body instead:
`updater()` returns a function for Kopf's `patch.fns`, which Kopf turns into a JSON patch guarded
by the object's resourceVersion and re-applies on a conflict. `lastTransitionTime` changes only
when a condition's status does, as Kubernetes' conventions ask.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = [
    "AUTOSCALER_TYPES",
    "Condition",
    "Reason",
    "Status",
    "Type",
    "config_applied",
    "experiment",
    "find",
    "invalid_spec",
    "merge",
    "metrics_available",
    "models_ready",
    "ready",
    "scaling",
    "timestamp",
    "updater",
]


class Type(enum.StrEnum):
    READY = "Ready"
    CONFIG_APPLIED = "ConfigApplied"
    MODELS_READY = "ModelsReady"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING = "Scaling"
    EXPERIMENT = "Experiment"


AUTOSCALER_TYPES = (Type.METRICS_AVAILABLE, Type.SCALING)
"""The autoscaler's conditions: removed with its status when autoscaling is switched off."""


class Status(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(enum.StrEnum):
    """Reasons of the conditions (Scaling's are scaling.Reason, MetricsAvailable's failures are
    the Prometheus errors' own)."""

    REPLICAS_READY = "ReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    SCALED_TO_ZERO = "ScaledToZero"
    INVALID_SPEC = "InvalidSpec"
    RECONCILE_FAILED = "ReconcileFailed"
    CONFIG_APPLIED = "ConfigApplied"
    PODS_BEHIND = "PodsBehind"
    NO_READY_PODS = "NoReadyPods"
    MODELS_LOADED = "ModelsLoaded"
    MODELS_LOADING = "ModelsLoading"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    NO_PODS = "NoPods"
    PODS_UNREACHABLE = "PodsUnreachable"
    QUERY_OK = "QueryOK"


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """The desired state of one condition; the time of transition is decided by `merge()`."""

    type: str
    status: Status
    reason: str
    message: str
    observed_generation: int | None = None

    def as_dict(self, transition_time: str) -> dict[str, Any]:
        result: dict[str, Any] = {
            "type": str(self.type),
            "status": str(self.status),
            "reason": str(self.reason),
            "message": self.message,
            "lastTransitionTime": transition_time,
        }
        if self.observed_generation is not None:
            result["observedGeneration"] = self.observed_generation
        return result


def timestamp(now: datetime.datetime) -> str:
    """`now` as Kubernetes writes times in status: UTC, whole seconds (RFC 3339)."""
    return now.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, or None."""
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def merge(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """The conditions list with `updates` applied: others kept in place, new types appended."""
    result = [dict(condition) for condition in existing or ()]
    for update in updates:
        for index, current in enumerate(result):
            if current.get("type") == update.type:
                same_status = current.get("status") == str(update.status)
                since = current.get("lastTransitionTime") if same_status else None
                result[index] = update.as_dict(since or timestamp(now))
                break
        else:
            result.append(update.as_dict(timestamp(now)))
    return result


def updater(
    updates: Iterable[Condition],
    now: Callable[[], datetime.datetime] | None = None,
) -> Callable[[MutableMapping[str, Any]], None]:
    """A function for Kopf's `patch.fns`: sets these conditions on the body it is given.

    `now` is called when Kopf applies the function, so the transition time is the write's time.
    """
    frozen = tuple(updates)
    clock = now or (lambda: datetime.datetime.now(datetime.UTC))

    def apply(body: MutableMapping[str, Any]) -> None:
        status = body.setdefault("status", {})
        if status is None:
            status = body["status"] = {}
        status["conditions"] = merge(status.get("conditions"), frozen, clock())

    return apply


def invalid_spec(message: str, generation: int | None) -> tuple[Condition, Condition]:
    """Ready and ConfigApplied for a spec that cannot work: nothing is changed until it is fixed."""
    return (
        Condition(Type.READY, Status.FALSE, Reason.INVALID_SPEC, message, generation),
        Condition(
            Type.CONFIG_APPLIED,
            Status.FALSE,
            Reason.INVALID_SPEC,
            f"not applied: {message}",
            generation,
        ),
    )


def ready(*, wanted: int, ready: int, generation: int | None) -> Condition:
    """Ready: every replica the Deployment asks for is ready."""
    if wanted == 0:
        return Condition(
            Type.READY, Status.TRUE, Reason.SCALED_TO_ZERO, "scaled to zero replicas", generation
        )
    if ready >= wanted:
        message = f"{ready}/{wanted} replicas ready"
        return Condition(Type.READY, Status.TRUE, Reason.REPLICAS_READY, message, generation)
    message = f"{ready} of {wanted} replicas ready"
    return Condition(Type.READY, Status.FALSE, Reason.REPLICAS_NOT_READY, message, generation)


def config_applied(
    *,
    config_hash: str,
    model_hashes: Mapping[str, str] | None = None,
    ready: int,
    behind: Sequence[tuple[str, str]],
    config_map: str,
    generation: int | None,
) -> Condition:
    """ConfigApplied: every ready pod reports `config_hash`, and each tuned model its own hash
    (`model_hashes`, by model); otherwise which pods are behind, and why."""
    tuned = "".join(f", model {name} config {own}" for name, own in (model_hashes or {}).items())
    if ready == 0:
        message = f"no ready pods; pods read config {config_hash}{tuned} from ConfigMap {config_map} at start"
        return Condition(Type.CONFIG_APPLIED, Status.TRUE, Reason.NO_READY_PODS, message, generation)
    if not behind:
        message = f"all {ready} ready pods run config {config_hash}{tuned}"
        return Condition(Type.CONFIG_APPLIED, Status.TRUE, Reason.CONFIG_APPLIED, message, generation)
    details = "; ".join(f"{pod}: {error}" for pod, error in behind)
    message = f"{len(behind)} of {ready} ready pods behind config {config_hash}{tuned} (retrying): {details}"
    return Condition(Type.CONFIG_APPLIED, Status.FALSE, Reason.PODS_BEHIND, message[:1000], generation)


def models_ready(
    *,
    pods: int,
    answered: int,
    failed: Sequence[tuple[str, str, str]],
    loading: Sequence[tuple[str, str]],
    models: int,
    devices: Sequence[str],
    generation: int | None,
) -> Condition:
    """ModelsReady from the pods' GET /models/status: `pods` had an IP, `answered` answered;
    `failed` holds (pod, model, error), `loading` (pod, model); `models` counts models loaded."""
    if failed:
        details = "; ".join(
            f"pod {pod}: model {model} failed to load: {error}" for pod, model, error in failed
        )
        return Condition(
            Type.MODELS_READY, Status.FALSE, Reason.MODEL_LOAD_FAILED, details[:1000], generation
        )
    if pods == 0:
        message = "no serving pod has an IP yet"
        return Condition(Type.MODELS_READY, Status.UNKNOWN, Reason.NO_PODS, message, generation)
    if answered == 0:
        message = f"none of {pods} pods answered GET /models/status"
        return Condition(Type.MODELS_READY, Status.UNKNOWN, Reason.PODS_UNREACHABLE, message, generation)
    silent = f"; {pods - answered} of {pods} pods did not answer" if answered < pods else ""
    if loading:
        details = ", ".join(f"pod {pod}: model {model}" for pod, model in loading[:10])
        message = f"{len(loading)} models still loading ({details}){silent}"
        return Condition(Type.MODELS_READY, Status.FALSE, Reason.MODELS_LOADING, message[:1000], generation)
    where = ", ".join(sorted(set(devices))) or "unknown device"
    message = f"{models} models loaded on {answered} pods ({where}){silent}"
    return Condition(Type.MODELS_READY, Status.TRUE, Reason.MODELS_LOADED, message, generation)


def metrics_available(
    *, query: str, value: float | None, failure: tuple[str, str] | None, generation: int | None
) -> Condition:
    """MetricsAvailable: the policy's query gave `value`, or `failure` (reason, message) says why not."""
    if failure is not None:
        reason, message = failure
        return Condition(Type.METRICS_AVAILABLE, Status.FALSE, reason, message[:1000], generation)
    message = f"{query} = {value:g}"
    return Condition(Type.METRICS_AVAILABLE, Status.TRUE, Reason.QUERY_OK, message[:1000], generation)


def scaling(*, scaled: bool, reason: str, message: str, generation: int | None) -> Condition:
    """Scaling: True when this pass changed the replicas; the reason and message are the decision's."""
    status = Status.TRUE if scaled else Status.FALSE
    return Condition(Type.SCALING, status, reason, message[:1000], generation)


def experiment(*, running: bool, reason: str, message: str, generation: int | None) -> Condition:
    """Experiment: True while spec.experiment runs; False once it ended (promoted, kept, removed)."""
    status = Status.TRUE if running else Status.FALSE
    return Condition(Type.EXPERIMENT, status, reason, message[:1000], generation)
