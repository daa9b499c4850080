"""Reading a published device of a ResourceSlice: its attributes and capacities, pure.

Attribute and capacity names may be written plain (``uuid``) or qualified with the driver's domain
(``nvidia.tessera.dev/uuid``); both mean the same to the scheduler, so both are read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def attribute_text(attributes: Mapping[str, Any], driver: str, name: str) -> str:
    """An attribute's value as text (``string``, ``version`` or ``int``); "" when it is not there."""
    value = attributes.get(name, attributes.get(f"{driver}/{name}"))
    if isinstance(value, Mapping):
        for kind in ("string", "version", "int"):
            if kind in value and not isinstance(value[kind], bool):
                return str(value[kind])
    return ""


def capacity_value(capacity: Mapping[str, Any], driver: str, name: str) -> Any:
    """The ``value`` quantity of a capacity (``None`` when the device has no such capacity)."""
    entry = capacity.get(name, capacity.get(f"{driver}/{name}"))
    return entry.get("value") if isinstance(entry, Mapping) else None
