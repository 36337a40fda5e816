"""Deadlines through the HTTP API: X-Request-Timeout-Ms, timeout_ms, the pod's default; 504 and its counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import app as app_module
from serving.metrics import Metrics
from serving.pool import ModelPool
from serving.settings import BatchingConfig
from tests.serving.conftest import tiny_settings
from tests.support.models import GatedModel

pytestmark = [pytest.mark.unit]


@dataclass
class Held:
    """A pod whose model is busy until the test opens its gate: everything else queues."""

    model: GatedModel
    pool: ModelPool
    client: httpx.AsyncClient
    first: asyncio.Future[httpx.Response]


async def _held(default_ms: float | None = None) -> AsyncIterator[Held]:
    model = GatedModel()
    config = BatchingConfig.model_validate({"strategy": "single_request", "max_queue_size": 64})
    pool = ModelPool.from_models([model], config, metrics=Metrics())
    await pool.start_loading()
    settings = tiny_settings(Path("/unused"), request_timeout_ms=default_ms)
    app = app_module.create_app(settings, pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
        first = asyncio.ensure_future(client.post("/predict", json={"text": "first"}))
        await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 5)
        try:
            yield Held(model, pool, client, first)
        finally:
            model.gate.set()
            await first
            await pool.drain()


@pytest.fixture
async def held() -> AsyncIterator[Held]:
    async for value in _held():
        yield value


@pytest.fixture
async def held_with_default() -> AsyncIterator[Held]:
    async for value in _held(default_ms=80):
        yield value


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"X-Request-Timeout-Ms": "50"}, {"text": "late"}, id="header"),
        pytest.param({}, {"text": "late", "timeout_ms": 50}, id="field"),
        pytest.param(
            {"X-Request-Timeout-Ms": "5000"}, {"text": "late", "timeout_ms": 50}, id="shortest-wins"
        ),
    ],
)
async def test_a_request_past_its_deadline_gets_504_with_the_time_it_waited(
    held: Held, headers: dict[str, str], body: dict[str, Any]
) -> None:
    answer = await held.client.post("/predict", json=body, headers=headers)
    assert answer.status_code == 504
    detail = answer.json()
    assert detail["error"] == "DeadlineExceeded" and detail["timeout_ms"] == pytest.approx(50, abs=15)
    assert detail["waited_ms"] >= 50 and "dropped before reaching the model" in detail["detail"]
    held.model.gate.set()
    await held.first
    assert all("late" not in batch for batch in held.model.batches)
    stats = (await held.client.get("/batching/stats")).json()["models"]["gated"]["requests"]
    assert stats["expired"] == 1
    metrics = (await held.client.get("/metrics")).text
    assert 'carpool_requests_total{endpoint="/predict",model="gated",outcome="expired"} 1.0' in metrics


async def test_the_pods_default_deadline_may_be_shortened_never_lengthened(held_with_default: Held) -> None:
    client = held_with_default.client
    loop = asyncio.get_running_loop()
    started = loop.time()
    longer = await client.post("/predict", json={"text": "longer"}, headers={"X-Request-Timeout-Ms": "60000"})
    assert longer.status_code == 504 and longer.json()["timeout_ms"] == pytest.approx(80, abs=15)
    shorter = await client.post("/predict", json={"text": "shorter", "timeout_ms": 20})
    assert shorter.status_code == 504 and shorter.json()["timeout_ms"] == pytest.approx(20, abs=15)
    assert loop.time() - started < 5


async def test_batch_items_share_the_requests_deadline(held: Held) -> None:
    answer = await held.client.post(
        "/predict/batch",
        json=[{"text": "a"}, {"text": "b", "timeout_ms": 30}],
        headers={"X-Request-Timeout-Ms": "60"},
    )
    results = answer.json()["results"]
    assert [r["error"]["status"] for r in results] == [504, 504]
    assert [r["error"]["timeout_ms"] for r in results] == pytest.approx([60, 30], abs=15)


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "1e12", ""])
async def test_a_bad_timeout_header_is_a_422_naming_it(held: Held, value: str) -> None:
    answer = await held.client.post("/predict", json={"text": "x"}, headers={"X-Request-Timeout-Ms": value})
    assert answer.status_code == 422
    assert "X-Request-Timeout-Ms" in answer.json()["detail"]


@pytest.mark.parametrize("value", [0, -1, "50", True, 1e12])
async def test_a_bad_timeout_field_is_a_422_naming_it(held: Held, value: Any) -> None:
    answer = await held.client.post("/predict", json={"text": "x", "timeout_ms": value})
    assert answer.status_code == 422
    assert "timeout_ms" in answer.json()["detail"]
