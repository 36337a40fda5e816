"""How many serving replicas a policy should have: the HorizontalPodAutoscaler's rule, made pure.

Why a module of its own: the autoscaling timer does I/O (Prometheus, the Kubernetes API) and
this arithmetic does none, so it can be table-tested without either. The rule is HPA's
`AverageValue` rule for an external metric, applied to the total of waiting requests over the
policy's pods:

    ratio       = queue_total / (target_per_replica * current)
    recommended = current                          if |ratio - 1| <= tolerance (10%)
                  ceil(queue_total / target_per_replica)   otherwise

which is `ceil(current x average / target)` with `average = queue_total / current`.

Recommendations then pass HPA's stabilization windows, a small state machine over the history of
(time, recommendation) pairs:

- scale up only to the *lowest* recommendation made within the scale-up window (a surge must
  last the whole window before it buys replicas);
- scale down only to the *highest* recommendation made within the scale-down window (replicas go
  only once the load has stayed low for the whole window),

so that an oscillating load holds the replica count instead of flapping it. The result is bounded
by minReplicas and maxReplicas last. The bounds also apply when there is no metric, since they are
the spec and not a guess; within them a missing metric holds the current count.

The history lives in memory in the caller. The first evaluation seeds it with the current count,
so after a restart both windows start over from what the Deployment has: replicas are never
removed sooner than a full scale-down window after the operator starts.
"""

from __future__ import annotations

import dataclasses
import enum
import math

__all__ = [
    "DEFAULT_TOLERANCE",
    "Decision",
    "Reason",
    "Recommendation",
    "ScalingParams",
    "bounded",
    "decide",
    "raw_recommendation",
    "stabilize",
]

DEFAULT_TOLERANCE = 0.1
"""HPA's default: a metric within 10% of its target changes nothing."""

_EDGE = 1e-9
"""Keeps the band's edges inside it despite rounding (17.6 / 16 is 1.1000000000000001)."""


class Reason(enum.StrEnum):
    """Why a decision came out as it did; also the reason of the Scaling condition."""

    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    WITHIN_TOLERANCE = "WithinTolerance"
    STEADY = "Steady"
    STABILIZING = "Stabilizing"
    AT_MINIMUM = "AtMinimum"
    AT_MAXIMUM = "AtMaximum"
    NO_METRIC = "NoMetric"
    EXPERIMENT_RUNNING = "ExperimentRunning"


@dataclasses.dataclass(frozen=True, slots=True)
class ScalingParams:
    """The autoscaling part of a policy, in the units the arithmetic uses."""

    min_replicas: int
    max_replicas: int
    target_queue_size: float
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 300.0
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= 1 and >= min_replicas ({self.min_replicas})"
            )
        if not self.target_queue_size > 0:
            raise ValueError(f"target_queue_size must be > 0, got {self.target_queue_size}")
        if self.scale_up_window_s < 0 or self.scale_down_window_s < 0:
            raise ValueError(
                "stabilization windows must be >= 0, got "
                f"up={self.scale_up_window_s} down={self.scale_down_window_s}"
            )
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")


@dataclasses.dataclass(frozen=True, slots=True)
class Recommendation:
    """One raw (unstabilized, unbounded) recommendation and when it was made (monotonic seconds)."""

    at: float
    replicas: int


