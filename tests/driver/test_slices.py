"""ResourceSlices: shape (docs/driver.md), strict validation for 1.34 and 1.36, repair, gate-off fallback."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import kubernetes_validate
import pytest

from dra_driver.backends import mock
from dra_driver.cli import Settings
from dra_driver.slices import build_slice_specs, semantic_version, slice_object
from e2e.apiserver import APIServer, WriteContext
from tessera_common.quantity import parse_quantity
from vendors import nvidia
from vendors.base import MIB, DeviceInfo

from .conftest import strict_validator
from .helpers import DRIVER, NODE, add_node, claim, result, running_driver, settings
from .kubelet import Claim, Kubelet

VERSIONS = ("1.34", "1.36")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")


def full(spec: dict[str, Any], name: str = "node1-nvidia.tessera.dev-x7k2p") -> dict[str, Any]:
    obj = slice_object(spec, 3, node_name=NODE, node_uid="6c1f3e2a-0000-4000-8000-000000000001", driver=DRIVER)
    obj["metadata"]["name"] = name
    return obj


def check_policy(capacity: dict[str, Any]) -> None:
    """The request-policy rules the API server enforces beyond the schema (KEP-5075)."""
    value = parse_quantity(capacity["value"])
    policy = capacity.get("requestPolicy")
    if policy is None:
        return
    default = parse_quantity(policy["default"])
    if "validRange" in policy:
        rng = policy["validRange"]
        lo, hi, step = (parse_quantity(rng[k]) for k in ("min", "max", "step"))
        assert 0 <= lo <= hi <= value
        assert lo + step <= value
        assert lo <= default <= hi and (default - lo) % step == 0, "default must be a valid step"
        assert (hi - lo) % step == 0, "max must be a valid step"
    else:
        valid = [parse_quantity(v) for v in policy["validValues"]]
        assert valid == sorted(set(valid)) and len(valid) <= 10 and valid[-1] <= value
        assert default in valid


@pytest.mark.parametrize("shareable", [True, False])
def test_slices_validate_strict_and_follow_the_design(shareable: bool) -> None:
    devices = mock.discover("6xH200,2xA100", nvidia.NAMES, nvidia.MOCK_MODELS, NODE)
    (spec,) = build_slice_specs(devices, nvidia.NAMES, NODE, 10, shareable=shareable)
    obj = full(spec)
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
    assert obj["metadata"]["generateName"] == f"{NODE}-{DRIVER}-"
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "Node"
    assert spec["pool"] == {"name": NODE, "generation": 0, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == [f"gpu-{i}" for i in range(8)]
    first = spec["devices"][0]
    assert set(first["attributes"]) == {
        "uuid", "index", "productName", "type", "architecture", "numaNode", "pcieBusID", "driverVersion",
        "computeCapability",
    }  # fmt: skip
    assert first["attributes"]["index"] == {"int": 0}
    assert first["attributes"]["type"] == {"string": "H200"}
    assert first["attributes"]["driverVersion"] == {"version": "560.35.3"}
    assert isinstance(first["attributes"]["numaNode"]["int"], int)
    for d in spec["devices"]:
        assert all(_C_IDENTIFIER.match(k) for k in (*d["attributes"], *d["capacity"]))
        assert len(d["attributes"]) + len(d["capacity"]) <= 32
        assert all(len(v.get("string", "")) <= 64 for v in d["attributes"].values())
        assert set(d["capacity"]) == {"memory", "cores", "shares"}
        for cap in d["capacity"].values():
            check_policy(cap)
        assert d.get("allowMultipleAllocations", False) is shareable
        assert ("requestPolicy" in d["capacity"]["memory"]) is shareable
    mem = first["capacity"]["memory"]
    assert mem["value"] == "143771Mi"
    if shareable:
        assert mem["requestPolicy"] == {
            "default": "143771Mi",
            "validRange": {"min": "1Mi", "max": "143771Mi", "step": "1Mi"},
        }
        assert first["capacity"]["cores"] == {
            "value": "100",
            "requestPolicy": {"default": "1", "validRange": {"min": "1", "max": "100", "step": "1"}},
        }
        assert first["capacity"]["shares"] == {"value": "10", "requestPolicy": {"default": "1", "validValues": ["1"]}}


def test_memory_rounds_down_to_a_whole_mib_and_vendor_amounts() -> None:
    odd = DeviceInfo(index=0, uuid="GPU-x", product_name="NVIDIA T4", model="T4", memory_bytes=15 * 1024 * MIB + 12345)
    (spec,) = build_slice_specs([odd], nvidia.NAMES, NODE, 4, shareable=True)
    cap = spec["devices"][0]["capacity"]
    assert cap["memory"]["value"] == "15Gi" and cap["memory"]["requestPolicy"]["default"] == "15Gi"
    assert cap["shares"]["value"] == "4"
    assert "driverVersion" not in spec["devices"][0]["attributes"], "no version known: attribute left out"
    templates = DeviceInfo(
        index=1,
        uuid="NPU-y",
        product_name="Ascend 910B3",
        model="910B3",
        memory_bytes=65536 * MIB,
        memory_valid_mib=(16384, 8192, 65536, 32768),
        cores_shareable=False,
    )
    (spec,) = build_slice_specs([templates], nvidia.NAMES, NODE, 10, shareable=True)
    cap = spec["devices"][0]["capacity"]
    assert set(cap) == {"memory", "shares"}, "no cores capacity when compute cannot be split"
    assert cap["memory"]["requestPolicy"] == {"default": "64Gi", "validValues": ["8Gi", "16Gi", "32Gi", "64Gi"]}
    for c in cap.values():
        check_policy(c)
    for version in VERSIONS:
        kubernetes_validate.validate(full(spec), version, strict=True)


def test_more_than_128_devices_make_a_multi_slice_pool() -> None:
    devices = mock.discover("128xL4,72xT4", nvidia.NAMES, nvidia.MOCK_MODELS, NODE)
    specs = build_slice_specs(devices, nvidia.NAMES, NODE, 10, shareable=True)
    assert [len(s["devices"]) for s in specs] == [128, 72]
    assert all(s["pool"]["resourceSliceCount"] == 2 for s in specs)
    for i, spec in enumerate(specs):
        kubernetes_validate.validate(full(spec, f"node1-nvidia.tessera.dev-{i}"), "1.36", strict=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("560.35", "560.35.0"), ("560.35.03", "560.35.3"), ("550", "550.0.0"), ("1.2.3.4", "1.2.3+4"), ("r535", None)],
)
def test_driver_version_is_semver(text: str, expected: str | None) -> None:
    assert semantic_version(text) == expected


def our_slices(api: APIServer) -> list[dict[str, Any]]:
    return [s for s in api.store.list("resourceslices") if s["spec"]["driver"] == DRIVER]


async def wait_for(predicate: Any, timeout: float = 5.0) -> float:
    """Seconds until ``predicate()`` held."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def test_publish_repair_and_restart(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(root, kubeconfig, "4xH200")
    node_uid = api.store.get("nodes", None, NODE)["metadata"]["uid"]  # type: ignore[index]
    async with running_driver(s):
        (first,) = our_slices(api)
        assert first["metadata"]["name"].startswith(f"{NODE}-{DRIVER}-")
        assert first["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": node_uid, "controller": True}
        ]
        assert first["spec"]["nodeName"] == NODE
        assert first["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}

        # Kubelet wipes the node's slices when it starts: ours are back within seconds.
        api.store.delete("resourceslices", None, first["metadata"]["name"])
        took = await wait_for(lambda: len(our_slices(api)) == 1)
        assert took < 3.0
        (second,) = our_slices(api)
        assert second["metadata"]["name"] != first["metadata"]["name"]
        assert second["spec"]["pool"]["generation"] == 2
        assert second["spec"]["devices"] == first["spec"]["devices"]

        # Changed behind our back: repaired, generation bumped.
        tampered = copy.deepcopy(second)
        tampered["spec"]["devices"][0]["capacity"]["memory"]["value"] = "1Ti"
        api.store.put(tampered)
        await wait_for(lambda: our_slices(api)[0]["spec"]["pool"]["generation"] == 3)
        assert our_slices(api)[0]["spec"]["devices"] == first["spec"]["devices"]
        # A stranger slice of another node is left alone.
        other = full(build_slice_specs([], nvidia.NAMES, "node2", 10, shareable=True)[0], "node2-x")
        other["spec"]["nodeName"] = other["spec"]["pool"]["name"] = "node2"
        api.store.put(other)
        await asyncio.sleep(0.3)
        assert {x["metadata"]["name"] for x in our_slices(api)} == {second["metadata"]["name"], "node2-x"}
    # A restart with the same devices writes nothing; with other devices it updates in place.
    before = our_slices(api)
    async with running_driver(s):
        await asyncio.sleep(1.5)  # past the occupancy interval (1 s): its first write would show by now
        assert our_slices(api) == before
    async with running_driver(settings(root, kubeconfig, "2xH100")):
        mine = [x for x in our_slices(api) if x["spec"]["nodeName"] == NODE]
        assert len(mine) == 1 and mine[0]["metadata"]["name"] == second["metadata"]["name"]
        assert mine[0]["spec"]["pool"]["generation"] == 4
        assert [d["attributes"]["type"]["string"] for d in mine[0]["spec"]["devices"]] == ["H100", "H100"]


async def test_a_recreated_node_owns_the_republished_slices(api: APIServer, root: str, kubeconfig: str) -> None:
    async with running_driver(settings(root, kubeconfig, "1xL4")):
        (old,) = our_slices(api)
        api.store.delete("nodes", None, NODE)
        await add_node(api)
        new_uid = api.store.get("nodes", None, NODE)["metadata"]["uid"]  # type: ignore[index]
        api.store.delete("resourceslices", None, old["metadata"]["name"])  # what the garbage collector does
        await wait_for(lambda: len(our_slices(api)) == 1)
        assert our_slices(api)[0]["metadata"]["ownerReferences"][0]["uid"] == new_uid


def drop_sharing_fields(obj: dict[str, Any]) -> None:
    """What kube-apiserver does to a ResourceSlice when DRAConsumableCapacity is off."""
    for device in obj.get("spec", {}).get("devices") or []:
        device.pop("allowMultipleAllocations", None)
        for cap in (device.get("capacity") or {}).values():
            cap.pop("requestPolicy", None)


class GateSwitch:
    def __init__(self, *, off: bool, dry_run_too: bool) -> None:
        self.off = off
        self.dry_run_too = dry_run_too

    async def __call__(self, ctx: WriteContext) -> dict[str, Any] | None:
        if (
            self.off
            and ctx.kind.kind == "ResourceSlice"
            and ctx.obj is not None
            and (self.dry_run_too or not ctx.dry_run)
        ):
            drop_sharing_fields(ctx.obj)
        return ctx.obj


@asynccontextmanager
async def gated_api(gate: GateSwitch | None) -> AsyncIterator[APIServer]:
    """Gate off: the stand-in's own feature gate (drops on every write, dry runs included), or
    ``gate``, an admission step that drops the fields on real writes only (the dry-run probe then
    sees nothing and the publisher must notice on the write itself)."""
    gates = {"DRAConsumableCapacity": gate is not None}
    async with APIServer.running(validator=strict_validator(), admission=gate, feature_gates=gates) as server:
        await add_node(server)
        yield server


def node_events(api: APIServer) -> list[dict[str, Any]]:
    return [e for e in api.store.list("events", "default") if e["involvedObject"]["kind"] == "Node"]


@pytest.mark.parametrize("seen_by", ["dry-run probe", "real write"])
async def test_gate_off_publishes_whole_devices_loudly(root: str, seen_by: str) -> None:
    gate = None if seen_by == "dry-run probe" else GateSwitch(off=True, dry_run_too=False)
    async with gated_api(gate) as api:
        s: Settings = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "2xH200")
        async with running_driver(s) as driver:
            (sl,) = our_slices(api)
            assert all("allowMultipleAllocations" not in d for d in sl["spec"]["devices"])
            assert all("requestPolicy" not in c for d in sl["spec"]["devices"] for c in d["capacity"].values())
            (event,) = node_events(api)
            assert (event["type"], event["reason"]) == ("Warning", "DRAConsumableCapacityDisabled")
            assert event["involvedObject"]["name"] == NODE and "DRAConsumableCapacity" in event["message"]
            metrics = driver.metrics.render().decode()
            assert "tessera_dra_sharing_enabled 0.0" in metrics
            assert "tessera_dra_consumable_capacity_dropped_total 1.0" in metrics
            # Whole devices still prepare (no shareID, no consumed capacity).
            c = claim("whole", [result("gpu-0", share=False)])
            api.store.put(c)
            kubelet = await Kubelet(s.registry_dir).register()
            answer = await kubelet.prepare(Claim("default", "whole", c["metadata"]["uid"]))
            assert answer.claims[c["metadata"]["uid"]].error == ""
            await kubelet.close()

            # The gate is turned on again: the next probe notices and devices are shareable again.
            if gate is None:
                api.feature_gates["DRAConsumableCapacity"] = True
            else:
                gate.off = False
            assert driver.publisher is not None
            driver.publisher.probe_interval = 0
            await driver.publisher.reconcile()
            (sl,) = our_slices(api)
            assert all(d.get("allowMultipleAllocations") for d in sl["spec"]["devices"])
            reasons = [e["reason"] for e in node_events(api)]
            assert sorted(reasons) == ["DRAConsumableCapacityDisabled", "DRAConsumableCapacityEnabled"]
            assert "tessera_dra_sharing_enabled 1.0" in driver.metrics.render().decode()
