"""A lean closed-loop HTTP/1.1 load generator for POST /predict (`run_load`), or for any requests
encoded up front (`drive`).

Why not httpx or aiohttp: on a 2-core machine the load generator shares the CPU with the server it
measures, and every microsecond it spends parsing is taken from the model. This client keeps one
keep-alive connection per simulated user, sends requests encoded once up front, parses only the
status line and the framing headers, and runs on uvloop when it is installed. Each connection sends
its next text as soon as the previous answer arrives (a closed loop, like wrk), so the concurrency
is exactly the number of connections.

A run has a warm-up, then a measured window of fixed length: a request counts towards throughput
and latency when it completes inside the window. Responses outside 2xx and transport errors are
counted over the whole run, warm-up included, so a run that reports zero had none at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

__all__ = [
    "LoadResult",
    "Target",
    "alternate",
    "drive",
    "encode_requests",
    "post_request",
    "run_blocking",
    "run_load",
]


Result = TypeVar("Result")


@dataclass(frozen=True)
class Target:
    """Where the requests go: host, port and path prefix of a Carpool base URL (http only)."""

    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the bench speaks plain http to a host, got {url!r}")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    concurrency: int
    window_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        """2xx answers completed inside the measured window."""
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.completed / self.window_s if self.window_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not 200 <= status < 300)

    def _error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message)


def encode_requests(
    target: Target, texts: Sequence[str], model: str, *, deadline_ms: int | None = None
) -> list[bytes]:
    """One complete POST /predict request per text, headers and body, ready for the socket; with
    `deadline_ms`, each carries it as X-Request-Timeout-Ms."""
    extra = {} if deadline_ms is None else {"X-Request-Timeout-Ms": str(deadline_ms)}
    return [post_request(target, "/predict", {"text": text, "models": [model]}, extra) for text in texts]


def encode_batches(target: Target, texts: Sequence[str], model: str, *, items: int) -> list[bytes]:
    """POST /predict/batch requests of `items` texts each, taken from `texts` in turn."""
    return [
        post_request(
            target,
            "/predict/batch",
            [{"text": texts[(start + i) % len(texts)], "models": [model]} for i in range(items)],
        )
        for start in range(0, len(texts), items)
    ]


def post_request(target: Target, path: str, document: Any, headers: Mapping[str, str] | None = None) -> bytes:
    """One complete POST of `document` as compact JSON to `path` under the target's prefix, with
    any extra `headers`, ready for the socket."""
    host = target.host if target.port == 80 else f"{target.host}:{target.port}"
    body = json.dumps(document, separators=(",", ":")).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {target.prefix}{path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _ResponseError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, resolve a future with (status, keep_alive)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bool]] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionResetError(f"connection closed by the server ({exc})"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            parsed = _parse_response(self._buffer)
        except _ResponseError as exc:
            self._waiter.set_exception(exc)
            return
        if parsed is not None:
            status, keep_alive, consumed = parsed
            del self._buffer[:consumed]
            self._waiter.set_result((status, keep_alive))

    async def request(self, payload: bytes) -> tuple[int, bool]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(payload)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _parse_response(buffer: bytearray) -> tuple[int, bool, int] | None:
    """(status, keep_alive, bytes consumed) once a whole response is buffered, else None."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
    try:
        version, status_text = lines[0].split(" ", 2)[:2]
        status = int(status_text)
    except ValueError as exc:
        raise _ResponseError(f"bad status line {lines[0]!r}") from exc
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    keep_alive = headers.get("connection") != "close" and version == "HTTP/1.1"
    body_start = head_end + 4
    if headers.get("transfer-encoding") == "chunked":
        end = _chunked_end(buffer, body_start)
        return None if end is None else (status, keep_alive, end)
    length = int(headers.get("content-length", "0"))
    if len(buffer) < body_start + length:
        return None
    return status, keep_alive, body_start + length


def _chunked_end(buffer: bytearray, position: int) -> int | None:
    """The offset just past a chunked body starting at `position`, or None if incomplete."""
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        except ValueError as exc:
            raise _ResponseError("bad chunk size in a chunked response") from exc
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            return None if trailer_end < 0 else trailer_end + 4
        position = line_end + 2 + size + 2
        if len(buffer) < position:
            return None


async def _connect(target: Target) -> _Connection:
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(_Connection, target.host, target.port)
    return connection


