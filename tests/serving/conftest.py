"""An app serving the tiny BERTs, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI

from serving import app as app_module
from serving.metrics import Metrics
from serving.models.base import Model
from serving.pool import ModelPool
from serving.settings import BatchingConfig, ServerSettings
from tests.support.models import GatedModel

ADMIN_TOKEN = "test-admin-token"


@dataclass
class Served:
    app: FastAPI
    pool: ModelPool
    client: httpx.AsyncClient
    settings: ServerSettings


def tiny_settings(models_dir: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "models": {"tiny": models_dir / "tiny", "tiny_trained": models_dir / "tiny_trained"},
        "device": "cpu",
        "admin_token": ADMIN_TOKEN,
        "max_text_chars": 200,
        "max_length": 32,
        # Exact answers, the same alone or in any batch: onnx-int8 (what auto would pick for these
        # card-less models) quantises activations per batch. test_onnx.py covers the runtimes.
        "runtime": "torch",
        **overrides,
    }
    return ServerSettings.model_validate(values)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tiny_models_dir: Path) -> AsyncIterator[Served]:
    """The app over both tiny models, loaded and warm; shared by a module's tests."""
    async with serve_app(tiny_settings(tiny_models_dir)) as result:
        yield result


def serve_app(settings: ServerSettings, customise: Callable[[ModelPool], None] | None = None) -> Any:
    @asynccontextmanager
    async def running() -> AsyncIterator[Served]:
        metrics = Metrics(enabled=settings.enable_metrics)
        pool = ModelPool.from_settings(settings, metrics, None)
        if customise is not None:
            customise(pool)
        await pool.start_loading()
        app = app_module.create_app(settings, pool)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            try:
                yield Served(app, pool, client, settings)
            finally:
                await pool.drain()

    return running()


@asynccontextmanager
async def gated_app(max_queue_size: int, *others: Model) -> AsyncIterator[tuple[GatedModel, Served]]:
    """The app over a `GatedModel` named "gated" (and `others`), single_request with a queue of
    `max_queue_size`: its first request holds the model thread until the test opens the gate, so
    the queue fills as the test says. The gate opens, at the latest, when the app stops."""
    model = GatedModel()
    config = BatchingConfig.model_validate({"strategy": "single_request", "max_queue_size": max_queue_size})
    pool = ModelPool.from_models([model, *others], config, metrics=Metrics())
    await pool.start_loading()
    settings = tiny_settings(Path("/unused"))
    app = app_module.create_app(settings, pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
        try:
            yield model, Served(app, pool, client, settings)
        finally:
            model.gate.set()
            await pool.drain()


async def until_queued(pool: ModelPool, name: str, size: int) -> None:
    """Until `size` requests wait in `name`'s queue (they pass through the ASGI app first)."""
    for _ in range(1000):
        if pool.served[name].engine.queue_size == size:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{name}'s queue never held {size} requests")
