"""Shared helpers for the webhook tests: seed pods, the example inventory, validation, CEL evaluation."""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import celpy
import jsonpatch
import kubernetes_validate
import pytest
import yaml

import vendors
from webhook.convert import Converter, Result
from webhook.inventory import Inventory

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED_PODS = ROOT / "examples" / "seed-pods.yaml"
INVENTORY = ROOT / "examples" / "inventory.yaml"
K8S_VERSION = "1.34"
NVIDIA = "nvidia.tessera.dev"


def seed_pods() -> dict[str, dict[str, Any]]:
    with open(SEED_PODS, encoding="utf-8") as handle:
        return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(handle) if doc}


def registered_vendors() -> set[str]:
    """Vendors implemented in this build (the registry), whatever helper added them."""
    return {v.names.vendor for v in vendors.admission_vendors()}


def pod_vendors(pod: Mapping[str, Any]) -> set[str]:
    """Vendors whose resources a pod names, by resource-name prefix."""
    out: set[str] = set()
    for key in ("initContainers", "containers"):
        for container in pod["spec"].get(key) or []:
            resources = container.get("resources") or {}
            for part in ("limits", "requests"):
                for name in resources.get(part) or {}:
                    vendor = vendors.vendor_for_resource(name)
                    if vendor:
                        out.add(vendor)
    return out


def validate(obj: Mapping[str, Any]) -> None:
    """Strict schema validation for Kubernetes 1.34 (raises on any unknown or invalid field)."""
    kubernetes_validate.validate(dict(obj), K8S_VERSION, strict=True)


def patched(pod: Mapping[str, Any], result: Result) -> dict[str, Any]:
    out: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(dict(pod)), result.patch)
    return out


def make_pod(
    *containers: dict[str, Any],
    name: str = "p",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    init: Iterable[dict[str, Any]] = (),
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations is not None:
        meta["annotations"] = annotations
    if labels is not None:
        meta["labels"] = labels
    body: dict[str, Any] = {"containers": list(containers), **spec}
    init = list(init)
    if init:
        body["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def container(name: str = "c", limits: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "busybox"}
    if limits is not None:
        out["resources"] = {"limits": limits}
    out.update(extra)
    return out


def requests_of(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in template["spec"]["spec"]["devices"]["requests"]}


def cel_device(device: Mapping[str, Any], driver: str) -> Any:
    """A ResourceSlice device as the scheduler's CEL sees it: attributes and capacity grouped by domain."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in (device.get("attributes") or {}).items():
        domain, _, ident = name.rpartition("/")
        attributes.setdefault(domain or driver, {})[ident] = next(iter(value.values()))
    capacity: dict[str, dict[str, Any]] = {}
    for name, value in (device.get("capacity") or {}).items():
        domain, _, ident = name.rpartition("/")
        capacity.setdefault(domain or driver, {})[ident] = value["value"]
    return celpy.json_to_cel({"driver": driver, "attributes": attributes, "capacity": capacity})


class CEL:
    """Compiles and evaluates selector expressions with cel-python."""

    def __init__(self) -> None:
        self.env = celpy.Environment()

    def matches(self, expression: str, device: Any) -> bool:
        program = self.env.program(self.env.compile(expression))
        result = program.evaluate({"device": device})
        assert isinstance(result, celpy.celtypes.BoolType), f"{expression!r} gave {result!r}, not a bool"
        return bool(result)


def slice_devices(driver: str = NVIDIA, inventory_file: pathlib.Path = INVENTORY) -> list[dict[str, Any]]:
    """The devices of ``driver`` in the example inventory, as published (attributes by unqualified name)."""
    with open(inventory_file, encoding="utf-8") as handle:
        return [
            dev
            for doc in yaml.safe_load_all(handle)
            if doc and doc["spec"]["driver"] == driver
            for dev in doc["spec"]["devices"]
        ]


def vendor_slices() -> list[dict[str, Any]]:
    """One ResourceSlice per registered vendor other than NVIDIA, one device per mock model.

    Built from each vendor's own ``mock_models`` (whatever vendors the build has), so memory
    percentages and size checks of every vendor can be resolved in the tests.
    """
    out: list[dict[str, Any]] = []
    for name in sorted(registered_vendors() - {"nvidia"}):
        node = vendors.node_vendor(name)
        devices = []
        for i, model in enumerate(node.mock_models.values()):
            devices.append(
                {
                    "name": node.names.device_name(i),
                    "attributes": {
                        "uuid": {"string": f"{name}-{i}"},
                        "type": {"string": model.model},
                        "productName": {"string": model.product_name},
                    },
                    "capacity": {"memory": {"value": f"{model.memory_mib}Mi"}},
                }
            )
        out.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"node-x-{node.names.driver}"},
                "spec": {
                    "driver": node.names.driver,
                    "nodeName": "node-x",
                    "pool": {"name": "node-x", "generation": 1, "resourceSliceCount": 1},
                    "devices": devices,
                },
            }
        )
    return out


@pytest.fixture(scope="session")
def inventory() -> Inventory:
    """The example inventory (NVIDIA) plus a device of every mock model of every other registered vendor."""
    with open(INVENTORY, encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc]
    return Inventory.from_slices(docs + vendor_slices())


@pytest.fixture
def converter() -> Converter:
    return Converter(vendors.admission_vendors())


@pytest.fixture(scope="session")
def cel() -> CEL:
    return CEL()