class _Session:
    """One user's keep-alive connection, opened again whenever it closed; failures are counted in
    `result` and the next send reconnects."""

    def __init__(self, target: Target, result: LoadResult, timeout_s: float) -> None:
        self._target, self._result, self._timeout_s = target, result, timeout_s
        self._connection: _Connection | None = None

    async def send(self, payload: bytes) -> tuple[int, float] | None:
        """(status, seconds from send to last byte) of one request, or None if it failed."""
        connection = self._connection
        if connection is None or connection.closed:
            try:
                connection = self._connection = await _connect(self._target)
            except OSError as exc:
                self._result._error(f"connect: {exc}")
                await asyncio.sleep(0.05)
                return None
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                status, keep_alive = await connection.request(payload)
        except (OSError, TimeoutError, _ResponseError) as exc:
            self._result._error(f"{type(exc).__name__}: {exc}")
            self.close()
            return None
        seconds = time.perf_counter() - sent
        self._result.statuses[status] += 1
        if not keep_alive:
            self.close()
        return status, seconds

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def _user(
    target: Target,
    requests: Sequence[bytes],
    offset: int,
    window: tuple[float, float],
    timeout_s: float,
    result: LoadResult,
) -> None:
    """One simulated user: send, wait for the answer, send the next text, until the window ends."""
    start, end = window
    index = offset
    session = _Session(target, result, timeout_s)
    try:
        while time.perf_counter() < end:
            answer = await session.send(requests[index % len(requests)])
            index += 1
            if answer is None:
                continue
            status, seconds = answer
            if 200 <= status < 300 and start <= time.perf_counter() <= end:
                result.latencies_s.append(seconds)
    finally:
        session.close()


async def run_load(
    url: str,
    texts: Sequence[str],
    model: str,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Drive POST /predict with `concurrency` closed-loop users; measure `duration_s` after `warmup_s`."""
    target = Target.parse(url)
    return await drive(
        target,
        encode_requests(target, texts, model),
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        timeout_s=timeout_s,
    )


async def drive(
    target: Target,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Send `requests` (complete HTTP/1.1 requests, any endpoint) round-robin from `concurrency`
    closed-loop users, each starting at a different place; measure `duration_s` after `warmup_s`."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if duration_s <= 0 or warmup_s < 0:
        raise ValueError(f"need duration > 0 and warm-up >= 0, got {duration_s} and {warmup_s}")
    if not requests:
        raise ValueError("need at least one request to send")
    result = LoadResult(concurrency=concurrency, window_s=duration_s)
    start = time.perf_counter() + warmup_s
    window = (start, start + duration_s)
    users = [
        asyncio.create_task(
            _user(target, requests, i * len(requests) // concurrency, window, timeout_s, result)
        )
        for i in range(concurrency)
    ]
    await run_all(users)
    return result


async def alternate(
    target: Target,
    requests: Sequence[bytes],
    other: Callable[[int], object],
    *,
    duration_s: float,
    timeout_s: float = 30.0,
    block: int = 20,
) -> tuple[LoadResult, list[float]]:
    """One user alternating blocks: `block` served requests one after the other, then `other(i)`,
    a call in this process, on the same requests' indices (the raw model on the same texts), until
    `duration_s` has passed: the served latencies and the calls' times. A block lasts well under a
    second, so drift moves both sides alike; nothing else runs meanwhile, so neither competes with
    the other, and only a block's first call can meet what the other side left running (a
    spinning thread pool), not every one."""
    if duration_s <= 0 or block < 1:
        raise ValueError(f"need duration > 0 and block >= 1, got {duration_s} and {block}")
    if not requests:
        raise ValueError("need at least one request to send")
    result = LoadResult(concurrency=1, window_s=duration_s)
    others: list[float] = []
    session = _Session(target, result, timeout_s)
    end = time.perf_counter() + duration_s
    index = 0
    try:
        while time.perf_counter() < end:
            answered: list[int] = []
            for position in range(index, index + block):
                answer = await session.send(requests[position % len(requests)])
                if answer is not None and 200 <= answer[0] < 300:
                    result.latencies_s.append(answer[1])
                    answered.append(position)
            for position in answered:
                started = time.perf_counter()
                other(position)
                others.append(time.perf_counter() - started)
            index += block
    finally:
        session.close()
    return result, others


async def run_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Wait for every task; if one fails or the caller is cancelled, cancel the rest and reap them."""
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def run_blocking(load: Coroutine[Any, Any, Result]) -> Result:
    """`load` (a `run_load(...)`) on a fresh event loop (uvloop when installed), for synchronous callers."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(load)
