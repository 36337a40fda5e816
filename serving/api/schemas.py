"""Request bodies of the HTTP API, and how their parse errors become clear 4xx answers."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving import errors
from serving.settings import Strategy

__all__ = ["ConfigureRequest", "PredictRequest", "parse_json", "parse_predict", "validation_message"]


class PredictRequest(BaseModel):
    """One text, classified by each named model."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The text to classify.")
    models: list[str] | None = Field(
        None,
        description="Models to ask; default: every base model (/predict) "
        "or every trained one (/predict/trained).",
    )


class ConfigureRequest(BaseModel):
    """A partial update of the batching config: fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    enable: bool | None = None
    strategy: Strategy | None = None
    max_batch_size: int | None = None
    max_wait_time_ms: float | None = None
    min_batch_size: int | None = None
    max_queue_size: int | None = None
    load_threshold: float | None = None
    latency_threshold_ms: float | None = None


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """`text: Field required; models.0: Input should be a valid string (got 3)`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in (*((prefix,) if prefix else ()), *error["loc"]))
        value = "" if error["type"] == "missing" else f" (got {error.get('input')!r})"
        parts.append(f"{where or 'body'}: {error['msg']}{value}")
    return "; ".join(parts)


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or `errors.MalformedBody` with the parser's own message."""
    if not raw.strip():
        raise errors.MalformedBody('the request body is empty; send JSON such as {"text": "..."}')
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.MalformedBody(f"malformed JSON: {exc}") from None


_PREDICT_FIELDS = frozenset(PredictRequest.model_fields)


def parse_predict(data: Any, prefix: str = "") -> tuple[str, list[str] | None]:
    """The text and model names of a /predict body from parsed JSON; 422 naming the bad field.

    A well-formed body is checked by hand (a few hundred nanoseconds, the hot path); anything else
    goes through `PredictRequest` for a message that names the field and the value.
    """
    if type(data) is dict and data.keys() <= _PREDICT_FIELDS:
        text = data.get("text")
        models = data.get("models")
        if type(text) is str and (
            models is None or (type(models) is list and all(type(name) is str for name in models))
        ):
            return text, models
    if not isinstance(data, dict):
        raise errors.InvalidInput(
            f'{prefix or "body"}: expected a JSON object like {{"text": "...", "models": [...]}}, '
            f"got {type(data).__name__}"
        )
    try:
        body = PredictRequest.model_validate(data)
    except ValidationError as exc:
        raise errors.InvalidInput(validation_message(exc, prefix)) from None
    return body.text, body.models
