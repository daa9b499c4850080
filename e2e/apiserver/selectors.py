"""Label and field selectors, parsed and matched as ``k8s.io/apimachinery`` does (pure functions).

Label selectors: ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k>n``, ``k<n``; comma means AND. Field selectors: ``f=v``, ``f==v``, ``f!=v``; comma means AND.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import APIError, bad_request

_KEY = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op in ("gt", "lt"):
            if not present or value is None:
                return False
            try:
                have, want = int(value), int(self.values[0])
            except ValueError:
                return False
            return have > want if self.op == "gt" else have < want
        return False


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, selector: str) -> str:
    if not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in selector {selector!r}")
    return key


def _check_value(value: str, selector: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise bad_request(f"unable to parse requirement: invalid label value {value!r} in selector {selector!r}")
    return value


_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")
_BINARY = re.compile(r"^(?P<key>[^=!<>\s]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>.*)$")


def parse_label_selector(selector: str) -> list[LabelRequirement]:
    """Parse a label selector string; 400 ``APIError`` when it does not parse."""
    out: list[LabelRequirement] = []
    for part in _split_top(selector):
        m = _SET.match(part)
        if m:
            values = tuple(_check_value(v.strip(), selector) for v in m["values"].split(",") if v.strip())
            if not values:
                raise bad_request(
                    f"unable to parse requirement: for 'in', 'notin' operators, values set "
                    f"can't be empty in selector {selector!r}"
                )
            out.append(LabelRequirement(_check_key(m["key"], selector), m["op"], values))
            continue
        if part.startswith("!"):
            out.append(LabelRequirement(_check_key(part[1:].strip(), selector), "!exists"))
            continue
        m = _BINARY.match(part)
        if m:
            op = {"==": "=", ">": "gt", "<": "lt"}.get(m["op"], m["op"])
            value = m["value"].strip()
            if op in ("gt", "lt"):
                try:
                    int(value)
                except ValueError:
                    raise bad_request(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must "
                        f"be an integer in selector {selector!r}"
                    ) from None
            else:
                _check_value(value, selector)
            out.append(LabelRequirement(_check_key(m["key"], selector), op, (value,)))
            continue
        out.append(LabelRequirement(_check_key(part, selector), "exists"))
    return out


def selector_from_label_selector(spec: Mapping[str, Any] | None) -> list[LabelRequirement] | None:
    """A ``metav1.LabelSelector`` object (matchLabels + matchExpressions); ``None`` matches nothing.

    An empty selector ``{}`` matches everything, as in webhook object/namespace selectors.
    """
    if spec is None:
        return []
    reqs = [LabelRequirement(k, "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
    for expr in spec.get("matchExpressions") or []:
        op = str(expr.get("operator", ""))
        key = str(expr.get("key", ""))
        values = tuple(str(v) for v in expr.get("values") or [])
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(op)
        if mapped is None:
            raise bad_request(f"{op!r} is not a valid label selector operator")
        reqs.append(LabelRequirement(key, mapped, values))
    return reqs


def labels_match(reqs: list[LabelRequirement], labels: Mapping[str, str] | None) -> bool:
    have = labels or {}
    return all(r.matches(have) for r in reqs)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str


def parse_field_selector(selector: str, supported: Callable[[str], bool]) -> list[FieldRequirement]:
    out: list[FieldRequirement] = []
    for part in _split_top(selector):
        m = re.match(r"^(?P<field>[^=!]+?)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: {selector!r}; can't understand {part!r}")
        name = m["field"].strip()
        if not supported(name):
            raise APIError(400, f"field label not supported: {name}")
        out.append(FieldRequirement(name, m["op"] == "!=", m["value"].strip()))
    return out


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The value a field selector compares: dotted path, missing = ``""``, bools lowercased."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, Mapping):
        # ``source`` on core Events selects on source.component.
        return str(current.get("component", ""))
    return str(current)


def fields_match(reqs: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    for r in reqs:
        equal = field_value(obj, r.field) == r.value
        if equal == r.negate:
            return False
    return True