History = tuple[Recommendation, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do now, why, and the history to pass to the next evaluation."""

    current: int
    desired: int
    recommended: int | None
    queue_total: float | None
    reason: Reason
    message: str
    history: History

    @property
    def changed(self) -> bool:
        return self.desired != self.current


def raw_recommendation(current: int, queue_total: float, target: float, tolerance: float) -> int:
    """HPA's AverageValue rule: the replicas that bring waiting requests per replica to `target`."""
    if queue_total < 0 or not math.isfinite(queue_total):
        raise ValueError(f"queue_total must be a finite number >= 0, got {queue_total}")
    if current <= 0:
        return math.ceil(queue_total / target)
    ratio = queue_total / (target * current)
    if _within(ratio, tolerance):
        return current
    return math.ceil(queue_total / target)


def _within(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1.0) <= tolerance + _EDGE


def stabilize(history: History, now: float, current: int, up_window_s: float, down_window_s: float) -> int:
    """The current count moved towards the history's recommendations, as far as both windows allow.

    `history` must already hold the newest recommendation. An entry counts in a window when it is
    strictly younger than the window, so a window of 0 holds nothing but lets the newest through.
    """
    newest = history[-1].replicas
    up_limit = min([r.replicas for r in history if r.at > now - up_window_s], default=newest)
    down_limit = max([r.replicas for r in history if r.at > now - down_window_s], default=newest)
    up_limit, down_limit = min(up_limit, newest), max(down_limit, newest)
    return min(max(current, up_limit), down_limit)


def bounded(replicas: int, params: ScalingParams) -> int:
    return min(max(replicas, params.min_replicas), params.max_replicas)


def _prune(history: History, now: float, params: ScalingParams) -> History:
    horizon = max(params.scale_up_window_s, params.scale_down_window_s)
    return tuple(r for r in history if r.at > now - horizon)


def decide(
    *,
    now: float,
    current: int,
    queue_total: float | None,
    params: ScalingParams,
    history: History | None,
) -> Decision:
    """The replicas the Deployment should have now.

    `queue_total` is the policy's waiting requests summed over its pods, or None when no metric
    could be read. `history` is the previous decision's history, or None on the first evaluation
    for this policy (the current count is then taken as a recommendation made now).
    """
    if history is None:
        history = (Recommendation(now, current),)

    if queue_total is None:
        desired = bounded(current, params)
        if desired > current:
            reason, message = Reason.SCALED_UP, f"no metric; {current} -> {desired}; raised to minReplicas"
        elif desired < current:
            reason, message = Reason.SCALED_DOWN, f"no metric; {current} -> {desired}; capped at maxReplicas"
        else:
            reason, message = Reason.NO_METRIC, f"no metric; holding {current} replicas"
        return Decision(current, desired, None, None, reason, message, _prune(history, now, params))

    recommended = raw_recommendation(current, queue_total, params.target_queue_size, params.tolerance)
    history = (*_prune(history, now, params), Recommendation(now, recommended))
    stabilized = stabilize(history, now, current, params.scale_up_window_s, params.scale_down_window_s)
    desired = bounded(stabilized, params)
    reason, notes = _explain(current, recommended, desired, queue_total, params)

    per_replica = queue_total / current if current > 0 else queue_total
    message = (
        f"queue {queue_total:g} over {current} replicas ({per_replica:.3g} per replica, "
        f"target {params.target_queue_size:g}): recommends {recommended}; "
        + (f"{current} -> {desired}" if desired != current else f"holding {current}")
        + "".join(f"; {note}" for note in notes)
    )
    return Decision(current, desired, recommended, queue_total, reason, message, history)


def _explain(
    current: int, recommended: int, desired: int, queue_total: float, params: ScalingParams
) -> tuple[Reason, list[str]]:
    notes = []
    if recommended > params.max_replicas and desired == params.max_replicas:
        notes.append(f"capped at maxReplicas {params.max_replicas}")
    elif recommended < params.min_replicas and desired == params.min_replicas:
        notes.append(f"raised to minReplicas {params.min_replicas}")
    if desired != bounded(recommended, params):
        notes.append("held by the stabilization window")

    if desired > current:
        return Reason.SCALED_UP, notes
    if desired < current:
        return Reason.SCALED_DOWN, notes
    if desired != bounded(recommended, params):
        return Reason.STABILIZING, notes
    if recommended > params.max_replicas:
        return Reason.AT_MAXIMUM, notes
    if recommended < params.min_replicas:
        return Reason.AT_MINIMUM, notes
    if current > 0 and _within(queue_total / (params.target_queue_size * current), params.tolerance):
        return Reason.WITHIN_TOLERANCE, notes
    return Reason.STEADY, notes
