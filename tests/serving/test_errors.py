"""The error tree's statuses, found by walking the MRO."""

from __future__ import annotations

import pytest

from serving import errors

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.EmptyText("e"), 422),
        (errors.InvalidConfig("e"), 422),
        (errors.NotATrainedModel("e"), 422),
        (errors.MalformedBody("e"), 400),
        (errors.UnknownModel("e"), 404),
        (errors.FeatureDisabled("e"), 404),
        (errors.TextTooLong("e"), 413),
        (errors.Unauthorized("e"), 401),
        (errors.QueueFull("e", retry_after_s=1), 429),
        (errors.ModelNotReady("e"), 503),
        (errors.InferenceFailed("e"), 500),
        (ValueError("not ours"), 500),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_status_for(error: Exception, status: int) -> None:
    assert errors.status_for(error) == status


def test_a_new_subclass_inherits_its_parents_status() -> None:
    class TooManyModels(errors.InvalidInput):
        pass

    assert errors.status_for(TooManyModels("x")) == 422


def test_body_carries_the_message_and_extra_fields() -> None:
    error = errors.UnknownModel("unknown model 'x'", known_models=["a"])
    assert error.body() == {"error": "UnknownModel", "detail": "unknown model 'x'", "known_models": ["a"]}
