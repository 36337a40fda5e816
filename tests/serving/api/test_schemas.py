"""serving.api.schemas: the request bodies, derived from their definitions, and their 4xx messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serving import errors
from serving.api import schemas
from serving.settings import BatchingConfig

pytestmark = pytest.mark.unit


def test_the_configure_body_has_the_model_and_every_batching_field_each_optional() -> None:
    assert list(schemas.ConfigureRequest.model_fields) == ["model", *BatchingConfig.model_fields]
    empty = schemas.ConfigureRequest.model_validate({})
    assert all(value is None for value in empty.model_dump().values())
    full = BatchingConfig.model_validate({}).model_dump(mode="json")
    assert schemas.ConfigureRequest.model_validate(full).model_dump(mode="json") == {"model": None, **full}
    for name, info in BatchingConfig.model_fields.items():
        assert schemas.ConfigureRequest.model_fields[name].description == info.description


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(
            {"max_batch_size": "16"}, "max_batch_size: Input should be a valid integer", id="str-int"
        ),
        pytest.param(
            {"max_batch_size": True}, "max_batch_size: Input should be a valid integer", id="bool-int"
        ),
        pytest.param({"enable": 1}, "enable: Input should be a valid boolean (got 1)", id="int-bool"),
        pytest.param(
            {"load_threshold": "0.5"}, "load_threshold: Input should be a valid number", id="str-float"
        ),
        pytest.param({"strategy": "fastest"}, "strategy: Input should be 'single_request'", id="strategy"),
        pytest.param({"max_batchsize": 4}, "max_batchsize: Extra inputs are not permitted", id="unknown"),
        pytest.param({"model": ["tiny"]}, "model: Input should be a valid string", id="model-list"),
        pytest.param({"model": ""}, "model: String should have at least 1 character", id="model-empty"),
    ],
)
def test_the_configure_body_takes_json_types_strictly(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        schemas.ConfigureRequest.model_validate(body)
    assert needle in schemas.validation_message(caught.value)


def test_the_configure_body_takes_a_strategy_by_name_and_integers_as_numbers() -> None:
    body = schemas.ConfigureRequest.model_validate({"strategy": "adaptive", "max_wait_time_ms": 5})
    assert body.model_dump(mode="json")["strategy"] == "adaptive"
    assert body.model_dump()["max_wait_time_ms"] == 5.0


def test_ranges_are_left_to_the_config_itself() -> None:
    schemas.ConfigureRequest.model_validate({"max_batch_size": 0, "min_batch_size": 64})  # no error here
    with pytest.raises(ValidationError):
        BatchingConfig.model_validate({"max_batch_size": 0})


def test_validation_messages_name_the_field_under_a_prefix_and_quote_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        schemas.PredictRequest.model_validate({"models": ["a", 3], "timeout_ms": "x" * 200})
    message = schemas.validation_message(caught.value, "items.2")
    assert "items.2.text: Field required" in message and "items.2.text: Field required (got" not in message
    assert "items.2.models.1: Input should be a valid string (got 3)" in message
    assert "items.2.timeout_ms: Input should be a valid number (got 'xxx" in message
    assert "... (200 characters))" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"text": "hi"}, ("hi", None, None), id="text"),
        pytest.param({"text": "hi", "models": ["a"], "timeout_ms": 50}, ("hi", ["a"], 50), id="all"),
        pytest.param({"text": "hi", "models": None}, ("hi", None, None), id="null-models"),
    ],
)
def test_a_well_formed_predict_body_is_read(data: Any, expected: tuple[Any, ...]) -> None:
    assert schemas.parse_predict(data) == expected


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        pytest.param([1], "body: expected a JSON object", id="list"),
        pytest.param({"models": ["a"]}, "text: Field required", id="no-text"),
        pytest.param({"text": "hi", "model": "a"}, "model: Extra inputs are not permitted", id="extra"),
        pytest.param(
            {"text": "hi", "timeout_ms": 0}, "timeout_ms: Input should be greater than 0", id="timeout"
        ),
        pytest.param(
            {"text": "hi", "timeout_ms": True}, "timeout_ms: Input should be a valid number", id="bool"
        ),
    ],
)
def test_a_bad_predict_body_is_a_422_naming_the_field(data: Any, needle: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        schemas.parse_predict(data)
    assert needle in caught.value.message
    assert errors.status_for(caught.value) == 422


@pytest.mark.parametrize(
    ("raw", "needle"), [(b"", "the request body is empty"), (b" \n", "empty"), (b"{x", "malformed JSON")]
)
def test_a_body_that_is_not_json_is_a_400(raw: bytes, needle: str) -> None:
    with pytest.raises(errors.MalformedBody, match=needle) as caught:
        schemas.parse_json(raw)
    assert errors.status_for(caught.value) == 400
