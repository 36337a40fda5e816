"""The FastAPI application of the serving pod, and how `carpool serve` runs it.

`create_app(settings)` builds the app around a `ModelPool`. The lifespan starts loading the models
in the background (so /health answers 503 until every model is warm) and drains every queue on
shutdown: requests already queued still get their answers. One handler maps every error to its
status by walking the exception's MRO (`errors.status_for`). Run with one uvicorn worker (the
batcher lives in the process; scale with replicas), uvloop and httptools.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import errors, hardware
from serving.api import batching, health, inference, v2
from serving.metrics import Metrics
from serving.pool import ModelPool
from serving.settings import ServerSettings

__all__ = ["create_app", "serve"]

log = logging.getLogger("carpool.app")


def create_app(settings: ServerSettings, pool: ModelPool | None = None) -> FastAPI:
    """The app; without `pool`, the models come from `settings` (loaded once the app starts)."""
    if pool is None:
        gpu = hardware.GpuProbe.detect()
        metrics = Metrics(enabled=settings.enable_metrics, gpu=gpu)
        pool = ModelPool.from_settings(settings, metrics, gpu)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool.start_loading()
        try:
            yield
        finally:
            await app.state.pool.drain()

    app = FastAPI(
        title="Carpool serving pod",
        summary="Dynamic batching for transformer text classifiers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.include_router(inference.router)
    app.include_router(batching.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.add_exception_handler(errors.CarpoolError, _carpool_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


async def _carpool_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.CarpoolError)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.QueueFull):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="carpool"'
    return JSONResponse(exc.body(), status_code=errors.status_for(exc), headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return JSONResponse(
            errors.MalformedBody(f"malformed JSON: {problems[0].get('msg')}").body(), status_code=400
        )
    detail = "; ".join(f"{'.'.join(str(p) for p in pr.get('loc', ()))}: {pr.get('msg')}" for pr in problems)
    return JSONResponse(errors.InvalidInput(detail).body(), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body: dict[str, Any] = {"error": "HTTPError", "detail": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def serve(settings: ServerSettings) -> None:
    """Run the pod in this process until SIGINT/SIGTERM (one uvicorn worker, uvloop, httptools)."""
    import uvicorn

    level = logging.INFO if settings.enable_logging else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=settings.enable_logging,
        log_level="info" if settings.enable_logging else "warning",
        timeout_graceful_shutdown=30,
    )
