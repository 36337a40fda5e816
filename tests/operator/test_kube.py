"""kube.py against the emulated API server: credentials, the five verbs and their errors, and
`apply`'s rule (create when missing, patch only what drifted, leave create-only fields alone).

The client is the operator's own (`kube.Api.from_kubeconfig`), talking HTTP to
`tests.support.kube`'s emulator, which stores quantities canonically, fills defaults and answers
409 and injected faults as an API server does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from carpool_operator import kube, resources, spec
from tests.support import kube as k8s

pytestmark = pytest.mark.integration

NS = "default"


@pytest.fixture
async def server() -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as running:
        yield running


@pytest.fixture
async def api(server: k8s.ApiServer, tmp_path: Path) -> AsyncIterator[kube.Api]:
    client = kube.Api.from_kubeconfig(
        k8s.write_kubeconfig(tmp_path / "kubeconfig", str(server.url)), timeout_s=1.0
    )
    try:
        yield client
    finally:
        await client.aclose()


def _config_map(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "data": data,
    }


def _deployment(replicas: int = 2) -> dict[str, Any]:
    policy = spec.parse({"serving": {"resources": {"limits": {"cpu": "1000m"}}}}, name="demo", namespace=NS)
    return resources.build_deployment(
        policy, image="carpool-serving:test", token_digest="d", replicas=replicas
    )


def _requests(server: k8s.ApiServer, method: str, plural: str) -> list[Any]:
    """The operator's (not the test's) requests of that method on that resource."""
    return [
        request
        for request in {id(request): request for request in server}.values()
        if str(getattr(request.method, "value", request.method)).upper() == method
        and request.resource is not None
        and request.resource.plural == plural
        and not request.headers.get("User-Agent", "").startswith("kmock")
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kind", "args", "path", "api_version"),
    [
        pytest.param(kube.PODS, ("ml",), "/api/v1/namespaces/ml/pods", "v1", id="core-collection"),
        pytest.param(
            kube.DEPLOYMENTS,
            ("ml", "demo"),
            "/apis/apps/v1/namespaces/ml/deployments/demo",
            "apps/v1",
            id="named",
        ),
        pytest.param(
            kube.POLICIES,
            ("ml", "demo", "status"),
            "/apis/carpool.dev/v1alpha1/namespaces/ml/batchingpolicies/demo/status",
            "carpool.dev/v1alpha1",
            id="subresource",
        ),
    ],
)
def test_kind_paths(kind: kube.Kind, args: tuple[str, ...], path: str, api_version: str) -> None:
    assert kind.path(*args) == path
    assert kind.api_version == api_version


async def test_the_kubeconfigs_credentials_reach_the_server_and_kopf(
    server: k8s.ApiServer, api: kube.Api
) -> None:
    assert await api.list(kube.CONFIG_MAPS, NS) == []
    [request] = _requests(server, "GET", "configmaps")
    assert request.headers["Authorization"] == "Bearer emulated-token"

    info = api.connection_info()
    assert (info.server, info.scheme, info.token) == (str(server.url).rstrip("/"), "Bearer", "emulated-token")


async def test_the_verbs_and_their_errors(server: k8s.ApiServer, api: kube.Api) -> None:
    created = await api.create(kube.CONFIG_MAPS, _config_map("one", a="1"))
    assert created["metadata"]["uid"] and created["data"] == {"a": "1"}
    await api.create(kube.CONFIG_MAPS, _config_map("two", a="2"))

    patched = await api.patch(kube.CONFIG_MAPS, NS, "one", {"data": {"b": "2"}})
    assert patched["data"] == {"a": "1", "b": "2"}  # a merge patch: other keys kept
    assert (await api.get(kube.CONFIG_MAPS, NS, "one"))["data"] == patched["data"]
    assert [item["metadata"]["name"] for item in await api.list(kube.CONFIG_MAPS, NS, "app=two")] == ["two"]

    with pytest.raises(kube.Conflict) as conflict:
        await api.create(kube.CONFIG_MAPS, _config_map("one"))
    assert conflict.value.status == 409

    await api.delete(kube.CONFIG_MAPS, NS, "one")
    with pytest.raises(kube.NotFound) as missing:
        await api.get(kube.CONFIG_MAPS, NS, "one")
    assert missing.value.status == 404
    assert "GET /api/v1/namespaces/default/configmaps/one" in str(missing.value)
    assert await kube.read(api, kube.CONFIG_MAPS, NS, "one") is None
    assert await kube.delete_if_exists(api, kube.CONFIG_MAPS, NS, "two") is kube.Change.DELETED
    assert await kube.delete_if_exists(api, kube.CONFIG_MAPS, NS, "two") is kube.Change.UNCHANGED


async def test_server_errors_and_timeouts_reach_the_caller(server: k8s.ApiServer, api: kube.Api) -> None:
    server.inject(k8s.Fault("GET", "configmaps", status=500))
    with pytest.raises(kube.ApiError) as failed:
        await kube.read(api, kube.CONFIG_MAPS, NS, "any")
    assert failed.value.status == 500 and not isinstance(failed.value, kube.NotFound)
    assert "injected: 500" in failed.value.message

    server.inject(k8s.Fault("GET", "configmaps", status=None, delay_s=2.0))
    started = asyncio.get_running_loop().time()
    with pytest.raises(httpx.TimeoutException):
        await kube.read(api, kube.CONFIG_MAPS, NS, "any")
    assert asyncio.get_running_loop().time() - started < 1.8  # the client's 1 s, not the server's 2 s


async def test_apply_creates_then_patches_only_what_drifted(server: k8s.ApiServer, api: kube.Api) -> None:
    desired = _deployment()
    change, stored = await kube.apply(api, kube.DEPLOYMENTS, desired)
    assert change is kube.Change.CREATED
    # The server stores "1000m" as "1" and fills defaults: neither is drift.
    [container] = stored["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"] == "1"
    assert (await kube.apply(api, kube.DEPLOYMENTS, desired))[0] is kube.Change.UNCHANGED
    assert _requests(server, "PATCH", "deployments") == []

    # A hand edit of a field the operator sets is patched back.
    edited = {"spec": {"template": {"spec": {"containers": [{**container, "image": "hand-edited:1"}]}}}}
    await server.patch_object(kube.DEPLOYMENTS, NS, "demo", edited)
    change, restored = await kube.apply(api, kube.DEPLOYMENTS, desired)
    assert change is kube.Change.UPDATED
    assert restored["spec"]["template"]["spec"]["containers"][0]["image"] == "carpool-serving:test"


async def test_create_only_fields_are_written_once(server: k8s.ApiServer, api: kube.Api) -> None:
    replicas = [("spec", "replicas")]
    await kube.apply(api, kube.DEPLOYMENTS, _deployment(replicas=2), create_only=replicas)
    scaled = await kube.scale_deployment(api, NS, "demo", 5)
    assert scaled["spec"]["replicas"] == 5
    [patch] = _requests(server, "PATCH", "deployments")
    # Only the replicas (the emulator stamps its resourceVersion into the metadata it received).
    assert {key: value for key, value in patch.data.items() if key != "metadata"} == {"spec": {"replicas": 5}}

    change, live = await kube.apply(api, kube.DEPLOYMENTS, _deployment(replicas=2), create_only=replicas)
    assert (change, live["spec"]["replicas"]) == (kube.Change.UNCHANGED, 5)
    change, live = await kube.apply(api, kube.DEPLOYMENTS, _deployment(replicas=2))
    assert (change, live["spec"]["replicas"]) == (kube.Change.UPDATED, 2)


async def test_apply_over_a_stale_read_converges_on_what_a_concurrent_writer_created(
    server: k8s.ApiServer, api: kube.Api
) -> None:
    await server.create(kube.CONFIG_MAPS, NS, _config_map("raced", a="theirs"))
    change, live = await kube.apply_over(api, kube.CONFIG_MAPS, _config_map("raced", a="ours"), None)
    assert (change, live["data"]) == (kube.Change.UPDATED, {"a": "ours"})
    change, _ = await kube.apply_over(api, kube.CONFIG_MAPS, _config_map("raced", a="ours"), None)
    assert change is kube.Change.UNCHANGED


async def test_post_event_queues_a_kopf_event_about_the_policy(server: k8s.ApiServer) -> None:
    policy = await server.create(kube.POLICIES, NS, {"metadata": {"name": "demo"}, "spec": {}})
    with k8s.posted_events() as events:
        kube.post_event(kopf.Body(policy), reason="ConfigPushed", message="x" * 2000)
        kube.post_event(kopf.Body(policy), reason="ConfigPushFailed", message="down", warning=True)
        pushed, failed = events()
    assert (pushed["type"], pushed["reason"], pushed["name"], len(pushed["message"])) == (
        "Normal",
        "ConfigPushed",
        "demo",
        1000,
    )
    assert (failed["type"], failed["message"]) == ("Warning", "down")
