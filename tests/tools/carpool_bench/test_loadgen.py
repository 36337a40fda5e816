"""The bench's HTTP client: response framing, and closed-loop runs against a bare HTTP server that
counts what it answered and closes, chunks or hangs on demand. Runs against a real `carpool serve`
are in test_live.py."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from carpool_bench import loadgen
from tests.support.pods import free_port


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", (200, True), id="whole"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}", None, id="body-incomplete"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-le", None, id="head-incomplete"),
        pytest.param(b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n", (429, True), id="no-body"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", (200, False), id="close"
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", (200, False), id="http-1.0"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nHTTP/1.1",
            (200, True),
            id="chunked-then-next",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", None, id="chunked-open"
        ),
    ],
)
def test_responses_are_framed_by_length_or_chunks(raw: bytes, expected: tuple[int, bool] | None) -> None:
    """A whole response is consumed up to its last byte, and no further (the next one may follow)."""
    parsed = loadgen._parse_response(bytearray(raw))
    if expected is None:
        assert parsed is None
    else:
        assert parsed == (*expected, len(raw.removesuffix(b"HTTP/1.1")))


@pytest.mark.unit
def test_a_garbled_status_line_is_an_error() -> None:
    with pytest.raises(loadgen._ResponseError, match="bad status line"):
        loadgen._parse_response(bytearray(b"HTTX/1.1 two hundred\r\n\r\n"))


@pytest.mark.unit
def test_requests_are_encoded_once_with_their_length() -> None:
    target = loadgen.Target.parse("http://127.0.0.1:8123/carpool/")
    [encoded] = loadgen.encode_requests(target, ["héllo"], "tiny")
    head, _, body = encoded.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /carpool/predict HTTP/1.1\r\nHost: 127.0.0.1:8123\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"text": "héllo", "models": ["tiny"]}


@pytest.mark.unit
def test_a_deadline_travels_as_a_header_and_bulk_requests_carry_their_items() -> None:
    target = loadgen.Target.parse("http://127.0.0.1:8123")
    [timed] = loadgen.encode_requests(target, ["one"], "tiny", deadline_ms=500)
    assert b"\r\nX-Request-Timeout-Ms: 500\r\n" in timed.partition(b"\r\n\r\n")[0]
    batches = loadgen.encode_batches(target, ["a", "b", "c"], "tiny", items=2)
    bodies = [json.loads(request.partition(b"\r\n\r\n")[2]) for request in batches]
    assert all(request.startswith(b"POST /predict/batch HTTP/1.1\r\n") for request in batches)
    assert [[item["text"] for item in body] for body in bodies] == [["a", "b"], ["c", "a"]]  # round the texts


@pytest.mark.unit
def test_only_plain_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="https://x"):
        loadgen.Target.parse("https://x")


# A bare HTTP/1.1 server for what carpool serve does not do on purpose: close, chunk, hang.

Handler = Callable[[str], Awaitable[tuple[bytes, bool]]]


@pytest_asyncio.fixture
async def bare_server() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, Counter[str]]]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[str, Counter[str]]:
        answered: Counter[str] = Counter()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    text = json.loads(await reader.readexactly(length))["text"]
                    response, keep_open = await handler(text)
                    writer.write(response)
                    await writer.drain()
                    answered[text] += 1
                    if not keep_open:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        started = await asyncio.start_server(connection, "127.0.0.1", 0)
        servers.append(started)
        port = started.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", answered

    yield start
    for started in servers:
        started.close()
        await started.wait_closed()


async def _close_or_chunk(text: str) -> tuple[bytes, bool]:
    if text == "close":
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n", True


@pytest.mark.integration
async def test_closed_connections_are_reopened_and_chunked_answers_read(
    bare_server: Callable[..., Awaitable[tuple[str, Counter[str]]]],
) -> None:
    url, answered = await bare_server(_close_or_chunk)
    result = await loadgen.run_load(url, ["close", "chunk"], "m", concurrency=2, duration_s=0.3, warmup_s=0.0)
    assert result.errors == 0, result.error_samples
    assert result.statuses[200] == answered["close"] + answered["chunk"]
    assert answered["close"] > 0 and answered["chunk"] > 0


async def _hang(text: str) -> tuple[bytes, bool]:
    if text == "hang":
        await asyncio.sleep(3600)
    return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True


@pytest.mark.integration
async def test_an_unanswered_request_times_out_and_counts_as_an_error(
    bare_server: Callable[..., Awaitable[tuple[str, Counter[str]]]],
) -> None:
    url, answered = await bare_server(_hang)
    result = await loadgen.run_load(
        url, ["fine", "hang"], "m", concurrency=1, duration_s=0.3, warmup_s=0.0, timeout_s=0.1
    )
    assert result.errors >= 1
    assert result.error_samples[0].startswith("TimeoutError")
    assert result.statuses[200] == answered["fine"] >= 1


@pytest.mark.integration
async def test_a_server_that_is_not_there_gives_errors_not_a_crash() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await loadgen.run_load(url, ["x"], "m", concurrency=2, duration_s=0.2, warmup_s=0.0)
    assert result.errors >= 2 and not result.statuses and result.completed == 0
    assert "connect" in result.error_samples[0]


@pytest.mark.integration
async def test_drive_sends_requests_encoded_by_the_caller_round_robin(
    bare_server: Callable[..., Awaitable[tuple[str, Counter[str]]]],
) -> None:
    """Another endpoint's requests (a peer's protocol, say) go out byte for byte, every one of them."""
    url, answered = await bare_server(_close_or_chunk)
    target = loadgen.Target.parse(url)
    requests = []
    for text in ("chunk", "close", "chunk"):
        body = json.dumps({"text": text, "id": len(requests)}).encode()
        head = f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        requests.append(head.encode() + body)
    result = await loadgen.drive(target, requests, concurrency=3, duration_s=0.3, warmup_s=0.0)
    assert result.errors == 0, result.error_samples
    assert answered["close"] > 0 and answered["chunk"] > answered["close"]
    assert result.statuses[200] == answered["close"] + answered["chunk"]
    with pytest.raises(ValueError, match="at least one request"):
        await loadgen.drive(target, [], concurrency=1, duration_s=0.1, warmup_s=0.0)


async def _ok(text: str) -> tuple[bytes, bool]:
    await asyncio.sleep(0.002)
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", True


@pytest.mark.integration
async def test_alternate_runs_a_block_of_served_requests_then_local_calls_on_the_same_texts(
    bare_server: Callable[..., Awaitable[tuple[str, Counter[str]]]],
) -> None:
    url, answered = await bare_server(_ok)
    target = loadgen.Target.parse(url)
    texts = ["a", "b", "c"]
    called: list[str] = []

    def local(index: int) -> None:
        called.append(texts[index % len(texts)])
        assert sum(answered.values()) == 4 * (1 + (len(called) - 1) // 4)  # its block was served first

    served, others = await loadgen.alternate(
        target, loadgen.encode_requests(target, texts, "m"), local, duration_s=0.3, block=4
    )
    assert served.errors == 0 and served.statuses[200] == len(called) == len(others) > 10
    assert sum(answered.values()) == len(called)
    assert len(served.latencies_s) == len(others)
    assert called[:8] == ["a", "b", "c", "a", "b", "c", "a", "b"]  # blocks of 4, the same texts
    assert all(latency >= 0.002 for latency in served.latencies_s)


@pytest.mark.integration
async def test_a_cancelled_run_is_cancelled_not_cut_short() -> None:
    """Ctrl-C reaches a run as a cancellation (asyncio.Runner): it must stop the bench, not end the
    cell early with what it measured and go on to the next one."""
    url = f"http://127.0.0.1:{free_port()}"
    run = asyncio.create_task(loadgen.run_load(url, ["x"], "m", concurrency=2, duration_s=30, warmup_s=0.0))
    await asyncio.sleep(0.2)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
