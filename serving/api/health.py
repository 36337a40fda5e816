"""GET /health, /models/status and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving.frontend import Backend
from serving.metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["health"])


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


@router.get("/health", summary="200 when every model is loaded, warm and its worker alive; else 503")
async def health(request: Request) -> JSONResponse:
    ready, report = await _backend(request).health()
    return JSONResponse(report, status_code=200 if ready else 503)


@router.get("/livez", summary="200 while the pod's processes answer, whatever its models' state")
async def livez(request: Request) -> JSONResponse:
    """For liveness probes: a pod whose model failed to load stays up (and 503 on /health) to say so."""
    await _backend(request).live()
    return JSONResponse({"status": "alive"})


@router.get("/models/status", summary="Each model: kind, path, device, dtype, labels, load time, warm")
async def models_status(request: Request) -> JSONResponse:
    return JSONResponse({"models": await _backend(request).models_status()})


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(request: Request) -> Response:
    return Response(await _backend(request).metrics_text(), media_type=CONTENT_TYPE)
