"""The operator's Prometheus client against the real Prometheus server and real failing servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from carpool_operator import prometheus
from tests.support.prometheus import PrometheusServer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prometheus")) as running:
        yield running


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("vector(3)", 3.0, id="vector"),
        pytest.param("scalar(vector(2.5))", 2.5, id="scalar"),
        pytest.param("sum(vector(0))", 0.0, id="zero-is-a-value"),
    ],
)
async def test_single_value(server: PrometheusServer, query: str, expected: float) -> None:
    assert await prometheus.query_value(server.url, query) == expected


async def test_trailing_slash_in_url_is_fine(server: PrometheusServer) -> None:
    assert await prometheus.query_value(server.url + "/", "vector(1)") == 1.0


@pytest.mark.parametrize(
    ("query", "error", "fragment"),
    [
        pytest.param(
            'sum(carpool_queue_size{namespace="ns", policy="none"})',
            prometheus.NoSeries,
            "matched no series",
            id="no-series",
        ),
        pytest.param(
            'vector(1) or label_replace(vector(2), "pod", "b", "", "")',
            prometheus.UnusableResult,
            "returned 2 series",
            id="several-series",
        ),
        pytest.param("vector(0) / 0", prometheus.UnusableResult, "returned nan", id="nan"),
        pytest.param("vector(-1)", prometheus.UnusableResult, "returned -1.0", id="negative"),
        pytest.param('"text"', prometheus.UnusableResult, "returned a string", id="string"),
        pytest.param("sum(", prometheus.PrometheusRejected, "answered 400", id="bad-promql"),
        pytest.param("up[1m]", prometheus.UnusableResult, "returned a matrix", id="range-vector"),
    ],
)
async def test_every_unusable_answer_is_an_error_with_its_reason(
    server: PrometheusServer, query: str, error: type[prometheus.PrometheusError], fragment: str
) -> None:
    with pytest.raises(error) as raised:
        await prometheus.query_value(server.url, query)
    assert fragment in str(raised.value)
    assert raised.value.reason == error.__name__


async def test_stopped_server_is_unreachable(tmp_path: Path) -> None:
    stopped = PrometheusServer(tmp_path)
    stopped.start()
    assert await prometheus.query_value(stopped.url, "vector(1)") == 1.0
    stopped.stop()
    with pytest.raises(prometheus.PrometheusUnreachable, match="unreachable") as raised:
        await prometheus.query_value(stopped.url, "vector(1)")
    assert raised.value.reason == "PrometheusUnreachable"


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP listener that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


async def test_silent_server_times_out(silent_server: str) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(prometheus.PrometheusUnreachable, match=r"did not answer within 0\.3 s"):
        await prometheus.query_value(silent_server, "vector(1)", timeout_s=0.3)
    assert asyncio.get_running_loop().time() - started < 2.0


@pytest.fixture
async def proxy_server() -> AsyncIterator[str]:
    """A real HTTP server answering what a broken proxy in front of Prometheus would."""

    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream connect error")

    async def not_json(_: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/down/api/v1/query", unavailable)
    app.router.add_get("/html/api/v1/query", not_json)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        pytest.param("/down", "answered 503 to 'vector(1)': upstream connect error", id="http-503"),
        pytest.param("/html", "answered 200 to 'vector(1)': <html>login</html>", id="not-json"),
    ],
)
async def test_http_errors_are_rejections(proxy_server: str, path: str, fragment: str) -> None:
    with pytest.raises(prometheus.PrometheusRejected) as raised:
        await prometheus.query_value(proxy_server + path, "vector(1)")
    assert fragment in str(raised.value)


@pytest.mark.parametrize("url", ["ftp://prometheus:9090", "prometheus.monitoring:9090", "http://"])
async def test_invalid_url_is_named(url: str) -> None:
    with pytest.raises(prometheus.InvalidPrometheusUrl) as raised:
        await prometheus.query_value(url, "vector(1)")
    assert repr(url) in str(raised.value)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(None, 'sum(carpool_queue_size{namespace="ml", policy="phishing"})', id="default"),
        pytest.param(
            'max(carpool_queue_size{kubernetes_namespace="$namespace", app="$policy"})',
            'max(carpool_queue_size{kubernetes_namespace="ml", app="phishing"})',
            id="custom-labels",
        ),
        pytest.param(
            'sum(label_replace(carpool_queue_size, "p", "$1", "pod", "(.*)-[^-]+"){p="$policy"})',
            'sum(label_replace(carpool_queue_size, "p", "$1", "pod", "(.*)-[^-]+"){p="phishing"})',
            id="regex-groups-untouched",
        ),
    ],
)
def test_render_query(template: str | None, expected: str) -> None:
    assert prometheus.render_query(template, namespace="ml", policy="phishing") == expected


@pytest.mark.unit
def test_render_query_escapes_label_values() -> None:
    rendered = prometheus.render_query(None, namespace='a"b', policy="c\\d")
    assert rendered == 'sum(carpool_queue_size{namespace="a\\"b", policy="c\\\\d"})'
