"""End to end: a strategy change reaches two real `carpool serve` pods without a rollout, and a pod
that restarts with its old config is corrected by the periodic pass.

The operator runs under Kopf against the emulated API server; the pods are real processes on
127.0.0.2 and 127.0.0.3, and Pod objects carry those addresses as status.podIP (no kubelet or
ReplicaSet controller here to make them).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from carpool_operator import kube
from serving import settings as serving_settings
from tests.operator.conftest import ADMIN_TOKEN
from tests.support import kube as k8s
from tests.support import pods

pytestmark = pytest.mark.e2e

NS = "default"
NAME = "live"


def _status(server: k8s.ApiServer) -> dict[str, Any]:
    return dict((server.get(kube.POLICIES, NS, NAME) or {}).get("status") or {})


def _condition(server: k8s.ApiServer, type_: str) -> dict[str, Any]:
    for condition in _status(server).get("conditions") or ():
        if condition["type"] == type_:
            return dict(condition)
    return {}


async def _pod_hash(pod: pods.ServingPod) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            stats = (await client.get(f"{pod.url}/batching/stats")).json()
    except httpx.HTTPError:
        return None
    value = stats.get("config_hash")
    return value if isinstance(value, str) else None


async def _all_at(server: k8s.ApiServer, serving: list[pods.ServingPod], wanted: str) -> bool:
    status = _status(server)
    applied = _condition(server, "ConfigApplied")
    return (
        status.get("appliedConfigHash") == wanted
        and status.get("configuredReplicas") == len(serving)
        and applied.get("status") == "True"
        and applied.get("reason") == "ConfigApplied"
        and all([await _pod_hash(pod) == wanted for pod in serving])
    )


async def test_a_strategy_change_is_pushed_live_and_a_restarted_pod_corrected(
    server: k8s.ApiServer, serving_pods: list[pods.ServingPod], pod_port: int, tiny_bert: Path
) -> None:
    # The token the pods were started with, as a Secret the operator adopts and keeps.
    token = base64.b64encode(ADMIN_TOKEN.encode()).decode()
    await server.create(kube.SECRETS, NS, {"metadata": {"name": f"{NAME}-admin"}, "data": {"token": token}})
    for suffix, pod in zip("ab", serving_pods, strict=True):
        await server.create(kube.PODS, NS, k8s.ready_pod(f"{NAME}-{suffix}", NAME, pod.host))
    # The pods read the model from the node's disk: a hostPath volume mounted where it lies.
    volume = {"name": "models", "hostPath": {"path": str(tiny_bert.parent)}}
    spec = {
        "models": [{"name": "tiny", "path": str(tiny_bert)}],
        "strategy": "batch_optimized",
        "batching": {"maxBatchSize": 8, "maxWaitTimeMs": 20},
        "serving": {
            "replicas": 2,
            "port": pod_port,
            "volumes": [volume],
            "volumeMounts": [{"name": "models", "mountPath": str(tiny_bert.parent), "readOnly": True}],
        },
    }
    await server.create(kube.POLICIES, NS, {"metadata": {"name": NAME}, "spec": spec})

    first = serving_settings.BatchingConfig(
        strategy=serving_settings.Strategy.BATCH_OPTIMIZED, max_batch_size=8, max_wait_time_ms=20
    )
    await k8s.eventually(
        lambda: _all_at(server, serving_pods, first.config_hash()), what="first config on both pods"
    )
    ready = _condition(server, "Ready")
    assert (ready["status"], ready["message"]) == ("True", "2/2 replicas ready")
    secret = server.get(kube.SECRETS, NS, f"{NAME}-admin")
    assert secret is not None and secret["data"]["token"] == token
    assert secret["metadata"]["ownerReferences"][0]["name"] == NAME
    deployment = server.get(kube.DEPLOYMENTS, NS, NAME)
    assert deployment is not None

    # A live change: the ConfigMap and the pods follow, the Deployment does not move.
    await server.patch_object(kube.POLICIES, NS, NAME, {"spec": {"strategy": "adaptive"}})
    second = first.updated({"strategy": "adaptive"})
    await k8s.eventually(
        lambda: _all_at(server, serving_pods, second.config_hash()), what="pushed to both pods"
    )
    config_map = server.get(kube.CONFIG_MAPS, NS, f"{NAME}-config")
    assert config_map is not None and config_map["data"]["BATCHING_STRATEGY"] == "adaptive"
    assert server.get(kube.DEPLOYMENTS, NS, NAME) == deployment  # same template, generation, everything
    assert _status(server)["observedGeneration"] == 2
    pushed = [e["message"] for e in server.events(NS, NAME) if e["reason"] == "ConfigPushed"]
    for suffix in "ab":
        assert any(f"pod {NAME}-{suffix} " in m and second.config_hash() in m for m in pushed)

    # A pod dies; its Pod object still says Ready (the kubelet has not noticed): the push fails.
    restarted = serving_pods[1]
    restarted.kill()
    behind = await k8s.eventually(
        lambda: (c := _condition(server, "ConfigApplied")) and c["status"] == "False" and c,
        what="ConfigApplied=False while the pod is down",
    )
    assert behind["reason"] == "PodsBehind" and f"{NAME}-b" in behind["message"]
    assert _status(server)["configuredReplicas"] == 1
    failures = [e for e in server.events(NS, NAME) if e["reason"] == "ConfigPushFailed"]
    assert failures and failures[-1]["type"] == "Warning" and f"{NAME}-b" in failures[-1]["message"]

    # It comes back with the config it was started with; the periodic pass brings it forward.
    await asyncio.to_thread(restarted.start)
    await k8s.eventually(
        lambda: _all_at(server, serving_pods, second.config_hash()),
        timeout_s=15,
        what="the restarted pod corrected",
    )
    assert (
        _condition(server, "ConfigApplied")["message"]
        == f"all 2 ready pods run config {second.config_hash()}"
    )

    # Deleting the policy takes its children with it.
    await server.delete_object(kube.POLICIES, NS, NAME)
    await k8s.eventually(lambda: server.get(kube.POLICIES, NS, NAME) is None, what="policy gone")
    assert server.get(kube.DEPLOYMENTS, NS, NAME) is None
    assert server.get(kube.SECRETS, NS, f"{NAME}-admin") is None
