"""reconciler.py's pass, called directly: what one `reconcile()` leaves in the cluster, the outcome
it hands to the handlers (status, conditions, pods behind, an invalid spec) and the Events it posts.

The API server is `tests.support.kube`'s emulator; the pods are two real `carpool serve`
processes on 127.0.0.2 and 127.0.0.3 (tests/operator/conftest.py), named by Pod objects that the
test creates, as there is no kubelet here. tests/operator/test_handlers.py runs the same pass
under Kopf.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from carpool_operator import kube, reconciler, settings
from tests.operator.conftest import ADMIN_TOKEN
from tests.support import kube as k8s
from tests.support import pods

pytestmark = pytest.mark.integration

NS = "default"
CHILDREN = (
    (kube.SECRETS, "demo-admin"),
    (kube.CONFIG_MAPS, "demo-config"),
    (kube.DEPLOYMENTS, "demo"),
    (kube.SERVICES, "demo"),
)


@pytest.fixture
async def server() -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as running:
        yield running


@pytest.fixture
async def api(server: k8s.ApiServer, tmp_path: Path) -> AsyncIterator[kube.Api]:
    client = kube.Api.from_kubeconfig(k8s.write_kubeconfig(tmp_path / "kubeconfig", str(server.url)))
    try:
        yield client
    finally:
        await client.aclose()


CONFIG = settings.OperatorConfig(serving_image="carpool-serving:test", push_timeout_s=3.0)


async def _policy(server: k8s.ApiServer, **spec: Any) -> kopf.Body:
    return kopf.Body(await server.create(kube.POLICIES, NS, {"metadata": {"name": "demo"}, "spec": spec}))


def _conditions(outcome: reconciler.Outcome) -> dict[str, tuple[str, str, str]]:
    return {str(c.type): (str(c.status), str(c.reason), c.message) for c in outcome.conditions}


def _writes(server: k8s.ApiServer, methods: tuple[str, ...] = ("POST", "PATCH", "DELETE")) -> list[str]:
    """The operator's (not the test's) writes: "METHOD plural", in order."""
    found = []
    for request in {id(request): request for request in server}.values():
        method = str(getattr(request.method, "value", request.method)).upper()
        if (
            method in methods
            and request.resource is not None
            and not request.headers.get("User-Agent", "").startswith("kmock")
        ):
            found.append(f"{method} {request.resource.plural}")
    return found


async def test_a_first_pass_creates_the_children_and_a_second_changes_nothing(
    server: k8s.ApiServer, api: kube.Api
) -> None:
    body = await _policy(server, serving={"replicas": 2})
    state = reconciler.PolicyState()
    with k8s.posted_events() as events:
        outcome = await reconciler.reconcile(api, CONFIG, body, state)
        created = {event["reason"] for event in events()}

        assert {"SecretCreated", "ConfigMapCreated", "DeploymentCreated", "ServiceCreated"} == created
        for kind, name in CHILDREN:
            child = server.get(kind, NS, name)
            assert child is not None, name
            [owner] = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"]) == ("BatchingPolicy", body["metadata"]["uid"])
        assert server.get(kube.INGRESSES, NS, "demo") is None

        config_hash = outcome.status["configHash"]
        assert outcome.status == {
            "observedGeneration": 1,
            "replicas": 0,
            "readyReplicas": 0,
            "configuredReplicas": 0,
            "configHash": config_hash,
            "modelConfigs": [],  # no model tuned
            "pods": [],
            "appliedConfigHash": config_hash,
        }
        assert _conditions(outcome) == {
            "Ready": ("False", "ReplicasNotReady", "0 of 2 replicas ready"),
            "ConfigApplied": (
                "True",
                "NoReadyPods",
                f"no ready pods; pods read config {config_hash} from ConfigMap demo-config at start",
            ),
            "ModelsReady": ("Unknown", "NoPods", "no serving pod has an IP yet"),
        }
        assert (outcome.pods_behind, outcome.invalid) == (0, None)

        writes = _writes(server, ("POST", "PATCH"))
        again = await reconciler.reconcile(api, CONFIG, body, state)
        assert again == outcome
        # Converged: nothing created or patched (the absent Ingress is only deleted if found).
        assert _writes(server, ("POST", "PATCH")) == writes
        assert len(events()) == len(created)


async def test_an_invalid_spec_changes_nothing_and_is_reported_once(
    server: k8s.ApiServer, api: kube.Api
) -> None:
    body = await _policy(server, serving={"replicas": -1})
    state = reconciler.PolicyState()
    with k8s.posted_events() as events:
        first = await reconciler.reconcile(api, CONFIG, body, state)
        second = await reconciler.reconcile(api, CONFIG, body, state)
        [warning] = events()
    assert first == second
    assert first.invalid is not None and "spec.serving.replicas" in first.invalid
    assert (warning["type"], warning["reason"], warning["message"]) == (
        "Warning",
        "InvalidSpec",
        first.invalid,
    )
    assert _conditions(first)["Ready"] == ("False", "InvalidSpec", first.invalid)
    assert first.status == {"observedGeneration": 1}
    assert _writes(server) == []


async def test_an_autoscaled_deployment_keeps_the_replicas_it_was_given(
    server: k8s.ApiServer, api: kube.Api
) -> None:
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 6, "prometheusUrl": "http://prom:9090"}
    body = await _policy(server, serving={"replicas": 2}, autoscaling=autoscaling)
    state = reconciler.PolicyState()
    with k8s.posted_events():
        await reconciler.reconcile(api, CONFIG, body, state)
        await server.patch_object(kube.DEPLOYMENTS, NS, "demo", {"spec": {"replicas": 5}})
        outcome = await reconciler.reconcile(api, CONFIG, body, state)
    assert server.get(kube.DEPLOYMENTS, NS, "demo")["spec"]["replicas"] == 5  # type: ignore[index]
    assert _conditions(outcome)["Ready"] == ("False", "ReplicasNotReady", "0 of 5 replicas ready")


async def test_passes_of_one_policy_never_overlap(server: k8s.ApiServer, api: kube.Api) -> None:
    body = await _policy(server)
    state = reconciler.PolicyState()
    # The first pass's read of the Secret (none yet) answers late; a second pass started meanwhile
    # waits for the first instead of racing it (a second POST of each child, answered 409).
    server.inject(k8s.Fault("GET", "secrets", status=None, delay_s=0.5, after_write=True))
    with k8s.posted_events():
        first, second = await asyncio.gather(
            reconciler.reconcile(api, CONFIG, body, state), reconciler.reconcile(api, CONFIG, body, state)
        )
    assert first == second
    assert sorted(write for write in _writes(server) if write.startswith("POST")) == [
        "POST configmaps",
        "POST deployments",
        "POST secrets",
        "POST services",
    ]


async def test_api_failures_reach_the_handler(server: k8s.ApiServer, api: kube.Api) -> None:
    body = await _policy(server)
    server.inject(k8s.Fault("POST", "deployments", status=500))
    with k8s.posted_events(), pytest.raises(kube.ApiError, match="injected: 500"):
        await reconciler.reconcile(api, CONFIG, body, reconciler.PolicyState())


async def test_remove_children_deletes_what_exists(server: k8s.ApiServer, api: kube.Api) -> None:
    body = await _policy(server, ingress={"enabled": True, "host": "classify.example.com"})
    with k8s.posted_events():
        await reconciler.reconcile(api, CONFIG, body, reconciler.PolicyState())
    assert sorted(await reconciler.remove_children(api, body)) == [
        "ConfigMap demo-config",
        "Deployment demo",
        "Ingress demo",
        "Secret demo-admin",
        "Service demo",
    ]
    assert await reconciler.remove_children(api, body) == []


@pytest.mark.e2e
async def test_ready_pods_get_the_config_and_a_pod_that_misses_it_is_reported_once(
    server: k8s.ApiServer, api: kube.Api, serving_pods: list[pods.ServingPod], pod_port: int
) -> None:
    secret = {
        "metadata": {"name": "demo-admin"},
        "data": {"token": base64.b64encode(ADMIN_TOKEN.encode()).decode()},
    }
    await server.create(kube.SECRETS, NS, secret)
    # A config no other test of the session pushes, so that these pods are behind it.
    body = await _policy(
        server, serving={"port": pod_port}, batching={"maxBatchSize": 13, "maxWaitTimeMs": 17}
    )
    for index, pod in enumerate(serving_pods):
        await server.create(kube.PODS, NS, k8s.ready_pod(f"demo-{index}", "demo", pod.host))
    await server.create(kube.PODS, NS, k8s.ready_pod("demo-gone", "demo", "127.0.0.9"))
    await server.create(kube.PODS, NS, k8s.ready_pod("other-0", "other", serving_pods[0].host))

    state = reconciler.PolicyState()
    with k8s.posted_events() as events:
        outcome = await reconciler.reconcile(api, CONFIG, body, state)
        await reconciler.reconcile(api, CONFIG, body, state)
        pushed, failed = events("ConfigPushed"), events("ConfigPushFailed")

    config_hash = outcome.status["configHash"]
    assert sorted(event["message"].split(" ")[1] for event in pushed) == ["demo-0", "demo-1"]
    assert all(f"now runs config {config_hash} (strategy" in event["message"] for event in pushed)
    [warning] = failed  # the second pass finds the same failure: not posted again
    assert warning["type"] == "Warning" and warning["message"].startswith(
        f"pod demo-gone (127.0.0.9:{pod_port})"
    )

    assert outcome.pods_behind == 1
    assert {key: outcome.status[key] for key in ("replicas", "readyReplicas", "configuredReplicas")} == {
        "replicas": 3,
        "readyReplicas": 3,
        "configuredReplicas": 2,
    }
    assert "appliedConfigHash" not in outcome.status
    status, reason, message = _conditions(outcome)["ConfigApplied"]
    assert (status, reason) == ("False", "PodsBehind")
    assert message.startswith(f"1 of 3 ready pods behind config {config_hash} (retrying): demo-gone: ")
    answered = [entry for entry in outcome.status["pods"] if "error" not in entry]
    assert [(entry["name"], entry["device"], entry["modelsLoaded"]) for entry in answered] == [
        ("demo-0", "cpu", 1),
        ("demo-1", "cpu", 1),
    ]
