"""The ASGI front of the inference endpoints, driven with raw ASGI messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.api import fastpath
from tests.serving.conftest import Served

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]


class Upload:
    """A client sending its body in chunks; counts what the server pulled."""

    def __init__(self, chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []
        self.headers = headers or [(b"content-type", b"application/json")]

    def scope(self, path: str) -> dict[str, Any]:
        return {"type": "http", "method": "POST", "path": path, "headers": self.headers}

    async def receive(self) -> dict[str, Any]:
        chunk = self.chunks[self.pulled]
        self.pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": self.pulled < len(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    @property
    def body(self) -> Any:
        return json.loads(self.sent[1]["body"])


def _front(served: Served) -> fastpath.FastPath:
    assert isinstance(served.app, fastpath.FastPath)
    return served.app


async def test_a_chunked_body_over_the_limit_is_refused_before_it_is_all_read(served: Served) -> None:
    upload = Upload([b"x" * 1000] * 10_000)  # 10 MB, far above /predict's limit for 200-character texts
    await _front(served)(upload.scope("/predict"), upload.receive, upload.send)
    assert upload.status == 413 and upload.body["error"] == "TextTooLong"
    assert upload.pulled < 10


async def test_a_declared_length_over_the_limit_is_refused_before_reading(served: Served) -> None:
    upload = Upload([b"{}"], headers=[(b"content-length", b"99999999")])
    await _front(served)(upload.scope("/predict/trained"), upload.receive, upload.send)
    assert upload.status == 413 and upload.pulled == 0
    assert "99999999 bytes" in upload.body["detail"]


async def test_a_body_in_chunks_is_answered_like_one_in_one_piece(served: Served) -> None:
    body = json.dumps({"text": "Verify your account now", "models": ["tiny"]}).encode()
    upload = Upload([body[:5], body[5:17], body[17:]])
    await _front(served)(upload.scope("/predict"), upload.receive, upload.send)
    whole = await served.client.post("/predict", content=body)
    assert upload.status == 200 and whole.status_code == 200
    assert upload.body["predictions"]["tiny"]["probabilities"] == pytest.approx(
        whole.json()["predictions"]["tiny"]["probabilities"], abs=1e-6
    )
    content_length = dict(upload.sent[0]["headers"])[b"content-length"]
    assert int(content_length) == len(upload.sent[1]["body"])


async def test_other_paths_and_methods_go_to_the_full_app(served: Served) -> None:
    assert (await served.client.get("/predict")).status_code == 405
    assert (await served.client.get("/livez")).json() == {"status": "alive"}
    schema = (await served.client.get("/openapi.json")).json()
    assert {"/predict", "/predict/trained", "/predict/batch", "/livez"} <= set(schema["paths"])


async def test_an_error_quoting_a_number_beyond_64_bits_is_still_json() -> None:
    from serving.api import responses

    body = responses.json_bytes({"error": "InvalidConfig", "value": -(10**203)})
    assert json.loads(body)["value"] == -(10**203)
