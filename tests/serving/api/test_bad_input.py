"""Hostile and careless input, through the whole app: every body bounded, every refusal a short JSON 4xx."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from serving.api import batching, fastpath, inference
from serving.models.encoding import CHARS_PER_TOKEN, TextEncoder
from tests.serving.conftest import ADMIN_TOKEN, Served, serve_app, tiny_settings

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
JSON = {"content-type": "application/json"}
POSTS = ["/predict", "/predict/trained", "/predict/batch", "/batching/configure"]


async def _post(served: Served, path: str, raw: bytes) -> Any:
    return await served.client.post(path, content=raw, headers=AUTH if "configure" in path else JSON)


async def test_texts_escaped_as_json_clients_send_them_are_held_to_characters_not_bytes(
    tiny_models_dir: Path,
) -> None:
    only_tiny = {"tiny": tiny_models_dir / "tiny"}
    settings = tiny_settings(tiny_models_dir, max_text_chars=20_000, models=only_tiny)
    async with serve_app(settings) as pod:
        cyrillic = "привет мир " * 1273  # 14,003 characters, 6 bytes each as \uXXXX escapes
        answer = await pod.client.post("/predict", content=json.dumps({"text": cyrillic}), headers=JSON)
        assert answer.status_code == 200, answer.text
        emoji = "🙂" * 6800  # 12 bytes each: a surrogate pair of escapes
        answer = await pod.client.post("/predict", content=json.dumps({"text": emoji}), headers=JSON)
        assert answer.status_code == 200, answer.text
        batch = json.dumps([{"text": cyrillic}] * 3)
        answer = await pod.client.post("/predict/batch", content=batch, headers=JSON)
        assert answer.status_code == 200 and answer.json()["succeeded"] == 3
        over = await pod.client.post("/predict", content=json.dumps({"text": "я" * 20_001}), headers=JSON)
        assert over.status_code == 413 and "20001 characters" in over.json()["detail"]


async def test_configure_bodies_are_bounded(served: Served) -> None:
    raw = b'{"strategy": "' + b"x" * 50_000 + b'"}'
    answer = await _post(served, "/batching/configure", raw)
    assert answer.status_code == 413
    assert f"above this endpoint's {batching.CONFIGURE_BODY_LIMIT}" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/batching/configure", {"strategy": "s" * 10_000}, id="configure-strategy"),
        pytest.param("/batching/configure", {"s" * 10_000: 1}, id="configure-field-name"),
        pytest.param("/predict", {"text": "hi", "models": ["ghost" * 200]}, id="predict-model"),
        pytest.param("/predict", {"text": ["x" * 1000]}, id="predict-text-type"),
        pytest.param("/predict/batch", [{"text": "hi", "models": ["ghost" * 20_000]}], id="batch-item"),
    ],
)
async def test_errors_quote_a_short_prefix_of_a_bad_value(served: Served, path: str, body: Any) -> None:
    answer = await _post(served, path, json.dumps(body).encode())
    assert answer.status_code in (207, 404, 422), answer.text[:300]
    assert len(answer.content) < 1500
    assert "characters)" in answer.text  # says how long the value was


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        pytest.param(b"[" * 2000 + b"]" * 2000, "depth limit exceeded", id="deep-nesting"),
        pytest.param(b'{"max_wait_time_ms": NaN}', "malformed JSON", id="nan"),
        pytest.param(b'{"max_wait_time_ms": Infinity}', "malformed JSON", id="infinity"),
        pytest.param(b'{"max_wait_time_ms": -Infinity}', "malformed JSON", id="minus-infinity"),
        pytest.param(b'{"max_wait_time_ms": 1e400}', "infinity", id="huge-number"),
        pytest.param(b'{"strategy": "\\ud800"}', "surrogate", id="lone-surrogate"),
        pytest.param(b'{"text": "\xed\xa0\x80"}', "malformed JSON", id="surrogate-bytes"),
    ],
)
async def test_json_no_parser_should_accept_is_a_400_everywhere(
    served: Served, path: str, raw: bytes, needle: str
) -> None:
    answer = await _post(served, path, raw)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert needle in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param({"max_batch_size": True}, "max_batch_size: Input should be a valid integer", id="bool"),
        pytest.param({"max_batch_size": "16"}, "max_batch_size: Input should be a valid integer", id="str"),
        pytest.param({"max_batch_size": 16.5}, "max_batch_size: Input should be a valid integer", id="float"),
        pytest.param({"enable": "yes"}, "enable: Input should be a valid boolean", id="yes"),
        pytest.param({"enable": 1}, "enable: Input should be a valid boolean", id="one"),
        pytest.param({"max_wait_time_ms": "5"}, "max_wait_time_ms: Input should be a valid number", id="num"),
        pytest.param({"load_threshold": False}, "load_threshold: Input should be a valid number", id="no"),
    ],
)
async def test_configure_takes_json_types_as_they_are(served: Served, body: Any, needle: str) -> None:
    before = (await served.client.get("/batching/stats")).json()["config_hash"]
    answer = await _post(served, "/batching/configure", json.dumps(body).encode())
    assert answer.status_code == 422
    assert needle in answer.json()["detail"]
    assert (await served.client.get("/batching/stats")).json()["config_hash"] == before


@pytest.mark.parametrize(
    "text", ["\u0000\u0000", "\u200b\u200b", "\ufeff", " \u2060\u200d\t", "\u00a0\u3000", "\u2028\u00ad"]
)
async def test_texts_that_only_look_blank_are_refused_as_empty(served: Served, text: str) -> None:
    for path in ("/predict", "/predict/trained"):
        answer = await served.client.post(path, json={"text": text})
        assert answer.status_code == 422 and answer.json()["error"] == "EmptyText", answer.text
    batch = await served.client.post("/predict/batch", json=[{"text": text}, {"text": "fine"}])
    assert [item["ok"] for item in batch.json()["results"]] == [False, True]


async def test_texts_with_invisible_characters_among_visible_ones_are_served(served: Served) -> None:
    answer = await served.client.post("/predict", json={"text": "\u200bhello\u0000"})
    assert answer.status_code == 200


class _Stalled:
    """A client that sends part of its body, then nothing."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.pulled += 1
        if self.pulled == 1:
            return {"type": "http.request", "body": self.first, "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/batching/configure"])
