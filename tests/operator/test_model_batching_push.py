"""End to end: spec.models[].batching reaches a real `carpool serve` pod live, model by model, is
verified by each model's hash, reported in the status, and lives in the ConfigMap a restarted pod
starts from.

The operator runs under Kopf against the emulated API server; the pod is a real process on
127.0.0.6 serving two tiny BERTs (`tiny`, `fast`), and a Pod object carries its address.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
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
NAME = "tuned"
POD_IP = "127.0.0.6"


@pytest.fixture
def pod(tiny_bert: Path) -> Iterator[pods.ServingPod]:
    env = {"CARPOOL_ADMIN_TOKEN": ADMIN_TOKEN, "CARPOOL_DEVICE": "cpu", "CARPOOL_WORKERS": "1"}
    with pods.ServingPod(host=POD_IP, models={"tiny": tiny_bert, "fast": tiny_bert}, env=env) as started:
        yield started.start()


def _status(server: k8s.ApiServer) -> dict[str, Any]:
    return dict((server.get(kube.POLICIES, NS, NAME) or {}).get("status") or {})


def _condition(server: k8s.ApiServer, type_: str) -> dict[str, Any]:
    for condition in _status(server).get("conditions") or ():
        if condition["type"] == type_:
            return dict(condition)
    return {}


async def _hashes(pod: pods.ServingPod) -> tuple[str, dict[str, str]] | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            stats = (await client.get(f"{pod.url}/batching/stats")).json()
    except httpx.HTTPError:
        return None
    return stats["config_hash"], {name: model["config_hash"] for name, model in stats["models"].items()}


async def _at(
    server: k8s.ApiServer,
    pod: pods.ServingPod,
    policy: serving_settings.BatchingConfig,
    tuned: dict[str, serving_settings.BatchingConfig],
) -> bool:
    """The pod runs `policy`, each tuned model its own, and the status and ConfigApplied say so."""
    wanted = {name: tuned.get(name, policy).config_hash() for name in ("tiny", "fast")}
    status = _status(server)
    applied = _condition(server, "ConfigApplied")
    return (
        await _hashes(pod) == (policy.config_hash(), wanted)
        and status.get("appliedConfigHash") == policy.config_hash()
        and status.get("modelConfigs")
        == [{"name": n, "configHash": c.config_hash()} for n, c in tuned.items()]
        and applied.get("status") == "True"
        and all(f"model {name} config {c.config_hash()}" in applied["message"] for name, c in tuned.items())
    )


def _models(tiny_bert: Path, fast: dict[str, Any] | None, tiny: dict[str, Any] | None = None) -> list[Any]:
    models: list[dict[str, Any]] = [
        {"name": "tiny", "path": str(tiny_bert)},
        {"name": "fast", "path": str(tiny_bert)},
    ]
    for model, batching in zip(models, (tiny, fast), strict=True):
        if batching is not None:
            model["batching"] = batching
    return models


async def test_per_model_batching_is_pushed_verified_reported_and_kept_for_restarts(
    server: k8s.ApiServer, pod: pods.ServingPod, tiny_bert: Path
) -> None:
    token = base64.b64encode(ADMIN_TOKEN.encode()).decode()
    await server.create(kube.SECRETS, NS, {"metadata": {"name": f"{NAME}-admin"}, "data": {"token": token}})
    await server.create(kube.PODS, NS, k8s.ready_pod(f"{NAME}-a", NAME, pod.host))
    volume = {"name": "models", "hostPath": {"path": str(tiny_bert.parent)}}
    spec = {
        "models": _models(tiny_bert, fast={"maxBatchSize": 4, "maxWaitTimeMs": 2}),
        "strategy": "batch_optimized",
        "batching": {"maxBatchSize": 16},
        "serving": {
            "port": pod.port,
            "volumes": [volume],
            "volumeMounts": [{"name": "models", "mountPath": str(tiny_bert.parent), "readOnly": True}],
        },
    }
    await server.create(kube.POLICIES, NS, {"metadata": {"name": NAME}, "spec": spec})

    policy = serving_settings.BatchingConfig(
        strategy=serving_settings.Strategy.BATCH_OPTIMIZED, max_batch_size=16
    )
    fast = policy.updated({"max_batch_size": 4, "max_wait_time_ms": 2})
    await k8s.eventually(lambda: _at(server, pod, policy, {"fast": fast}), what="fast tuned on the pod")
    config_map = server.get(kube.CONFIG_MAPS, NS, f"{NAME}-config")
    assert config_map is not None
    assert config_map["data"]["CARPOOL_MODEL_BATCHING"] == "fast:max_batch_size=4,max_wait_time_ms=2"
    deployment = server.get(kube.DEPLOYMENTS, NS, NAME)
    pushed = [e["message"] for e in server.events(NS, NAME) if e["reason"] == "ConfigPushed"]
    assert any(f"model fast config {fast.config_hash()}" in message for message in pushed)

    # Retune fast, tune tiny, change the policy's wait: pushed live, no rollout.
    models = _models(tiny_bert, fast={"maxBatchSize": 8}, tiny={"enabled": False})
    await server.patch_object(
        kube.POLICIES,
        NS,
        NAME,
        {"spec": {"models": models, "batching": {"maxBatchSize": 16, "maxWaitTimeMs": 30}}},
    )
    policy = policy.updated({"max_wait_time_ms": 30})
    tuned = {"tiny": policy.updated({"enable": False}), "fast": policy.updated({"max_batch_size": 8})}
    await k8s.eventually(lambda: _at(server, pod, policy, tuned), what="both models retuned")
    assert server.get(kube.DEPLOYMENTS, NS, NAME) == deployment
    config_map = server.get(kube.CONFIG_MAPS, NS, f"{NAME}-config")
    assert config_map is not None
    start_env = dict(config_map["data"])
    assert start_env["CARPOOL_MODEL_BATCHING"] == "tiny:enable=false;fast:max_batch_size=8"

    # A pod that restarts from its old environment (no tuning) is brought forward again.
    await asyncio.to_thread(pod.restart)
    await k8s.eventually(
        lambda: _at(server, pod, policy, tuned), timeout_s=15, what="the restarted pod corrected"
    )

    # Without the tuning every model runs the policy's config, and the ConfigMap says so.
    await server.patch_object(kube.POLICIES, NS, NAME, {"spec": {"models": _models(tiny_bert, fast=None)}})
    await k8s.eventually(lambda: _at(server, pod, policy, {}), what="tuning removed")
    config_map = server.get(kube.CONFIG_MAPS, NS, f"{NAME}-config")
    assert config_map is not None and config_map["data"]["CARPOOL_MODEL_BATCHING"] == ""

    # A pod started from the tuned ConfigMap (as the kubelet would, through envFrom) runs each
    # model's own config before any push: the policy is gone, nothing pushes any more.
    await server.delete_object(kube.POLICIES, NS, NAME)
    await k8s.eventually(lambda: server.get(kube.POLICIES, NS, NAME) is None, what="policy gone")
    await asyncio.to_thread(pod.restart, {**pod.env, **start_env})
    assert await _hashes(pod) == (policy.config_hash(), {name: c.config_hash() for name, c in tuned.items()})
