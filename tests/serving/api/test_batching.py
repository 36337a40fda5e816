"""GET /batching/stats and POST /batching/configure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.settings import BatchingConfig
from tests.serving.conftest import ADMIN_TOKEN, Served, serve_app, tiny_settings

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEFAULTS = BatchingConfig.model_validate({})


async def configure(served: Served, body: object) -> tuple[int, dict[str, object]]:
    response = await served.client.post("/batching/configure", json=body, headers=AUTH)
    return response.status_code, response.json()


@pytest.fixture(autouse=True)
async def reset_config(served: Served) -> None:
    served.pool.configure(DEFAULTS.model_dump())


async def test_stats_report_the_config_in_force_and_its_hash(served: Served) -> None:
    await served.client.post("/predict", json={"text": "warm the figures", "models": ["tiny"]})
    stats = (await served.client.get("/batching/stats")).json()
    assert stats["config"] == DEFAULTS.model_dump(mode="json")
    assert stats["config_hash"] == DEFAULTS.config_hash()
    assert stats["strategy"] == stats["effective_strategy"] == "adaptive"
    assert set(stats["system"]["cpu"]) >= {
        "process_cpu_percent",
        "system_cpu_percent",
        "process_memory_rss_bytes",
    }
    assert "gpus" not in stats["system"]
    tiny = stats["models"]["tiny"]
    assert tiny["adaptive"]["mode"] in {"dispatch_at_once", "hold_for_batch"} and tiny["adaptive"]["reason"]
    assert tiny["requests"]["completed"] >= 1
    assert tiny["throughput_rps"] > 0
    assert set(tiny["latency_ms"]) == {"p50", "p95", "p99", "mean"}
    assert tiny["latency_ms"]["p50"] <= tiny["latency_ms"]["p99"]
    assert set(tiny["queue_wait_ms"]) == {"p50", "p95", "p99", "mean"}
    assert tiny["avg_batch_size"] >= 1 and 0 < tiny["batch_utilization"] <= 1
    assert 0 < tiny["padding_efficiency"] <= 1
    assert tiny["queue"]["size"] == 0 and tiny["queue"]["max"] == 256 and tiny["queue"]["overflow"] == 0
    assert 0 <= tiny["device_busy"] <= 1


async def test_configure_changes_the_config_live_and_returns_its_hash(served: Served) -> None:
    change = {"enable": True, "strategy": "batch_optimized", "max_batch_size": 16, "max_wait_time_ms": 100}
    status, body = await configure(served, change)
    assert status == 200
    expected = DEFAULTS.updated(change)
    assert body["config"] == expected.model_dump(mode="json")
    assert body["config_hash"] == expected.config_hash()
    assert body["previous_hash"] == DEFAULTS.config_hash()
    stats = (await served.client.get("/batching/stats")).json()
    assert stats["config_hash"] == expected.config_hash()
    assert stats["models"]["tiny"]["strategy"] == "batch_optimized"
    assert stats["models"]["tiny_trained"]["strategy"] == "batch_optimized"


async def test_configure_is_partial(served: Served) -> None:
    await configure(served, {"max_batch_size": 8})
    status, body = await configure(served, {"strategy": "single_request"})
    assert status == 200
    assert body["config"]["max_batch_size"] == 8  # kept from the previous change
    assert body["config"]["strategy"] == "single_request"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(
            {"min_batch_size": 64}, "min_batch_size (64) must be <= max_batch_size (32)", id="min-above-max"
        ),
        pytest.param(
            {"max_batch_size": 0},
            "max_batch_size: Input should be greater than or equal to 1 (got 0)",
            id="zero-batch",
        ),
        pytest.param(
            {"strategy": "fastest"},
            "strategy: Input should be 'single_request', 'batch_optimized' or 'adaptive'",
            id="bad-strategy",
        ),
        pytest.param(
            {"load_threshold": 1.5}, "load_threshold: Input should be less than or equal to 1", id="threshold"
        ),
        pytest.param(
            {"max_wait_time_ms": "soon"},
            "max_wait_time_ms: Input should be a valid number",
            id="not-a-number",
        ),
        pytest.param({"max_batchsize": 4}, "unknown batching field 'max_batchsize'", id="unknown-field"),
        pytest.param([1, 2], "expected a JSON object", id="not-an-object"),
    ],
)
async def test_an_invalid_config_is_a_422_naming_the_field(served: Served, body: object, needle: str) -> None:
    status, answer = await configure(served, body)
    assert status == 422
    assert needle in str(answer["detail"])
    assert (await served.client.get("/batching/stats")).json()["config_hash"] == DEFAULTS.config_hash()


async def test_configure_needs_the_admin_token(served: Served) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        response = await served.client.post(
            "/batching/configure", json={"max_batch_size": 4}, headers=headers
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "CARPOOL_ADMIN_TOKEN" in response.json()["detail"]
    assert (await served.client.get("/batching/stats")).json()["config"]["max_batch_size"] == 32


async def test_without_an_admin_token_configure_is_open(tiny_models_dir: Path) -> None:
    settings = tiny_settings(tiny_models_dir, admin_token=None, models={"tiny": tiny_models_dir / "tiny"})
    async with serve_app(settings) as open_pod:
        response = await open_pod.client.post("/batching/configure", json={"strategy": "batch_optimized"})
    assert response.status_code == 200


async def test_malformed_configure_body_is_a_400(served: Served) -> None:
    response = await served.client.post(
        "/batching/configure",
        content=b"{strategy: adaptive}",
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["detail"]


async def test_configure_in_the_middle_of_traffic_loses_no_request(served: Served) -> None:
    texts = [f"text {i} " + "x " * (i % 7) for i in range(60)]
    requests = [
        asyncio.ensure_future(served.client.post("/predict", json={"text": t, "models": ["tiny"]}))
        for t in texts
    ]
    await asyncio.sleep(0)
    for strategy in ("batch_optimized", "single_request", "adaptive"):
        status, _ = await configure(
            served, {"strategy": strategy, "max_batch_size": 4, "max_wait_time_ms": 2}
        )
        assert status == 200
        await asyncio.sleep(0.005)
    responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * len(texts)


@pytest.mark.parametrize(
    "batching",
    [
        pytest.param({"strategy": "single_request", "max_batch_size": 4}, id="single-request"),
        pytest.param(
            {"strategy": "batch_optimized", "enable": False, "max_batch_size": 4}, id="batching-off"
        ),
    ],
)
@pytest.mark.asyncio(loop_scope="function")
async def test_a_predict_batch_list_is_one_batch_even_without_dynamic_batching(
    tiny_models_dir: Path, batching: dict[str, object]
) -> None:
    settings = tiny_settings(
        tiny_models_dir,
        models={"tiny": tiny_models_dir / "tiny"},
        batching=BatchingConfig.model_validate(batching),
    )
    texts = [f"item {i} of the list, {'padded ' * i}" for i in range(6)]
    async with serve_app(settings) as served:
        alone = [
            (await served.client.post("/predict", json={"text": text})).json()["predictions"]["tiny"]
            for text in texts
        ]
        before = (await served.client.get("/batching/stats")).json()["models"]["tiny"]["batches"]
        answer = await served.client.post("/predict/batch", json=[{"text": text} for text in texts])
        stats = (await served.client.get("/batching/stats")).json()["models"]["tiny"]
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["predictions"]["tiny"]["label"] for r in results] == [a["label"] for a in alone]
    for result, own in zip(results, alone, strict=True):
        assert result["predictions"]["tiny"]["probabilities"] == pytest.approx(own["probabilities"], abs=1e-5)
    assert stats["batches"] - before == 2  # six items, max_batch_size 4: two forward passes, not six
