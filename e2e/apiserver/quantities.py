"""Every ``resource.Quantity`` of an object in the form kube-apiserver stores and serves it.

kube-apiserver decodes a request into Go structs, where each Quantity is parsed, and encodes it back
in canonical form (apimachinery's ``MarshalJSON``): ``nvidia.com/gpumem: 3000`` is stored and served
as ``"3k"``, ``2048Mi`` as ``"2Gi"``, ``0.5`` as ``"500m"``. The stand-in does the same on every
write, for every field the upstream schema of the kind types as a Quantity (container and pod-level
resources, overhead, claim capacity requests, slice capacities and request policies, consumed
capacity, quota and limit ranges...), found by walking the schema rather than listed by hand.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from e2e.allocator.quantity import QuantityError, canonical

from .errors import APIError
from .kinds import Kind
from .schemas import KUBERNETES_VERSION, QUANTITY, definition_name, definitions, ref_name

_FORMAT_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def _refs(node: Any) -> set[str]:
    """Definitions a schema node refers to directly (without following them)."""
    out: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            name = ref_name(current)
            if name:
                out.add(name)
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return out


@cache
def _holding_quantities(version: str) -> frozenset[str]:
    """Definitions from which a Quantity can be reached (a fixpoint, so recursive types are fine)."""
    defs = definitions(version)
    refs = {name: _refs(schema) for name, schema in defs.items()}
    found = {QUANTITY}
    changed = True
    while changed:
        changed = False
        for name, targets in refs.items():
            if name not in found and targets & found:
                found.add(name)
                changed = True
    return frozenset(found)


class _Walker:
    def __init__(self, version: str) -> None:
        self.defs = definitions(version)
        self.holding = _holding_quantities(version)
        self.relevant: dict[int, bool] = {}

    def leads_to_quantity(self, node: Any) -> bool:
        key = id(node)
        if key not in self.relevant:
            self.relevant[key] = bool(_refs(node) & self.holding)
        return self.relevant[key]

    def walk(self, value: Any, node: Any, path: str) -> Any:
        name = ref_name(node)
        if name == QUANTITY:
            return _canonical(value, path)
        if name is not None:
            if name not in self.holding:
                return value
            node = self.defs[name]
        if isinstance(value, dict) and isinstance(node, dict):
            props = node.get("properties") or {}
            extra = node.get("additionalProperties")
            for key in list(value):
                sub = props.get(key, extra if isinstance(extra, dict) else None)
                if sub is not None and self.leads_to_quantity(sub):
                    value[key] = self.walk(value[key], sub, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list) and isinstance(node, dict) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                value[i] = self.walk(item, node["items"], f"{path}[{i}]")
        return value


@cache
def _walker(version: str) -> _Walker:
    return _Walker(version)


def _canonical(value: Any, path: str) -> str:
    if value is None:
        return "0"  # a null Quantity decodes as zero
    try:
        return canonical(value)
    except QuantityError:
        raise _Unreadable(path) from None


class _Unreadable(Exception):
    pass


def canonicalize(kind: Kind, obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Rewrite ``obj``'s Quantity fields in canonical form, in place; a value that is no quantity is
    refused as kube-apiserver's decoder refuses it (400, the object cannot be handled)."""
    name = definition_name(kind, version)
    if name is None or name not in _holding_quantities(version):
        return
    try:
        _walker(version).walk(obj, {"$ref": f"#/$defs/{name}"}, "")
    except _Unreadable as exc:
        raise APIError(
            400, f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: {_FORMAT_ERROR}'
        ) from exc
