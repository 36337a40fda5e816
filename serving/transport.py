"""The pod's HTTP/1.1 transport: uvicorn's httptools protocol, with a deadline on request heads.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) and the pod bounds a stalled
body (`BODY_IDLE_TIMEOUT_S`, in `api.fastpath`), but nothing bounds the head: a client that opens a
connection and sends nothing, or sends a request line and then one header a minute, holds a
connection and its buffers for as long as it likes. A few thousand such clients exhaust a worker.
Here every request's head (request line and headers) must arrive within `HEADER_TIMEOUT_S` of its
first byte, and a new connection must start one within the same bound: a late head gets a JSON 408
and the connection is closed; a connection that never said anything is closed without a word.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.settings import HEADER_TIMEOUT_S

__all__ = ["HeadDeadlineProtocol"]

_LATE_HEAD = (
    b'{"error":"RequestTimeout","detail":"the request\'s head (request line and headers) did not '
    b'arrive within %d s; the connection is closed"}'
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that ends a connection whose request head is late (module docstring)."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        if self._head_timer is None:  # a keep-alive connection's next request
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_begun = False
        super().on_headers_complete()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            body = _LATE_HEAD % round(HEADER_TIMEOUT_S)
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()
