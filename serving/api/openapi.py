"""The pod's OpenAPI document: the bodies, answers, errors and bounds it really has.

FastAPI's own document for these routes would say little: the inference bodies are parsed by hand
(`schemas.parse_predict`), every error answers through one handler, and /metrics is text. So the
document is written here from the same definitions the code enforces: the served model names (an
enum, so a schema-valid request names a model the pod has), the text limit in characters, the
batching knobs' bounds (from `BatchingConfig`), the list limit of /predict/batch, and every status
each operation can answer with. A fuzzer (schemathesis, in `make test`) checks the pod's answers
against it.
"""

from __future__ import annotations

from typing import Any

from serving import errors
from serving.api import inference, schemas
from serving.catalog import VISIBLE, Catalog
from serving.settings import BatchingConfig, Strategy

__all__ = ["document"]

JSON = "application/json"

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "The error's class, e.g. QueueFull."},
        "detail": {
            "type": "string",
            "description": "What went wrong, quoting a short prefix of a bad value.",
        },
    },
    "additionalProperties": True,
}

_WHY = {
    400: "The body is not JSON (malformed, empty, nested deeper than 1024, NaN/Infinity, huge numbers).",
    401: "No or a wrong admin bearer token.",
    404: "A model the pod does not serve, or a feature switched off.",
    408: "The body stalled.",
    413: "The body or a text is above its limit, or too many items.",
    422: "A body the pod cannot serve as written (the detail names the field).",
    429: "The model's queue is full; retry after Retry-After seconds (retry_after_ms in the body).",
    500: "The model failed on this text.",
    503: "The model is loading, failed to load, or the pod is stopping.",
    504: "The request's deadline passed before its batch left; it never reached the model.",
}


def _errors(*codes: int, shape: str = "Error") -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for code in codes:
        answer: dict[str, Any] = {
            "description": _WHY[code],
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{shape}"}}},
        }
        if code == 429:
            answer["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        answers[str(code)] = answer
    return answers


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"200": {"description": description, "content": {JSON: {"schema": schema}}}}


def _predict_body(names: list[str], max_chars: int) -> dict[str, Any]:
    models: dict[str, Any] = {
        "anyOf": [{"type": "array", "items": {"type": "string", "enum": names or [""]}}, {"type": "null"}],
        "description": "Models to ask; null or left out: every base model (/predict) or every "
        "trained one (/predict/trained).",
    }
    return {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": max_chars,
                "pattern": VISIBLE,
                "description": "The text to classify: at least one visible character.",
            },
            "models": models,
            "timeout_ms": {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": schemas.MAX_TIMEOUT_MS},
                    {"type": "null"},
                ],
                "description": "Deadline from arrival; shortens the pod's default, never lengthens it.",
            },
        },
    }


def _configure_body(names: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, info in BatchingConfig.model_fields.items():
        annotation = info.annotation
        if annotation is bool:
            schema: dict[str, Any] = {"type": "boolean"}
        elif annotation is Strategy:
            schema = {"type": "string", "enum": [s.value for s in Strategy]}
        else:
            schema = {"type": "integer" if annotation is int else "number"}
            for rule in info.metadata:
                for attr, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum")):
                    if getattr(rule, attr, None) is not None:
                        schema[key] = getattr(rule, attr)
        schema["description"] = (info.description or name) + " null: unchanged."
        properties[name] = {"anyOf": [schema, {"type": "null"}]}
    # The served names (others answer 404, as in /predict's `models`).
    model = {"type": "string", "enum": names or [""], "description": schemas.MODEL_FIELD_DESCRIPTION}
    properties = {"model": {"anyOf": [model, {"type": "null"}]}, **properties}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "description": "A partial update; min_batch_size must stay <= max_batch_size.",
    }


def _prediction() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["label", "score", "probabilities", "latency_ms"],
        "properties": {
            "label": {"type": "string"},
            "score": {"type": "number"},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
            "latency_ms": {"type": "number"},
        },
    }


def _request_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


_TIMEOUT_HEADER = {
    "name": "X-Request-Timeout-Ms",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": inference.TIMEOUT_HEADER_PATTERN},
    "description": "Deadline in milliseconds (1 to 999999.999); shortens the pod's default, never "
    "lengthens it.",
}


