"""The device inventory: which device models the cluster's ResourceSlices publish, and their memory.

Conversion needs it for two rules only (docs/webhook.md): ``gpumem-percentage`` becomes one subrequest per
device model, and a memory ask larger than any device is refused. :meth:`Inventory.from_slices` is
pure; :func:`load_file` and :func:`fetch` are the edges (a YAML/JSON file, the Kubernetes API).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from tessera_common.quantity import QuantityError, quantity_bytes
from tessera_common.slicefields import attribute_text, capacity_value
from vendors.base import ATTR_PRODUCT_NAME, ATTR_TYPE, ATTR_UUID, CAPACITY_MEMORY

SLICES_PATH = "/apis/resource.k8s.io/v1/resourceslices"


class InventoryError(ValueError):
    """The inventory input is unusable; the message names the object and field."""


@dataclass(frozen=True)
class Device:
    """One published device, reduced to what conversion needs."""

    driver: str
    pool: str
    name: str
    model: str
    product_name: str
    uuid: str
    memory_bytes: int | None


@dataclass(frozen=True)
class Model:
    """One device model of one driver, as published in the cluster."""

    model: str
    product_names: tuple[str, ...]
    memory_bytes: int
    """The smallest total memory among the model's devices, so a share of it fits each of them."""
    devices: int


class Inventory:
    """Published devices grouped by driver (immutable after construction)."""

    def __init__(self, devices: Iterable[Device]) -> None:
        by_driver: dict[str, list[Device]] = {}
        for device in devices:
            by_driver.setdefault(device.driver, []).append(device)
        self._devices = {k: tuple(v) for k, v in by_driver.items()}
        self._models = {k: _models(v) for k, v in self._devices.items()}
        self._largest: dict[str, Device] = {}
        for driver, members in self._devices.items():
            sized = [d for d in members if d.memory_bytes is not None]
            if sized:
                self._largest[driver] = max(sized, key=lambda d: d.memory_bytes or 0)

    def __len__(self) -> int:
        return sum(len(v) for v in self._devices.values())

    def __repr__(self) -> str:
        return f"Inventory({ {k: len(v) for k, v in self._devices.items()} })"

    def devices(self, driver: str) -> tuple[Device, ...]:
        return self._devices.get(driver, ())

    def models(self, driver: str) -> tuple[Model, ...]:
        """The driver's models, sorted by model name."""
        return self._models.get(driver, ())

    def largest(self, driver: str) -> Device | None:
        """The driver's device with the most memory, or ``None`` when it publishes none with memory."""
        return self._largest.get(driver)

    @classmethod
    def from_slices(cls, objects: Iterable[Any]) -> Inventory:
        """From ResourceSlices (also inside ``List``/``ResourceSliceList`` objects).

        Only the highest ``pool.generation`` of each driver's pool counts, as for the scheduler.
        Raises :class:`InventoryError` naming the object for anything that is not a usable slice.
        """
        slices: list[Mapping[str, Any]] = []
        for obj in objects:
            if obj is None:
                continue
            _collect(obj, slices)
        newest: dict[tuple[str, str], int] = {}
        parsed: list[tuple[str, str, int, Mapping[str, Any]]] = []
        for sl in slices:
            where = _where(sl)
            spec = sl.get("spec")
            if not isinstance(spec, Mapping):
                raise InventoryError(f"{where}: spec is missing")
            driver = spec.get("driver")
            pool = spec.get("pool")
            if not isinstance(driver, str) or not driver:
                raise InventoryError(f"{where}: spec.driver is missing")
            if not isinstance(pool, Mapping) or not isinstance(pool.get("name"), str):
                raise InventoryError(f"{where}: spec.pool.name is missing")
            generation = pool.get("generation", 0)
            if isinstance(generation, bool) or not isinstance(generation, int):
                raise InventoryError(f"{where}: spec.pool.generation must be an integer")
            key = (driver, pool["name"])
            newest[key] = max(newest.get(key, generation), generation)
            parsed.append((driver, pool["name"], generation, spec))
        devices: list[Device] = []
        for driver, pool_name, generation, spec in parsed:
            if generation != newest[(driver, pool_name)]:
                continue
            entries = spec.get("devices") or []
            if not isinstance(entries, list):
                raise InventoryError(f"ResourceSlice of {driver} pool {pool_name}: spec.devices must be a list")
            for entry in entries:
                devices.append(_device(driver, pool_name, entry))
        return cls(devices)


