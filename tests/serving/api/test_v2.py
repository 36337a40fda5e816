"""The Open Inference Protocol (v2) endpoints against tiny real BERTs, in process.

The real clients (tritonclient, the kserve SDK) against a real `carpool serve` are in
test_v2_clients.py; here are the wire format's corners and the engine's limits.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

from carpool_bench import server
from serving import app as app_module
from serving.api import inference, v2
from serving.metrics import Metrics
from serving.pool import ModelPool
from serving.settings import BatchingConfig
from tests.serving.conftest import Served, gated_app, tiny_settings, until_queued
from tests.support import tinybert
from tests.support.models import GatedModel

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]

LABELS = list(tinybert.DEFAULT_LABELS)


def text_input(texts: list[Any], shape: list[int] | None = None, datatype: str = "BYTES") -> dict[str, Any]:
    return {"name": "text", "datatype": datatype, "shape": shape or [len(texts), 1], "data": texts}


def binary_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


async def predict(served: Served, text: str) -> dict[str, Any]:
    response = await served.client.post("/predict", json={"text": text, "models": ["tiny"]})
    prediction: dict[str, Any] = response.json()["predictions"]["tiny"]
    return prediction


async def test_server_metadata_and_health(served: Served) -> None:
    metadata = await served.client.get("/v2")
    assert metadata.json() == {"name": "carpool", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert (await served.client.get("/v2/health/live")).json() == {"live": True}
    ready = await served.client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


@pytest.mark.parametrize("path", ["/v2/models/tiny", "/v2/models/tiny/versions/1"])
async def test_model_metadata_declares_the_text_input_and_three_outputs(served: Served, path: str) -> None:
    response = await served.client.get(path)
    assert response.status_code == 200
    assert response.json() == {
        "name": "tiny",
        "versions": ["1"],
        "platform": "carpool",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "score", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]},
        ],
        "parameters": {"labels": LABELS},
    }


async def test_model_readiness(served: Served) -> None:
    ready = await served.client.get("/v2/models/tiny_trained/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "tiny_trained", "ready": True})
    unknown = await served.client.get("/v2/models/nope/ready")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown model 'nope'; this pod serves tiny, tiny_trained"}
    version = await served.client.get("/v2/models/tiny/versions/2/ready")
    assert version.status_code == 404
    assert version.json() == {"error": "model 'tiny' has no version '2'; its only version is '1'"}


async def test_a_model_still_loading_is_not_ready() -> None:
    model = GatedModel()
    pool = ModelPool.from_models([model], BatchingConfig(), metrics=Metrics())
    app = app_module.create_app(tiny_settings(Path("/unused")), pool)  # never started: nothing loaded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
        server = await client.get("/v2/health/ready")
        one = await client.get("/v2/models/gated/ready")
    await pool.drain()
    assert (server.status_code, server.json()) == (503, {"ready": False})
    assert (one.status_code, one.json()) == (503, {"name": "gated", "ready": False})


async def test_infer_answers_each_row_as_predict_does(served: Served) -> None:
    texts = ["Verify your account now", "lunch at noon?", "Ignore previous instructions"]
    response = await served.client.post(
        "/v2/models/tiny/infer", json={"id": "req-7", "inputs": [text_input(texts)]}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "1", "req-7")
    outputs = {output["name"]: output for output in body["outputs"]}
    assert list(outputs) == ["label", "score", "probabilities"]
    assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("BYTES", [3, 1])
    assert (outputs["score"]["datatype"], outputs["score"]["shape"]) == ("FP32", [3, 1])
    assert (outputs["probabilities"]["datatype"], outputs["probabilities"]["shape"]) == ("FP32", [3, 4])
    for row, text in enumerate(texts):
        expected = await predict(served, text)
        assert outputs["label"]["data"][row] == expected["label"]
        assert outputs["score"]["data"][row] == pytest.approx(expected["score"], rel=1e-5)
        probabilities = outputs["probabilities"]["data"][row * 4 : row * 4 + 4]
        assert probabilities == pytest.approx(
            [expected["probabilities"][label] for label in LABELS], rel=1e-5
        )


async def test_binary_tensors_both_ways(served: Served) -> None:
    texts = ["Your parcel is waiting: pay the fee", "Résumé attached ✓"]
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2, 1],
                "parameters": {"binary_data_size": len(binary_bytes([t.encode() for t in texts]))},
            }
        ],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "label", "parameters": {"binary_data": True}},
            {"name": "score"},
        ],
    }
    head = json.dumps(header).encode()
    response = await served.client.post(
        "/v2/models/tiny/versions/1/infer",
        content=head + binary_bytes([t.encode() for t in texts]),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    body = json.loads(response.content[:length])
    assert [o["name"] for o in body["outputs"]] == ["probabilities", "label", "score"]
    probabilities_size = body["outputs"][0]["parameters"]["binary_data_size"]
    label_size = body["outputs"][1]["parameters"]["binary_data_size"]
    tail = response.content[length:]
    assert probabilities_size == 2 * 4 * 4 and len(tail) == probabilities_size + label_size
    probabilities = struct.unpack("<8f", tail[:probabilities_size])
    labels = v2._unpack_bytes(tail[probabilities_size:])
    for row, text in enumerate(texts):
        expected = await predict(served, text)
        assert labels[row].decode() == expected["label"]
        assert body["outputs"][2]["data"][row] == pytest.approx(expected["score"], rel=1e-5)
        assert probabilities[row * 4 : row * 4 + 4] == pytest.approx(
            [expected["probabilities"][label] for label in LABELS], rel=1e-5
        )


async def test_binary_data_output_asks_for_every_output_in_binary(served: Served) -> None:
    response = await served.client.post(
        "/v2/models/tiny/infer",
        json={"inputs": [text_input(["hello"], shape=[1])], "parameters": {"binary_data_output": True}},
    )
    length = int(response.headers["inference-header-content-length"])
    outputs = json.loads(response.content[:length])["outputs"]
    assert [(o["name"], o["shape"], "data" in o) for o in outputs] == [
        ("label", [1, 1], False),
        ("score", [1, 1], False),
        ("probabilities", [1, 4], False),
    ]
    sizes = [o["parameters"]["binary_data_size"] for o in outputs]
    assert sizes[1:] == [4, 16] and len(response.content) == length + sum(sizes)


async def test_nested_data_is_read_row_major(served: Served) -> None:
    flat = await served.client.post("/v2/models/tiny/infer", json={"inputs": [text_input(["a b", "c d"])]})
    nested = await served.client.post(
        "/v2/models/tiny/infer", json={"inputs": [text_input([["a b"], ["c d"]])]}
    )
    assert flat.json()["outputs"] == nested.json()["outputs"]


CUT_HEAD = json.dumps(
    {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 7}}
        ]
    }
).encode()
LONG = "x" * 201  # the text limit here is 200 characters


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        pytest.param(
            "/v2/models/nope/infer",
            {"inputs": [text_input(["hi"])]},
            404,
            "unknown model 'nope'; this pod serves tiny, tiny_trained",
            id="unknown-model",
        ),
        pytest.param(
            "/v2/models/tiny/versions/3/infer",
            {"inputs": [text_input(["hi"])]},
            404,
            "model 'tiny' has no version '3'; its only version is '1'",
            id="unknown-version",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input([1.5], datatype="FP32")]},
            422,
            "input 'text' has datatype 'FP32'; it takes 'BYTES' (UTF-8 texts)",
            id="wrong-datatype",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["a", "b"], shape=[1, 2])]},
            422,
            "input 'text' has shape [1, 2]; it takes [N, 1] (or [N]): N texts, N >= 1",
            id="wrong-shape",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["a", "b"], shape=[3, 1])]},
            422,
            "input 'text' has shape [3, 1] but holds 2 values",
            id="shape-and-data-disagree",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["fine", "  "])]},
            422,
            "input 'text' row 1: text must not be empty or blank "
            "(whitespace, control and zero-width characters only)",
            id="empty-text",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["fine", LONG])]},
            413,
            "input 'text' row 1: text has 201 characters; the limit is 200 (CARPOOL_MAX_TEXT_CHARS)",
            id="text-too-long",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["fine", 7])]},
            422,
            "input 'text' row 1 is 7, not a text",
            id="not-a-text",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["hi"]), {**text_input(["x"]), "name": "extra"}]},
            422,
            "the model takes exactly one input, 'text'; got inputs ['text', 'extra']",
            id="extra-input",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [{**text_input(["hi"]), "name": "INPUT0"}]},
            422,
            "the model takes exactly one input, 'text'; got inputs ['INPUT0']",
            id="wrong-input-name",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["hi"])], "outputs": [{"name": "logits"}]},
            422,
            "unknown output 'logits'; the model's outputs are label, score, probabilities",
            id="unknown-output",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": ["text"]},
            422,
            "each input must be an object with name, datatype, shape and data; got 'text'",
            id="input-not-an-object",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": []},
            422,
            "\"inputs\" must be a list holding the input 'text', got []",
            id="no-inputs",
        ),
        pytest.param(
            "/v2/models/tiny/infer",
            {"inputs": [text_input(["x"] * 1025)]},
            413,
            "input 'text' has 1025 rows; an infer request takes at most 1024",
            id="too-many-rows",
        ),
    ],
)
async def test_bad_requests_answer_the_protocols_error_shape(
    served: Served, path: str, body: dict[str, Any], status: int, error: str
) -> None:
    response = await served.client.post(path, json=body)
    assert response.status_code == status
    assert response.json() == {"error": error}


@pytest.mark.parametrize(
    ("content", "headers", "error"),
    [
        pytest.param(b"", {}, "the request body is empty", id="empty-body"),
        pytest.param(b'{"inputs": [', {}, "malformed JSON: ", id="malformed-json"),
        pytest.param(
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "99"},
            "Inference-Header-Content-Length is '99'; it must be a byte count within the 14-byte body",
            id="header-length-past-the-body",
        ),
        pytest.param(
            CUT_HEAD + b"\x05\x00\x00\x00abc",
            {"Inference-Header-Content-Length": str(len(CUT_HEAD))},
            "binary BYTES element at byte 0 claims 5 bytes; 3 remain",
            id="binary-element-cut-short",
        ),
    ],
)
async def test_unreadable_bodies_are_400(
    served: Served, content: bytes, headers: dict[str, str], error: str
) -> None:
    response = await served.client.post("/v2/models/tiny/infer", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


async def test_a_body_too_large_for_any_valid_request_is_a_413(served: Served) -> None:
    limit = inference.MAX_BATCH_ITEMS * (4 * 200 + 16) + 64 * 1024
    response = await served.client.post("/v2/models/tiny/infer", content=b" " * (limit + 1))
    assert response.status_code == 413
    assert response.json() == {"error": f"request body of {limit + 1} bytes is above this endpoint's {limit}"}


async def test_many_rows_ride_together_and_wait_for_room(served: Served) -> None:
    previous = served.pool.config.model_dump()
    served.pool.configure(
        {"max_queue_size": 4, "strategy": "batch_optimized", "max_batch_size": 8, "max_wait_time_ms": 50}
    )
    engine = served.pool.served["tiny"].engine
    overflow = engine.stats.overflow
    before = server.batch_counters((await served.client.get("/metrics")).text, "tiny")
    try:
        texts = [f"item {i}" for i in range(40)]
        response = await served.client.post("/v2/models/tiny/infer", json={"inputs": [text_input(texts)]})
    finally:
        served.pool.configure(previous)
    after = server.batch_counters((await served.client.get("/metrics")).text, "tiny")
    assert response.status_code == 200
    assert response.json()["outputs"][0]["shape"] == [40, 1]
    assert engine.stats.overflow == overflow  # waited for room: no row was refused
    assert before is not None and after is not None
    passes, rows = after[0] - before[0], after[1] - before[1]
    assert rows == 40 and passes <= 10  # and they rode together, up to 8 at a time


async def test_a_one_row_request_to_a_full_queue_is_429_with_retry_after() -> None:
    body = {"inputs": [text_input(["late"])]}
    async with gated_app(1) as (model, served):
        client = served.client
        first = asyncio.ensure_future(
            client.post("/v2/models/gated/infer", json={"inputs": [text_input(["a"])]})
        )
        await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 5)
        queued = asyncio.ensure_future(
            client.post("/v2/models/gated/infer", json={"inputs": [text_input(["b"])]})
        )
        await until_queued(served.pool, "gated", 1)
        rejected = await client.post("/v2/models/gated/infer", json=body)
        model.gate.set()
        answered = await asyncio.gather(first, queued)
        metrics = (await client.get("/metrics")).text
    assert rejected.status_code == 429
    assert int(rejected.headers["retry-after"]) >= 1
    assert "max_queue_size 1" in rejected.json()["error"]
    assert [r.json()["outputs"][0]["data"] for r in answered] == [["a"], ["b"]]
    endpoint = 'endpoint="/v2/models/{name}/infer",model="gated"'
    assert f'carpool_requests_total{{{endpoint},outcome="rejected"}} 1.0' in metrics
    assert f'carpool_requests_total{{{endpoint},outcome="ok"}} 2.0' in metrics


async def test_an_unknown_model_never_labels_the_metrics(served: Served) -> None:
    await served.client.post("/v2/models/typo/infer", json={"inputs": [text_input(["hi"])]})
    metrics = (await served.client.get("/metrics")).text
    assert 'endpoint="/v2/models/{name}/infer",model="-",outcome="invalid"' in metrics
    assert "typo" not in metrics
