"""End to end: a live A/B experiment of two strategies, measured by the real Prometheus scraping
two real `carpool serve` pods, written to the policy's status by the operator under Kopf against
kmock, and promoted by its rule.

The operator creates one Deployment per variant; each pod here is started with the environment
its variant's Deployment gives it (CARPOOL_VARIANT and the variant's batching variables), and a
Pod object carrying the Deployment's template labels points at it (no kubelet or controllers
here). Prometheus labels the series with namespace, policy and pod, as the scrape configuration
of docs/autoscaling.md does in a cluster; the pods add `variant` themselves.

Run with `-s` to see the status block the operator wrote. The slow test does the same with the
real MiniLM under concurrent load, adaptive against batch_optimized: the figures of this machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from carpool_bench import texts
from carpool_operator import kube
from serving import metrics as serving_metrics
from tests.support import kube as k8s
from tests.support import pods
from tests.support.prometheus import PrometheusServer, Target

NS = "default"
NAME = "ab"
TOKEN = "experiment-test-token"
HOSTS = {"a": "127.0.0.6", "b": "127.0.0.7"}


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


def _status(server: k8s.ApiServer) -> dict[str, Any]:
    return dict((server.get(kube.POLICIES, NS, NAME) or {}).get("status") or {})


def _pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """What the variant's Deployment sets that a `carpool serve` here can take as it is."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    for name in ("CARPOOL_HOST", "CARPOOL_PORT", "CARPOOL_MODELS"):  # this machine's, not the pod's
        env.pop(name, None)
    return {**env, "CARPOOL_ADMIN_TOKEN": TOKEN, "CARPOOL_DEVICE": "cpu", "CARPOOL_WORKERS": "0"}


async def _sequential(url: str, model: str, corpus: list[str]) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=30) as client:
        for text in corpus:
            started = time.perf_counter()
            response = await client.post(f"{url}/predict", json={"text": text, "models": [model]})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return latencies


