"""The model process's side of the worker links: every worker's requests into one `ModelPool`.

Each HTTP worker holds one Unix-socket connection to the hub. A single-model request without
waiting for room (/predict's case) is queued on the engine at once and answered from a done
callback, so the hub adds no task per request; every other request runs as a task over
`ModelPool.predict`. Results leave in one frame per worker per loop iteration: a batch of 32
answers costs one write. The figures every worker reports (`RECORD`) land in the pod's one
`Metrics`, so /metrics, /batching/stats and /health read the same whichever worker answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from serving import errors, reports
from serving.frontend import wire
from serving.frontend.local import LocalBackend
from serving.models.base import Prediction
from serving.pool import ModelPool
from serving.settings import ServerSettings

__all__ = ["Hub"]

log = logging.getLogger("carpool.hub")


class Hub:
    def __init__(self, pool: ModelPool, settings: ServerSettings, *, workers: int) -> None:
        self.pool = pool
        self.local = LocalBackend(pool)
        self.settings = settings
        self.workers = workers
        self.links: set[_Link] = set()
        self.stopping = False  # the pod is shutting down: not ready, still answering
        self.encoders: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def hello(self) -> dict[str, Any]:
        """What a worker needs before it serves: its settings and the catalog of models."""
        return {
            "settings": self.settings.model_dump(mode="json"),
            "kinds": dict(self.pool.catalog.kinds),
            "max_text_chars": self.pool.catalog.max_text_chars,
            "aliases": dict(self.pool.catalog.aliases),
            "metrics_enabled": self.pool.metrics.enabled,
        }

    def share_encoders(self) -> None:
        """Hand every worker the loaded models' tokenizers: from then on, workers tokenize."""
        self.encoders = self.pool.encoders()
        if self.encoders:
            for link in self.links:
                link.outbox.put((wire.ENCODERS, 0, self.encoders))

    async def connect(self, sock: socket.socket) -> None:
        """Serve one worker on `sock` (its HELLO goes out first)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        await loop.connect_accepted_socket(lambda: _Link(self, loop), sock)

    @property
    def ready(self) -> bool:
        return self.pool.ready and len(self.links) >= self.workers and not self.stopping

    def health(self) -> tuple[bool, dict[str, Any]]:
        report = reports.health(self.pool)
        report["workers"] = {"expected": self.workers, "connected": len(self.links)}
        if self.stopping:
            report["status"] = "stopping"
        elif not self.ready:
            report["status"] = "unavailable"
        return self.ready, report

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the requests still running as tasks (shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class _Link(asyncio.Protocol):
    """One worker's connection."""

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self.outbox = wire.Outbox(loop)
        self.reader = wire.FrameReader(self._deliver)
        self.calls: dict[str, Callable[[Any], Any]] = {
            "configure": hub.local.configure_now,
            "live": lambda _: True,
            "model_info": hub.local.info_now,
            "stats": lambda _: reports.stats(hub.pool),
            "health": lambda _: hub.health(),
            "status": lambda _: reports.status(hub.pool),
            "metrics": lambda _: hub.local.metrics_now(),
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.outbox.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.outbox.transport.write(wire.pack([(wire.HELLO, self.hub.hello())]))
        self.hub.links.add(self)
        if self.hub.encoders:
            self.outbox.put((wire.ENCODERS, 0, self.hub.encoders))

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.links.discard(self)
        self.outbox.transport = None

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)

    def _deliver(self, messages: list[Any]) -> None:
        for message in messages:
            kind = message[0]
            if kind == wire.PREDICT:
                self._predict(*message[1:])
            elif kind == wire.RECORD:
                self.hub.pool.metrics.on_request(message[1], message[2], message[3])
            elif kind == wire.CALL:
                self._call(*message[1:])
            else:
                log.error("unknown message %r from a worker", kind)

    # -- predictions -----------------------------------------------------------------------------

    def _predict(
        self,
        rid: int,
        text: str,
        names: tuple[str, ...],
        wait_for_room: float,
        ids: list[int] | None,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> None:
        if len(names) == 1:
            started = time.perf_counter()
            pool = self.hub.pool
            if wait_for_room > 0 and not pool.has_room(names[0], bulk=bulk):
                self.hub.spawn(
                    self._predict_in_line(rid, names[0], text, ids, wait_for_room, timeout_s, bulk)
                )
                return  # waits in line for room, off this call
            try:
                future = pool.submit(names[0], text, ids, timeout_s=timeout_s, bulk=bulk)
            except errors.CarpoolError as exc:
                self.outbox.put((wire.FAILED, rid, wire.error_to_wire(exc)))
                return
            future.add_done_callback(lambda done: self._answer_one(rid, names[0], started, done))
        else:
            self.hub.spawn(self._predict_many(rid, text, names, wait_for_room, timeout_s, bulk))

    async def _predict_in_line(
        self,
        rid: int,
        name: str,
        text: str,
        ids: list[int] | None,
        wait_for_room: float,
        timeout_s: float | None,
        bulk: bool,
    ) -> None:
        started = time.perf_counter()
        try:
            future = await self.hub.pool.put(
                name, text, ids, room_s=wait_for_room, timeout_s=timeout_s, bulk=bulk
            )
        except Exception as exc:
            self.outbox.put((wire.FAILED, rid, wire.error_to_wire(_as_carpool_error(exc))))
            return
        future.add_done_callback(lambda done: self._answer_one(rid, name, started, done))

    def _answer_one(self, rid: int, name: str, started: float, future: asyncio.Future[Prediction]) -> None:
        if future.cancelled():
            error: BaseException = errors.ModelNotReady(f"model {name!r} stopped before answering")
        else:
            error_or_none = future.exception()
            if error_or_none is None:
                p = future.result()
                seconds = time.perf_counter() - started
                self.outbox.put((wire.RESULT, rid, {name: (p.label, p.score, p.probabilities, seconds)}))
                return
            error = error_or_none
        self.outbox.put((wire.FAILED, rid, wire.error_to_wire(_as_carpool_error(error))))

    async def _predict_many(
        self,
        rid: int,
        text: str,
        names: tuple[str, ...],
        wait_for_room: float,
        timeout_s: float | None,
        bulk: bool,
    ) -> None:
        try:
            results = await self.hub.pool.predict(
                text, names, wait_for_room=wait_for_room, timeout_s=timeout_s, bulk=bulk
            )
        except Exception as exc:
            self.outbox.put((wire.FAILED, rid, wire.error_to_wire(_as_carpool_error(exc))))
            return
        payload = {
            name: (p.label, p.score, p.probabilities, seconds) for name, (p, seconds) in results.items()
        }
        self.outbox.put((wire.RESULT, rid, payload))

    # -- calls -----------------------------------------------------------------------------------

    def _call(self, rid: int, method: str, argument: Any) -> None:
        handler = self.calls.get(method)
        try:
            if handler is None:
                raise errors.CarpoolError(f"the model process has no call {method!r}")
            value = handler(argument)
        except errors.CarpoolError as exc:
            self.outbox.put((wire.FAILED, rid, wire.error_to_wire(exc)))
            return
        except Exception as exc:  # a bug must fail this call only, never the worker's link
            log.exception("call %s from a worker failed", method)
            self.outbox.put((wire.FAILED, rid, wire.error_to_wire(_as_carpool_error(exc))))
            return
        self.outbox.put((wire.REPLY, rid, value))


def _as_carpool_error(exc: BaseException) -> errors.CarpoolError:
    if isinstance(exc, errors.CarpoolError):
        return exc
    return errors.InferenceFailed(f"{type(exc).__name__}: {exc}")
