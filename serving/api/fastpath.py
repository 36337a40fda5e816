"""The ASGI front of the pod: the inference endpoints without FastAPI's per-request machinery.

Every request passes through `FastPath` first. POST /predict, /predict/trained and /predict/batch
are answered here, straight from the ASGI messages: the body is read with its size limit enforced
chunk by chunk (chunked uploads included), handed to `inference.answer_*`, and the answer goes out
as two ASGI messages. Everything else (and the lifespan) goes to the FastAPI app, whose routes for
the same paths document them and give the same answers. What this saves per request is routing,
dependency solving, the Request and Response objects and the middleware stack: about a third of
the pod's CPU per request with a fast model (docs/serving.md, "Front end").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving import errors
from serving.api import inference, responses
from serving.frontend import Backend
from serving.settings import BODY_IDLE_TIMEOUT_S

__all__ = ["FastPath"]

log = logging.getLogger("carpool.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PATHS = frozenset((*inference.ENDPOINTS, inference.BATCH_ENDPOINT))


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class FastPath:
    def __init__(self, app: ASGIApp, backend: Backend, *, default_timeout_ms: float | None = None) -> None:
        self.app = app
        self.backend = backend
        self.default_timeout_ms = default_timeout_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in _PATHS:
            await self.app(scope, receive, send)
            return
        endpoint: str = scope["path"]
        try:
            raw = await self._body(scope, receive, inference.body_limit(self.backend, endpoint))
            timeout_ms = self.default_timeout_ms
            for name, value in scope["headers"]:
                if name == b"x-request-timeout-ms":
                    timeout_ms = inference.request_timeout_ms(value, self.default_timeout_ms)
            if endpoint == inference.BATCH_ENDPOINT:
                status, body = await inference.answer_batch(self.backend, raw, timeout_ms)
            else:
                status, body = 200, await inference.answer_predict(self.backend, raw, endpoint, timeout_ms)
        except errors.CarpoolError as exc:
            status, extra, body = responses.error_response(exc)
            headers = [*responses.JSON_HEADERS, *((k.encode(), v.encode()) for k, v in extra.items())]
            if status in (408, 413):  # the rest of the body is not read: the connection cannot go on
                headers.append((b"connection", b"close"))
            await _answer(send, status, headers, body)
            return
        except _ClientGone:
            return
        except Exception:  # the ASGI boundary: a bug answers a JSON 500, and is logged with its trace
            log.exception("%s failed", endpoint)
            failure = errors.CarpoolError(f"{endpoint} failed inside the pod; see its log")
            await _answer(send, 500, responses.JSON_HEADERS, responses.json_bytes(failure.body()))
            return
        await _answer(send, status, responses.JSON_HEADERS, body)

    @staticmethod
    async def _body(scope: Scope, receive: Receive, limit: int) -> bytes:
        """The body, 413 past `limit` bytes (declared or streamed), 408 when it stalls for
        BODY_IDLE_TIMEOUT_S between two chunks."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise inference.too_large(value.decode(), limit)
        message = await _next(receive, 0)
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if message["type"] == "http.disconnect":
                raise _ClientGone
            if len(chunk) > limit:
                raise inference.too_large(len(chunk), limit)
            return chunk
        chunks = bytearray(chunk)
        while True:
            message = await _next(receive, len(chunks))
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunks += message.get("body", b"")
            if len(chunks) > limit:
                raise inference.too_large(f"more than {limit}", limit)
            if not message.get("more_body", False):
                return bytes(chunks)


async def _next(receive: Receive, received: int) -> Message:
    try:
        async with asyncio.timeout(BODY_IDLE_TIMEOUT_S):
            return await receive()
    except TimeoutError:
        raise inference.stalled(received) from None


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
