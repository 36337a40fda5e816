"""An app serving the tiny BERTs, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI

from serving import app as app_module
from serving.metrics import Metrics
from serving.pool import ModelPool
from serving.settings import ServerSettings

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
    from contextlib import asynccontextmanager

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
