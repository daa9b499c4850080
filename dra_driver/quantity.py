"""Kubernetes resource quantities (``10Gi``, ``30``, ``1500m``, ``1e3``): parse and format, pure.

The driver reads quantities from ``consumedCapacity`` and writes them into ResourceSlices. Values
are kept as exact fractions; :func:`parse_quantity` rounds nothing, callers round explicitly.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY_RE = re.compile(
    r"^(?P<sign>[+-]?)(?P<number>\d+(?:\.\d*)?|\.\d+)"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?\d+)|(?P<decimal>[numkMGTPE]?))$"
)


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Fraction:
    """The exact value of a quantity string (or an int), e.g. ``"10Gi"`` -> ``10737418240``."""
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    text = str(value).strip()
    match = _QUANTITY_RE.match(text)
    if not match:
        raise QuantityError(f"not a quantity: {value!r}")
    number = Fraction(match.group("number"))
    if match.group("sign") == "-":
        number = -number
    if match.group("binary"):
        return number * int(1024 ** _BINARY[match.group("binary")])
    if match.group("exp"):
        return number * Fraction(10) ** int(match.group("exp")[1:])
    return number * Fraction(10) ** _DECIMAL[match.group("decimal") or ""]


def quantity_ceil(value: object) -> int:
    """A quantity as a whole number, rounded up as the scheduler's ``Quantity.Value()`` does."""
    q = parse_quantity(value)
    return -((-q.numerator) // q.denominator)


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


def same_quantity(a: object, b: object) -> bool:
    """True when two quantities denote the same value (``1024Mi`` == ``1Gi``); False if either is bad."""
    try:
        return parse_quantity(a) == parse_quantity(b)
    except QuantityError:
        return False
