"""Request bodies of the HTTP API, and how their parse errors become clear 4xx answers."""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from serving import errors, validation
from serving.settings import BatchingConfig

__all__ = [
    "MAX_TIMEOUT_MS",
    "ConfigureRequest",
    "PredictRequest",
    "parse_json",
    "parse_predict",
    "validation_message",
]

MAX_TIMEOUT_MS = 3_600_000


class PredictRequest(BaseModel):
    """One text, classified by each named model."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="The text to classify.")
    models: list[str] | None = Field(
        None,
        description="Models to ask; default: every base model (/predict) "
        "or every trained one (/predict/trained).",
    )
    timeout_ms: float | None = Field(
        None,
        strict=True,
        gt=0,
        le=MAX_TIMEOUT_MS,
        description="Deadline in milliseconds from arrival: a request still queued then is answered 504 "
        "without reaching the model. Shortens the pod's CARPOOL_REQUEST_TIMEOUT_MS, never lengthens it. "
        "The header X-Request-Timeout-Ms does the same.",
    )


def _partial(info: FieldInfo) -> Any:
    """A `BatchingConfig` field as an optional field of a partial update: its type only (the
    ranges and the min <= max rule are `BatchingConfig`'s, checked when the update is applied).

    Strict: true is not 1, "16" is not 16, "yes" is not true (the env vars are parsed leniently,
    as text; a JSON client says what it means). A strategy is matched by its value.
    """
    kind = info.annotation
    assert kind is not None
    enum = isinstance(kind, type) and issubclass(kind, Enum)
    return (kind | None, Field(None, strict=not enum, description=info.description))


MODEL_FIELD_DESCRIPTION = (
    "The served model (or alias) whose own config changes; the others keep theirs. "
    "Left out or null: the pod's config, and the named fields on every model."
)

ConfigureRequest: type[BaseModel] = create_model(
    "ConfigureRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A partial update of the batching config: fields left out keep their value.",
    model=(str | None, Field(None, strict=True, min_length=1, description=MODEL_FIELD_DESCRIPTION)),
    **{name: _partial(info) for name, info in BatchingConfig.model_fields.items()},
)
"""The body of POST /batching/configure: `model`, and the fields derived from `BatchingConfig`'s."""


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """`text: Field required; models.0: Input should be a valid string (got 3)`."""
    return validation.message(
        exc.errors(include_url=False), lambda where: ".".join(filter(None, (prefix, where)))
    )


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or `errors.MalformedBody` with the parser's own message."""
    if not raw.strip():
        raise errors.MalformedBody('the request body is empty; send JSON such as {"text": "..."}')
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.MalformedBody(f"malformed JSON: {exc}") from None  # orjson never quotes the input


_PREDICT_FIELDS = frozenset(PredictRequest.model_fields)


def parse_predict(data: Any, prefix: str = "") -> tuple[str, list[str] | None, float | None]:
    """The text, model names and timeout_ms of a /predict body from parsed JSON; 422 naming the
    bad field.

    A well-formed body is checked by hand (a few hundred nanoseconds, the hot path); anything else
    goes through `PredictRequest` for a message that names the field and the value.
    """
    if type(data) is dict and data.keys() <= _PREDICT_FIELDS:
        text = data.get("text")
        models = data.get("models")
        timeout = data.get("timeout_ms")
        if (
            type(text) is str  # "" is refused as EmptyText by the catalog, as blank texts are
            and (models is None or (type(models) is list and all(type(name) is str for name in models)))
            and (timeout is None or (type(timeout) in (int, float) and 0 < timeout <= MAX_TIMEOUT_MS))
        ):
            return text, models, timeout
    if not isinstance(data, dict):
        raise errors.InvalidInput(
            f'{prefix or "body"}: expected a JSON object like {{"text": "...", "models": [...]}}, '
            f"got {type(data).__name__}"
        )
    try:
        body = PredictRequest.model_validate(data)
    except ValidationError as exc:
        raise errors.InvalidInput(validation_message(exc, prefix)) from None
    return body.text, body.models, body.timeout_ms
