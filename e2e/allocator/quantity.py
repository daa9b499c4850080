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
        if len(suffix) > 1 and suffix[0] in ("e", "E"):
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
    """apimachinery's ``CanonicalizeBytes``: the value (rounded up to nano precision, away from zero) in
    the largest suffix of its format that keeps the mantissa whole."""
    sign = "-" if value < 0 else ""
    magnitude = -value if value < 0 else value
    scaled = magnitude * 10**9
    if scaled.denominator != 1:  # Kubernetes stores at most nano precision; finer values round up
        magnitude = Fraction(math.ceil(scaled), 10**9)
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
        return f"{sign}{amount}{suffix}"
    # decimal: the largest exponent (a multiple of 3) that leaves an integer mantissa
    exponent = -9
    mantissa = magnitude * 10**9
    top = None if fmt == "DecimalExponent" else 18
    while (top is None or exponent < top) and mantissa.numerator % 1000 == 0:
        mantissa /= 1000
        exponent += 3
    if fmt == "DecimalExponent":
        return f"{sign}{int(mantissa)}" + (f"e{exponent}" if exponent else "")
    suffix = {v: k for k, v in _DECIMAL.items()}[exponent]
    return f"{sign}{int(mantissa)}{suffix}"


_INT64_MAX = 2**63 - 1
_BINARY_EXPONENT = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def canonical(text: Any) -> str:
    """The string kube-apiserver stores and serves for a quantity written as ``text``.

    What ``ParseQuantity`` followed by ``MarshalJSON`` gives (apimachinery): a value parsed on the int64
    fast path that is already in canonical form keeps the string as written (``1500m``, ``1e3``,
    ``+5``); everything else is re-emitted by :func:`format_quantity` in the format of its suffix
    (``3000`` -> ``3k``, ``2048Mi`` -> ``2Gi``, ``0.5`` -> ``500m``, ``1.5Gi`` -> ``1536Mi``), binary
    values below 1024 or with a fraction fall back to decimal. Raises :class:`QuantityError`.
    """
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise QuantityError(f"quantities must be strings or numbers, got {text!r}")
    s = (repr(text) if isinstance(text, float) else str(text)).strip()
    if s == "0":
        return s
    parsed = Quantity.parse(s)
    m = _PATTERN.match(s)
    assert m is not None  # parse() matched it
    whole, _, frac = m["num"].partition(".")
    num = whole.lstrip("0") or "0"
    suffix = m["suffix"] or ""
    shifted = num + frac
    fmt = parsed.format
    if fmt == "BinarySI":
        exp2 = _BINARY_EXPONENT[suffix]
        fast = not frac and 15 - len(num) - exp2 * 3 // 10 - 1 >= 0 and (int(shifted) << exp2) <= _INT64_MAX
        if fast and int(shifted) & 0x07:
            return s
    else:
        exp10 = int(suffix[1:]) if fmt == "DecimalExponent" else _DECIMAL[suffix]
        scale = exp10 - len(frac)
        fast = len(num) + len(frac) <= 18 and scale >= -9
        if fast and scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0":
            return s
    value = parsed.value
    if not fast and fmt == "BinarySI":
        magnitude = abs(value)
        if magnitude > _INT64_MAX:
            value = Fraction(_INT64_MAX if value > 0 else -_INT64_MAX)
        elif magnitude < 1:
            fmt = "DecimalSI"
    if fmt == "BinarySI" and (abs(value) < 1024 or math.ceil(value * 10**9) % 10**9):
        fmt = "DecimalSI"
    return format_quantity(value, fmt)
