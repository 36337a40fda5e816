"""End to end: a live A/B experiment of two strategies, measured by the real Prometheus scraping
two real `carpool serve` pods, written to the policy's status by the operator under Kopf against
kmock, and promoted by its rule.

The operator creates one Deployment per variant; each pod here is started with the environment
its variant's Deployment gives it (CARPOOL_VARIANT and the variant's batching variables), and a
Pod object carrying the Deployment's template labels points at it (no kubelet or controllers
here). Prometheus labels the series with namespace, policy and pod, as the scrape configuration
of docs/autoscaling.md does in a cluster; the pods add `variant` themselves.

Run with `-s` to see the status block the operator wrote (the figures of this machine).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from carpool_operator import kube
from tests.support import kube as k8s
from tests.support import pods
from tests.support.prometheus import PrometheusServer, Target

pytestmark = pytest.mark.e2e

NS = "default"
NAME = "ab"
TOKEN = "experiment-test-token"
HOSTS = {"a": "127.0.0.6", "b": "127.0.0.7"}
REQUESTS = 300
MIN_SAMPLES = 200


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path / "prometheus", scrape_interval_s=0.5) as running:
        yield running


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api:
        kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url))
        async with k8s.running_operator(api, k8s.fast_config(kubeconfig, experiment_interval_s=1.0)):
            yield api


def _policy(prometheus_url: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME},
        "spec": {
            "models": [{"name": "tiny", "source": {"pvc": {"claimName": "models"}}}],
            "strategy": "adaptive",
            "batching": {"maxBatchSize": 8},
            "serving": {"replicas": 2, "port": port},
            "experiment": {
                "prometheusUrl": prometheus_url,
                "variants": [
                    # the control holds every lone request up to 25 ms for company
                    {"name": "a", "strategy": "batch_optimized", "batching": {"maxWaitTimeMs": 25}},
                    {"name": "b", "strategy": "single_request"},
                ],
                "promote": {"after": "2s", "metric": "p99", "minSamples": MIN_SAMPLES},
            },
        },
    }


def _status(server: k8s.ApiServer) -> dict[str, Any]:
    return dict((server.get(kube.POLICIES, NS, NAME) or {}).get("status") or {})


def _pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """What the variant's Deployment sets that a `carpool serve` here can take as it is."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    for name in ("CARPOOL_HOST", "CARPOOL_PORT", "CARPOOL_MODELS"):  # this machine's, not the pod's
        env.pop(name, None)
    return {**env, "CARPOOL_ADMIN_TOKEN": TOKEN, "CARPOOL_DEVICE": "cpu", "CARPOOL_WORKERS": "0"}


async def _load(url: str, count: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=10) as client:
        for index in range(count):
            started = time.perf_counter()
            response = await client.post(
                f"{url}/predict", json={"text": f"message {index}", "models": ["tiny"]}
            )
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return latencies


