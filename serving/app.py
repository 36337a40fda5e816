"""The serving pod's ASGI application.

`create_app(settings, backend)` builds the FastAPI app over a `Backend` (a `ModelPool` in this
process, or the pod's model process seen from an HTTP worker) and puts `fastpath.FastPath` in
front of it, so the inference endpoints skip FastAPI's per-request machinery. Without a backend the
models come from `settings`. One handler maps every error to its status by walking the exception's
MRO (`errors.status_for`). How processes are arranged around the app: `serving.server`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import errors, hardware, validation
from serving.api import batching, fastpath, health, inference, openapi, responses, v2
from serving.frontend import Backend
from serving.frontend.local import LocalBackend
from serving.metrics import Metrics
from serving.pool import ModelPool
from serving.settings import DEFAULT_MODEL_ALIASES, ServerSettings

__all__ = ["create_app", "freeze_heap", "local_pool"]

log = logging.getLogger("carpool.app")

Lifecycle = Callable[[], Awaitable[None]]


def local_pool(settings: ServerSettings) -> ModelPool:
    """The pool `carpool serve` runs: the models of `settings`, not yet loaded."""
    gpu = hardware.GpuProbe.detect()
    metrics = Metrics(enabled=settings.enable_metrics, gpu=gpu, variant=settings.variant)
    pool = ModelPool.from_settings(settings, metrics, gpu)
    add_aliases(pool, settings.model_aliases)
    return pool


def add_aliases(pool: ModelPool, aliases: Mapping[str, str]) -> None:
    """Give the pool's catalog those of `aliases` it can take (see `Catalog.with_aliases`); a
    configured alias it cannot take is named in the log (the defaults drop silently)."""
    pool.catalog = pool.catalog.with_aliases(aliases)
    if aliases == DEFAULT_MODEL_ALIASES:
        return
    for alias, target in aliases.items():
        if alias in pool.catalog.kinds:
            log.warning(
                "alias %r of %r ignored (CARPOOL_MODEL_ALIASES): a served model has that name", alias, target
            )
        elif alias not in pool.catalog.aliases:
            log.warning("alias %r ignored (CARPOOL_MODEL_ALIASES): %r is not served here", alias, target)


def freeze_heap() -> None:
    """Take what is alive now (the imported libraries, the loaded models, the app) out of the cyclic
    garbage collector's sight, once a process is ready to serve.

    A full collection walks every tracked object: with torch and transformers imported that is ~400k
    objects and 150-450 ms on this project's 2-core machine (~90 ms in an HTTP worker, which imports
    neither), during which the process answers no one. They are rare under steady load, but each
    one is a visible stall in the pod's tail. Frozen objects are never collected (they live as long
    as the process anyway); what requests allocate later is collected as before, and cheaply.
    """
    gc.collect()
    gc.freeze()


def create_app(
    settings: ServerSettings,
    backend: ModelPool | Backend | None = None,
    *,
    on_start: Lifecycle | None = None,
    on_stop: Lifecycle | None = None,
) -> fastpath.FastPath:
    """The pod's ASGI app. With a `ModelPool` (or none) the app loads it when it starts and drains
    it when it stops; with another backend, `on_start` / `on_stop` run at those moments."""
    if backend is None:
        backend = local_pool(settings)
    if isinstance(backend, ModelPool):
        pool = backend
        backend = LocalBackend(pool)

        async def start_pool() -> None:
            pool.start_loading().add_done_callback(lambda _: freeze_heap())

        on_start, on_stop = start_pool, pool.drain

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_start is not None:
            await on_start()
        try:
            yield
        finally:
            if on_stop is not None:
                await on_stop()

    app = FastAPI(
        title="Carpool serving pod",
        summary="Dynamic batching for transformer text classifiers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.include_router(inference.router)
    app.include_router(batching.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.add_exception_handler(errors.CarpoolError, _carpool_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _document(app, settings, backend)
    return fastpath.FastPath(app, backend, default_timeout_ms=settings.request_timeout_ms)


def _document(app: FastAPI, settings: ServerSettings, backend: Backend) -> None:
    """Serve `openapi.document`: real bodies, answers and bounds (built once, on first request)."""
    plain = app.openapi

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.document(
                plain(),
                backend.catalog,
                admin_token=bool(settings.admin_token),
                metrics=backend.metrics_enabled,
            )
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


async def _carpool_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.CarpoolError)
    status, headers, body = responses.error_response(exc)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return JSONResponse(
            errors.MalformedBody(f"malformed JSON: {problems[0].get('msg')}").body(), status_code=400
        )
    return JSONResponse(errors.InvalidInput(validation.message(problems)).body(), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body: dict[str, Any] = {"error": "HTTPError", "detail": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
