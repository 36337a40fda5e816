"""GET /batching/stats and POST /batching/configure."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from serving import errors, validation
from serving.api import inference, schemas
from serving.frontend import Backend
from serving.settings import BatchingConfig

__all__ = ["CONFIGURE_BODY_LIMIT", "router"]

CONFIGURE_BODY_LIMIT = 16 * 1024  # a full config is about 250 bytes

router = APIRouter(tags=["batching"])


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _check_token(request: Request) -> None:
    expected: str | None = request.app.state.settings.admin_token
    if not expected:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected.encode()):
        raise errors.Unauthorized(
            "POST /batching/configure needs the header 'Authorization: Bearer <token>' "
            "with the pod's CARPOOL_ADMIN_TOKEN"
        )


_INT_FIELDS = frozenset(name for name, info in BatchingConfig.model_fields.items() if info.annotation is int)


def _integral(key: str, value: Any) -> Any:
    if key in _INT_FIELDS and type(value) is float and value.is_integer():
        return int(value)
    return value


@router.get("/batching/stats", summary="The batching config in force and the measured figures")
async def batching_stats(request: Request) -> JSONResponse:
    return JSONResponse(await _backend(request).stats())


@router.post("/batching/configure", summary="Change the batching config live")  # body: api.openapi
async def batching_configure(request: Request) -> JSONResponse:
    """Partial update of the pod's config, or of one model's (`model`); applies at each model's next
    batch; returns the new config and its hash."""
    _check_token(request)
    data: Any = schemas.parse_json(await inference.read_body(request, CONFIGURE_BODY_LIMIT))
    if not isinstance(data, dict):
        raise errors.InvalidConfig(f"expected a JSON object of batching fields, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schemas.ConfigureRequest.model_fields))
    if unknown:
        raise errors.InvalidConfig(
            f"unknown batching field {validation.quote(unknown[0])}; "
            f"known: {', '.join(schemas.ConfigureRequest.model_fields)}"
        )
    # JSON has one number type: 16.0 is the integer 16, as JSON Schema says; true and "16" are not.
    data = {key: _integral(key, value) for key, value in data.items()}
    try:
        schemas.ConfigureRequest.model_validate(data)  # strict types first; ranges in the pool
    except ValidationError as exc:
        problems = validation.problems(exc.errors(include_url=False))
        raise errors.InvalidConfig(
            "invalid batching config: " + "; ".join(map(str, problems)),
            # A value of the wrong JSON type may be a long list or object: the detail quotes it, cut.
            errors=[{"field": problem.field, "message": problem.message} for problem in problems],
        ) from None
    model = data.pop("model", None)
    backend = _backend(request)
    if model is not None:
        model = backend.catalog.resolve([model])[0]  # 404 naming the served models; an alias resolved
    changes = {key: value for key, value in data.items() if value is not None}
    return JSONResponse(await backend.configure(changes, model))
