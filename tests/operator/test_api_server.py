"""The operator against an API server that behaves like a real one: canonical quantities, defaults,
conflicts, injected 500s and timeouts, a restart in the middle of a pass, neighbours in a namespace.

Each test runs the real operator under Kopf (1 s periodic pass) against `tests.support.kube`'s
emulator and acts through the API, as a user or another controller would.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from carpool_operator import kube
from tests.support import kube as k8s

pytestmark = pytest.mark.integration

NS = "default"
CHILD_PLURALS = ("deployments", "services", "configmaps", "secrets", "ingresses")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _config(server: k8s.ApiServer, tmp_path: Path, **overrides: Any) -> Any:
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(server.url))
    return k8s.fast_config(kubeconfig, autoscale_interval_s=3600.0, **overrides)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api, k8s.running_operator(api, _config(api, tmp_path, api_timeout_s=1.0)):
        yield api


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return {"metadata": {"name": document["metadata"]["name"]}, "spec": document["spec"]}


def _operator_requests(server: k8s.ApiServer, method: str, plural: str) -> list[Any]:
    return [
        request
        for request in {id(request): request for request in server}.values()
        if str(getattr(request.method, "value", request.method)).upper() == method
        and request.resource is not None
        and request.resource.plural == plural
        and not request.headers.get("User-Agent", "").startswith("kmock")
    ]


def _condition(server: k8s.ApiServer, name: str, type_: str) -> dict[str, Any] | None:
    policy = server.get(kube.POLICIES, NS, name) or {}
    for condition in (policy.get("status") or {}).get("conditions") or ():
        if condition["type"] == type_:
            return dict(condition)
    return None


def _children(server: k8s.ApiServer, plural: str) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (resource, _, _), obj in list(server.objects.items())
        if resource.plural == plural and not obj.deleted
    ]


async def test_the_emulator_stores_quantities_canonically_and_fills_defaults(server: k8s.ApiServer) -> None:
    container = {
        "name": "c",
        "image": "img:1",
        "ports": [{"containerPort": 80}],
        "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "1000m"}, "requests": {"cpu": 0.5}},
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
    }
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [container]}}
    deployment = {
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template},
    }
    stored = await server.create(kube.DEPLOYMENTS, NS, deployment)

    [live] = stored["spec"]["template"]["spec"]["containers"]
    assert live["resources"] == {"limits": {"nvidia.com/gpu": "1", "cpu": "1"}, "requests": {"cpu": "500m"}}
    assert (live["imagePullPolicy"], live["ports"][0]["protocol"]) == ("IfNotPresent", "TCP")
    assert (
        live["readinessProbe"]["timeoutSeconds"] == 1
        and live["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    )
    assert stored["spec"]["revisionHistoryLimit"] == 10 and stored["spec"]["progressDeadlineSeconds"] == 600

    # A write based on an old resourceVersion is refused with 409, as optimistic concurrency asks.
    stale = {"metadata": {"resourceVersion": stored["metadata"]["resourceVersion"]}, "spec": {"replicas": 2}}
    await server.patch_object(kube.DEPLOYMENTS, NS, "d", {"spec": {"replicas": 3}})
    with pytest.raises(AssertionError, match="answered 409"):
        await server.patch_object(kube.DEPLOYMENTS, NS, "d", stale)

    # The namespace collection, which kmock alone answers with a 500.
    async with server.request("GET", "/api/v1/namespaces") as r:
        assert r.status == 200 and "default" in [ns["metadata"]["name"] for ns in (await r.json())["items"]]

    # Label selectors narrow lists.
    await server.create(kube.PODS, NS, k8s.ready_pod("p1", "one", "127.0.0.9"))
    await server.create(kube.PODS, NS, k8s.ready_pod("p2", "two", "127.0.0.9"))
    async with server.request(
        "GET", "/api/v1/namespaces/default/pods?labelSelector=carpool.dev/policy%3Dtwo"
    ) as r:
        assert [item["metadata"]["name"] for item in (await r.json())["items"]] == ["p2"]


async def test_after_convergence_further_passes_send_no_patch_and_post_no_event(
    server: k8s.ApiServer,
) -> None:
    """The GPU example asks for nvidia.com/gpu: 1, stored as "1": a naive comparison patches for ever."""
    policy = _example("high-throughput")
    name = policy["metadata"]["name"]
    await server.create(kube.POLICIES, NS, policy)
    await k8s.eventually(lambda: _condition(server, name, "Ready"), what="a first pass")
    deployment = server.get(kube.DEPLOYMENTS, NS, name)
    assert deployment is not None
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    await asyncio.sleep(1.5)  # let the passes of the creation settle

    patches = {plural: len(_operator_requests(server, "PATCH", plural)) for plural in CHILD_PLURALS}
    events = len(server.events(NS, name))
    policy_patches = len(_operator_requests(server, "PATCH", "batchingpolicies"))
    reads = len(_operator_requests(server, "GET", "deployments"))
    await k8s.eventually(
        lambda: len(_operator_requests(server, "GET", "deployments")) >= reads + 3,
        timeout_s=8,
        what="three more periodic passes",
    )

    assert {plural: len(_operator_requests(server, "PATCH", plural)) for plural in CHILD_PLURALS} == patches
    assert len(_operator_requests(server, "PATCH", "batchingpolicies")) == policy_patches  # nor its status
    assert [e["reason"] for e in server.events(NS, name)[events:]] == []
    assert server.get(kube.DEPLOYMENTS, NS, name) == deployment


@pytest.mark.parametrize(
    ("fault", "where"),
    [
        pytest.param(k8s.Fault("POST", "deployments", status=500), "500", id="500-before-the-write"),
        pytest.param(
            k8s.Fault("POST", "deployments", status=500, after_write=True), "500", id="500-after-the-write"
        ),
        # A 409 to a create whose object is not there: the operator reads it back and retries.
        pytest.param(k8s.Fault("POST", "deployments", status=409), "Kubernetes API", id="409-conflict"),
        pytest.param(
            k8s.Fault("POST", "services", status=None, delay_s=2.0, after_write=True),
            "timed out",
            id="timeout-after-the-write",
        ),
        pytest.param(
            k8s.Fault("GET", "secrets", status=None, delay_s=2.0), "timed out", id="timeout-on-read"
        ),
    ],
)
async def test_api_failures_are_retried_with_a_warning_and_never_duplicate_a_child(
    server: k8s.ApiServer, fault: k8s.Fault, where: str
) -> None:
    injected = server.inject(fault)
    await server.create(kube.POLICIES, NS, {"metadata": {"name": "flaky"}, "spec": {"strategy": "adaptive"}})

    await k8s.eventually(lambda: injected.hits == 1, what="the fault")
    ready = await k8s.eventually(
        lambda: (c := _condition(server, "flaky", "Ready")) and c["reason"] == "ReplicasNotReady" and c,
        timeout_s=15,
        what="convergence after the failure",
    )
    assert ready["status"] == "False"
    warnings = [
        e for e in server.events(NS, "flaky") if e["type"] == "Warning" and e["reason"] == "ReconcileFailed"
    ]
    assert warnings, "no Warning Event for the failed call"
    assert any(where in e["message"] or "Timeout" in e["message"] for e in warnings), warnings
    for plural in ("deployments", "services", "configmaps", "secrets"):
        assert len(_children(server, plural)) == 1, f"{plural}: {len(_children(server, plural))}"
    secret = server.get(kube.SECRETS, NS, "flaky-admin")
    assert secret is not None


async def test_an_operator_stopped_mid_reconcile_and_restarted_keeps_the_token_and_the_replicas(
    tmp_path: Path,
) -> None:
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "prometheusUrl": "http://127.0.0.1:9"}
    spec = {"serving": {"replicas": 2}, "autoscaling": autoscaling}
    async with k8s.api_server() as server:
        config = _config(server, tmp_path)
        async with k8s.running_operator(server, config):
            await server.create(kube.POLICIES, NS, {"metadata": {"name": "steady"}, "spec": spec})
            await k8s.eventually(lambda: _condition(server, "steady", "Ready"), what="a first pass")
        secret = server.get(kube.SECRETS, NS, "steady-admin")
        assert secret is not None
        token = secret["data"]["token"]
        # The autoscaler scaled the Deployment to 5 while the operator was away.
        await server.patch_object(kube.DEPLOYMENTS, NS, "steady", {"spec": {"replicas": 5}})
        await server.delete_object(kube.SERVICES, NS, "steady")

        # A new operator hangs in the middle of its first pass (restoring the Service) and is stopped.
        hang = server.inject(k8s.Fault("POST", "services", status=None, delay_s=30.0))
        thread_stopped = False
        async with k8s.running_operator(server, config):
            await k8s.eventually(lambda: hang.hits == 1, what="the pass reaching the Service")
            thread_stopped = True
        assert thread_stopped and server.get(kube.SERVICES, NS, "steady") is None

        # A third start converges: Service back, token and replicas kept.
        async with k8s.running_operator(server, config):
            await k8s.eventually(lambda: server.get(kube.SERVICES, NS, "steady"), what="the Service restored")
            await k8s.eventually(
                lambda: (
                    (c := _condition(server, "steady", "Ready")) and c["message"] == "0 of 5 replicas ready"
                ),
                what="Ready counting the kept replicas",
            )
        assert server.get(kube.SECRETS, NS, "steady-admin")["data"]["token"] == token  # type: ignore[index]
        assert server.get(kube.DEPLOYMENTS, NS, "steady")["spec"]["replicas"] == 5  # type: ignore[index]
        assert len(_children(server, "deployments")) == 1 and len(_children(server, "secrets")) == 1


async def test_two_policies_in_one_namespace_never_touch_each_others_pods_or_children(
    server: k8s.ApiServer,
) -> None:
    for name, ip in (("left", "127.0.0.21"), ("right", "127.0.0.22")):
        await server.create(kube.PODS, NS, k8s.ready_pod(f"{name}-pod", name, ip))
    await server.create(kube.POLICIES, NS, {"metadata": {"name": "left"}, "spec": {"strategy": "adaptive"}})
    await server.create(
        kube.POLICIES, NS, {"metadata": {"name": "right"}, "spec": {"strategy": "batch_optimized"}}
    )
    for name in ("left", "right"):
        await k8s.eventually(
            lambda name=name: (c := _condition(server, name, "ConfigApplied")) and c["status"] == "False",
            what=f"{name}: its unreachable pod reported",
        )
    for name, other in (("left", "right"), ("right", "left")):
        applied = _condition(server, name, "ConfigApplied")
        assert (
            applied is not None
            and f"{name}-pod" in applied["message"]
            and f"{other}-pod" not in applied["message"]
        )
        status = server.get(kube.POLICIES, NS, name)["status"]  # type: ignore[index]
        assert [pod["name"] for pod in status["pods"]] == [f"{name}-pod"]
        assert status["replicas"] == 1
        for event in server.events(NS, name):
            assert f"{other}-" not in event["message"], event
        deployment = server.get(kube.DEPLOYMENTS, NS, name)
        assert deployment is not None
        [owner] = deployment["metadata"]["ownerReferences"]
        assert owner["name"] == name
        assert deployment["spec"]["selector"]["matchLabels"]["carpool.dev/policy"] == name
    left_token = base64.b64decode(server.get(kube.SECRETS, NS, "left-admin")["data"]["token"])  # type: ignore[index]

    await server.delete_object(kube.POLICIES, NS, "right")
    await k8s.eventually(
        lambda: server.get(kube.DEPLOYMENTS, NS, "right") is None, what="right's children gone"
    )
    for kind, name in (
        (kube.DEPLOYMENTS, "left"),
        (kube.SERVICES, "left"),
        (kube.CONFIG_MAPS, "left-config"),
    ):
        assert server.get(kind, NS, name) is not None
    assert base64.b64decode(server.get(kube.SECRETS, NS, "left-admin")["data"]["token"]) == left_token  # type: ignore[index]
    for request in _operator_requests(server, "PATCH", "deployments") + _operator_requests(
        server, "DELETE", "deployments"
    ):
        assert request.name in ("left", "right")
    assert server.get(kube.PODS, NS, "left-pod") is not None


async def test_repeated_failures_back_off_exponentially(server: k8s.ApiServer) -> None:
    injected = server.inject(k8s.Fault("POST", "deployments", status=500, times=3))
    await server.create(kube.POLICIES, NS, {"metadata": {"name": "backoff"}, "spec": {}})

    await k8s.eventually(
        lambda: server.get(kube.DEPLOYMENTS, NS, "backoff"), timeout_s=15, what="the Deployment"
    )
    assert injected.hits == 3
    delays = [
        e["message"].rsplit("retrying in ", 1)[-1]
        for e in server.events(NS, "backoff")
        if e["reason"] == "ReconcileFailed"
    ]
    # fast_config: 0.2 s doubling, at most 1 s (a real operator: 2 s doubling, at most 60 s).
    assert {"0.2 s)", "0.4 s)", "0.8 s)"} <= set(delays), delays
    assert len(_children(server, "deployments")) == 1
