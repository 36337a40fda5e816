"""Starting and ending an experiment under Kopf against kmock: the Deployments hand over only
once the new side's pods are ready, each variant's Deployment says which variant it runs, the
autoscaler holds during the experiment, and removing spec.experiment by hand marks it Ended.

No serving processes here: Pod objects stand in (their IPs refuse connections, so config pushes
fail quickly; the hand-over does not wait for them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from carpool_operator import kube
from tests.support import kube as k8s
from tests.support import pods

pytestmark = pytest.mark.integration

NS = "default"
NAME = "shift"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api:
        kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url))
        config = k8s.fast_config(kubeconfig, autoscale_interval_s=0.5, experiment_interval_s=0.5)
        async with k8s.running_operator(api, config):
            yield api


def _pod(name: str, variant: str | None) -> dict[str, Any]:
    pod = k8s.ready_pod(name, NAME, "127.0.0.1")
    if variant is not None:
        pod["metadata"]["labels"]["carpool.dev/variant"] = variant
    return pod


def _condition(server: k8s.ApiServer, type_: str) -> dict[str, Any] | None:
    status = (server.get(kube.POLICIES, NS, NAME) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or () if c["type"] == type_), None)


EXPERIMENT = {
    "variants": [
        {"name": "a", "weight": 3, "strategy": "adaptive", "batching": {"maxWaitTimeMs": 20}},
        {"name": "b", "weight": 1, "strategy": "batch_optimized"},
    ]
}


async def test_deployments_hand_over_both_ways_once_the_new_pods_are_ready(server: k8s.ApiServer) -> None:
    port = pods.free_port()  # nothing listens there
    spec = {
        "serving": {"replicas": 4, "port": port},
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 8,
            "prometheusUrl": "http://127.0.0.1:9",
            "query": "vector(0)",
        },
    }
    await server.create(kube.POLICIES, NS, {"metadata": {"name": NAME}, "spec": spec})
    await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, NAME), what="the policy's Deployment")
    for index in range(4):
        await server.create(kube.PODS, NS, _pod(f"{NAME}-main-{index}", None))

    # Start: the variants' Deployments come, with the weights' share of the 4 replicas ...
    await server.patch_object(kube.POLICIES, NS, NAME, {"spec": {"experiment": EXPERIMENT}})
    a = await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, f"{NAME}-a"), what="variant a")
    b = await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, f"{NAME}-b"), what="variant b")
    assert (a["spec"]["replicas"], b["spec"]["replicas"]) == (3, 1)
    env = {e["name"]: e.get("value") for e in a["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["CARPOOL_VARIANT"], env["BATCHING_STRATEGY"], env["MAX_WAIT_TIME_MS"]) == (
        "a",
        "adaptive",
        "20.0",
    )
    assert a["spec"]["template"]["metadata"]["labels"]["carpool.dev/variant"] == "a"
    # ... the autoscaler holds, and says why ...
    scaling = await k8s.eventually(
        lambda: (c := _condition(server, "Scaling")) and c["reason"] == "ExperimentRunning" and c,
        what="Scaling=False/ExperimentRunning",
    )
    assert scaling["status"] == "False" and "variants a, b share" in scaling["message"]
    # (its Prometheus, spec.autoscaling's, does not answer: the figures say why they are missing)
    experiment = await k8s.eventually(
        lambda: (c := _condition(server, "Experiment")) and c["reason"] == "FiguresUnavailable" and c,
        what="Experiment=True/FiguresUnavailable",
    )
    assert experiment["status"] == "True" and "PrometheusUnreachable" in experiment["message"]
    # ... and the policy's own Deployment stays while the variants have no ready pods.
    await asyncio.sleep(2.5)  # more than two periodic passes (1 s), each of which could hand over
    assert server.get(kube.DEPLOYMENTS, NS, NAME) is not None
    for index in range(3):
        await server.create(kube.PODS, NS, _pod(f"{NAME}-a-{index}", "a"))
    assert server.get(kube.DEPLOYMENTS, NS, NAME) is not None  # b has none yet
    await server.create(kube.PODS, NS, _pod(f"{NAME}-b-0", "b"))
    await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, NAME) is None, what="the hand-over")
    for index in range(4):  # its pods go with it, as a ReplicaSet's would
        await server.delete_object(kube.PODS, NS, f"{NAME}-main-{index}")

    # End by hand: the policy's Deployment comes back; the variants stay until its pods are ready.
    await server.patch_object(kube.POLICIES, NS, NAME, {"spec": {"experiment": None}})
    main = await k8s.eventually(
        lambda: server.get(kube.DEPLOYMENTS, NS, NAME), what="the policy's Deployment"
    )
    assert "carpool.dev/variant" not in main["spec"]["selector"]["matchLabels"]
    ended = await k8s.eventually(
        lambda: (c := _condition(server, "Experiment")) and c["reason"] == "Ended" and c, what="Ended"
    )
    assert ended["status"] == "False"
    status = (server.get(kube.POLICIES, NS, NAME) or {})["status"]
    assert status["experiment"]["phase"] == "Ended"
    await asyncio.sleep(2.5)
    assert server.get(kube.DEPLOYMENTS, NS, f"{NAME}-a") is not None
    for index in range(4):
        await server.create(kube.PODS, NS, _pod(f"{NAME}-main-{index}", None))
    await k8s.eventually(
        lambda: (
            server.get(kube.DEPLOYMENTS, NS, f"{NAME}-a") is None
            and server.get(kube.DEPLOYMENTS, NS, f"{NAME}-b") is None
        ),
        what="the variants' Deployments gone",
    )
    # the autoscaler takes over again
    await k8s.eventually(
        lambda: (c := _condition(server, "Scaling")) and c["reason"] != "ExperimentRunning",
        what="the autoscaler back",
    )
