"""Conditions: list-map merging, transition times, and what each condition says."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from carpool_operator import conditions
from carpool_operator.conditions import Condition, Reason, Status, Type

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_merge_keeps_other_writers_conditions_in_place() -> None:
    existing = [
        {"type": "Scaling", "status": "True", "reason": "ScaledUp", "message": "1 -> 3"},
        {"type": "Ready", "status": "False", "reason": "ReplicasNotReady", "message": "0 of 1"},
    ]
    merged = conditions.merge(
        existing, [Condition(Type.READY, Status.TRUE, Reason.REPLICAS_READY, "1/1", 4)], T0
    )
    assert merged == [
        existing[0],
        {
            "type": "Ready",
            "status": "True",
            "reason": "ReplicasReady",
            "message": "1/1",
            "lastTransitionTime": "2026-01-01T12:00:00Z",
            "observedGeneration": 4,
        },
    ]


def test_the_transition_time_moves_only_when_the_status_does() -> None:
    first = conditions.merge([], [Condition(Type.READY, Status.FALSE, "A", "a")], T0)
    same = conditions.merge(first, [Condition(Type.READY, Status.FALSE, "B", "b")], T1)
    flipped = conditions.merge(same, [Condition(Type.READY, Status.TRUE, "C", "c")], T1)
    assert same[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z" and same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_the_updater_writes_on_whatever_body_kopf_gives_it() -> None:
    update = conditions.updater(
        [Condition(Type.CONFIG_APPLIED, Status.TRUE, "ConfigApplied", "ok")], lambda: T0
    )
    body: dict[str, Any] = {"metadata": {}, "status": {"conditions": [{"type": "Scaling", "status": "True"}]}}
    update(body)
    assert [c["type"] for c in body["status"]["conditions"]] == ["Scaling", "ConfigApplied"]
    empty: dict[str, Any] = {"metadata": {}}
    update(empty)
    assert conditions.find(empty["status"]["conditions"], "ConfigApplied") is not None


@pytest.mark.parametrize(
    ("wanted", "ready", "status", "reason", "message"),
    [
        pytest.param(2, 2, Status.TRUE, Reason.REPLICAS_READY, "2/2 replicas ready", id="all"),
        pytest.param(2, 3, Status.TRUE, Reason.REPLICAS_READY, "3/2 replicas ready", id="surge"),
        pytest.param(2, 1, Status.FALSE, Reason.REPLICAS_NOT_READY, "1 of 2 replicas ready", id="some"),
        pytest.param(0, 0, Status.TRUE, Reason.SCALED_TO_ZERO, "scaled to zero replicas", id="zero"),
    ],
)
def test_ready(wanted: int, ready: int, status: Status, reason: Reason, message: str) -> None:
    condition = conditions.ready(wanted=wanted, ready=ready, generation=3)
    assert (condition.status, condition.reason, condition.message) == (status, reason, message)


@pytest.mark.parametrize(
    ("ready", "behind", "status", "reason", "message"),
    [
        pytest.param(
            2, [], Status.TRUE, Reason.CONFIG_APPLIED, "all 2 ready pods run config h1", id="applied"
        ),
        pytest.param(
            0,
            [],
            Status.TRUE,
            Reason.NO_READY_PODS,
            "no ready pods; pods read config h1 from ConfigMap p-config at start",
            id="no-pods",
        ),
        pytest.param(
            2,
            [("p-b", "connection refused or unreachable")],
            Status.FALSE,
            Reason.PODS_BEHIND,
            "1 of 2 ready pods behind config h1 (retrying): p-b: connection refused or unreachable",
            id="behind",
        ),
    ],
)
def test_config_applied_names_the_pods_behind(
    ready: int, behind: list[tuple[str, str]], status: Status, reason: Reason, message: str
) -> None:
    condition = conditions.config_applied(
        config_hash="h1", ready=ready, behind=behind, config_map="p-config", generation=1
    )
    assert (condition.type, condition.status, condition.reason, condition.message) == (
        Type.CONFIG_APPLIED,
        status,
        reason,
        message,
    )


def test_an_invalid_spec_marks_both_conditions() -> None:
    ready, applied = conditions.invalid_spec("spec.strategy: bad", 7)
    assert (ready.type, ready.status, ready.reason, ready.message) == (
        "Ready",
        "False",
        "InvalidSpec",
        "spec.strategy: bad",
    )
    assert (applied.status, applied.reason, applied.observed_generation) == ("False", "InvalidSpec", 7)


def test_metrics_available_says_what_the_query_gave_or_why_not() -> None:
    found = conditions.metrics_available(query="vector(40)", value=40.0, failure=None, generation=3)
    assert (found.type, found.status, found.reason, found.message, found.observed_generation) == (
        "MetricsAvailable",
        "True",
        "QueryOK",
        "vector(40) = 40",
        3,
    )
    missing = conditions.metrics_available(
        query="q", value=None, failure=("NoSeries", "'q' matched no series; " + "x" * 2000), generation=3
    )
    assert (missing.status, missing.reason) == ("False", "NoSeries")
    assert missing.message.startswith("'q' matched no series; ") and len(missing.message) == 1000


@pytest.mark.parametrize(("scaled", "status"), [(True, Status.TRUE), (False, Status.FALSE)])
def test_scaling_is_true_only_for_a_pass_that_scaled(scaled: bool, status: Status) -> None:
    condition = conditions.scaling(scaled=scaled, reason="ScaledUp", message="1 -> 5", generation=2)
    assert (condition.type, condition.status, condition.reason, condition.message) == (
        "Scaling",
        status,
        "ScaledUp",
        "1 -> 5",
    )
