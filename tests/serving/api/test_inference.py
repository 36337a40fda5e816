"""POST /predict, /predict/trained and /predict/batch against tiny real BERTs."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from serving.api import inference
from serving.models.fake import EchoModel
from tests.serving.conftest import Served, gated_app, serve_app, tiny_settings, until_queued
from tests.support import tinybert

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]

LABELS = list(tinybert.DEFAULT_LABELS)


async def test_predict_answers_each_named_model(served: Served) -> None:
    response = await served.client.post(
        "/predict", json={"text": "Verify your account now", "models": ["tiny"]}
    )
    assert response.status_code == 200
    body = response.json()
    prediction = body["predictions"]["tiny"]
    assert list(prediction["probabilities"]) == LABELS
    assert math.isclose(sum(prediction["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    assert prediction["score"] == prediction["probabilities"][prediction["label"]]
    assert prediction["latency_ms"] >= 0 and body["latency_ms"] >= prediction["latency_ms"]


async def test_predict_without_models_asks_every_base_model(served: Served) -> None:
    response = await served.client.post("/predict", json={"text": "hello"})
    assert list(response.json()["predictions"]) == ["tiny"]


async def test_a_request_naming_several_models_fans_out_and_waits_for_all(served: Served) -> None:
    response = await served.client.post(
        "/predict", json={"text": "hello there", "models": ["tiny", "tiny_trained"]}
    )
    predictions = response.json()["predictions"]
    assert set(predictions) == {"tiny", "tiny_trained"}
    assert predictions["tiny"]["probabilities"] != predictions["tiny_trained"]["probabilities"]


async def test_concurrent_requests_never_get_each_others_results(served: Served) -> None:
    model = served.pool.served["tiny"].engine.model
    texts = [f"message number {i} " + "please " * (i % 9) for i in range(48)]
    expected = [p.probabilities for p in model.predict_batch([model.encode(t) for t in texts])]
    responses = await asyncio.gather(
        *(served.client.post("/predict", json={"text": t, "models": ["tiny"]}) for t in texts)
    )
    for response, probabilities in zip(responses, expected, strict=True):
        got = response.json()["predictions"]["tiny"]["probabilities"]
        assert list(got.values()) == pytest.approx(list(probabilities.values()), abs=1e-5)


async def test_predict_batch_says_plainly_whether_every_item_succeeded(served: Served) -> None:
    fine = await served.client.post("/predict/batch", json=[{"text": "a"}, {"text": "b", "models": ["tiny"]}])
    assert fine.status_code == 200
    assert (fine.json()["ok"], fine.json()["succeeded"], fine.json()["failed"]) == (True, 2, 0)
    every_one_failed = await served.client.post(
        "/predict/batch", json=[{"text": "Message 1", "models": ["ghost"]}] * 3
    )
    assert every_one_failed.status_code == 207
    body = every_one_failed.json()
    assert (body["ok"], body["succeeded"], body["failed"]) == (False, 0, 3)
    assert {r["error"]["status"] for r in body["results"]} == {404}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        pytest.param(
            {"text": "hi", "models": ["nope"]},
            404,
            "unknown model 'nope'; this pod serves tiny, tiny_trained",
            id="unknown-model",
        ),
        pytest.param({"text": "", "models": ["tiny"]}, 422, "text must not be empty", id="empty-text"),
        pytest.param({"text": " \n ", "models": ["tiny"]}, 422, "text must not be empty", id="blank-text"),
        pytest.param(
            {"text": "x" * 201}, 413, "text has 201 characters; the limit is 200", id="oversized-text"
        ),
        pytest.param({"models": ["tiny"]}, 422, "text: Field required", id="missing-text"),
        pytest.param(
            {"text": "hi", "models": "tiny"},
            422,
            "models: Input should be a valid list",
            id="models-not-a-list",
        ),
        pytest.param(
            {"text": 3}, 422, "text: Input should be a valid string (got 3)", id="text-not-a-string"
        ),
        pytest.param(
            {"text": "hi", "model": "tiny"}, 422, "model: Extra inputs are not permitted", id="unknown-field"
        ),
        pytest.param(["hi"], 422, "expected a JSON object", id="not-an-object"),
    ],
)
async def test_bad_predict_requests_get_a_4xx_naming_the_problem(
    served: Served, body: object, status: int, needle: str
) -> None:
    response = await served.client.post("/predict", json=body)
    assert response.status_code == status
    assert needle in response.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        pytest.param(
            b'{"text": "hi"', "malformed JSON: unexpected end of data: line 1 column 14", id="truncated"
        ),
        pytest.param(b"", "the request body is empty", id="empty"),
        pytest.param(b"\xff\xfe", "malformed JSON", id="not-utf8"),
    ],
)
async def test_malformed_json_is_a_400_with_the_parse_error(served: Served, raw: bytes, needle: str) -> None:
    response = await served.client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert needle in response.json()["detail"]


async def test_predict_trained_serves_trained_models(served: Served) -> None:
    response = await served.client.post(
        "/predict/trained", json={"text": "Test message", "models": ["tiny_trained"]}
    )
    assert response.status_code == 200
    assert list(response.json()["predictions"]) == ["tiny_trained"]
    default = await served.client.post("/predict/trained", json={"text": "Test message"})
    assert list(default.json()["predictions"]) == ["tiny_trained"]


async def test_predict_trained_refuses_a_base_model_and_names_the_trained_ones(served: Served) -> None:
    response = await served.client.post("/predict/trained", json={"text": "Test message", "models": ["tiny"]})
    assert response.status_code == 422
    body = response.json()
    assert "'tiny' is not a trained model; /predict/trained serves tiny_trained" in body["detail"]
    assert "carpool train" in body["detail"]
    assert body["trained_models"] == ["tiny_trained"]


async def test_predict_trained_without_any_trained_model_says_how_to_make_one(tiny_models_dir: Path) -> None:
    settings = tiny_settings(tiny_models_dir, models={"tiny": tiny_models_dir / "tiny"})
    async with serve_app(settings) as only_base:
        response = await only_base.client.post("/predict/trained", json={"text": "hi"})
    assert response.status_code == 404
    assert "no trained model is loaded; run `carpool train`" in response.json()["detail"]


async def test_predict_batch_answers_in_order_with_per_item_errors(served: Served) -> None:
    items = [
        {"text": "Message 1", "models": ["tiny"]},
        {"text": "", "models": ["tiny"]},
        {"text": "Message 3", "models": ["ghost"]},
        {"txt": "Message 4"},
        {"text": "Message 5", "models": ["tiny", "tiny_trained"]},
    ]
    response = await served.client.post("/predict/batch", json=items)
    assert response.status_code == 207  # Multi-Status: some items failed
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["ok"] for r in results] == [True, False, False, False, True]
    assert (body["ok"], body["succeeded"], body["failed"]) == (False, 2, 3)
    assert results[1]["error"]["status"] == 422 and "empty" in results[1]["error"]["detail"]
    assert results[2]["error"]["status"] == 404 and "'ghost'" in results[2]["error"]["detail"]
    assert (
        results[3]["error"]["status"] == 422 and "[3].text: Field required" in results[3]["error"]["detail"]
    )
    assert set(results[4]["predictions"]) == {"tiny", "tiny_trained"}
    single = await served.client.post("/predict", json=items[0])
    assert results[0]["predictions"]["tiny"]["probabilities"] == pytest.approx(
        single.json()["predictions"]["tiny"]["probabilities"], abs=1e-5
    )


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        pytest.param({"text": "hi"}, 422, "expects a JSON list", id="object"),
        pytest.param(
            [{"text": "hi"}] * (inference.MAX_BATCH_ITEMS + 1), 413, "at most 1024 items", id="too-many"
        ),
    ],
)
async def test_bad_batch_bodies(served: Served, body: object, status: int, needle: str) -> None:
    response = await served.client.post("/predict/batch", json=body)
    assert response.status_code == status
    assert needle in response.json()["detail"]


async def test_a_full_queue_answers_429_with_retry_after() -> None:
    async with gated_app(2, EchoModel("other")) as (model, served):
        client = served.client
        first = asyncio.ensure_future(client.post("/predict", json={"text": "first", "models": ["gated"]}))
        await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 5)
        queued = [
            asyncio.ensure_future(client.post("/predict", json={"text": f"q{i}", "models": ["gated"]}))
            for i in range(2)
        ]
        await until_queued(served.pool, "gated", 2)
        rejected = await client.post("/predict", json={"text": "late", "models": ["gated", "other"]})
        model.gate.set()
        answered = await asyncio.gather(first, *queued)
        metrics = (await client.get("/metrics")).text
    assert rejected.status_code == 429
    assert int(rejected.headers["retry-after"]) >= 1
    assert "max_queue_size 2" in rejected.json()["detail"]
    assert [r.json()["predictions"]["gated"]["label"] for r in answered] == ["first", "q0", "q1"]
    assert 'carpool_requests_total{endpoint="/predict",model="gated",outcome="rejected"} 1.0' in metrics
    assert 'carpool_requests_total{endpoint="/predict",model="gated",outcome="ok"} 3.0' in metrics
    assert (
        served.pool.served["other"].engine.stats.completed == 0
    )  # its share of the refused request never ran


async def test_a_predict_that_finds_the_queue_full_gets_in_when_a_batch_leaves_within_its_wait() -> None:
    async with gated_app(1) as (model, served):
        client = served.client
        first = asyncio.ensure_future(client.post("/predict", json={"text": "first", "models": ["gated"]}))
        await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 5)
        queued = asyncio.ensure_future(client.post("/predict", json={"text": "queued", "models": ["gated"]}))
        await until_queued(served.pool, "gated", 1)
        late = asyncio.ensure_future(client.post("/predict", json={"text": "late", "models": ["gated"]}))
        await asyncio.sleep(inference.ROOM_WAIT_S / 5)
        assert not late.done()  # in line for room, not refused
        model.gate.set()  # the model finishes "first"; "queued" leaves the queue: room for "late"
        answered = await asyncio.gather(first, queued, late)
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert answered[2].json()["predictions"]["gated"]["label"] == "late"
    assert served.pool.served["gated"].engine.stats.overflow == 0


async def test_a_batch_longer_than_the_queue_is_served_whole(served: Served) -> None:
    previous = served.pool.config.model_dump()
    served.pool.configure({"max_queue_size": 4, "strategy": "batch_optimized", "max_batch_size": 4})
    try:
        response = await served.client.post(
            "/predict/batch",
            json=[{"text": f"item {i}", "models": ["tiny", "tiny_trained"]} for i in range(30)],
        )
    finally:
        served.pool.configure(previous)
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (30, 0)
    assert served.pool.served["tiny"].engine.stats.overflow == 0


async def test_a_body_too_large_for_any_valid_request_is_a_413_before_parsing(served: Served) -> None:
    raw = b'{"text": "' + b"a" * 8000 + b'"}'  # the text limit here is 200 characters
    response = await served.client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "request body of 8012 bytes is above this endpoint's 6496" in response.json()["detail"]
