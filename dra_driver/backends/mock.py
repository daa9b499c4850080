"""Simulated devices for CI, the demo and kind: ``--mock-devices 4xH200``, ``2xH100,1xA100`` or a file.

The output has the shape real discovery has (:class:`vendors.base.DeviceInfo`), so everything
downstream (slices, prepare, CDI) is exercised unchanged. UUIDs are derived from the node name and
the device index, so a restarted driver (or another process that simulates the same node, such as
the fake CUDA driver) agrees on them.

File form (YAML or JSON), a list of entries or ``{"devices": [...]}``::

    devices:
      - model: H200          # a key of the vendor's mock models (case-insensitive)
        count: 2             # default 1
      - model: A100
        memoryMiB: 40960     # optional overrides: productName, memoryMiB, architecture,
        numaNode: 1          #   computeCapability, numaNode, pcieBusID, driverVersion,
                             #   uuid (only with count 1)
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from vendors.base import MIB, DeviceInfo, MockModel, VendorNames

MOCK_DRIVER_VERSION = "560.35.03"
"""Driver version the simulated devices report (NVIDIA's format; normalised by the publisher)."""

_NAMESPACE = uuid.UUID("6f3d8a52-51c9-4b0e-9a55-3c1d2b7e9f10")
_SHORT_RE = re.compile(r"^\s*(?:(\d+)\s*[xX*]\s*)?([A-Za-z0-9._-]+)\s*$")
_OVERRIDES = {
    "model", "count", "productName", "memoryMiB", "architecture", "computeCapability",
    "numaNode", "pcieBusID", "driverVersion", "uuid",
}  # fmt: skip


class MockSpecError(ValueError):
    """``--mock-devices`` cannot be understood; the message says how to write it."""


def mock_uuid(names: VendorNames, node_name: str, index: int) -> str:
    """The UUID of simulated device ``index`` on ``node_name``: ``GPU-<uuid5>`` for NVIDIA."""
    return f"{names.device_word.upper()}-{uuid.uuid5(_NAMESPACE, f'{names.driver}/{node_name}/{index}')}"


def _model(models: Mapping[str, MockModel], name: str) -> MockModel:
    for key, model in models.items():
        if key.lower() == name.lower():
            return model
    raise MockSpecError(f"unknown mock device model {name!r}; known models: {', '.join(sorted(models))}")


def parse_entries(spec: str) -> list[dict[str, Any]]:
    """Entries of a short form (``2xH100,1xA100``) or of a YAML/JSON file named by ``spec``."""
    text = spec.strip()
    if not text:
        raise MockSpecError("--mock-devices is empty; write e.g. 4xH200, 2xH100,1xA100 or a YAML/JSON file path")
    if os.path.sep in text or text.endswith((".yaml", ".yml", ".json")) or os.path.isfile(text):
        return _file_entries(text)
    entries: list[dict[str, Any]] = []
    for part in text.split(","):
        match = _SHORT_RE.match(part)
        if not match:
            raise MockSpecError(f"--mock-devices: cannot read {part.strip()!r}; write <count>x<model>, e.g. 4xH200")
        entries.append({"model": match.group(2), "count": int(match.group(1) or 1)})
    return entries


def _file_entries(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except OSError as exc:
        raise MockSpecError(f"--mock-devices: cannot read file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw) if path.endswith(".json") else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise MockSpecError(f"--mock-devices: {path} is not valid YAML/JSON: {exc}") from exc
    if isinstance(data, Mapping):
        data = data.get("devices")
    if not isinstance(data, list) or not all(isinstance(e, Mapping) for e in data):
        raise MockSpecError(f"--mock-devices: {path} must hold a list of devices or {{devices: [...]}}")
    return [dict(e) for e in data]


def build_devices(
    entries: Sequence[Mapping[str, Any]], names: VendorNames, models: Mapping[str, MockModel], node_name: str
) -> list[DeviceInfo]:
    """Simulated devices, indexed in order of the entries."""
    devices: list[DeviceInfo] = []
    total = sum(_count(e) for e in entries)
    for entry in entries:
        unknown = sorted(set(entry) - _OVERRIDES)
        if unknown:
            raise MockSpecError(f"--mock-devices: unknown fields {unknown}; known: {sorted(_OVERRIDES)}")
        if "model" not in entry:
            raise MockSpecError("--mock-devices: every entry needs a model")
        model = _model(models, str(entry["model"]))
        count = _count(entry)
        if "uuid" in entry and count != 1:
            raise MockSpecError("--mock-devices: uuid can only be given for an entry with count 1")
        memory_mib = _int(entry, "memoryMiB", model.memory_mib)
        if memory_mib <= 1:
            raise MockSpecError(f"--mock-devices: memoryMiB must be more than 1, got {memory_mib}")
        for _ in range(count):
            index = len(devices)
            numa = entry.get("numaNode", (index * 2) // total if total > 1 else 0)
            devices.append(
                DeviceInfo(
                    index=index,
                    uuid=str(entry.get("uuid") or mock_uuid(names, node_name, index)),
                    product_name=str(entry.get("productName", model.product_name)),
                    model=model.model,
                    memory_bytes=memory_mib * MIB,
                    architecture=str(entry.get("architecture", model.architecture)),
                    compute_capability=str(entry.get("computeCapability", model.compute_capability)),
                    driver_version=str(entry.get("driverVersion", MOCK_DRIVER_VERSION)),
                    pci_bus_id=str(entry.get("pcieBusID", f"0000:{0x18 + index:02x}:00.0")),
                    numa_node=None if numa is None else int(numa),
                    extra_attributes=dict(model.extra_attributes),
                    memory_valid_mib=tuple(model.memory_valid_mib),
                    cores_shareable=model.cores_shareable,
                )
            )
    if not devices:
        raise MockSpecError("--mock-devices describes no device; write e.g. 4xH200")
    return devices


def _count(entry: Mapping[str, Any]) -> int:
    count = _int(entry, "count", 1)
    if count < 1 or count > 128:
        raise MockSpecError(f"--mock-devices: count must be between 1 and 128, got {count}")
    return count


def _int(entry: Mapping[str, Any], key: str, default: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MockSpecError(f"--mock-devices: {key} must be a whole number, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise MockSpecError(f"--mock-devices: {key} must be a whole number, got {value!r}") from None


def discover(spec: str, names: VendorNames, models: Mapping[str, MockModel], node_name: str) -> list[DeviceInfo]:
    """The simulated devices ``spec`` describes on ``node_name``."""
    return build_devices(parse_entries(spec), names, models, node_name)
