"""Quantities as the API server stores them: the operator writes what the server would keep."""

from __future__ import annotations

from typing import Any

import pytest

from carpool_operator import quantity
from tests.support import habits

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(1, "1", id="int"),
        pytest.param("1000m", "1", id="milli-to-one"),
        pytest.param(0.5, "500m", id="float-half"),
        pytest.param("1.5", "1500m", id="decimal-string"),
        pytest.param("1000", "1k", id="thousand"),
        pytest.param("1500", "1500", id="not-a-whole-k"),
        pytest.param(4000000000, "4G", id="giga"),
        pytest.param("1024Mi", "1Gi", id="binary-up"),
        pytest.param("1.5Gi", "1536Mi", id="binary-fraction"),
        pytest.param("0.5Ki", "512", id="small-binary-becomes-decimal"),
        pytest.param("2e3", "2e3", id="exponent"),
        pytest.param("0", "0", id="zero"),
    ],
)
def test_canonical_form(value: Any, stored: str) -> None:
    assert quantity.canonical(value) == stored
    assert habits.canonical_quantity(value) == stored  # the emulator agrees, written independently


@pytest.mark.parametrize("value", ["4 GB", "", "1.2.3", True, None, "Gi"])
def test_not_a_quantity(value: Any) -> None:
    with pytest.raises(quantity.InvalidQuantity):
        quantity.canonical(value)


def test_parse() -> None:
    assert quantity.parse("2500m") == 2.5 and quantity.parse("1Ki") == 1024
