"""ModelsReady and each pod's device, from real `carpool serve` pods: one serving a tiny BERT on the
CPU, one whose model cannot load (a directory with a config.json and no weights), which stays up,
unready, and says why."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from carpool_operator import kube
from tests.operator.conftest import ADMIN_TOKEN, POD_START_ENV
from tests.support import kube as k8s
from tests.support import pods

pytestmark = pytest.mark.e2e

NS = "default"
BROKEN_IP = "127.0.0.4"


@pytest.fixture
def broken_pod(tmp_path: Path, pod_port: int) -> Iterator[pods.ServingPod]:
    broken = tmp_path / "models" / "tiny"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    pod = pods.ServingPod(host=BROKEN_IP, port=pod_port, models={"tiny": broken}, env=POD_START_ENV)
    pod.launch()
    try:
        yield pod
    finally:
        pod.close()


def _condition(server: k8s.ApiServer, name: str, type_: str) -> dict[str, Any]:
    for condition in ((server.get(kube.POLICIES, NS, name) or {}).get("status") or {}).get(
        "conditions"
    ) or ():
        if condition["type"] == type_:
            return dict(condition)
    return {}


async def test_a_model_that_cannot_load_is_named_on_the_policy_with_the_pods_devices(
    server: k8s.ApiServer,
    serving_pods: list[pods.ServingPod],
    broken_pod: pods.ServingPod,
    pod_port: int,
    tiny_bert: Path,
) -> None:
    async def failed() -> bool:
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                health = await client.get(f"{broken_pod.url}/health")
            except httpx.HTTPError:
                return False
        return health.status_code == 503 and health.json()["models"]["tiny"]["state"] == "failed"

    await k8s.eventually(failed, timeout_s=60, what="the broken pod reporting its failed model")
    volume = {"name": "models", "hostPath": {"path": "/"}}
    spec = {
        "models": [{"name": "tiny", "path": str(tiny_bert)}],
        "serving": {
            "port": pod_port,
            "volumes": [volume],
            "volumeMounts": [{"name": "models", "mountPath": "/"}],
        },
    }
    token = {"token": base64.b64encode(ADMIN_TOKEN.encode()).decode()}
    await server.create(kube.SECRETS, NS, {"metadata": {"name": "models-admin"}, "data": token})
    await server.create(kube.PODS, NS, k8s.ready_pod("models-good", "models", serving_pods[0].host))
    await server.create(kube.PODS, NS, k8s.ready_pod("models-broken", "models", BROKEN_IP, ready=False))
    await server.create(kube.POLICIES, NS, {"metadata": {"name": "models"}, "spec": spec})

    condition = await k8s.eventually(
        lambda: (c := _condition(server, "models", "ModelsReady")) and c["status"] == "False" and c,
        timeout_s=15,
        what="ModelsReady=False",
    )
    assert condition["reason"] == "ModelLoadFailed"
    assert "pod models-broken: model tiny failed to load: " in condition["message"]
    assert "models-good" not in condition["message"]
    status = server.get(kube.POLICIES, NS, "models")["status"]  # type: ignore[index]
    by_pod = {pod["name"]: pod for pod in status["pods"]}
    assert by_pod["models-good"]["device"] == "cpu"
    assert (by_pod["models-good"]["models"], by_pod["models-good"]["modelsLoaded"]) == (1, 1)
    assert by_pod["models-broken"]["modelsLoaded"] == 0
    # Kopf posts Events from a queue of its own: the Event may land just after the status patch.
    warnings = await k8s.eventually(
        lambda: [e for e in server.events(NS, "models") if e["reason"] == "ModelLoadFailed"],
        timeout_s=10,
        what="the ModelLoadFailed Event",
    )
    assert (
        len(warnings) == 1 and warnings[0]["type"] == "Warning" and "models-broken" in warnings[0]["message"]
    )

    # The broken pod goes; the other's model is loaded: ModelsReady turns True.
    await server.delete_object(kube.PODS, NS, "models-broken")
    ready = await k8s.eventually(
        lambda: (c := _condition(server, "models", "ModelsReady")) and c["status"] == "True" and c,
        timeout_s=15,
        what="ModelsReady=True",
    )
    assert ready["reason"] == "ModelsLoaded" and "(cpu)" in ready["message"]
