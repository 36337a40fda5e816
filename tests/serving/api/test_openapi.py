"""The OpenAPI document states the pod's real bodies, bounds and answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.api import inference
from serving.settings import BatchingConfig
from tests.serving.conftest import Served

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_every_reference_resolves_and_every_operation_documents_its_errors(served: Served) -> None:
    document = (await served.client.get("/openapi.json")).json()
    defined = {f"#/components/schemas/{name}" for name in document["components"]["schemas"]}
    assert set(_refs(document)) <= defined
    assert "$defs" not in json.dumps(document)
    predict = document["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "422", "429", "503", "504"} <= set(predict["responses"])
    assert predict["responses"]["429"]["headers"]["Retry-After"]
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]
    configure = document["paths"]["/batching/configure"]["post"]
    assert "401" in configure["responses"] and configure["security"] == [{"bearer": []}]
    batch = document["paths"]["/predict/batch"]["post"]["responses"]
    assert {"200", "207"} <= set(batch) and "ok" in batch["207"]["content"]["application/json"]["schema"][
        "required"
    ]


async def test_bodies_carry_the_pods_own_bounds_and_names(served: Served) -> None:
    document = (await served.client.get("/openapi.json")).json()
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    text = body["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, served.settings.max_text_chars)
    names = body["properties"]["models"]["anyOf"][0]["items"]["enum"]
    assert names == ["tiny", "tiny_trained"]
    trained = document["paths"]["/predict/trained"]["post"]["requestBody"]["content"]["application/json"]
    assert trained["schema"]["properties"]["models"]["anyOf"][0]["items"]["enum"] == ["tiny_trained"]
    batch = document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["maxItems"] == inference.MAX_BATCH_ITEMS
    knobs = document["paths"]["/batching/configure"]["post"]["requestBody"]["content"]["application/json"]
    size = knobs["schema"]["properties"]["max_batch_size"]["anyOf"][0]
    field = BatchingConfig.model_fields["max_batch_size"]
    assert size["type"] == "integer" and (size["minimum"], size["maximum"]) == (1, 1024)
    assert field.annotation is int
    model = knobs["schema"]["properties"]["model"]["anyOf"]
    assert model[0]["type"] == "string" and "own config" in model[0]["description"]
    assert model[0]["enum"] == ["tiny", "tiny_trained"]
    assert model[1] == {"type": "null"}
    assert "404" in document["paths"]["/batching/configure"]["post"]["responses"]
