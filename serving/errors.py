"""What can go wrong in the serving pod, and the HTTP status each failure answers with.

One small tree; the API registers a single handler that walks ``type(exc).__mro__`` through
`STATUS_BY_ERROR`, so a new error only needs a class here::

    CarpoolError
    ├── InvalidInput ............. 422  a request the pod cannot serve as written
    │   ├── EmptyText ............ 422  text is empty or blank
    │   ├── InvalidConfig ........ 422  a batching config that fails validation (names the field)
    │   ├── NotATrainedModel ..... 422  a base model named on /predict/trained
    │   └── MalformedBody ........ 400  a body that is not JSON
    ├── UnknownModel ............. 404  a model name the pod does not serve (lists the known ones)
    ├── FeatureDisabled .......... 404  /metrics with ENABLE_METRICS=false
    ├── TextTooLong .............. 413  text above CARPOOL_MAX_TEXT_CHARS
    ├── Unauthorized ............. 401  /batching/configure without the admin bearer token
    ├── RequestTimeout ........... 408  the body stalled: no byte for BODY_IDLE_TIMEOUT_S
    ├── QueueFull ................ 429  a model's queue holds max_queue_size requests (Retry-After)
    ├── DeadlineExceeded ......... 504  the request's deadline passed before its batch left
    ├── ModelNotReady ............ 503  still loading, failed to load, or draining
    └── InferenceFailed .......... 500  the model raised on an item that is not bad input

Messages carry the offending value, so a client can fix the request without reading logs.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "STATUS_BY_ERROR",
    "CarpoolError",
    "DeadlineExceeded",
    "EmptyText",
    "FeatureDisabled",
    "InferenceFailed",
    "InvalidConfig",
    "InvalidInput",
    "MalformedBody",
    "ModelNotReady",
    "NotATrainedModel",
    "QueueFull",
    "RequestTimeout",
    "TextTooLong",
    "Unauthorized",
    "UnknownModel",
    "status_for",
]


class CarpoolError(Exception):
    """Base of every error the pod reports to a client; `extra` lands in the JSON body."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "detail": self.message, **self.extra}


class InvalidInput(CarpoolError):
    pass


class EmptyText(InvalidInput):
    pass


class InvalidConfig(InvalidInput):
    pass


class NotATrainedModel(InvalidInput):
    pass


class MalformedBody(InvalidInput):
    pass


class UnknownModel(CarpoolError):
    pass


class FeatureDisabled(CarpoolError):
    pass


class TextTooLong(CarpoolError):
    pass


class Unauthorized(CarpoolError):
    pass


class QueueFull(CarpoolError):
    def __init__(self, message: str, *, retry_after_s: float, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after_s = retry_after_s


class RequestTimeout(CarpoolError):
    pass


class DeadlineExceeded(CarpoolError):
    pass


class ModelNotReady(CarpoolError):
    pass


class InferenceFailed(CarpoolError):
    pass


STATUS_BY_ERROR: dict[type[CarpoolError], int] = {
    MalformedBody: 400,
    InvalidInput: 422,
    UnknownModel: 404,
    FeatureDisabled: 404,
    TextTooLong: 413,
    Unauthorized: 401,
    QueueFull: 429,
    RequestTimeout: 408,
    DeadlineExceeded: 504,
    ModelNotReady: 503,
    InferenceFailed: 500,
    CarpoolError: 500,
}


def status_for(exc: BaseException) -> int:
    """The HTTP status of `exc`: the entry of its nearest class in `STATUS_BY_ERROR`."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500
