"""POST /predict, /predict/trained and /predict/batch.

Bodies are read as bytes and parsed here rather than through FastAPI's body injection: the hot
path stays a few microseconds, and malformed JSON (400) or a bad field (422) gets a message that
names it. Responses are serialised once, with `json.dumps`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import errors
from serving.api import schemas
from serving.pool import ModelPool

__all__ = ["MAX_BATCH_ITEMS", "router"]

router = APIRouter(tags=["inference"])
MAX_BATCH_ITEMS = 1024

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": schemas.PredictRequest.model_json_schema()}},
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": schemas.PredictRequest.model_json_schema()}
            }
        },
    }
}


def _pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


async def _read(request: Request, pool: ModelPool, *, items: int) -> bytes:
    """The body, refused with 413 when it could not hold `items` texts within the text limit."""
    limit = items * (4 * pool.max_text_chars + 1024)  # room for escapes and the model names
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise errors.TextTooLong(
            f"request body of {declared} bytes is above this endpoint's {limit}", limit=limit
        )
    raw = await request.body()
    if len(raw) > limit:
        raise errors.TextTooLong(
            f"request body of {len(raw)} bytes is above this endpoint's {limit}", limit=limit
        )
    return raw


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload).encode(), status_code=status, media_type="application/json")


def _outcome(exc: BaseException) -> str:
    status = errors.status_for(exc)
    if status == 429:
        return "rejected"
    if status == 503:
        return "unavailable"
    return "invalid" if status < 500 else "error"


async def _predict_one(
    pool: ModelPool, text: str, names: list[str], *, wait_for_room: bool = False
) -> dict[str, Any]:
    started = time.perf_counter()
    results = await pool.predict(text, names, wait_for_room=wait_for_room)
    return {
        "predictions": {
            name: {
                "label": prediction.label,
                "score": prediction.score,
                "probabilities": prediction.probabilities,
                "latency_ms": round(seconds * 1000.0, 3),
            }
            for name, (prediction, seconds) in results.items()
        },
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }


async def _serve(request: Request, endpoint: str, *, trained: bool) -> Response:
    pool = _pool(request)
    started = time.perf_counter()
    names: list[str] = []  # only names the pod serves label the metrics, never a client's typo
    try:
        body = schemas.parse_predict(schemas.parse_json(await _read(request, pool, items=1)))
        names = pool.resolve(body.models, trained_only=trained)
        payload = await _predict_one(pool, body.text, names)
    except errors.CarpoolError as exc:
        pool.metrics.on_request(
            endpoint, {name: _outcome(exc) for name in names or ["-"]}, time.perf_counter() - started
        )
        raise
    pool.metrics.on_request(
        endpoint, dict.fromkeys(payload["predictions"], "ok"), time.perf_counter() - started
    )
    return _json(payload)


@router.post("/predict", openapi_extra=_PREDICT_BODY, summary="Classify one text with one or more models")
async def predict(request: Request) -> Response:
    """`{"text": str, "models": [str]}` → one prediction per model (label, score, probabilities)."""
    return await _serve(request, "/predict", trained=False)


@router.post("/predict/trained", openapi_extra=_PREDICT_BODY, summary="Classify with trained models only")
async def predict_trained(request: Request) -> Response:
    """The same as /predict, for `*_trained` models only."""
    return await _serve(request, "/predict/trained", trained=True)


@router.post("/predict/batch", openapi_extra=_BATCH_BODY, summary="Classify a list of /predict requests")
async def predict_batch(request: Request) -> Response:
    """A JSON list of /predict bodies → results in the same order, each with its own error if any.

    Items are queued as room appears, so a list longer than max_queue_size is served whole.
    """
    pool = _pool(request)
    started = time.perf_counter()
    data = schemas.parse_json(await _read(request, pool, items=MAX_BATCH_ITEMS))
    if not isinstance(data, list):
        raise errors.InvalidInput(
            f"/predict/batch expects a JSON list of /predict bodies, got {type(data).__name__}"
        )
    if len(data) > MAX_BATCH_ITEMS:
        raise errors.TextTooLong(
            f"/predict/batch takes at most {MAX_BATCH_ITEMS} items, got {len(data)}", limit=MAX_BATCH_ITEMS
        )

    async def one(index: int, item: Any) -> dict[str, Any]:
        try:
            body = schemas.parse_predict(item, prefix=f"[{index}]")
            names = pool.resolve(body.models)
            result = await _predict_one(pool, body.text, names, wait_for_room=True)
        except errors.CarpoolError as exc:
            error: dict[str, Any] = {"status": errors.status_for(exc), **exc.body()}
            return {"index": index, "ok": False, "error": error}
        return {"index": index, "ok": True, **result}

    results = await asyncio.gather(*(one(i, item) for i, item in enumerate(data)))
    outcomes: dict[str, str] = {}
    for result in results:
        for name in result.get("predictions", {}):
            outcomes[name] = "ok"
    pool.metrics.on_request("/predict/batch", outcomes or {"-": "invalid"}, time.perf_counter() - started)
    return _json(
        {
            "results": results,
            "succeeded": sum(1 for r in results if r["ok"]),
            "failed": sum(1 for r in results if not r["ok"]),
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }
    )
