"""Model-specific tuning on a real pod: `carpool serve` with two tiny BERTs, one tuned at start
(CARPOOL_MODEL_BATCHING), then each tuned live through POST /batching/configure's `model`.

The pod runs its HTTP workers in front of the model process (the default), so every change and
every report crosses the same socket a production pod uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.settings import BatchingConfig
from tests.support import pods

pytestmark = pytest.mark.integration

TOKEN = "tuning-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = "fast:max_batch_size=4,strategy=batch_optimized,max_wait_time_ms=50"
DEFAULTS = BatchingConfig.model_validate({})
FAST = DEFAULTS.updated({"max_batch_size": 4, "strategy": "batch_optimized", "max_wait_time_ms": 50})


@pytest.fixture(scope="module")
def pod(tiny_bert: Path) -> Iterator[pods.ServingPod]:
    env = {"CARPOOL_ADMIN_TOKEN": TOKEN, "CARPOOL_DEVICE": "cpu", "CARPOOL_MODEL_BATCHING": START}
    with pods.ServingPod(models={"tiny": tiny_bert, "fast": tiny_bert}, env=env) as started:
        yield started.start()


@pytest.fixture
def client(pod: pods.ServingPod) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pod.url, timeout=30) as session:
        yield session
        # Back to the start-up state: the pod's config, then fast's own.
        session.post("/batching/configure", json=DEFAULTS.model_dump(mode="json"), headers=AUTH)
        body = {"model": "fast", **FAST.model_dump(mode="json")}
        assert session.post("/batching/configure", json=body, headers=AUTH).status_code == 200


def _stats(client: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = client.get("/batching/stats").json()
    return stats


def _hashes(client: httpx.Client) -> tuple[str, dict[str, str]]:
    stats = _stats(client)
    return stats["config_hash"], {name: model["config_hash"] for name, model in stats["models"].items()}


def test_a_pod_starts_with_each_models_own_config(client: httpx.Client) -> None:
    stats = _stats(client)
    assert stats["config"] == DEFAULTS.model_dump(mode="json")
    assert stats["config_hash"] == DEFAULTS.config_hash()  # the pod's config, as before
    fast, tiny = stats["models"]["fast"], stats["models"]["tiny"]
    assert fast["config"] == FAST.model_dump(mode="json") and fast["config_hash"] == FAST.config_hash()
    assert fast["tuned"] == {"max_batch_size": 4, "strategy": "batch_optimized", "max_wait_time_ms": 50.0}
    assert fast["strategy"] == "batch_optimized" and fast["queue"]["max"] == DEFAULTS.max_queue_size
    assert tiny["config_hash"] == DEFAULTS.config_hash() and tiny["tuned"] == {}


def test_configure_with_a_model_changes_that_model_only(client: httpx.Client) -> None:
    response = client.post("/batching/configure", json={"model": "tiny", "max_queue_size": 7}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    tuned = DEFAULTS.updated({"max_queue_size": 7})
    assert body == {
        "model": "tiny",
        "config": tuned.model_dump(mode="json"),
        "config_hash": tuned.config_hash(),
        "previous_hash": DEFAULTS.config_hash(),
    }
    pod_hash, models = _hashes(client)
    assert pod_hash == DEFAULTS.config_hash()
    assert models == {"tiny": tuned.config_hash(), "fast": FAST.config_hash()}
    assert _stats(client)["models"]["tiny"]["queue"]["max"] == 7  # the engine runs it


def test_a_pod_wide_change_sets_its_fields_on_every_model(client: httpx.Client) -> None:
    response = client.post("/batching/configure", json={"max_wait_time_ms": 5}, headers=AUTH)
    assert response.status_code == 200
    assert "model" not in response.json()
    pod_hash, models = _hashes(client)
    assert pod_hash == DEFAULTS.updated({"max_wait_time_ms": 5}).config_hash()
    # fast keeps the fields the change did not name (its batch cap, its strategy)
    assert models["fast"] == FAST.updated({"max_wait_time_ms": 5}).config_hash()
    assert models["tiny"] == pod_hash


def test_an_unknown_model_is_a_404_naming_the_served_ones(client: httpx.Client) -> None:
    before = _hashes(client)
    response = client.post("/batching/configure", json={"model": "fsat", "max_batch_size": 2}, headers=AUTH)
    assert response.status_code == 404
    assert "unknown model 'fsat'" in response.json()["detail"]
    assert "tiny" in response.json()["detail"] and "fast" in response.json()["detail"]
    assert _hashes(client) == before


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(
            {"model": "fast", "min_batch_size": 8},
            "of model 'fast': Value error, min_batch_size (8) must be <= max_batch_size (4)",
            id="model-min-above-its-max",
        ),
        pytest.param(
            {"min_batch_size": 6},
            "of model 'fast': Value error, min_batch_size (6) must be <= max_batch_size (4)",
            id="pod-wide-change-one-model-refuses",
        ),
        pytest.param(
            {"model": "tiny", "max_batch_size": 0},
            "max_batch_size: Input should be greater than or equal to 1 (got 0)",
            id="model-bad-value",
        ),
        pytest.param(
            {"model": 3, "max_batch_size": 2}, "model: Input should be a valid string", id="not-a-name"
        ),
    ],
)
def test_a_refused_change_changes_nothing_anywhere(
    client: httpx.Client, body: dict[str, Any], needle: str
) -> None:
    before = _hashes(client)
    response = client.post("/batching/configure", json=body, headers=AUTH)
    assert response.status_code == 422
    assert needle in response.json()["detail"]
    assert _hashes(client) == before


def test_each_model_batches_by_its_own_cap(client: httpx.Client, pod: pods.ServingPod) -> None:
    """fast (cap 4) and tiny (cap 32) take the same burst of 24, each holding a batch up to 200 ms
    to fill (room enough for the burst to arrive on a busy machine)."""
    client.post(
        "/batching/configure", json={"strategy": "batch_optimized", "max_wait_time_ms": 200}, headers=AUTH
    )
    client.post("/batching/configure", json={"model": "fast", "max_batch_size": 4}, headers=AUTH)

    async def burst(model: str) -> None:
        async with httpx.AsyncClient(base_url=pod.url, timeout=30) as session:
            answers = await asyncio.gather(
                *(session.post("/predict", json={"text": f"text {i}", "models": [model]}) for i in range(24))
            )
        assert [answer.status_code for answer in answers] == [200] * 24

    asyncio.run(burst("fast"))
    asyncio.run(burst("tiny"))
    largest = _largest_batch(client.get("/metrics").text)
    assert largest["fast"] <= 4
    assert largest["tiny"] > 4


def _largest_batch(metrics: str) -> dict[str, float]:
    """Each model's largest batch, as the bound of the smallest carpool_batch_size bucket holding
    every batch it ran."""
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "carpool_batch_size_bucket" and sample.labels["le"] != "+Inf":
                buckets.setdefault(sample.labels["model"], {})[float(sample.labels["le"])] = sample.value
    return {
        model: min(le for le, count in counts.items() if count == max(counts.values()))
        for model, counts in buckets.items()
    }


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        pytest.param("slow:max_batch_size=4", "unknown model 'slow'", id="unknown-model"),
        pytest.param(
            "tiny:min_batch_size=64",
            "tiny.min_batch_size (64) must be <= tiny.max_batch_size (32)",
            id="min-above-max",
        ),
        pytest.param("tiny:max_batchsize=4", "unknown batching field 'max_batchsize'", id="unknown-field"),
        pytest.param("tiny max_batch_size=4", "NAME:FIELD=VALUE", id="no-colon"),
    ],
)
def test_a_bad_start_up_override_stops_the_pod_naming_it(tiny_bert: Path, value: str, needle: str) -> None:
    result = pods.refused_start(tiny_bert, {"CARPOOL_MODEL_BATCHING": value, "CARPOOL_DEVICE": "cpu"})
    assert result.returncode != 0
    assert "CARPOOL_MODEL_BATCHING" in result.stderr + result.stdout
    assert needle in result.stderr + result.stdout
