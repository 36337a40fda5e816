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
import math
import re
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import errors
from serving.api import responses, schemas
from serving.frontend import Backend
from serving.settings import BODY_IDLE_TIMEOUT_S
from serving.validation import quote

__all__ = [
    "BATCH_PARTIAL_STATUS",
    "ENDPOINTS",
    "MAX_BATCH_ITEMS",
    "TIMEOUT_HEADER",
    "answer_batch",
    "answer_predict",
    "body_limit",
    "request_timeout_ms",
    "router",
]

router = APIRouter(tags=["inference"])
MAX_BATCH_ITEMS = 1024
ENDPOINTS = {"/predict": False, "/predict/trained": True}  # path -> trained models only
BATCH_ENDPOINT = "/predict/batch"
BATCH_PARTIAL_STATUS = 207  # Multi-Status: a /predict/batch answer where at least one item failed
TIMEOUT_HEADER = "x-request-timeout-ms"
TIMEOUT_HEADER_PATTERN = r"^[1-9][0-9]{0,5}(\.[0-9]{1,3})?$"  # 1 to 999999.999 ms
_TIMEOUT_HEADER = re.compile(TIMEOUT_HEADER_PATTERN)
ESCAPED_BYTES_PER_CHAR = 12  # the most JSON may spend on one character: a surrogate pair, \ud83d\ude00
BATCH_ESCAPED_BYTES_PER_CHAR = 6  # a batch's bound: every text at the limit in \uXXXX escapes
FIELDS_BYTES = 4096  # room for the rest of an item: model names, timeout_ms, spaces
# A /predict that finds its model's queue full waits this long in line for room before its 429:
# the queue is full again whenever the model takes a batch, and a client that ignores Retry-After
# and retries at once costs one refusal per wait, not one per try. The wait holds only a future.
ROOM_WAIT_S = 0.25

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
    """The largest body that could hold valid texts for `endpoint`, counted as clients send them.

    JSON clients escape non-ASCII text by default (`json.dumps`): one character may take 6 bytes
    (\\uXXXX) or 12 (an emoji's surrogate pair), so a body of one text may hold 12 bytes per allowed
    character. A /predict/batch body may hold MAX_BATCH_ITEMS texts at the limit in 6-byte escapes
    (about 124 MB at 20,000 characters); longer lists of emoji must travel as raw UTF-8 or split.
    The text's own limit (characters) is checked once the body is parsed.
    """
    chars = backend.catalog.max_text_chars
    if endpoint == BATCH_ENDPOINT:
        return MAX_BATCH_ITEMS * (BATCH_ESCAPED_BYTES_PER_CHAR * chars + FIELDS_BYTES)
    return ESCAPED_BYTES_PER_CHAR * chars + FIELDS_BYTES


def request_timeout_ms(header: str | bytes | None, default_ms: float | None) -> float | None:
    """The deadline a request asks for with X-Request-Timeout-Ms, within the pod's default; 422 for a
    value that is not a positive number of milliseconds."""
    if header is None:
        return default_ms
    raw = header.decode("latin-1") if isinstance(header, bytes) else header
    if not _TIMEOUT_HEADER.match(raw):
        raise errors.InvalidInput(
            f"X-Request-Timeout-Ms must be milliseconds from 1 to 999999.999 (at most 3 decimals), "
            f"got {quote(raw)}"
        )
    value = float(raw)
    return value if default_ms is None else min(value, default_ms)


def _seconds_left(started: float, *limits_ms: float | None) -> float | None:
    chosen = [limit for limit in limits_ms if limit is not None]
    if not chosen:
        return None
    return max(min(chosen) / 1000.0 - (time.perf_counter() - started), 0.0)


def too_large(size: int | str, limit: int) -> errors.TextTooLong:
    return errors.TextTooLong(f"request body of {size} bytes is above this endpoint's {limit}", limit=limit)


def _outcome(exc: BaseException) -> str:
    status = errors.status_for(exc)
    if status == 429:
        return "rejected"
    if status == 503:
        return "unavailable"
    if status == 504:
        return "expired"
    return "invalid" if status < 500 else "error"


def _predictions(results: dict[str, Any], asked: dict[str, str]) -> dict[str, Any]:
    """Each served model's result under every name the request used for it (`asked`: name used ->
    served model), so an alias is answered under the alias."""
    answers = {
        name: {
            "label": prediction.label,
            "score": prediction.score,
            "probabilities": prediction.probabilities,
            "latency_ms": round(seconds * 1000.0, 3),
        }
        for name, (prediction, seconds) in results.items()
    }
    return {used: answers[served] for used, served in asked.items()}


