"""DRA device selectors in CEL, evaluated the way kube-scheduler does (pure, cached).

The ``device`` variable has ``driver``, ``allowMultipleAllocations``, ``attributes`` and ``capacity``;
attribute and capacity names without a domain belong to the driver's domain; looking up a domain
the device does not have yields an empty map (so ``has(...)`` works), looking up a missing attribute
in a domain is a runtime error (which aborts allocation on the node, as upstream). Attribute values
keep their type (int, bool, string, semver); capacities are Kubernetes quantities.

Beyond the CEL standard library (``matches``, ``in``, ``size``, ``contains``, ``startsWith``, ...)
this environment has the Kubernetes ``quantity`` library (``quantity``, ``isQuantity``, ``compareTo``,
``isGreaterThan``, ``isLessThan``, ``add``, ``sub``, ``asInteger``, ``asApproximateFloat``,
``isInteger``, ``sign``), the ``semver`` library (``semver``, ``isSemver``, ``major``/``minor``/
``patch`` and the same comparisons) and the string extensions (``lowerAscii``, ``upperAscii``,
``trim``, ``replace``, ``split``, ``join``, ``indexOf``, ``lastIndexOf``, ``substring``, ``charAt``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import celpy
import celpy.celtypes as ct
from celpy.evaluation import CELEvalError

from .quantity import Quantity, QuantityError

Obj = dict[str, Any]


class SelectorError(Exception):
    """A selector that does not compile, or fails at runtime, or does not return a bool."""


# ---------------------------------------------------------------------------- value types
class CelQuantity:
    """A ``Quantity`` as a CEL value."""

    def __init__(self, quantity: Quantity) -> None:
        self.quantity = quantity

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelQuantity) and self.quantity == other.quantity

    def __hash__(self) -> int:
        return hash(self.quantity)

    def __repr__(self) -> str:
        return f"quantity({self.quantity})"


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?$"
)


@dataclass(frozen=True)
class Semver:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Semver:
        m = _SEMVER.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a semantic version")
        pre = tuple(m[4].split(".")) if m[4] else ()
        return cls(int(m[1]), int(m[2]), int(m[3]), pre)

    def key(self) -> tuple[Any, ...]:
        # a version without pre-release ranks above the same version with one
        pre: tuple[Any, ...] = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)


def _cmp(a: Any, b: Any) -> int:
    if isinstance(a, CelQuantity) and isinstance(b, CelQuantity):
        return a.quantity.cmp(b.quantity)
    if isinstance(a, Semver) and isinstance(b, Semver):
        ka, kb = a.key(), b.key()
        return (ka > kb) - (ka < kb)
    raise TypeError(f"no such overload: {type(a).__name__}.compareTo({type(b).__name__})")


def _quantity(text: Any) -> CelQuantity:
    try:
        return CelQuantity(Quantity.parse(str(text)))
    except QuantityError as exc:
        raise ValueError(str(exc)) from exc


def _is_quantity(text: Any) -> ct.BoolType:
    try:
        Quantity.parse(str(text))
    except QuantityError:
        return ct.BoolType(False)
    return ct.BoolType(True)


def _semver(text: Any) -> Semver:
    return Semver.parse(str(text))


def _is_semver(text: Any) -> ct.BoolType:
    return ct.BoolType(_SEMVER.match(str(text)) is not None)


def _as_integer(q: CelQuantity) -> ct.IntType:
    if not q.quantity.is_integer() or abs(q.quantity.value) > 2**63 - 1:
        raise ValueError(f"cannot convert value to integer: {q.quantity}")
    return ct.IntType(int(q.quantity.value))


def _add(a: CelQuantity, b: Any) -> CelQuantity:
    other = b.quantity if isinstance(b, CelQuantity) else Quantity(Fraction(int(b)))
    return CelQuantity(a.quantity + other)


def _sub(a: CelQuantity, b: Any) -> CelQuantity:
    other = b.quantity if isinstance(b, CelQuantity) else Quantity(Fraction(int(b)))
    return CelQuantity(a.quantity - other)


def _index_of(s: Any, sub: Any, start: Any = 0) -> ct.IntType:
    return ct.IntType(str(s).find(str(sub), int(start)))


def _substring(s: Any, start: Any, end: Any = None) -> ct.StringType:
    text = str(s)
    stop = len(text) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(text):
        raise IndexError(f"index out of range: substring({start}, {stop}) of a string of length {len(text)}")
    return ct.StringType(text[int(start) : stop])


def _split(s: Any, sep: Any, limit: Any = -1) -> ct.ListType:
    n = int(limit)
    if n == 0:
        return ct.ListType([])
    parts = str(s).split(str(sep)) if n < 0 else str(s).split(str(sep), n - 1)
    return ct.ListType([ct.StringType(p) for p in parts])


def _join(items: Any, sep: Any = "") -> ct.StringType:
    return ct.StringType(str(sep).join(str(i) for i in items))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "semver": _semver,
    "isSemver": _is_semver,
    "compareTo": lambda a, b: ct.IntType(_cmp(a, b)),
    "isGreaterThan": lambda a, b: ct.BoolType(_cmp(a, b) > 0),
    "isLessThan": lambda a, b: ct.BoolType(_cmp(a, b) < 0),
    "add": _add,
    "sub": _sub,
    "asInteger": _as_integer,
    "asApproximateFloat": lambda q: ct.DoubleType(float(q.quantity.value)),
    "isInteger": lambda q: ct.BoolType(q.quantity.is_integer() and abs(q.quantity.value) <= 2**63 - 1),
    "sign": lambda q: ct.IntType((q.quantity.value > 0) - (q.quantity.value < 0)),
    "major": lambda v: ct.IntType(v.major),
    "minor": lambda v: ct.IntType(v.minor),
    "patch": lambda v: ct.IntType(v.patch),
    "lowerAscii": lambda s: ct.StringType(str(s).lower()),
    "upperAscii": lambda s: ct.StringType(str(s).upper()),
    "trim": lambda s: ct.StringType(str(s).strip()),
    "replace": lambda s, old, new, n=-1: ct.StringType(str(s).replace(str(old), str(new), int(n))),
    "split": _split,
    "join": _join,
    "indexOf": _index_of,
    "lastIndexOf": lambda s, sub: ct.IntType(str(s).rfind(str(sub))),
    "substring": _substring,
    "charAt": lambda s, i: ct.StringType(str(s)[int(i)] if int(i) < len(str(s)) else ""),
}


class _DomainMap(ct.MapType):
    """``device.attributes`` / ``device.capacity``: an unknown domain reads as an empty map."""

    def __getitem__(self, key: Any) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            return ct.MapType({})


# ---------------------------------------------------------------------------- device input
def _attribute_value(value: Mapping[str, Any]) -> Any:
    if "int" in value:
        return ct.IntType(int(value["int"]))
    if "bool" in value:
        return ct.BoolType(bool(value["bool"]))
    if "string" in value:
        return ct.StringType(str(value["string"]))
    if "version" in value:
        return Semver.parse(str(value["version"]))
    raise SelectorError(f"unsupported attribute value {dict(value)!r}")


def split_name(name: str, driver: str) -> tuple[str, str]:
    """(domain, identifier); names without a domain belong to the driver."""
    domain, sep, ident = name.partition("/")
    return (domain, ident) if sep else (driver, name)


def device_input(driver: str, device: Mapping[str, Any]) -> ct.MapType:
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in (device.get("attributes") or {}).items():
        domain, ident = split_name(str(name), driver)
        attributes.setdefault(domain, {})[ident] = _attribute_value(value)
    capacity: dict[str, dict[str, Any]] = {}
    for name, value in (device.get("capacity") or {}).items():
        domain, ident = split_name(str(name), driver)
        capacity.setdefault(domain, {})[ident] = CelQuantity(Quantity.parse(value.get("value")))
    return ct.MapType(
        {
            ct.StringType("driver"): ct.StringType(driver),
            ct.StringType("allowMultipleAllocations"): ct.BoolType(bool(device.get("allowMultipleAllocations"))),
            ct.StringType("attributes"): _DomainMap(
                {
                    ct.StringType(d): ct.MapType({ct.StringType(k): v for k, v in m.items()})
                    for d, m in attributes.items()
                }
            ),
            ct.StringType("capacity"): _DomainMap(
                {ct.StringType(d): ct.MapType({ct.StringType(k): v for k, v in m.items()}) for d, m in capacity.items()}
            ),
        }
    )


# ---------------------------------------------------------------------------- evaluation
_ENV = celpy.Environment()


@lru_cache(maxsize=1024)
def compile_selector(expression: str) -> celpy.Runner:
    try:
        ast = _ENV.compile(expression)
        return _ENV.program(ast, functions=FUNCTIONS)
    except Exception as exc:  # celpy raises lark and its own parse errors
        raise SelectorError(f"CEL compile error: {exc}") from exc


_READ = re.compile(
    r"""device\s*\.\s*(?:
        (?P<field>driver|allowMultipleAllocations)\b
      | (?P<map>attributes|capacity)\s*\[\s*(?P<q>["'])(?P<domain>[^"'\\]*)(?P=q)\s*\]
        \s*\.\s*(?P<ident>[A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()
    )""",
    re.VERBOSE,
)
_DEVICE = re.compile(r"\bdevice\b")

Read = tuple[str, str, str]
"""What a selector reads of the device: ``("field", name, "")`` or ``(map, domain, identifier)``."""


@lru_cache(maxsize=4096)
def reads(expression: str) -> tuple[Read, ...] | None:
    """Everything ``expression`` reads of the device, when that can be told from its text: each use of
    ``device`` is ``device.driver``, ``device.allowMultipleAllocations`` or ``device.attributes|capacity
    ["<domain>"].<identifier>`` with a literal domain. ``None`` otherwise (its verdict may depend on any
    part of the device). Two devices that agree on what is read get the same verdict."""
    found: list[Read] = []
    covered = 0
    for match in _READ.finditer(expression):
        if match["field"]:
            found.append(("field", match["field"], ""))
        else:
            found.append((match["map"], match["domain"], match["ident"]))
        covered += 1
    if covered != len(_DEVICE.findall(expression)):
        return None
    return tuple(sorted(set(found)))


def read_values(device: Mapping[str, Any], driver: str, wanted: tuple[Read, ...]) -> tuple[Any, ...]:
    """The parts of ``device`` that ``wanted`` names (hashable; ``None`` for an absent one)."""
    out: list[Any] = []
    for kind, domain, ident in wanted:
        if kind == "field":
            out.append(driver if domain == "driver" else bool(device.get("allowMultipleAllocations")))
            continue
        published = device.get(kind) or {}
        value = published.get(f"{domain}/{ident}")
        if value is None and domain == driver:
            value = published.get(ident)
        out.append(
            None
            if value is None
            else tuple(sorted((k, str(v)) for k, v in dict(value).items() if k != "requestPolicy"))
        )
    return tuple(out)


def evaluate(expression: str, device: ct.MapType) -> bool:
    """The selector's verdict on the device; :class:`SelectorError` on a runtime error."""
    program = compile_selector(expression)
    try:
        result = program.evaluate({"device": device})
    except CELEvalError as exc:
        raise SelectorError(f"CEL runtime error: {_describe(exc)}") from exc
    except Exception as exc:  # a library function raising (bad quantity string, index out of range)
        raise SelectorError(f"CEL runtime error: {exc}") from exc
    if isinstance(result, CELEvalError):
        raise SelectorError(f"CEL runtime error: {_describe(result)}")
    if not isinstance(result, ct.BoolType | bool):
        raise SelectorError(f"must evaluate to bool, not {type(result).__name__}")
    return bool(result)


def _describe(error: CELEvalError) -> str:
    args = error.args
    if args and isinstance(args[0], str):
        return args[0]
    return str(error)