async def test_two_strategies_are_measured_compared_and_the_winner_promoted(
    server: k8s.ApiServer, prom: PrometheusServer, tiny_bert: Path
) -> None:
    port = pods.free_port(HOSTS["a"])
    token = base64.b64encode(TOKEN.encode()).decode()
    await server.create(kube.SECRETS, NS, {"metadata": {"name": f"{NAME}-admin"}, "data": {"token": token}})
    await server.create(kube.POLICIES, NS, _policy(prom.url, port))

    deployments = {
        variant: await k8s.eventually(
            lambda variant=variant: server.get(kube.DEPLOYMENTS, NS, f"{NAME}-{variant}"), what=variant
        )
        for variant in HOSTS
    }
    assert server.get(kube.DEPLOYMENTS, NS, NAME) is None  # the variants replace the policy's own
    for variant, deployment in deployments.items():
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["selector"]["matchLabels"]["carpool.dev/variant"] == variant
    service = await k8s.eventually(lambda: server.get(kube.SERVICES, NS, NAME), what="the Service")
    assert "carpool.dev/variant" not in service["spec"]["selector"]  # one Service over both

    serving = {
        variant: pods.ServingPod(
            host=host, port=port, models={"tiny": tiny_bert}, env=_pod_env(deployments[variant])
        )
        for variant, host in HOSTS.items()
    }
    with contextlib.ExitStack() as stack:
        for pod in serving.values():
            stack.callback(pod.close)
        await asyncio.to_thread(pods.start_all, list(serving.values()))
        for variant, pod in serving.items():
            labels = deployments[variant]["spec"]["template"]["metadata"]["labels"]
            obj = k8s.ready_pod(f"{NAME}-{variant}-0", NAME, pod.host)
            obj["metadata"]["labels"] = dict(labels)
            await server.create(kube.PODS, NS, obj)
        prom.set_targets(
            [
                Target.pod(pod.address, namespace=NS, policy=NAME, pod=f"{NAME}-{variant}-0")
                for variant, pod in serving.items()
            ]
        )
        await asyncio.to_thread(prom.wait_for_targets_up, 2)
        # Each pod's series exist before the window's traffic (Prometheus counts a counter's
        # increase from its first scrape on).
        await asyncio.gather(*(_load(pod.url, 1) for pod in serving.values()))
        await asyncio.to_thread(
            prom.wait_for,
            'count(carpool_requests_total{policy="ab", variant!=""})',
            lambda value: value == 2,
        )
        started = await k8s.eventually(
            lambda: (_status(server).get("experiment") or {}).get("startTime"), what="the window's start"
        )
        assert started.endswith("Z")

        measured = dict(
            zip(
                HOSTS,
                await asyncio.gather(*(_load(pod.url, REQUESTS) for pod in serving.values())),
                strict=True,
            )
        )

        try:
            final = await k8s.eventually(
                lambda: (e := _status(server).get("experiment") or {}).get("phase") == "Promoted" and e,
                timeout_s=30,
                what="the promotion",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {json.dumps(_status(server), indent=1)}") from None
    print("\nstatus.experiment:\n" + json.dumps(final, indent=2))
    a, b = final["variants"]
    assert (a["name"], b["name"], final["control"], final["winner"]) == ("a", "b", "a", "b")
    for entry in (a, b):
        # The figures are Prometheus' increase() over the window: whole requests, give or take
        # its extrapolation to the window's edges.
        assert MIN_SAMPLES <= entry["requests"] <= REQUESTS + 30
        assert entry["errors"] == 0 and entry["errorRate"] == 0
        assert entry["pods"] == 1 and entry["throughput"] > 0
    assert a["strategy"] == "batch_optimized" and b["strategy"] == "single_request"
    # What the clients measured, and what the status says, agree on the order
    client_p50 = {v: sorted(lat)[len(lat) // 2] for v, lat in measured.items()}
    assert client_p50["a"] > client_p50["b"] + 0.015
    assert a["p50Ms"] > b["p50Ms"]
    assert b["versusControl"]["latencySignificant"] is True and b["versusControl"]["latencyPValue"] < 1e-6
    assert b["versusControl"]["errorRateSignificant"] is False

    # The winner's knobs are the policy's now, and the experiment is over
    policy = server.get(kube.POLICIES, NS, NAME) or {}
    assert "experiment" not in policy["spec"]
    assert policy["spec"]["strategy"] == "single_request"
    [event] = [e for e in server.events(NS, NAME) if e["reason"] == "ExperimentPromoted"]
    assert "variant 'b' beat the control on p99" in event["message"]
    condition = await k8s.eventually(
        lambda: next((c for c in _status(server).get("conditions", []) if c["type"] == "Experiment"), None),
        what="the Experiment condition",
    )
    assert (condition["status"], condition["reason"]) == ("False", "Promoted")
    # The policy's own Deployment comes back; the variants' stay until its pods are ready.
    await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, NAME), what="the policy's Deployment")
    assert server.get(kube.DEPLOYMENTS, NS, f"{NAME}-a") is not None