async def answer_predict(
    backend: Backend, raw: bytes, endpoint: str, timeout_ms: float | None = None
) -> bytes:
    """The JSON answer to one /predict or /predict/trained body; `timeout_ms` is the deadline the
    header and the pod's default allow (the body's timeout_ms may shorten it)."""
    started = time.perf_counter()
    names: list[str] = []  # only names the pod serves label the metrics, never a client's typo
    try:
        text, models, own_timeout_ms = schemas.parse_predict(schemas.parse_json(raw))
        asked = backend.catalog.requested(models, trained_only=ENDPOINTS[endpoint])
        names = list(dict.fromkeys(asked.values()))
        timeout_s = _seconds_left(started, timeout_ms, own_timeout_ms)
        results = await backend.predict(text, names, wait_for_room=ROOM_WAIT_S, timeout_s=timeout_s)
    except errors.QueueFull:
        backend.record(endpoint, {name: "rejected" for name in names}, time.perf_counter() - started)
        raise
    except errors.CarpoolError as exc:
        outcome = _outcome(exc)
        backend.record(endpoint, {name: outcome for name in names or ["-"]}, time.perf_counter() - started)
        raise
    elapsed = time.perf_counter() - started
    backend.record(endpoint, dict.fromkeys(results, "ok"), elapsed)
    return responses.json_bytes(
        {"predictions": _predictions(results, asked), "latency_ms": round(elapsed * 1000.0, 3)}
    )


async def answer_batch(backend: Backend, raw: bytes, timeout_ms: float | None = None) -> tuple[int, bytes]:
    """A JSON list of /predict bodies → the status and the results in the same order, each with its
    own error if any. The status is 200 when every item succeeded and 207 (Multi-Status) when any
    failed; the body says the same with `ok`, `succeeded` and `failed`.

    Items are queued as room appears, in the bulk lane, so a list longer than max_queue_size is
    served whole. `timeout_ms` (header and default) bounds every item; an item's own may shorten it.
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

    answered: dict[str, None] = {}  # the served models that answered an item, in order

    async def one(index: int, item: Any) -> dict[str, Any]:
        try:
            text, models, own_timeout_ms = schemas.parse_predict(item, prefix=f"[{index}]")
            asked = backend.catalog.requested(models)
            names = list(dict.fromkeys(asked.values()))
            item_started = time.perf_counter()
            timeout_s = _seconds_left(started, timeout_ms, own_timeout_ms)
            results = await backend.predict(
                text, names, wait_for_room=math.inf, timeout_s=timeout_s, bulk=True
            )
        except errors.CarpoolError as exc:
            error: dict[str, Any] = {"status": errors.status_for(exc), **exc.body()}
            return {"index": index, "ok": False, "error": error}
        latency_ms = round((time.perf_counter() - item_started) * 1000.0, 3)
        answered.update(dict.fromkeys(results))
        return {
            "index": index,
            "ok": True,
            "predictions": _predictions(results, asked),
            "latency_ms": latency_ms,
        }

    results = await asyncio.gather(*(one(i, item) for i, item in enumerate(data)))
    outcomes = dict.fromkeys(answered, "ok")  # served names only, whatever alias the items used
    backend.record(BATCH_ENDPOINT, outcomes or {"-": "invalid"}, time.perf_counter() - started)
    failed = sum(1 for r in results if not r["ok"])
    body = {
        "ok": failed == 0,
        "succeeded": len(results) - failed,
        "failed": failed,
        "results": results,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }
    return (BATCH_PARTIAL_STATUS if failed else 200), responses.json_bytes(body)


# -- the FastAPI routes: the same answers, documented ------------------------------------------


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (declared or streamed), and with
    408 when it stalls for BODY_IDLE_TIMEOUT_S."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(declared, limit)
    chunks = bytearray()
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE_TIMEOUT_S):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return bytes(chunks)
        except TimeoutError:
            raise stalled(len(chunks)) from None
        chunks += chunk
        if len(chunks) > limit:
            raise too_large(f"more than {limit}", limit)


def stalled(received: int) -> errors.RequestTimeout:
    return errors.RequestTimeout(
        f"the request body stalled: nothing arrived for {BODY_IDLE_TIMEOUT_S:g} s after {received} bytes"
    )


async def _read(request: Request, endpoint: str) -> bytes:
    """The body, refused with 413 when it could not hold valid texts."""
    return await read_body(request, body_limit(_backend(request), endpoint))


def _timeout(request: Request) -> float | None:
    default: float | None = request.app.state.settings.request_timeout_ms
    return request_timeout_ms(request.headers.get(TIMEOUT_HEADER), default)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


@router.post("/predict", openapi_extra=_PREDICT_BODY, summary="Classify one text with one or more models")
async def predict(request: Request) -> Response:
    """`{"text": str, "models": [str]}` → one prediction per model (label, score, probabilities)."""
    raw = await _read(request, "/predict")
    return _json(await answer_predict(_backend(request), raw, "/predict", _timeout(request)))


@router.post("/predict/trained", openapi_extra=_PREDICT_BODY, summary="Classify with trained models only")
async def predict_trained(request: Request) -> Response:
    """The same as /predict, for `*_trained` models only."""
    endpoint = "/predict/trained"
    raw = await _read(request, endpoint)
    return _json(await answer_predict(_backend(request), raw, endpoint, _timeout(request)))


@router.post("/predict/batch", openapi_extra=_BATCH_BODY, summary="Classify a list of /predict requests")
async def predict_batch(request: Request) -> Response:
    """A JSON list of /predict bodies → results in the same order, each with its own error if any:
    200 when every item succeeded, 207 when any failed (`ok` false, `failed` counts them)."""
    raw = await _read(request, BATCH_ENDPOINT)
    status, body = await answer_batch(_backend(request), raw, _timeout(request))
    return _json(body, status)
