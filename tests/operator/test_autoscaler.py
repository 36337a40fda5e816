"""The autoscaling timer under Kopf against kmock, querying the real Prometheus.

The queue is whatever `spec.autoscaling.query` says: constant PromQL (`vector(40)`) stands for a
surge and `vector(0)` for an idle policy, so these tests follow the operator's decisions without
needing load. tests/operator/test_autoscaling_surge.py scrapes real serving pods under load.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from carpool_operator import kube
from tests.support import kube as k8s
from tests.support.prometheus import PrometheusServer, free_port

pytestmark = pytest.mark.integration

NS = "default"
INTERVAL_S = 0.5
DOWN_WINDOW_S = 3


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prometheus")) as running:
        yield running


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api:
        kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url))
        config = k8s.fast_config(kubeconfig, autoscale_interval_s=INTERVAL_S)
        async with k8s.running_operator(api, config):
            yield api


def policy(name: str, url: str, query: str, *, replicas: int = 1, **autoscaling: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "models": [{"name": "tiny", "source": {"pvc": {"claimName": "models"}}}],
            "serving": {"replicas": replicas},
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 6,
                "targetQueueSize": 8,
                "prometheusUrl": url,
                "query": query,
                "scaleDownStabilizationSeconds": DOWN_WINDOW_S,
                **autoscaling,
            },
        },
    }


def replicas(server: k8s.ApiServer, name: str) -> int | None:
    deployment = server.get(kube.DEPLOYMENTS, NS, name)
    return None if deployment is None else int(deployment["spec"]["replicas"])


def status(server: k8s.ApiServer, name: str) -> dict[str, Any]:
    return dict((server.get(kube.POLICIES, NS, name) or {}).get("status") or {})


def condition(server: k8s.ApiServer, name: str, type_: str) -> dict[str, Any] | None:
    for found in status(server, name).get("conditions") or ():
        if found["type"] == type_:
            return dict(found)
    return None


def events(server: k8s.ApiServer, name: str, reason: str) -> list[dict[str, Any]]:
    return [event for event in server.events(NS, name) if event["reason"] == reason]


async def reach(server: k8s.ApiServer, name: str, count: int, timeout_s: float = 10.0) -> float:
    """Wait until the Deployment asks for `count` replicas; return when (loop time) it was seen."""
    await k8s.eventually(
        lambda: replicas(server, name) == count, timeout_s=timeout_s, what=f"{count} replicas"
    )
    return asyncio.get_running_loop().time()


async def test_a_surge_scales_up_with_an_event_and_status(
    server: k8s.ApiServer, prom: PrometheusServer
) -> None:
    await server.create(kube.POLICIES, NS, policy("surge", prom.url, "vector(40)"))

    await reach(server, "surge", 5)
    [event] = await k8s.eventually(lambda: events(server, "surge", "ScaledUp"), what="a ScaledUp event")
    assert event["type"] == "Normal"
    assert "queue 40 over 1 replicas" in event["message"]
    assert "target 8" in event["message"]
    assert "1 -> 5" in event["message"]

    # The next pass finds 40 waiting over 5 replicas: on target, nothing more to do.
    scaling = await k8s.eventually(
        lambda: (c := condition(server, "surge", "Scaling")) and c["reason"] == "WithinTolerance" and c,
        what="Scaling=False/WithinTolerance",
    )
    assert scaling["status"] == "False"
    current = status(server, "surge")
    assert (current["desiredReplicas"], current["queueSize"]) == (5, 40)
    assert current["lastScaleTime"].endswith("Z")
    metrics = condition(server, "surge", "MetricsAvailable")
    assert metrics is not None
    assert (metrics["status"], metrics["reason"], metrics["message"]) == (
        "True",
        "QueryOK",
        "vector(40) = 40",
    )
    assert replicas(server, "surge") == 5
    assert len(events(server, "surge", "ScaledUp")) == 1


async def test_replicas_fall_only_after_the_down_window(
    server: k8s.ApiServer, prom: PrometheusServer
) -> None:
    await server.create(kube.POLICIES, NS, policy("calm", prom.url, "vector(40)", maxReplicas=3))
    await reach(server, "calm", 3)
    [event] = await k8s.eventually(lambda: events(server, "calm", "ScaledUp"), what="a ScaledUp event")
    assert "capped at maxReplicas 3" in event["message"]

    await server.patch_object(kube.POLICIES, NS, "calm", {"spec": {"autoscaling": {"query": "vector(0)"}}})
    calm_since = asyncio.get_running_loop().time()
    await k8s.eventually(
        lambda: (c := condition(server, "calm", "Scaling")) and c["reason"] == "Stabilizing",
        what="Scaling=False/Stabilizing",
    )
    assert replicas(server, "calm") == 3
    fell_at = await reach(server, "calm", 1, timeout_s=DOWN_WINDOW_S + 5)

    # The last high reading was taken at most one interval before the query changed.
    assert fell_at - calm_since >= DOWN_WINDOW_S - INTERVAL_S
    [event] = await k8s.eventually(lambda: events(server, "calm", "ScaledDown"), what="a ScaledDown event")
    assert "queue 0 over 3 replicas" in event["message"]
    assert "3 -> 1" in event["message"]


async def test_without_prometheus_replicas_hold_and_metrics_are_unavailable(
    server: k8s.ApiServer, tmp_path: Path
) -> None:
    own = PrometheusServer(tmp_path / "prometheus")
    own.start()
    try:
        await server.create(kube.POLICIES, NS, policy("outage", own.url, "vector(40)"))
        await reach(server, "outage", 5)
        await server.patch_object(
            kube.POLICIES, NS, "outage", {"spec": {"autoscaling": {"query": "vector(0)"}}}
        )
        own.stop()
        lost_at = asyncio.get_running_loop().time()

        metrics = await k8s.eventually(
            lambda: (c := condition(server, "outage", "MetricsAvailable")) and c["status"] == "False" and c,
            what="MetricsAvailable=False",
        )
        assert metrics["reason"] == "PrometheusUnreachable"
        assert "holding 5 replicas" in metrics["message"]
        [warning] = await k8s.eventually(lambda: events(server, "outage", "MetricsUnavailable"))
        assert warning["type"] == "Warning"
        assert own.url in warning["message"]

        # Well past the down window, with no reading, nothing moves.
        while asyncio.get_running_loop().time() - lost_at < DOWN_WINDOW_S + 2 * INTERVAL_S:
            assert replicas(server, "outage") == 5
            await asyncio.sleep(0.1)
        assert "queueSize" not in status(server, "outage")
        scaling = condition(server, "outage", "Scaling") or {}
        assert (scaling.get("status"), scaling.get("reason")) == ("False", "NoMetric")

        own.start()
        await k8s.eventually(
            lambda: (c := condition(server, "outage", "MetricsAvailable")) and c["status"] == "True",
            timeout_s=10,
            what="MetricsAvailable=True again",
        )
        await reach(server, "outage", 1)
    finally:
        own.stop()


async def test_no_series_is_no_metric(server: k8s.ApiServer, prom: PrometheusServer) -> None:
    query = 'sum(carpool_queue_size{namespace="$namespace", policy="$policy"})'
    await server.create(kube.POLICIES, NS, policy("unscraped", prom.url, query, replicas=3))
    metrics = await k8s.eventually(
        lambda: (c := condition(server, "unscraped", "MetricsAvailable")) and c["status"] == "False" and c,
        what="MetricsAvailable=False",
    )
    assert metrics["reason"] == "NoSeries"
    assert (
        """'sum(carpool_queue_size{namespace="default", policy="unscraped"})' matched no series"""
        in metrics["message"]
    )
    assert replicas(server, "unscraped") == 3


async def test_switching_autoscaling_off_and_on(server: k8s.ApiServer, prom: PrometheusServer) -> None:
    await server.create(kube.POLICIES, NS, policy("switch", prom.url, "vector(40)", replicas=2))
    await reach(server, "switch", 5)

    await server.patch_object(kube.POLICIES, NS, "switch", {"spec": {"autoscaling": {"enabled": False}}})
    await reach(server, "switch", 2)
    await k8s.eventually(
        lambda: (
            condition(server, "switch", "MetricsAvailable") is None
            and condition(server, "switch", "Scaling") is None
            and "desiredReplicas" not in status(server, "switch")
        ),
        what="the autoscaler's status cleared",
    )
    await k8s.eventually(lambda: events(server, "switch", "AutoscalingDisabled"), what="an Event")
    assert condition(server, "switch", "Ready") is not None  # the reconciler's own are kept

    # Back on with an idle queue: the windows start over from the 2 replicas found.
    patch = {"spec": {"autoscaling": {"enabled": True, "query": "vector(0)"}}}
    await server.patch_object(kube.POLICIES, NS, "switch", patch)
    enabled_at = asyncio.get_running_loop().time()
    await k8s.eventually(lambda: condition(server, "switch", "Scaling"), what="a first pass")
    assert replicas(server, "switch") == 2
    fell_at = await reach(server, "switch", 1, timeout_s=DOWN_WINDOW_S + 5)
    assert fell_at - enabled_at >= DOWN_WINDOW_S - INTERVAL_S
    assert len(events(server, "switch", "AutoscalingDisabled")) == 1


async def test_a_failing_pass_is_retried_no_sooner_than_the_interval(tmp_path: Path) -> None:
    """Kopf runs a failed timer again after the error's delay, not after its interval: the back-off
    starts from the interval, so a failing Prometheus is never queried more often than a working one."""
    interval_s = 2.0
    queried_at: list[float] = []

    async def unavailable(_: web.Request) -> web.Response:
        queried_at.append(asyncio.get_running_loop().time())
        return web.Response(status=503, text="upstream connect error")

    app = web.Application()
    app.router.add_get("/api/v1/query", unavailable)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with k8s.api_server() as api:
            kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url))
            config = k8s.fast_config(kubeconfig, autoscale_interval_s=interval_s)
            # The reconciler's own back-off starts far below the interval here.
            assert config.retry_delay(0) <= interval_s / 4
            async with k8s.running_operator(api, config):
                await api.create(kube.POLICIES, NS, policy("broken", f"http://127.0.0.1:{port}", "vector(1)"))
                await k8s.eventually(lambda: len(queried_at) >= 3, timeout_s=15, what="three queries")
                metrics = condition(api, "broken", "MetricsAvailable")
                assert metrics is not None and metrics["reason"] == "PrometheusRejected"
    finally:
        await runner.cleanup()
    gaps = [later - earlier for earlier, later in itertools.pairwise(queried_at)]
    assert min(gaps[:2]) >= interval_s * 0.9, gaps
