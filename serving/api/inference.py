"""POST /predict, /predict/trained and /predict/batch: parse, fan out, answer.

`answer_predict` and `answer_batch` turn a raw body into the JSON answer (or raise a
`CarpoolError` that becomes the 4xx/5xx). Two doors lead to them: `fastpath.FastPath`, the ASGI
front that serves these paths on the hot path without FastAPI's per-request machinery, and the
FastAPI routes below, which document them in the OpenAPI schema and serve them wherever the app is
mounted without that front. Bodies are parsed with orjson and checked by hand (pydantic only
words the error), and answers are serialised once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import errors
from serving.api import responses, schemas
from serving.frontend import Backend

__all__ = ["ENDPOINTS", "MAX_BATCH_ITEMS", "answer_batch", "answer_predict", "body_limit", "router"]

router = APIRouter(tags=["inference"])
MAX_BATCH_ITEMS = 1024
ENDPOINTS = {"/predict": False, "/predict/trained": True}  # path -> trained models only
BATCH_ENDPOINT = "/predict/batch"

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


def body_limit(backend: Backend, endpoint: str) -> int:
    """The largest body that could hold valid texts for `endpoint` (escapes and model names included)."""
    items = MAX_BATCH_ITEMS if endpoint == BATCH_ENDPOINT else 1
    return items * (4 * backend.catalog.max_text_chars + 1024)


def too_large(size: int | str, limit: int) -> errors.TextTooLong:
    return errors.TextTooLong(f"request body of {size} bytes is above this endpoint's {limit}", limit=limit)


def _outcome(exc: BaseException) -> str:
    status = errors.status_for(exc)
    if status == 429:
        return "rejected"
    if status == 503:
        return "unavailable"
    return "invalid" if status < 500 else "error"


def _predictions(results: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "label": prediction.label,
            "score": prediction.score,
            "probabilities": prediction.probabilities,
            "latency_ms": round(seconds * 1000.0, 3),
        }
        for name, (prediction, seconds) in results.items()
    }


async def answer_predict(backend: Backend, raw: bytes, endpoint: str) -> bytes:
    """The JSON answer to one /predict or /predict/trained body."""
    started = time.perf_counter()
    names: list[str] = []  # only names the pod serves label the metrics, never a client's typo
    try:
        text, models = schemas.parse_predict(schemas.parse_json(raw))
        names = backend.catalog.resolve(models, trained_only=ENDPOINTS[endpoint])
        results = await backend.predict(text, names)
    except errors.CarpoolError as exc:
        outcome = _outcome(exc)
        backend.record(endpoint, {name: outcome for name in names or ["-"]}, time.perf_counter() - started)
        raise
    elapsed = time.perf_counter() - started
    backend.record(endpoint, dict.fromkeys(results, "ok"), elapsed)
    return responses.json_bytes(
        {"predictions": _predictions(results), "latency_ms": round(elapsed * 1000.0, 3)}
    )


async def answer_batch(backend: Backend, raw: bytes) -> bytes:
    """A JSON list of /predict bodies → results in the same order, each with its own error if any.

    Items are queued as room appears, so a list longer than max_queue_size is served whole.
    """
    started = time.perf_counter()
    data = schemas.parse_json(raw)
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
            text, models = schemas.parse_predict(item, prefix=f"[{index}]")
            names = backend.catalog.resolve(models)
            item_started = time.perf_counter()
            results = await backend.predict(text, names, wait_for_room=True)
        except errors.CarpoolError as exc:
            error: dict[str, Any] = {"status": errors.status_for(exc), **exc.body()}
            return {"index": index, "ok": False, "error": error}
        latency_ms = round((time.perf_counter() - item_started) * 1000.0, 3)
        return {"index": index, "ok": True, "predictions": _predictions(results), "latency_ms": latency_ms}

    results = await asyncio.gather(*(one(i, item) for i, item in enumerate(data)))
    outcomes: dict[str, str] = {}
    for result in results:
        for name in result.get("predictions", {}):
            outcomes[name] = "ok"
    backend.record(BATCH_ENDPOINT, outcomes or {"-": "invalid"}, time.perf_counter() - started)
    return responses.json_bytes(
        {
            "results": results,
            "succeeded": sum(1 for r in results if r["ok"]),
            "failed": sum(1 for r in results if not r["ok"]),
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }
    )


# -- the FastAPI routes: the same answers, documented ------------------------------------------


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def _read(request: Request, endpoint: str) -> bytes:
    """The body, refused with 413 when it could not hold valid texts."""
    limit = body_limit(_backend(request), endpoint)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(declared, limit)
    raw = await request.body()
    if len(raw) > limit:
        raise too_large(len(raw), limit)
    return raw


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.post("/predict", openapi_extra=_PREDICT_BODY, summary="Classify one text with one or more models")
async def predict(request: Request) -> Response:
    """`{"text": str, "models": [str]}` → one prediction per model (label, score, probabilities)."""
    return _json(await answer_predict(_backend(request), await _read(request, "/predict"), "/predict"))


@router.post("/predict/trained", openapi_extra=_PREDICT_BODY, summary="Classify with trained models only")
async def predict_trained(request: Request) -> Response:
    """The same as /predict, for `*_trained` models only."""
    endpoint = "/predict/trained"
    return _json(await answer_predict(_backend(request), await _read(request, endpoint), endpoint))


@router.post("/predict/batch", openapi_extra=_BATCH_BODY, summary="Classify a list of /predict requests")
async def predict_batch(request: Request) -> Response:
    """A JSON list of /predict bodies → results in the same order, each with its own error if any."""
    return _json(await answer_batch(_backend(request), await _read(request, BATCH_ENDPOINT)))
