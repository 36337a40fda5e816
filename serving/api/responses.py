"""JSON answers and error answers, the same for the FastAPI routes and the hot path."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from serving import errors

__all__ = ["JSON_HEADERS", "error_headers", "error_response", "json_bytes"]

JSON_HEADERS = [(b"content-type", b"application/json")]


def json_bytes(payload: Any) -> bytes:
    """`payload` as JSON: orjson, or the standard library for what orjson refuses (integers beyond
    64 bits, which an error body may quote from a client's value)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, default=str, allow_nan=False).encode()


def error_headers(exc: errors.CarpoolError) -> dict[str, str]:
    """Retry-After on 429, WWW-Authenticate on 401."""
    if isinstance(exc, errors.QueueFull):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, errors.Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="carpool"'}
    return {}


def error_response(exc: errors.CarpoolError) -> tuple[int, dict[str, str], bytes]:
    """Status, extra headers and JSON body of an error."""
    return errors.status_for(exc), error_headers(exc), json_bytes(exc.body())