async def test_a_stalled_body_is_answered_408_after_the_idle_timeout(
    served: Served, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastpath, "BODY_IDLE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(inference, "BODY_IDLE_TIMEOUT_S", 0.2)
    client = _Stalled(b'{"text": "hel')
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    if "configure" in path:
        headers.append((b"authorization", f"Bearer {ADMIN_TOKEN}".encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("pod", 80),
        "client": ("client", 1234),
        "root_path": "",
    }
    started = time.monotonic()
    await asyncio.wait_for(served.app(scope, client.receive, client.send), 5)
    assert time.monotonic() - started < 2
    assert client.sent[0]["status"] == 408
    body = json.loads(client.sent[-1]["body"])
    assert body["error"] == "RequestTimeout" and "stalled" in body["detail"]


@pytest.mark.asyncio(loop_scope="function")
async def test_a_long_text_is_cut_before_it_is_tokenized(tiny_models_dir: Path) -> None:
    tokenizer_json = (tiny_models_dir / "tiny" / "tokenizer.json").read_text()
    encoder = TextEncoder("tiny", tokenizer_json, max_length=32)
    words = " ".join(f"word{i % 97} text" for i in range(4000))  # about 40,000 characters
    assert len(words) > 20 * 32 * CHARS_PER_TOKEN
    kept = words[: 32 * CHARS_PER_TOKEN]
    assert encoder.encode(words).ids == encoder.encode(kept).ids  # the cut drops nothing the model sees

    def cost(text: str) -> float:
        best = float("inf")
        for _ in range(20):
            started = time.perf_counter()
            encoder.encode(text)
            best = min(best, time.perf_counter() - started)
        return best

    assert cost(words) < 4 * cost(kept)  # whole, 40,000 characters cost the tokenizer about 20x
