"""A queue surge on a real serving pod, seen by the real Prometheus, scales the Deployment.

Real parts end to end: a `carpool serve` process on 127.0.0.10 (a tiny BERT), Debian's Prometheus
scraping it every second with the labels a cluster's pod relabelling gives (`namespace`, `pod`,
`policy`), `hey` as the load, and the operator under Kopf against kmock with the autoscaler's
default query.

The load is a burst of concurrent requests that the pod's batching config holds in the queue:
batch_optimized with min_batch_size 64 and max_wait_time_ms 1000, so 16 clients keep 16 requests
waiting (a batch leaves only after its wait bound), four times targetQueueSize. This keeps the queue
deterministic without burning the CPU the rest of the suite shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from carpool_operator import kube
from tests.support import kube as k8s
from tests.support import pods
from tests.support.prometheus import PrometheusServer, Target

pytestmark = pytest.mark.e2e

NS = "default"
NAME = "surge"
POD_IP = "127.0.0.10"
TARGET = 4
CLIENTS = 16
MAX_REPLICAS = 3
INTERVAL_S = 1.0
DOWN_WINDOW_S = 4
HOLDING = {
    "BATCHING_STRATEGY": "batch_optimized",
    "ENABLE_DYNAMIC_BATCHING": "true",
    "MAX_BATCH_SIZE": "64",
    "MIN_BATCH_SIZE": "64",
    "MAX_WAIT_TIME_MS": "1000",
    "CARPOOL_DEVICE": "cpu",
}


@pytest.fixture(scope="module")
def scraped_pod(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[pods.ServingPod, PrometheusServer]]:
    """One serving pod and a Prometheus scraping it; both start at once (discovery takes ~5 s)."""
    pod = pods.ServingPod(host=POD_IP, models={"tiny": tiny_bert}, env=HOLDING)
    target = Target.pod(pod.address, namespace=NS, policy=NAME, pod=f"{NAME}-7d9f-x2x4q")
    prom = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [target])
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda start: start(), (prom.start, pod.start)))
        yield pod, prom
    finally:
        prom.stop()
        pod.close()


@contextlib.contextmanager
def load(pod: pods.ServingPod) -> Iterator[None]:
    """`hey` keeping CLIENTS requests in flight until the block ends."""
    body = json.dumps({"text": "Your mailbox is full: verify your password here", "models": ["tiny"]})
    command = ["hey", "-z", "120s", "-c", str(CLIENTS), "-m", "POST", "-T", "application/json", "-d", body]
    hey = subprocess.Popen(
        [*command, f"{pod.url}/predict"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        hey.terminate()
        hey.wait(timeout=10)


def policy(prometheus_url: str) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME},
        "spec": {
            "models": [{"name": "tiny", "source": {"pvc": {"claimName": "models"}}}],
            "strategy": "batch_optimized",
            "batching": {"maxBatchSize": 64, "minBatchSize": 64, "maxWaitTimeMs": 1000},
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": MAX_REPLICAS,
                "targetQueueSize": TARGET,
                "prometheusUrl": prometheus_url,
                "scaleDownStabilizationSeconds": DOWN_WINDOW_S,
            },
        },
    }


def replicas(server: k8s.ApiServer) -> int | None:
    deployment = server.get(kube.DEPLOYMENTS, NS, NAME)
    return None if deployment is None else int(deployment["spec"]["replicas"])


def condition(server: k8s.ApiServer, type_: str) -> dict[str, Any]:
    status = (server.get(kube.POLICIES, NS, NAME) or {}).get("status") or {}
    return next((dict(c) for c in status.get("conditions") or () if c["type"] == type_), {})


async def reach(server: k8s.ApiServer, count: int, timeout_s: float) -> float:
    """Wait until the Deployment asks for `count` replicas; return the wall time it was seen."""
    await k8s.eventually(
        lambda: replicas(server) == count, timeout_s=timeout_s, interval_s=0.02, what=f"{count} replicas"
    )
    return time.time()


def events(server: k8s.ApiServer, reason: str) -> list[dict[str, Any]]:
    return [event for event in server.events(NS, NAME) if event["reason"] == reason]


async def test_queue_surge_scales_up_then_down_and_holds_without_prometheus(
    scraped_pod: tuple[pods.ServingPod, PrometheusServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod, prom = scraped_pod
    async with k8s.api_server() as server:
        kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(server.url))
        config = k8s.fast_config(kubeconfig, autoscale_interval_s=INTERVAL_S)
        async with k8s.running_operator(server, config):
            await server.create(kube.POLICIES, NS, policy(prom.url))
            # The default query finds the pod once Prometheus has discovered and scraped it.
            metrics = await k8s.eventually(
                lambda: (
                    condition(server, "MetricsAvailable").get("status") == "True"
                    and condition(server, "MetricsAvailable")
                ),
                timeout_s=30,
                what="MetricsAvailable=True",
            )
            assert metrics["message"].endswith(" = 0")
            assert replicas(server) == 1

            # 1. A surge: 16 waiting against a target of 4 per replica.
            with load(pod):
                surge_at = time.time()
                up_at = await reach(server, MAX_REPLICAS, timeout_s=15)
                samples = prom.samples(f'carpool_queue_size{{policy="{NAME}"}}', 60)
            # The queue was empty before: the first sample above target is the surge's first scrape.
            scraped_at = min(at for at, value in samples if value > TARGET)
            [event] = await k8s.eventually(lambda: events(server, "ScaledUp"), what="a ScaledUp event")
            assert event["type"] == "Normal"
            assert f"queue {CLIENTS} over 1 replicas" in event["message"]
            assert f"target {TARGET}" in event["message"]
            assert f"1 -> {MAX_REPLICAS}" in event["message"]
            with capsys.disabled():
                print(
                    f"\nsurge -> first scrape above target {scraped_at - surge_at:.2f} s, "
                    f"-> scale-up patch {up_at - scraped_at:.2f} s, total {up_at - surge_at:.2f} s "
                    f"(scrape every 1 s, pass every {INTERVAL_S:g} s)"
                )
            assert up_at - surge_at < 1.0 + INTERVAL_S + 5.0

            # 2. The load stops: the replicas stay for the down window, then go.
            calm_at = time.time()
            fell_at = await reach(server, 1, timeout_s=DOWN_WINDOW_S + 10)
            assert fell_at - calm_at >= DOWN_WINDOW_S
            [event] = await k8s.eventually(lambda: events(server, "ScaledDown"), what="a ScaledDown event")
            assert f"{MAX_REPLICAS} -> 1" in event["message"]
            with capsys.disabled():
                print(
                    f"load stopped -> scale-down patch {fell_at - calm_at:.2f} s (window {DOWN_WINDOW_S} s)"
                )

            # 3. Another surge, then Prometheus goes away and the load with it: nothing moves.
            with load(pod):
                await reach(server, MAX_REPLICAS, timeout_s=15)
                prom.stop()
            lost_at = asyncio.get_running_loop().time()
            unavailable = await k8s.eventually(
                lambda: (
                    condition(server, "MetricsAvailable").get("status") == "False"
                    and condition(server, "MetricsAvailable")
                ),
                timeout_s=5,
                what="MetricsAvailable=False",
            )
            assert unavailable["reason"] == "PrometheusUnreachable"
            while asyncio.get_running_loop().time() - lost_at < DOWN_WINDOW_S + 2 * INTERVAL_S:
                assert replicas(server) == MAX_REPLICAS
                await asyncio.sleep(0.1)
            assert condition(server, "Scaling")["reason"] == "NoMetric"
