"""How a refused value is told: one formatter for pydantic's validation errors, for every audience.

The batching knobs are validated by one model (`settings.BatchingConfig`) but refused to three
audiences, each knowing them by its own names: an HTTP client by the JSON field
(`max_batch_size`), the pod's environment by the variable (`MAX_BATCH_SIZE`), the operator's custom
resource by the field path (`spec.batching.maxBatchSize`). `problems()` and `message()` turn
pydantic's errors into `where: what (got value)` with `where` in the audience's names (a `name`
function), the value quoted with `quote()` (a short prefix, never a client's megabytes).

A rule over several fields raises `Conflict`, which keeps its fields apart from its sentence, so
the same rule reads `min_batch_size (64) must be <= max_batch_size (32)` to a client and
`MIN_BATCH_SIZE (64) must be <= MAX_BATCH_SIZE (32)` to the environment.

The lowest layer of the pod: it imports nothing of it, so settings (and the operator) can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["QUOTE_CHARS", "Conflict", "Problem", "message", "problems", "quote"]

QUOTE_CHARS = 60  # what an error message repeats of a client's value, at most

Namer = Callable[[str], str]
"""A field's dotted location (`max_batch_size`, `models.0`) -> the name its audience knows."""


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters with the full length said: error messages never
    echo a client's megabytes back."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters)"
    return text


class Conflict(ValueError):
    """A rule over several fields, broken; raised from a model validator.

    `Conflict("{min_batch_size} must be <= {max_batch_size}", min_batch_size=64, max_batch_size=32)`
    reads `min_batch_size (64) must be <= max_batch_size (32)`; `render(name)` says the same in an
    audience's names. The first field is the one the rule constrains (where `problems()` puts it).
    """

    def __init__(self, sentence: str, **values: Any) -> None:
        self.sentence = sentence
        self.values = values
        super().__init__(self.render())

    @property
    def field(self) -> str:
        return next(iter(self.values))

    def render(self, name: Namer = str) -> str:
        return self.sentence.format(
            **{field: f"{name(field)} ({value})" for field, value in self.values.items()}
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """One refused value: where (in the audience's names; "" for the whole), what, the value."""

    field: str
    message: str
    value: Any = None
    has_value: bool = True
    names_itself: bool = False
    """The message already names its fields and values (a `Conflict`): told without `field: `."""

    def as_dict(self) -> dict[str, Any]:
        """`{"field", "message", "value"}` for an error body; a long text value quoted, cut."""
        entry: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.has_value:
            long_text = isinstance(self.value, str) and len(self.value) > QUOTE_CHARS
            entry["value"] = quote(self.value) if long_text else self.value
        return entry

    def __str__(self) -> str:
        if self.names_itself or not self.field:
            return self.message
        got = f" (got {quote(self.value)})" if self.has_value else ""
        return f"{self.field}: {self.message}{got}"


def problems(errors: Iterable[Mapping[str, Any]], name: Namer = str) -> list[Problem]:
    """pydantic's errors (`ValidationError.errors()`, or FastAPI's `RequestValidationError.errors()`)
    as `Problem`s in the names `name` gives."""
    found = []
    for error in errors:
        cause = (error.get("ctx") or {}).get("error")
        msg = str(error.get("msg", ""))
        if isinstance(cause, Conflict):
            found.append(
                Problem(
                    name(cause.field),
                    msg.replace(str(cause), cause.render(name)),
                    cause.values[cause.field],
                    names_itself=True,
                )
            )
            continue
        location = ".".join(str(part) for part in error.get("loc", ()))
        found.append(
            Problem(
                name(location) if location else "",
                msg,
                error.get("input"),
                has_value=error.get("type") != "missing",
            )
        )
    return found


def message(errors: Iterable[Mapping[str, Any]], name: Namer = str) -> str:
    """`max_batch_size: Input should be greater than or equal to 1 (got 0); ...` in `name`'s names."""
    return "; ".join(str(problem) for problem in problems(errors, name))
