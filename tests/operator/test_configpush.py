"""configpush against real `carpool serve` processes: push, verify by hash, report per pod."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from carpool_operator import configpush
from serving import settings as serving_settings
from tests.operator.conftest import ADMIN_TOKEN
from tests.support import pods

pytestmark = pytest.mark.integration


def _targets(serving: list[pods.ServingPod]) -> list[configpush.PodTarget]:
    return [configpush.PodTarget(f"pod-{i}", pod.host, pod.port) for i, pod in enumerate(serving)]


def _config(**fields: object) -> serving_settings.BatchingConfig:
    return serving_settings.BatchingConfig.model_validate(fields)


def _stats(pod: pods.ServingPod) -> dict[str, object]:
    stats: dict[str, object] = httpx.get(f"{pod.url}/batching/stats", timeout=5).json()
    return stats


async def test_a_push_reaches_every_pod_and_is_verified_by_hash(serving_pods: list[pods.ServingPod]) -> None:
    config = _config(strategy="batch_optimized", max_batch_size=12, max_wait_time_ms=25.0, min_batch_size=2)

    results = await configpush.converge(_targets(serving_pods), config, ADMIN_TOKEN)

    assert [(r.ok, r.pushed, r.config_hash) for r in results] == [(True, True, config.config_hash())] * 2
    for pod in serving_pods:
        stats = _stats(pod)
        assert stats["config_hash"] == config.config_hash()
        assert stats["config"] == config.model_dump(mode="json")


async def test_a_pod_already_there_gets_no_post(serving_pods: list[pods.ServingPod]) -> None:
    config = _config(strategy="adaptive", max_batch_size=9, load_threshold=0.6)
    await configpush.converge(_targets(serving_pods), config, ADMIN_TOKEN)
    posts: list[str] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            posts.append(str(request.url))

    async with httpx.AsyncClient(timeout=5, event_hooks={"request": [record]}) as client:
        results = await configpush.converge(_targets(serving_pods), config, ADMIN_TOKEN, client=client)

    assert all(result.ok and not result.pushed for result in results)
    assert posts == []


async def test_a_refused_token_is_reported_and_changes_nothing(serving_pods: list[pods.ServingPod]) -> None:
    before = _config(strategy="batch_optimized", max_batch_size=7)
    await configpush.converge(_targets(serving_pods), before, ADMIN_TOKEN)

    [result] = await configpush.converge(_targets(serving_pods)[:1], _config(max_batch_size=3), "wrong-token")

    assert not result.ok and result.pushed
    assert "refused the admin token (HTTP 401)" in (result.error or "")
    assert result.config_hash == before.config_hash()
    assert _stats(serving_pods[0])["config_hash"] == before.config_hash()


async def test_an_unreachable_pod_fails_alone(serving_pods: list[pods.ServingPod]) -> None:
    config = _config(strategy="batch_optimized", max_batch_size=5)
    gone = configpush.PodTarget("gone", "127.0.0.4", pods.free_port("127.0.0.4"))

    results = await configpush.converge([gone, *_targets(serving_pods)], config, ADMIN_TOKEN, timeout_s=2)

    assert results[0].error == "connection refused or unreachable"
    assert results[0].config_hash is None and not results[0].pushed
    assert all(result.ok for result in results[1:])


async def test_no_pods_no_calls() -> None:
    assert await configpush.converge([], _config(), ADMIN_TOKEN) == []


@pytest.mark.parametrize(
    ("ip", "url"),
    [
        pytest.param("10.1.2.3", "http://10.1.2.3:8000/batching/stats", id="ipv4"),
        pytest.param("fd00::17", "http://[fd00::17]:8000/batching/stats", id="ipv6"),
    ],
)
def test_pod_urls(ip: str, url: str) -> None:
    assert configpush.pod_url(configpush.PodTarget("p", ip, 8000), "/batching/stats") == url


async def _posted_bodies(
    serving: list[pods.ServingPod],
    config: serving_settings.BatchingConfig,
    **models: serving_settings.BatchingConfig,
) -> tuple[list[configpush.PodResult], dict[str, list[dict[str, object]]]]:
    """The results, and the bodies POSTed to each pod (by host), in order."""
    bodies: dict[str, list[dict[str, object]]] = {pod.host: [] for pod in serving}

    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            bodies[request.url.host].append(json.loads(request.content))

    async with httpx.AsyncClient(timeout=5, event_hooks={"request": [record]}) as client:
        results = await configpush.converge(
            _targets(serving), config, ADMIN_TOKEN, models=models, client=client
        )
    return results, bodies


async def test_a_tuned_model_gets_its_own_config_and_is_verified_by_its_hash(
    serving_pods: list[pods.ServingPod],
) -> None:
    config = _config(strategy="batch_optimized", max_batch_size=12)
    tuned = config.updated({"max_batch_size": 3, "max_wait_time_ms": 1.5})
    await configpush.converge(_targets(serving_pods), _config(max_batch_size=20), ADMIN_TOKEN)

    results, bodies = await _posted_bodies(serving_pods, config, tiny=tuned)

    assert [(r.ok, r.pushed, r.config_hash) for r in results] == [(True, True, config.config_hash())] * 2
    assert [dict(r.model_hashes) for r in results] == [{"tiny": tuned.config_hash()}] * 2
    # per pod: the policy's config (which sets every model's), then the tuned model's own
    for posted in bodies.values():
        assert posted == [config.model_dump(mode="json"), {"model": "tiny", **tuned.model_dump(mode="json")}]
    for pod in serving_pods:
        stats: dict[str, Any] = _stats(pod)
        assert stats["config_hash"] == config.config_hash()
        assert stats["models"]["tiny"]["config_hash"] == tuned.config_hash()
        assert stats["models"]["tiny"]["config"] == tuned.model_dump(mode="json")


async def test_a_model_behind_alone_gets_only_its_own_post(serving_pods: list[pods.ServingPod]) -> None:
    config = _config(strategy="adaptive", max_batch_size=10)
    await configpush.converge(
        _targets(serving_pods), config, ADMIN_TOKEN, models={"tiny": config.updated({"max_batch_size": 2})}
    )

    results, bodies = await _posted_bodies(serving_pods, config)  # the tuning removed

    assert all(r.ok and r.pushed and r.model_hashes == {"tiny": config.config_hash()} for r in results)
    assert list(bodies.values()) == [[{"model": "tiny", **config.model_dump(mode="json")}]] * 2


async def test_a_tuned_model_the_pod_does_not_serve_is_reported(serving_pods: list[pods.ServingPod]) -> None:
    config = _config(max_batch_size=6)
    [result] = await configpush.converge(
        _targets(serving_pods)[:1],
        config,
        ADMIN_TOKEN,
        models={"phishing": config.updated({"max_batch_size": 2})},
    )
    assert not result.ok and not result.pushed
    assert result.error == "reports no config for model 'phishing' (it reports tiny)"
