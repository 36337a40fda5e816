"""Kubernetes resource quantities (`500m`, `2`, `4Gi`), parsed and written in canonical form.

Why: the API server stores every quantity of a built-in object in its canonical form (`1` becomes
`"1"`, `1000m` becomes `"1"`, `0.5` becomes `"500m"`, `1024Mi` becomes `"1Gi"`). An operator that
writes `nvidia.com/gpu: 1` and compares it with the `"1"` it reads back sees a difference on every
pass and patches for ever. The builders write quantities through `canonical()`, so what the
operator wants is exactly what the server keeps.

The rules are those of apimachinery's `resource.Quantity`: the input's suffix family is kept
(binary `Ki`..`Ei`, decimal SI `n`..`E` or none, exponent `e3`), a binary quantity that is below
1024 or not a whole number of bytes is written as decimal SI, values are rounded up to the nano,
and the largest unit that leaves an integer mantissa is chosen.
"""

from __future__ import annotations

import decimal
import re

__all__ = ["InvalidQuantity", "canonical", "parse"]

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_SUFFIX_BY_EXPONENT = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_BY_POWER = {power: suffix for suffix, power in _BINARY.items()}
_FORM = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|([eE][+-]?\d+))?$")
_NANO = decimal.Decimal("1e-9")


class InvalidQuantity(ValueError):
    """Not a Kubernetes quantity; the message names the value."""


def _split(value: object) -> tuple[decimal.Decimal, str]:
    """The number and the format ('binary', 'decimal' or 'exponent') of a quantity."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidQuantity(f"a quantity is a number or a string such as 500m or 4Gi, got {value!r}")
    text = repr(value) if isinstance(value, float) else str(value)
    match = _FORM.match(text.strip()) if isinstance(value, str) else _FORM.match(text)
    if match is None:
        raise InvalidQuantity(f"not a quantity (e.g. 500m, 2, 4Gi): {value!r}")
    number, suffix, exponent = match.groups()
    with decimal.localcontext() as context:
        context.prec = 60
        amount = decimal.Decimal(number)
        if suffix in _BINARY:
            return amount * (1024 ** _BINARY[suffix]), "binary"
        if exponent:
            return amount.scaleb(int(exponent[1:])), "exponent"
        return amount.scaleb(_DECIMAL[suffix or ""]), "decimal"


def parse(value: object) -> decimal.Decimal:
    """The quantity's value (`"500m"` is 0.5); raises InvalidQuantity."""
    return _split(value)[0]


def canonical(value: object) -> str:
    """The quantity as the API server stores it; raises InvalidQuantity."""
    amount, form = _split(value)
    with decimal.localcontext() as context:
        context.prec = 60
        # Round up to the nano, the smallest unit a quantity keeps.
        amount = (amount / _NANO).to_integral_value(rounding=decimal.ROUND_CEILING) * _NANO
        if amount == 0:
            return "0"
        if form == "binary" and (abs(amount) < 1024 or amount != amount.to_integral_value()):
            form = "decimal"
        if form == "binary":
            power = 6
            while amount % (1024**power) != 0:
                power -= 1
            return f"{int(amount / 1024**power)}{_BINARY_BY_POWER.get(power, '')}"
        # The exponent is the largest multiple of 3 leaving an integer mantissa.
        exponent = 18
        while exponent > -9 and amount % decimal.Decimal(1).scaleb(exponent) != 0:
            exponent -= 3
        mantissa = int(amount.scaleb(-exponent))
        if form == "exponent":
            return f"{mantissa}e{exponent}" if exponent else str(mantissa)
        return f"{mantissa}{_SUFFIX_BY_EXPONENT[exponent]}"