async def _concurrent(url: str, model: str, corpus: list[str], clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client_loop(offset: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            index = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                text = corpus[index % len(corpus)]
                response = await client.post(f"{url}/predict", json={"text": text, "models": [model]})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                index += clients

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return latencies


async def _experiment(
    server: k8s.ApiServer,
    prom: PrometheusServer,
    spec: dict[str, Any],
    models: dict[str, Path] | None,
    model: str,
    drive: Callable[[str], Any],
    done: Callable[[dict[str, Any], float], bool],
    timeout_s: float,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Create the policy, start each variant's pod as its Deployment says, drive each with
    `drive(url)`, and return status.experiment once `done` holds, with the clients' latencies."""
    port = pods.free_port(HOSTS["a"])
    spec = {**spec, "serving": {"replicas": 2, "port": port}}
    spec["experiment"] = {**spec["experiment"], "prometheusUrl": prom.url}
    token = base64.b64encode(TOKEN.encode()).decode()
    await server.create(kube.SECRETS, NS, {"metadata": {"name": f"{NAME}-admin"}, "data": {"token": token}})
    await server.create(kube.POLICIES, NS, {"metadata": {"name": NAME}, "spec": spec})

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
        variant: pods.ServingPod(host=host, port=port, models=models, env=_pod_env(deployments[variant]))
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
        await asyncio.gather(*(_sequential(pod.url, model, ["warm-up"]) for pod in serving.values()))
        await asyncio.to_thread(
            prom.wait_for,
            f'count(carpool_requests_total{{policy="{NAME}", variant!=""}})',
            lambda value: value == 2,
        )
        started = await k8s.eventually(
            lambda: (_status(server).get("experiment") or {}).get("startTime"), what="the window's start"
        )
        assert started.endswith("Z")
        measured = dict(
            zip(HOSTS, await asyncio.gather(*(drive(pod.url) for pod in serving.values())), strict=True)
        )
        load_ended = time.time()
        try:
            final = await k8s.eventually(
                lambda: (e := _status(server).get("experiment") or {}) and done(e, load_ended) and e,
                timeout_s=timeout_s,
                what="the experiment's figures",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {json.dumps(_status(server), indent=1)}") from None
    print("\nstatus.experiment:\n" + json.dumps(final, indent=2))
    return final, measured


@pytest.mark.e2e
async def test_two_strategies_are_measured_compared_and_the_winner_promoted(
    server: k8s.ApiServer, prom: PrometheusServer, tiny_bert: Path
) -> None:
    requests, min_samples = 300, 200
    spec = {
        "models": [{"name": "tiny", "source": {"pvc": {"claimName": "models"}}}],
        "strategy": "adaptive",
        "batching": {"maxBatchSize": 8},
        "experiment": {
            "variants": [
                # the control holds every lone request up to 25 ms for company
                {"name": "a", "strategy": "batch_optimized", "batching": {"maxWaitTimeMs": 25}},
                {"name": "b", "strategy": "single_request"},
            ],
            "promote": {"after": "2s", "metric": "p99", "minSamples": min_samples},
        },
    }
    final, measured = await _experiment(
        server,
        prom,
        spec,
        {"tiny": tiny_bert},
        "tiny",
        lambda url: _sequential(url, "tiny", [f"message {i}" for i in range(requests)]),
        lambda e, _: e.get("phase") == "Promoted",
        timeout_s=30,
    )
    a, b = final["variants"]
    assert (a["name"], b["name"], final["control"], final["winner"]) == ("a", "b", "a", "b")
    for entry in (a, b):
        # The figures are Prometheus' increase() over the window: whole requests, give or take
        # its extrapolation to the window's edges.
        assert min_samples <= entry["requests"] <= requests + 30
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


def _bucket_of(seconds: float) -> float:
    return next(bound for bound in (*serving_metrics.LATENCY_BUCKETS, math.inf) if seconds <= bound)


@pytest.mark.e2e
@pytest.mark.slow
async def test_adaptive_against_batch_optimized_with_minilm_under_load(
    server: k8s.ApiServer, prom: PrometheusServer
) -> None:
    # The question, on this machine: adaptive with a 20 ms wait, or batch_optimized?
    # Eight clients per pod for 20 s, varied security-like texts; no promotion: the figures.
    clients, seconds = 8, 20.0
    corpus = texts.generate_texts(256, seed=0)
    spec = {
        "strategy": "adaptive",
        "batching": {"maxBatchSize": 16},
        "experiment": {
            "variants": [
                {"name": "a", "strategy": "adaptive", "batching": {"maxWaitTimeMs": 20}},
                {"name": "b", "strategy": "batch_optimized"},
            ]
        },
    }

    def settled(status: dict[str, Any], load_ended: float) -> bool:
        # figures whose window reaches 2 s past the load's end (the last scrapes are in)
        start = datetime.datetime.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ")
        reach = start.replace(tzinfo=datetime.UTC).timestamp() + status["windowSeconds"]
        return reach > load_ended + 2 and all("p99Ms" in v for v in status["variants"])

    final, measured = await _experiment(
        server,
        prom,
        spec,
        None,
        "minilm",
        lambda url: _concurrent(url, "minilm", corpus, clients, seconds),
        settled,
        timeout_s=60,
    )
    for entry in final["variants"]:
        sent = len(measured[entry["name"]])
        assert abs(entry["requests"] - sent) <= max(10, sent // 10), (entry, sent)
        assert entry["errors"] == 0
        # The pod times a request from its handler's start, the client from its send: the status'
        # median (interpolated within its bucket) is never above the bucket of the clients' one.
        client = sorted(measured[entry["name"]])[sent // 2]
        assert entry["p50Ms"] / 1000 <= _bucket_of(client)
    b = final["variants"][1]
    assert set(b["versusControl"]) >= {"latencyPValue", "latencySignificant", "errorRatePValue"}
    # what the operator concluded is what the pure test concludes on the same buckets
    assert (b["versusControl"]["latencyPValue"] < final["significance"]) == b["versusControl"][
        "latencySignificant"
    ]
