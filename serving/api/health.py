"""GET /health, /models/status and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving import errors
from serving.metrics import CONTENT_TYPE
from serving.pool import ModelPool

__all__ = ["router"]

router = APIRouter(tags=["health"])


def _pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


@router.get("/health", summary="200 when every model is loaded, warm and its worker alive; else 503")
async def health(request: Request) -> JSONResponse:
    pool = _pool(request)
    return JSONResponse(pool.health(), status_code=200 if pool.ready else 503)


@router.get("/models/status", summary="Each model: kind, path, device, dtype, labels, load time, warm")
async def models_status(request: Request) -> JSONResponse:
    return JSONResponse({"models": _pool(request).status()})


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(request: Request) -> Response:
    pool = _pool(request)
    if not pool.metrics.enabled:
        raise errors.FeatureDisabled("metrics are disabled on this pod (ENABLE_METRICS=false)")
    return Response(pool.metrics.render(), media_type=CONTENT_TYPE)
