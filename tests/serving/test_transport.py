"""The pod's HTTP transport under real uvicorn: a late request head ends its connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import uvicorn

from serving import server, transport
from tests.serving.conftest import Served

HEAD_TIMEOUT_S = 0.4
PREDICT = b'{"text": "hello there"}'


@pytest_asyncio.fixture(loop_scope="module")
async def pod(served: Served, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    """The tiny pod's app behind uvicorn, run with the pod's own options; yields its port."""
    monkeypatch.setattr(transport, "HEADER_TIMEOUT_S", HEAD_TIMEOUT_S)
    listener = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(served.app, lifespan="off", **server.uvicorn_options(served.settings))
    runner = uvicorn.Server(config)
    task = asyncio.create_task(runner.serve(sockets=[listener]))
    while not runner.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.01)
    yield listener.getsockname()[1]
    runner.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    listener.close()


async def _until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the pod sends until it closes the connection, and when it closed it."""
    data = await asyncio.wait_for(reader.read(), 5)
    return data, time.monotonic()


def _head(path: str = "/predict", body: bytes = PREDICT) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: pod\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_request_head_that_stops_halfway_gets_408_and_the_connection_closes(pod: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", pod)
    started = time.monotonic()
    writer.write(b"POST /predict HTTP/1.1\r\nhost: pod\r\n")
    data, closed = await _until_closed(reader)
    assert HEAD_TIMEOUT_S * 0.9 <= closed - started < HEAD_TIMEOUT_S + 2
    assert _status(data) == 408
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == "RequestTimeout" and "head" in body["detail"]
    writer.close()


async def test_a_connection_that_never_speaks_is_closed_without_an_answer(pod: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", pod)
    started = time.monotonic()
    data, closed = await _until_closed(reader)
    assert data == b""
    assert HEAD_TIMEOUT_S * 0.9 <= closed - started < HEAD_TIMEOUT_S + 2
    writer.close()


async def test_heads_in_time_are_served_and_each_keep_alive_request_gets_its_own_bound(pod: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", pod)
    for _ in range(3):  # slow bodies are the body timeout's business, not the head's
        head = _head()
        writer.write(head[:20])
        await asyncio.sleep(HEAD_TIMEOUT_S / 2)
        writer.write(head[20:])
        await asyncio.sleep(HEAD_TIMEOUT_S * 1.5)
        writer.write(PREDICT)
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert b" 200 " in status_line
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":")[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        assert "tiny" in json.loads(await reader.readexactly(length))["predictions"]
    writer.write(b"POST /predict HTTP/1.1\r\n")  # the next request on the same connection stalls
    data, _ = await _until_closed(reader)
    assert _status(data) == 408
    writer.close()
