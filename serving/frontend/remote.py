"""An HTTP worker's `Backend`: the pod's model process, reached over a Unix socket.

Names and texts are checked here, against the catalog the model process sent in its HELLO, so bad
input never crosses the socket. Every other question (a prediction, the stats, a new config)
becomes one message, and its answer resolves one future. Messages of one loop iteration leave as
one frame (`wire.Outbox`). If the model process goes away, every waiting request fails with 503
and `on_lost` is called (the worker then shuts down; the pod's supervisor starts a new one).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from serving import errors
from serving.catalog import Catalog
from serving.frontend import wire
from serving.models.base import Prediction
from serving.settings import ServerSettings

__all__ = ["RemotePool", "handshake"]


def handshake(sock: socket.socket) -> dict[str, Any]:
    """Read the model process's HELLO from a blocking socket (before the worker serves)."""
    messages = wire.read_frame_blocking(sock)
    kind, info = messages[0]
    if kind != wire.HELLO:
        raise ConnectionError(f"expected HELLO from the model process, got message {kind!r}")
    hello: dict[str, Any] = info
    return hello


class RemotePool(asyncio.Protocol):
    def __init__(self, hello: Mapping[str, Any], *, on_lost: Callable[[], None] | None = None) -> None:
        self.settings = ServerSettings.model_validate(hello["settings"])
        self.catalog = Catalog(dict(hello["kinds"]), int(hello["max_text_chars"]), dict(hello["aliases"]))
        self.metrics_enabled = bool(hello["metrics_enabled"])
        self.on_lost = on_lost
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outbox: wire.Outbox | None = None
        self._reader = wire.FrameReader(self._deliver)
        self._lost = False
        self._encoders: dict[str, Any] = {}  # name -> the model's TextEncoder, once loaded

    async def connect(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._outbox = wire.Outbox(loop)
        sock.setblocking(False)
        await loop.connect_accepted_socket(lambda: self, sock)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self._outbox is not None
        self._outbox.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        gone = errors.ModelNotReady("the pod's model process is gone; retry on another pod")
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(gone)
        if self.on_lost is not None:
            self.on_lost()

    def _deliver(self, messages: list[Any]) -> None:
        waiting = self._waiting
        for kind, rid, value in messages:
            if kind == wire.ENCODERS:
                self._encoders = value
                continue
            future = waiting.pop(rid, None)
            if future is None or future.done():
                continue
            if kind == wire.FAILED:
                future.set_exception(wire.error_from_wire(value))
            else:
                future.set_result(value)

    def _ask(self, message_kind: int, *fields: Any) -> asyncio.Future[Any]:
        if self._lost or self._outbox is None:
            raise errors.ModelNotReady("the pod's model process is gone; retry on another pod")
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._outbox.put((message_kind, rid, *fields))
        return future

    # -- Backend ---------------------------------------------------------------------------------

    async def predict(
        self,
        text: str,
        names: Sequence[str],
        *,
        wait_for_room: float = 0.0,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> dict[str, tuple[Prediction, float]]:
        self.catalog.check_text(text)
        ids = None
        if len(names) == 1:
            encoder = self._encoders.get(names[0])
            if encoder is not None:
                ids = encoder.encode(text).ids  # tokenized here, on this worker's core
        payload = await self._ask(wire.PREDICT, text, tuple(names), wait_for_room, ids, timeout_s, bulk)
        return {
            name: (Prediction(label, score, probabilities), seconds)
            for name, (label, score, probabilities, seconds) in payload.items()
        }

    def record(self, endpoint: str, outcomes: Mapping[str, str], seconds: float) -> None:
        if self.metrics_enabled and self._outbox is not None and not self._lost:
            self._outbox.put((wire.RECORD, endpoint, dict(outcomes), seconds))

    async def _call(self, method: str, argument: Any = None) -> Any:
        return await self._ask(wire.CALL, method, argument)

    async def configure(self, changes: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
        reply: dict[str, Any] = await self._call("configure", {"changes": dict(changes), "model": model})
        return reply

    async def live(self) -> bool:
        return bool(await self._call("live"))

    async def model_info(self, name: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self._call("model_info", name)
        return reply

    async def stats(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self._call("stats")
        return reply

    async def health(self) -> tuple[bool, dict[str, Any]]:
        ready, report = await self._call("health")
        return bool(ready), report

    async def models_status(self) -> list[dict[str, Any]]:
        reply: list[dict[str, Any]] = await self._call("status")
        return reply

    async def metrics_text(self) -> bytes:
        reply: bytes = await self._call("metrics")
        return reply
