"""Kubernetes resource quantities (``10Gi``, ``30``, ``1500m``, ``1e9``): parse and format, pure.

The webhook reads them from ResourceSlices, the driver from ``consumedCapacity`` and writes them into
ResourceSlices. Values are exact fractions (callers round explicitly); parsing is bounded: a quantity
with an absurd exponent or mantissa is refused rather than computed.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY_RE = re.compile(
    r"^(?P<sign>[+-]?)(?P<number>\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|[eE](?P<exp>[+-]?\d{1,3})|(?P<decimal>[numkMGTPE]?))$"
)
_MAX_EXPONENT = 30


class QuantityError(ValueError):
    """A value is not a Kubernetes quantity (or is outside what a device can have)."""


def parse_quantity(value: object) -> Fraction:
    """The exact value of a quantity (string or int): ``"10Gi"`` -> ``10737418240``."""
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if not isinstance(value, str):
        raise QuantityError(f"not a quantity: {value!r}")
    match = _QUANTITY_RE.match(value.strip())
    if not match:
        raise QuantityError(f"not a quantity: {value!r}")
    number = Fraction(match.group("number"))
    if match.group("sign") == "-":
        number = -number
    binary = match.group("binary")
    if binary:
        return number * (1 << _BINARY[binary])
    exp = match.group("exp")
    if exp is not None:
        exponent = int(exp)
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"quantity exponent out of range: {value!r}")
        return number * Fraction(10) ** exponent
    return number * Fraction(10) ** _DECIMAL[match.group("decimal") or ""]


def quantity_ceil(value: object) -> int:
    """A quantity as a whole number, rounded up as the scheduler's ``Quantity.Value()`` does."""
    q = parse_quantity(value)
    return -((-q.numerator) // q.denominator)


def quantity_bytes(value: object) -> int:
    """A non-negative whole amount (bytes), rounded up as ``Quantity.Value()`` does."""
    if parse_quantity(value) < 0:
        raise QuantityError(f"negative quantity: {value!r}")
    return quantity_ceil(value)


def format_binary(value: int) -> str:
    """A whole number of bytes in canonical binary form: ``10737418240`` -> ``10Gi``, ``1000`` -> ``1000``."""
    if value < 0:
        raise QuantityError(f"negative size {value}")
    if value == 0:
        return "0"
    suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    power = 0
    while power < len(suffixes) - 1 and value % 1024 == 0:
        value //= 1024
        power += 1
    return f"{value}{suffixes[power]}"


def format_decimal(value: int) -> str:
    """A whole number in plain decimal form (``100``)."""
    return str(int(value))

