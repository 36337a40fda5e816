"""serving.validation: one way to tell a refused value, in each audience's names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError, model_validator

from serving import validation

pytestmark = pytest.mark.unit


class Window(BaseModel):
    low: int = Field(0, ge=0)
    high: int = Field(10, le=100)
    label: str = "w"

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.low > self.high:
            raise validation.Conflict("{low} must be <= {high}", low=self.low, high=self.high)
        return self


def _errors(**values: Any) -> list[Any]:
    with pytest.raises(ValidationError) as caught:
        Window.model_validate(values)
    return caught.value.errors()


SHOUT = {"low": "LOW", "high": "HIGH", "label": "LABEL"}


def test_a_field_error_names_the_field_in_the_audiences_names_and_quotes_the_value() -> None:
    assert validation.message(_errors(low=-1)) == "low: Input should be greater than or equal to 0 (got -1)"
    assert validation.message(_errors(low=-1, high=101), SHOUT.__getitem__) == (
        "LOW: Input should be greater than or equal to 0 (got -1); "
        "HIGH: Input should be less than or equal to 100 (got 101)"
    )
    long = validation.message(_errors(label=["x"] * 100))
    assert (
        long.startswith("label: Input should be a valid string (got ['x', ") and "(500 characters))" in long
    )


def test_a_conflict_reads_in_the_audiences_names_and_sits_on_its_first_field() -> None:
    errors = _errors(low=7, high=3)
    assert validation.message(errors) == "Value error, low (7) must be <= high (3)"
    assert validation.message(errors, SHOUT.__getitem__) == "Value error, LOW (7) must be <= HIGH (3)"
    [problem] = validation.problems(errors, SHOUT.__getitem__)
    assert problem.as_dict() == {
        "field": "LOW",
        "message": "Value error, LOW (7) must be <= HIGH (3)",
        "value": 7,
    }


def test_a_missing_field_is_told_without_a_value() -> None:
    class Needs(BaseModel):
        text: str

    with pytest.raises(ValidationError) as caught:
        Needs.model_validate({})
    [problem] = validation.problems(caught.value.errors())
    assert str(problem) == "text: Field required"
    assert problem.as_dict() == {"field": "text", "message": "Field required"}


def test_an_error_list_quotes_a_long_text_value() -> None:
    [problem] = validation.problems([{"loc": ("label",), "msg": "bad", "input": "y" * 500, "type": "x"}])
    assert problem.as_dict()["value"] == f"{'y' * 60!r}... (500 characters)"


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        pytest.param("short", "'short'", id="short"),
        pytest.param("z" * 61, f"{'z' * 60!r}... (61 characters)", id="long-text"),
        pytest.param(b"b" * 70, f"{b'b' * 60!r}... (70 characters)", id="long-bytes"),
        pytest.param(list(range(30)), repr(list(range(30)))[:60] + "... (110 characters)", id="long-list"),
        pytest.param(3, "3", id="number"),
    ],
)
def test_quote_repeats_at_most_a_short_prefix(value: object, quoted: str) -> None:
    assert validation.quote(value) == quoted
