"""Kubernetes ``resource.Quantity``: exact parsing, comparison and canonical formatting (pure).

Values are exact ``Fraction``s. Formatting follows apimachinery's canonical form: the suffix family
of the input (binary ``Ki..Ei``, decimal ``n u m "" k M G T P E`` or an ``e`` exponent); binary values
below 1024 print in decimal; the largest suffix that keeps an integer mantissa wins; values below the
nano scale round up to 1n as Kubernetes does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import total_ordering
from typing import Any

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_PATTERN = re.compile(
    r"^(?P<sign>[+-])?(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)


class QuantityError(ValueError):
    pass


@total_ordering
@dataclass(frozen=True)
class Quantity:
    value: Fraction
    format: str = "DecimalSI"  # BinarySI, DecimalSI, DecimalExponent

    @classmethod
    def parse(cls, text: Any) -> Quantity:
        if isinstance(text, Quantity):
            return text
        if isinstance(text, bool):
            raise QuantityError(f"quantities must match the regular expression: {text!r}")
        if isinstance(text, int):
            return cls(Fraction(text))
        if isinstance(text, float):
            return cls(Fraction(str(text)))
        s = str(text).strip()
        m = _PATTERN.match(s)
        if not m:
            raise QuantityError(
                f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {s!r}"
            )
        number = Fraction(m["num"])
        if m["sign"] == "-":
            number = -number
        suffix = m["suffix"] or ""
        if suffix in _BINARY:
            return cls(number * _BINARY[suffix], "BinarySI")
        if suffix[:1] in ("e", "E"):
            return cls(number * Fraction(10) ** int(suffix[1:]), "DecimalExponent")
        return cls(number * Fraction(10) ** _DECIMAL[suffix], "DecimalSI")

    @classmethod
    def of(cls, value: int | Fraction, like: Quantity | None = None) -> Quantity:
        return cls(Fraction(value), like.format if like else "DecimalSI")

    # arithmetic and comparison
    def __add__(self, other: Quantity) -> Quantity:
        return Quantity(self.value + other.value, self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(self.value - other.value, self.format)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.value < other.value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def cmp(self, other: Quantity) -> int:
        return (self.value > other.value) - (self.value < other.value)

    def integer(self) -> int:
        """``Quantity.Value()``: the value rounded up to an integer (away from zero)."""
        return math.ceil(self.value)

    def milli(self) -> int:
        return math.ceil(self.value * 1000)

    def is_integer(self) -> bool:
        return self.value.denominator == 1

    def __str__(self) -> str:
        return format_quantity(self.value, self.format)

    def __repr__(self) -> str:
        return f"Quantity({self})"


def format_quantity(value: Fraction, fmt: str = "DecimalSI") -> str:
    # Kubernetes stores at most nano precision; smaller positive fractions round up.
    scaled = value * 10**9
    if scaled.denominator != 1:
        nanos = -((-scaled.numerator) // scaled.denominator)
        value = Fraction(nanos, 10**9)
    sign = "-" if value < 0 else ""
    magnitude = -value if value < 0 else value
    if magnitude == 0:
        return "0"
    if fmt == "BinarySI" and magnitude >= 1024 and magnitude.denominator == 1:
        amount = int(magnitude)
        suffix = ""
        for name in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
            if amount % 1024:
                break
            amount //= 1024
            suffix = name
        if suffix:
            return f"{sign}{amount}{suffix}"
        return f"{sign}{amount}"
    # decimal: find the largest exponent (multiple of 3) that leaves an integer mantissa
    exponent = -9
    mantissa = magnitude * 10**9
    while exponent < 18 and mantissa.denominator == 1 and mantissa.numerator % 1000 == 0 and mantissa != 0:
        mantissa /= 1000
        exponent += 3
    if fmt == "DecimalExponent":
        return f"{sign}{int(mantissa)}" + (f"e{exponent}" if exponent else "")
    suffix = {v: k for k, v in _DECIMAL.items()}[exponent]
    return f"{sign}{int(mantissa)}{suffix}"