def _collect(obj: Any, out: list[Mapping[str, Any]]) -> None:
    if not isinstance(obj, Mapping):
        raise InventoryError(f"expected a ResourceSlice object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind == "ResourceSlice":
        out.append(obj)
    elif (isinstance(kind, str) and kind.endswith("List")) or (kind is None and "items" in obj):
        items = obj.get("items") or []
        if not isinstance(items, list):
            raise InventoryError(f"{kind}: items must be a list")
        for item in items:
            if isinstance(item, Mapping) and "kind" not in item:
                item = {**item, "kind": "ResourceSlice"}  # list items from the API carry no kind
            _collect(item, out)
    else:
        raise InventoryError(f"expected ResourceSlice objects, got kind {kind!r}")


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"ResourceSlice {name!r}" if name else "ResourceSlice"


def _device(driver: str, pool: str, entry: Any) -> Device:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise InventoryError(f"ResourceSlice of {driver} pool {pool}: a device has no name")
    name = entry["name"]
    attributes = entry.get("attributes") or {}
    capacity = entry.get("capacity") or {}
    if not isinstance(attributes, Mapping) or not isinstance(capacity, Mapping):
        raise InventoryError(f"device {pool}/{name} of {driver}: attributes and capacity must be maps")
    memory: int | None = None
    if CAPACITY_MEMORY in capacity or f"{driver}/{CAPACITY_MEMORY}" in capacity:
        value = capacity_value(capacity, driver, CAPACITY_MEMORY)
        try:
            memory = quantity_bytes(value)
        except QuantityError as exc:
            raise InventoryError(f"device {pool}/{name} of {driver}: capacity memory: {exc}") from None
    product = attribute_text(attributes, driver, ATTR_PRODUCT_NAME)
    model = attribute_text(attributes, driver, ATTR_TYPE) or product
    return Device(
        driver=driver,
        pool=pool,
        name=name,
        model=model,
        product_name=product,
        uuid=attribute_text(attributes, driver, ATTR_UUID),
        memory_bytes=memory,
    )


def _models(devices: Sequence[Device]) -> tuple[Model, ...]:
    grouped: dict[str, list[Device]] = {}
    for device in devices:
        if device.model and device.memory_bytes:
            grouped.setdefault(device.model, []).append(device)
    return tuple(
        Model(
            model=model,
            product_names=tuple(sorted({d.product_name for d in members if d.product_name})),
            memory_bytes=min(d.memory_bytes for d in members if d.memory_bytes),
            devices=len(members),
        )
        for model, members in sorted(grouped.items())
    )


def parse_documents(text: str, source: str) -> list[Any]:
    """YAML (one or more documents) or JSON text as Python objects; :class:`InventoryError` if neither."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        try:
            return [json.loads(text)]
        except ValueError:
            mark = getattr(exc, "problem_mark", None)
            line = f" (line {mark.line + 1})" if mark is not None else ""
            raise InventoryError(f"{source}: not YAML or JSON{line}") from None


def load_file(path: str) -> Inventory:
    """An inventory from a file of ResourceSlices (YAML documents, a JSON list object, ``kubectl get -o``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InventoryError(f"inventory {path} is not UTF-8 text") from None
    return Inventory.from_slices(parse_documents(text, path))


async def fetch(client: Any) -> Inventory:
    """An inventory from the API server (``client`` is a :class:`kubeapi.KubeClient`), following pages."""
    items: list[Any] = []
    query: dict[str, str] = {"limit": "500"}
    while True:
        answer = await client.list(SLICES_PATH, **query)
        page = answer.get("items") or []
        if not isinstance(page, list):
            raise InventoryError("the API answered a ResourceSlice list without items")
        items.extend(page)
        token = (answer.get("metadata") or {}).get("continue")
        if not token:
            break
        query["continue"] = token
    return Inventory.from_slices([{"kind": "ResourceSliceList", "items": items}])