def document(base: dict[str, Any], catalog: Catalog, *, admin_token: bool, metrics: bool) -> dict[str, Any]:
    """`base` (FastAPI's document: info, paths, summaries) with real bodies, answers and bounds."""
    paths: dict[str, Any] = base["paths"]
    chars = catalog.max_text_chars
    predictions = {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Prediction"}}
    predicted = {
        "type": "object",
        "required": ["predictions", "latency_ms"],
        "properties": {"predictions": predictions, "latency_ms": {"type": "number"}},
    }
    for path, names in (("/predict", catalog.known_names), ("/predict/trained", catalog.known_trained_names)):
        operation = paths[path]["post"]
        operation["requestBody"] = _request_body(_predict_body(names, chars))
        operation["parameters"] = [_TIMEOUT_HEADER]
        operation["responses"] = {
            **_ok(predicted),
            **_errors(400, 404, 408, 413, 422, 429, 500, 503, 504),
        }
    batch = paths["/predict/batch"]["post"]
    batch["requestBody"] = _request_body(
        {
            "type": "array",
            "maxItems": inference.MAX_BATCH_ITEMS,
            "items": {
                "description": "A /predict body (see PredictRequest); an item that is not one, or "
                "that fails, gets its own error in the answer while the others are served.",
            },
        }
    )
    batch["parameters"] = [_TIMEOUT_HEADER]
    item = {
        "type": "object",
        "required": ["index", "ok"],
        "properties": {
            "index": {"type": "integer"},
            "ok": {"type": "boolean"},
            "predictions": predictions,
            "latency_ms": {"type": "number"},
            "error": {"$ref": "#/components/schemas/Error"},
        },
    }
    answer = {
        "type": "object",
        "required": ["ok", "succeeded", "failed", "results", "latency_ms"],
        "properties": {
            "ok": {"type": "boolean", "description": "true when every item succeeded"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
            "results": {"type": "array", "items": item},
            "latency_ms": {"type": "number"},
        },
    }
    batch["responses"] = {
        **_ok(answer, "Every item succeeded (`ok` true)."),
        str(inference.BATCH_PARTIAL_STATUS): {
            "description": "Multi-Status: at least one item failed (`ok` false, `failed` > 0); each "
            "result says its own outcome, and the items that succeeded carry their predictions.",
            "content": {JSON: {"schema": answer}},
        },
        **_errors(400, 408, 413, 422),
    }
    configure = paths["/batching/configure"]["post"]
    configure["requestBody"] = _request_body(_configure_body(catalog.names))
    configure["responses"] = {
        **_ok(
            {
                "type": "object",
                "required": ["config", "config_hash", "previous_hash"],
                "properties": {
                    "model": {"type": "string", "description": "The model whose config changed, if one."},
                    "config": {"type": "object"},
                    "config_hash": {"type": "string"},
                    "previous_hash": {"type": "string"},
                },
            }
        ),
        **_errors(400, 404, 408, 413, 422, *((401,) if admin_token else ())),
    }
    if admin_token:
        configure["security"] = [{"bearer": []}]
        base.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
    anything = {"type": "object"}
    paths["/batching/stats"]["get"]["responses"] = _ok(anything)
    paths["/models/status"]["get"]["responses"] = _ok(
        {"type": "object", "required": ["models"], "properties": {"models": {"type": "array"}}}
    )
    paths["/livez"]["get"]["responses"] = {**_ok(anything), **_errors(503)}
    paths["/health"]["get"]["responses"] = {
        **_ok(anything, "Every model loaded, warm and served."),
        "503": {"description": "Not ready, or stopping.", "content": {JSON: {"schema": anything}}},
    }
    paths["/metrics"]["get"]["responses"] = (
        {
            "200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
        if metrics
        else _errors(404)
    )
    _document_v2(paths, catalog)
    components = base.setdefault("components", {})
    components["schemas"] = {
        "Error": _ERROR,
        "V2Error": _V2_ERROR,
        "Prediction": _prediction(),
        "PredictRequest": _predict_body(catalog.names, chars),
    }
    base["info"]["description"] = (
        f"Error statuses: {', '.join(sorted({str(c) for c in errors.STATUS_BY_ERROR.values()}))}; every "
        "error body is JSON with `error` and `detail`."
    )
    return base


_V2_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong (the protocol's shape)."}},
}


def _document_v2(paths: dict[str, Any], catalog: Catalog) -> None:
    """The Open Inference Protocol's routes read their path parameters themselves (no FastAPI
    validation on the hot path), so their parameters, body and answers are written here."""
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"A served model: {', '.join(catalog.names)} (others answer 404).",
    }
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The model's version: only '1' exists (others answer 404).",
    }
    anything = {"type": "object"}
    for path, item in paths.items():
        if not path.startswith("/v2"):
            continue
        parameters = [p for p, key in ((name, "{name}"), (version, "{version}")) if key in path]
        for method, operation in item.items():
            if parameters:
                operation["parameters"] = parameters
            if method == "post":  # infer
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        JSON: {"schema": anything},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                }
                failures = (400, 404, 408, 413, 422, 429, 500, 503, 504)
                operation["responses"] = {**_ok(anything), **_errors(*failures, shape="V2Error")}
            elif path.endswith("/ready"):
                unready = (404, 503) if parameters else (503,)
                operation["responses"] = {**_ok(anything), **_errors(*unready, shape="V2Error")}
            else:
                operation["responses"] = {
                    **_ok(anything),
                    **(_errors(404, shape="V2Error") if parameters else {}),
                }
