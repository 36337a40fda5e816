"""What an HTTP worker and the model process say to each other, and how it is framed.

A frame is a 4-byte big-endian length and a pickled list of messages. Each side collects the
messages of one event-loop iteration and sends them as one frame (`Outbox`), so a batch of 32
results costs the model process one write and the worker one read, not 32.

Messages are plain tuples whose first item says what they are:

    worker -> model process
      (PREDICT, rid, text, names, wait_for_room, ids, timeout_s, bulk)
                                                      one text for one or more models; `ids` are its
                                                      tokens when the worker has the model's encoder;
                                                      `timeout_s` the time left to its deadline when
                                                      sent (None: none), `bulk` its lane. The last two
                                                      may be left out (no deadline, interactive).
      (CALL, rid, method, argument)                   configure, stats, health, status, metrics
      (RECORD, endpoint, outcomes, seconds)           one answered request, for the metrics
    model process -> worker
      (HELLO, info)                                   first frame: settings, models, config
      (RESULT, rid, {name: (label, score, probabilities, seconds)})
      (FAILED, rid, error)                            a `CarpoolError`, as `error_to_wire` gives it
      (REPLY, rid, value)
      (ENCODERS, 0, {name: encoder})                  the models' tokenizers, once they are loaded

Errors cross as (class name, message, extra, retry_after_s) and are rebuilt as the same class of
`errors`, so a worker answers with exactly the status and body the model process chose.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any

from serving import errors

__all__ = [
    "CALL",
    "ENCODERS",
    "FAILED",
    "HELLO",
    "PREDICT",
    "RECORD",
    "REPLY",
    "RESULT",
    "FrameReader",
    "Outbox",
    "error_from_wire",
    "error_to_wire",
    "pack",
    "read_frame_blocking",
]

PREDICT, CALL, RECORD, HELLO, RESULT, FAILED, REPLY, ENCODERS = range(8)

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30


def pack(messages: list[Any]) -> bytes:
    payload = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Splits a byte stream into frames and hands each frame's messages to `deliver`."""

    def __init__(self, deliver: Callable[[list[Any]], None]) -> None:
        self._deliver = deliver
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (size,) = _HEADER.unpack_from(buffer, offset)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes is above the {MAX_FRAME} limit")
            if end - offset - 4 < size:
                break
            start = offset + 4
            messages = pickle.loads(memoryview(buffer)[start : start + size])
            offset = start + size
            self._deliver(messages)
        if offset:
            del buffer[:offset]


def read_frame_blocking(sock: Any) -> list[Any]:
    """One frame from a blocking socket (the worker reads the HELLO this way before serving)."""
    header = _recv_exactly(sock, 4)
    (size,) = _HEADER.unpack(header)
    messages: list[Any] = pickle.loads(_recv_exactly(sock, size))
    return messages


def _recv_exactly(sock: Any, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the model process closed the connection")
        chunks += chunk
    return bytes(chunks)


class Outbox:
    """Messages queued during one loop iteration, written as one frame just after it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._messages: list[Any] = []
        self.transport: asyncio.Transport | None = None

    def put(self, message: Any) -> None:
        if not self._messages:
            self._loop.call_soon(self.flush)
        self._messages.append(message)

    def flush(self) -> None:
        messages, self._messages = self._messages, []
        transport = self.transport
        if messages and transport is not None and not transport.is_closing():
            transport.write(pack(messages))


def error_to_wire(exc: errors.CarpoolError) -> tuple[str, str, dict[str, Any], float | None]:
    retry_after = exc.retry_after_s if isinstance(exc, errors.QueueFull) else None
    return type(exc).__name__, exc.message, exc.extra, retry_after


def error_from_wire(wire: tuple[str, str, dict[str, Any], float | None]) -> errors.CarpoolError:
    name, message, extra, retry_after = wire
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.CarpoolError)):
        cls = errors.CarpoolError
    if cls is errors.QueueFull:
        return errors.QueueFull(message, retry_after_s=1.0 if retry_after is None else retry_after, **extra)
    return cls(message, **extra)
