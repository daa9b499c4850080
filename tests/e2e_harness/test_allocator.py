"""The allocator against kube-scheduler's documented structured-parameters behaviour, rule by rule.

References: KEP-5075 and ``staging/src/k8s.io/dynamic-resource-allocation/structured`` (consumable
capacity rounding, defaults, policy violations, unknown capacities, shareID/consumedCapacity),
KEP-4816 (firstAvailable order), the DeviceConstraint API docs (matchAttribute, distinctAttribute).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from e2e.allocator import AllocatedState, Quantity, allocate_on_node, schedule
from e2e.allocator.capacity import CapacityMismatch, consumption
from vendors.base import type_selector, uuid_selector
from vendors.nvidia import NAMES

DRIVER = "nvidia.tessera.dev"
GiB = 2**30

Obj = dict[str, Any]


def node(name: str = "node-1", **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}}


def gpu(
    index: int, *, model: str = "H200", mem_gib: int = 141, multi: bool = True, numa: int = 0, policy: bool = True
) -> Obj:
    total = f"{mem_gib}Gi"
    device: Obj = {
        "name": f"gpu-{index}",
        "attributes": {
            "uuid": {"string": f"GPU-{model}-{index}"},
            "index": {"int": index},
            "type": {"string": model},
            "productName": {"string": f"NVIDIA {model}"},
            "numaNode": {"int": numa},
        },
        "capacity": {"memory": {"value": total}, "cores": {"value": "100"}, "shares": {"value": "10"}},
    }
    if multi:
        device["allowMultipleAllocations"] = True
        if policy:
            device["capacity"]["memory"]["requestPolicy"] = {
                "default": total,
                "validRange": {"min": "1Mi", "max": total, "step": "1Mi"},
            }
            device["capacity"]["cores"]["requestPolicy"] = {"default": "1", "validRange": {"min": "1", "step": "1"}}
            device["capacity"]["shares"]["requestPolicy"] = {"default": "1", "validValues": ["1"]}
    return device


def resource_slice(
    node_name: str,
    devices: list[Obj],
    *,
    pool: str | None = None,
    generation: int = 1,
    count: int = 1,
    name: str | None = None,
) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name or f"{node_name}-{DRIVER}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node_name,
            "pool": {"name": pool or node_name, "generation": generation, "resourceSliceCount": count},
            "devices": devices,
        },
    }


CLASS = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": DRIVER},
    "spec": {
        "selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}],
        "config": [{"opaque": {"driver": DRIVER, "parameters": {"from": "class"}}}],
    },
}
CLASSES = {DRIVER: CLASS}


def exactly(
    count: int = 1,
    *,
    capacity: dict[str, str] | None = None,
    selectors: list[str] | None = None,
    mode: str = "ExactCount",
) -> Obj:
    spec: Obj = {"deviceClassName": DRIVER, "allocationMode": mode}
    if mode == "ExactCount":
        spec["count"] = count
    if capacity:
        spec["capacity"] = {"requests": capacity}
    if selectors:
        spec["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    return spec


def claim(name: str, *requests: Obj, constraints: list[Obj] | None = None, config: list[Obj] | None = None) -> Obj:
    devices: Obj = {"requests": list(requests)}
    if constraints:
        devices["constraints"] = constraints
    if config:
        devices["config"] = config
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": devices},
    }


def req(name: str, spec: Obj) -> Obj:
    return {"name": name, "exactly": spec}


def share_ids() -> Any:
    counter = itertools.count()
    return lambda: f"00000000-0000-0000-0000-{next(counter):012d}"


def alloc(
    claims: list[Obj],
    slices: list[Obj],
    *,
    existing: list[Obj] | None = None,
    the_node: Obj | None = None,
    classes: dict[str, Obj] | None = None,
) -> Any:
    return allocate_on_node(
        the_node or node(),
        claims,
        classes or CLASSES,
        slices,
        AllocatedState.from_claims(existing or []),
        new_share_id=share_ids(),
    )


def allocated(c: Obj, allocation: Obj) -> Obj:
    return {**c, "status": {"allocation": allocation}}


# ------------------------------------------------------------------------------ quantities
@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("10Gi", "10Gi"),
        ("10240Mi", "10Gi"),
        ("1536Mi", "1536Mi"),
        ("1.5Gi", "1536Mi"),
        ("100", "100"),
        ("1000", "1k"),
        ("0.5", "500m"),
        ("1e3", "1e3"),
        ("512Ki", "512Ki"),
        ("1023", "1023"),
    ],
)
def test_quantity_canonical_forms(text: str, canonical: str) -> None:
    assert str(Quantity.parse(text)) == canonical


def test_quantity_compare_across_formats() -> None:
    assert Quantity.parse("1Gi") == Quantity.parse("1073741824")
    assert Quantity.parse("1G") < Quantity.parse("1Gi")
    assert Quantity.parse("1500m").integer() == 2


# ------------------------------------------------------------------------------ capacity rules
def test_range_rounds_up_to_step_and_min() -> None:
    device = gpu(0)
    assert str(consumption({"memory": "1500Ki"}, DRIVER, device)["memory"]) == "2Mi"  # step 1Mi, rounded up
    assert str(consumption({"memory": "10240Mi"}, DRIVER, device)["memory"]) == "10Gi"
    assert str(consumption({"memory": "1"}, DRIVER, device)["memory"]) == "1Mi"  # below min: min


def test_range_with_offset_min_and_max_like_upstream_tests() -> None:
    # upstream allocator tests use default 2, validRange {min 2, step 2, max 4} on a capacity of value 4+
    device = {
        "name": "d",
        "allowMultipleAllocations": True,
        "capacity": {
            "c": {"value": "8", "requestPolicy": {"default": "2", "validRange": {"min": "2", "step": "2", "max": "4"}}}
        },
    }
    assert str(consumption({"c": "1"}, DRIVER, device)["c"]) == "2"
    assert str(consumption({"c": "3"}, DRIVER, device)["c"]) == "4"
    with pytest.raises(CapacityMismatch):
        consumption({"c": "5"}, DRIVER, device)  # rounds to 6 > max 4: the device cannot serve it


def test_valid_values_round_up_or_reject() -> None:
    device = {
        "name": "d",
        "allowMultipleAllocations": True,
        "capacity": {"vfs": {"value": "16", "requestPolicy": {"default": "1", "validValues": ["1", "4", "8"]}}},
    }
    assert str(consumption({"vfs": "3"}, DRIVER, device)["vfs"]) == "4"
    assert str(consumption(None, DRIVER, device)["vfs"]) == "1"
    with pytest.raises(CapacityMismatch):
        consumption({"vfs": "9"}, DRIVER, device)


def test_defaults_and_full_value_when_unrequested() -> None:
    with_policy = consumption({"memory": "10Gi"}, DRIVER, gpu(0))
    assert {k: str(v) for k, v in with_policy.items()} == {"memory": "10Gi", "cores": "1", "shares": "1"}
    without_policy = consumption({"memory": "10Gi"}, DRIVER, gpu(0, policy=False))
    assert {k: str(v) for k, v in without_policy.items()} == {"memory": "10Gi", "cores": "100", "shares": "10"}


def test_a_capacity_the_device_lacks_makes_it_ineligible() -> None:
    with pytest.raises(CapacityMismatch, match="has no capacity 'bandwidth'"):
        consumption({"bandwidth": "1"}, DRIVER, gpu(0))
    # the driver's domain may be spelled out or left off
    assert str(consumption({f"{DRIVER}/memory": "1Gi"}, DRIVER, gpu(0))["memory"]) == "1Gi"
    with pytest.raises(CapacityMismatch):
        consumption({"other.dev/memory": "1Gi"}, DRIVER, gpu(0))
    out = alloc([claim("c", req("r", exactly(capacity={"bandwidth": "1"})))], [resource_slice("node-1", [gpu(0)])])
    assert not out.ok and "has no capacity 'bandwidth'" in out.reason


def test_shared_device_records_share_id_and_every_capacity() -> None:
    out = alloc(
        [claim("c", req("r", exactly(capacity={"memory": "10Gi", "cores": "30"})))],
        [resource_slice("node-1", [gpu(0)])],
    )
    assert out.ok
    result = out.allocations[0]["devices"]["results"][0]
    assert result == {
        "request": "r",
        "driver": DRIVER,
        "pool": "node-1",
        "device": "gpu-0",
        "shareID": "00000000-0000-0000-0000-000000000000",
        "consumedCapacity": {"memory": "10Gi", "cores": "30", "shares": "1"},
    }
    assert out.allocations[0]["nodeSelector"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]
    }


def test_shares_pack_onto_the_first_device_until_capacity_runs_out() -> None:
    slices = [resource_slice("node-1", [gpu(0, mem_gib=24), gpu(1, mem_gib=24)])]
    existing: list[Obj] = []
    placed = []
    for i in range(3):
        c = claim(f"c{i}", req("r", exactly(capacity={"memory": "10Gi"})))
        out = alloc([c], slices, existing=existing)
        assert out.ok
        existing.append(allocated(c, out.allocations[0]))
        placed.append(out.allocations[0]["devices"]["results"][0]["device"])
    assert placed == ["gpu-0", "gpu-0", "gpu-1"]  # first fit: 20 of 24 GiB used on gpu-0, 10 more do not fit


def test_exhausted_capacity_is_explained() -> None:
    slices = [resource_slice("node-1", [gpu(0, mem_gib=24)])]
    first = claim("a", req("r", exactly(capacity={"memory": "20Gi"})))
    out = alloc([first], slices)
    second = alloc(
        [claim("b", req("r", exactly(capacity={"memory": "8Gi"})))],
        slices,
        existing=[allocated(first, out.allocations[0])],
    )
    assert not second.ok
    assert "memory: 8Gi asked, 4Gi of 24Gi free" in second.reason


def test_shares_counter_caps_tenants() -> None:
    slices = [resource_slice("node-1", [gpu(0)])]
    existing: list[Obj] = []
    for i in range(10):
        c = claim(f"c{i}", req("r", exactly(capacity={"memory": "1Gi"})))
        out = alloc([c], slices, existing=existing)
        assert out.ok, out.reason
        existing.append(allocated(c, out.allocations[0]))
    out = alloc([claim("c10", req("r", exactly(capacity={"memory": "1Gi"})))], slices, existing=existing)
    assert not out.ok and "shares: 1 asked, 0 of 10 free" in out.reason


def test_cores_100_excludes_other_tenants() -> None:
    slices = [resource_slice("node-1", [gpu(0)])]
    whole = claim("whole", req("r", exactly()))  # nothing named: memory default = all of it
    out = alloc([whole], slices)
    assert out.allocations[0]["devices"]["results"][0]["consumedCapacity"]["memory"] == "141Gi"
    again = alloc(
        [claim("x", req("r", exactly(capacity={"memory": "1Gi"})))],
        slices,
        existing=[allocated(whole, out.allocations[0])],
    )
    assert not again.ok


def test_exclusive_device_uses_capacity_requests_as_a_filter() -> None:
    slices = [resource_slice("node-1", [gpu(0, mem_gib=80, multi=False), gpu(1, mem_gib=141, multi=False)])]
    out = alloc([claim("c", req("r", exactly(capacity={"memory": "100Gi"})))], slices)
    result = out.allocations[0]["devices"]["results"][0]
    assert result["device"] == "gpu-1" and "shareID" not in result and "consumedCapacity" not in result
    taken = alloc([claim("d", req("r", exactly()))], slices, existing=[allocated(claim("c"), out.allocations[0])])
    assert taken.allocations[0]["devices"]["results"][0]["device"] == "gpu-0"


# ------------------------------------------------------------------------------ counts and modes
def test_count_two_takes_two_different_devices() -> None:
    out = alloc(
        [claim("c", req("r", exactly(2, capacity={"memory": "1Gi"})))], [resource_slice("node-1", [gpu(0), gpu(1)])]
    )
    assert [r["device"] for r in out.allocations[0]["devices"]["results"]] == ["gpu-0", "gpu-1"]
    one = alloc([claim("c", req("r", exactly(2, capacity={"memory": "1Gi"})))], [resource_slice("node-1", [gpu(0)])])
    assert not one.ok and "needs 2 device(s)" in one.reason


def test_all_mode_takes_every_matching_device_or_nothing() -> None:
    slices = [resource_slice("node-1", [gpu(0, multi=False), gpu(1, multi=False), gpu(2, model="A100", multi=False)])]
    h200 = type_selector(NAMES, ["H200"], negate=False)
    out = alloc([claim("c", req("r", exactly(mode="All", selectors=[h200])))], slices)
    assert [r["device"] for r in out.allocations[0]["devices"]["results"]] == ["gpu-0", "gpu-1"]
    busy = claim("busy", req("r", exactly()))
    existing = [
        allocated(
            busy, {"devices": {"results": [{"request": "r", "driver": DRIVER, "pool": "node-1", "device": "gpu-1"}]}}
        )
    ]
    assert not alloc([claim("c", req("r", exactly(mode="All", selectors=[h200])))], slices, existing=existing).ok


# ------------------------------------------------------------------------------ selectors
def test_class_and_request_selectors_with_vendor_cel() -> None:
    slices = [resource_slice("node-1", [gpu(0, model="A100"), gpu(1, model="H100"), gpu(2, model="H200")])]
    avoid = type_selector(NAMES, ["a100"], negate=True)  # case-insensitive substring, as HAMi
    out = alloc([claim("c", req("r", exactly(selectors=[avoid])))], slices)
    assert out.allocations[0]["devices"]["results"][0]["device"] == "gpu-1"
    pick = uuid_selector(NAMES, ["GPU-H200-2"], negate=False)
    out = alloc([claim("c", req("r", exactly(selectors=[pick])))], slices)
    assert out.allocations[0]["devices"]["results"][0]["device"] == "gpu-2"
    other_class = {
        "metadata": {"name": DRIVER},
        "spec": {"selectors": [{"cel": {"expression": 'device.driver == "other.dev"'}}]},
    }
    none = alloc([claim("c", req("r", exactly()))], slices, classes={DRIVER: other_class})
    assert not none.ok and "0 of class" in none.reason


def test_quantity_extension_in_selectors() -> None:
    slices = [resource_slice("node-1", [gpu(0, mem_gib=24), gpu(1, mem_gib=80)])]
    big = f'device.capacity["{DRIVER}"].memory.compareTo(quantity("40Gi")) >= 0'
    out = alloc([claim("c", req("r", exactly(selectors=[big])))], slices)
    assert out.allocations[0]["devices"]["results"][0]["device"] == "gpu-1"
    gt = f'device.capacity["{DRIVER}"].memory.isGreaterThan(quantity("100Gi"))'
    assert not alloc([claim("c", req("r", exactly(selectors=[gt])))], slices).ok


def test_cel_runtime_error_fails_the_node_with_the_error() -> None:
    slices = [resource_slice("node-1", [gpu(0)])]
    broken = f'device.attributes["{DRIVER}"].noSuchAttribute == "x"'
    out = alloc([claim("c", req("r", exactly(selectors=[broken])))], slices)
    assert not out.ok and "CEL runtime error" in out.reason and "noSuchAttribute" in out.reason


def test_unknown_device_class() -> None:
    out = alloc(
        [claim("c", req("r", {"deviceClassName": "nope", "allocationMode": "ExactCount", "count": 1}))],
        [resource_slice("node-1", [gpu(0)])],
    )
    assert not out.ok and 'deviceclass.resource.k8s.io "nope" not found' in out.reason


# ------------------------------------------------------------------------------ firstAvailable
def first_available(*subs: tuple[str, Obj]) -> Obj:
    return {"name": "gpu", "firstAvailable": [{"name": n, **spec} for n, spec in subs]}


def test_first_available_takes_subrequests_in_order() -> None:
    slices = [resource_slice("node-1", [gpu(0, model="H100", mem_gib=80)])]
    h200 = type_selector(NAMES, ["H200"], negate=False)
    h100 = type_selector(NAMES, ["H100"], negate=False)
    request = first_available(
        ("h200", exactly(capacity={"memory": "70Gi"}, selectors=[h200])),
        ("h100", exactly(capacity={"memory": "40Gi"}, selectors=[h100])),
    )
    out = alloc([claim("c", request)], slices)
    result = out.allocations[0]["devices"]["results"][0]
    assert result["request"] == "gpu/h100" and result["consumedCapacity"]["memory"] == "40Gi"
    both = [resource_slice("node-1", [gpu(0, model="H100", mem_gib=80), gpu(1, model="H200")])]
    out = alloc([claim("c", request)], both)
    assert out.allocations[0]["devices"]["results"][0]["request"] == "gpu/h200"
    assert out.score == 8  # 1.35 scoring: first choice


def test_first_available_scoring_picks_the_node_with_the_earlier_choice() -> None:
    h200 = type_selector(NAMES, ["H200"], negate=False)
    request = first_available(("h200", exactly(selectors=[h200])), ("any", exactly()))
    c = claim("c", request)
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    slices = [resource_slice("a-node", [gpu(0, model="A100")]), resource_slice("b-node", [gpu(0, model="H200")])]
    decision = schedule(pod, [node("a-node"), node("b-node")], [c], CLASSES, slices, [], new_share_id=share_ids())
    assert decision.node == "b-node"
    assert decision.allocations["c"]["devices"]["results"][0]["request"] == "gpu/h200"


# ------------------------------------------------------------------------------ constraints
def test_match_attribute_keeps_devices_together() -> None:
    slices = [
        resource_slice(
            "node-1", [gpu(0, numa=0, multi=False), gpu(1, numa=1, multi=False), gpu(2, numa=1, multi=False)]
        )
    ]
    c = claim("c", req("a", exactly()), req("b", exactly()), constraints=[{"matchAttribute": f"{DRIVER}/numaNode"}])
    out = alloc([c], slices)
    # gpu-0 (numa 0) is first for "a", but "b" then finds no numa-0 partner: backtracking moves both to numa 1
    assert [r["device"] for r in out.allocations[0]["devices"]["results"]] == ["gpu-1", "gpu-2"]


def test_match_attribute_device_without_the_attribute_is_skipped() -> None:
    plain = gpu(0, multi=False)
    del plain["attributes"]["numaNode"]
    slices = [resource_slice("node-1", [plain, gpu(1, multi=False)])]
    c = claim("c", req("a", exactly()), constraints=[{"matchAttribute": f"{DRIVER}/numaNode"}])
    assert alloc([c], slices).allocations[0]["devices"]["results"][0]["device"] == "gpu-1"


def test_distinct_attribute_spreads_shares_across_cards() -> None:
    slices = [resource_slice("node-1", [gpu(0), gpu(1)])]
    without = claim("c", req("a", exactly(capacity={"memory": "1Gi"})), req("b", exactly(capacity={"memory": "1Gi"})))
    out = alloc([without], slices)
    assert [r["device"] for r in out.allocations[0]["devices"]["results"]] == ["gpu-0", "gpu-0"]
    with_distinct = claim(
        "c",
        req("a", exactly(capacity={"memory": "1Gi"})),
        req("b", exactly(capacity={"memory": "1Gi"})),
        constraints=[{"requests": ["a", "b"], "distinctAttribute": f"{DRIVER}/uuid"}],
    )
    out = alloc([with_distinct], slices)
    assert [r["device"] for r in out.allocations[0]["devices"]["results"]] == ["gpu-0", "gpu-1"]
    one_card = alloc([with_distinct], [resource_slice("node-1", [gpu(0)])])
    assert not one_card.ok


# ------------------------------------------------------------------------------ pools, taints, config
def test_incomplete_and_old_generation_pools() -> None:
    part = resource_slice("node-1", [gpu(0)], count=2, name="s1")
    assert not alloc([claim("c", req("r", exactly()))], [part]).ok
    assert "incomplete" in alloc([claim("c", req("r", exactly()))], [part]).reason
    old = resource_slice("node-1", [gpu(0)], generation=1, name="old")
    new = resource_slice("node-1", [gpu(1)], generation=2, name="new")
    out = alloc([claim("c", req("r", exactly()))], [old, new])
    assert out.allocations[0]["devices"]["results"][0]["device"] == "gpu-1"
    all_mode = alloc([claim("c", req("r", exactly(mode="All")))], [part])
    assert "asks for all devices, but pool" in all_mode.reason


def test_taints_need_tolerations() -> None:
    tainted = gpu(0)
    tainted["taints"] = [{"key": "example.com/broken", "value": "ecc", "effect": "NoSchedule"}]
    slices = [resource_slice("node-1", [tainted])]
    out = alloc([claim("c", req("r", exactly()))], slices)
    assert not out.ok and "untolerated taint example.com/broken" in out.reason
    tolerant = exactly()
    tolerant["tolerations"] = [{"key": "example.com/broken", "operator": "Exists"}]
    assert alloc([claim("c", req("r", tolerant))], slices).ok


def test_config_from_class_then_claim() -> None:
    config = [
        {"requests": ["r"], "opaque": {"driver": DRIVER, "parameters": {"priority": 1}}},
        {"requests": ["other"], "opaque": {"driver": DRIVER, "parameters": {"x": 1}}},
    ]
    out = alloc([claim("c", req("r", exactly()), config=config)], [resource_slice("node-1", [gpu(0)])])
    assert out.allocations[0]["devices"]["config"] == [
        {"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": {"from": "class"}}},
        {"source": "FromClaim", "requests": ["r"], "opaque": {"driver": DRIVER, "parameters": {"priority": 1}}},
    ]


def test_several_claims_of_one_pod_are_allocated_together() -> None:
    slices = [resource_slice("node-1", [gpu(0, multi=False), gpu(1, multi=False)])]
    out = alloc([claim("a", req("r", exactly())), claim("b", req("r", exactly()))], slices)
    assert [a["devices"]["results"][0]["device"] for a in out.allocations] == ["gpu-0", "gpu-1"]


# ------------------------------------------------------------------------------ scheduling
def test_schedule_explains_every_node() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeSelector": {"gpu": "yes"}}}
    nodes = [node("a", gpu="yes"), node("b"), {**node("c", gpu="yes"), "spec": {"unschedulable": True}}]
    slices = [resource_slice("a", [gpu(0, mem_gib=24)])]
    c = claim("c", req("r", exactly(capacity={"memory": "40Gi"})))
    decision = schedule(pod, nodes, [c], CLASSES, slices, [])
    assert not decision.scheduled
    assert decision.message.startswith(
        "0/3 nodes are available: 1 cannot allocate all claims, 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) were unschedulable."
    )
    assert "[a] claim default/c request 'r'" in decision.message
    assert "memory: 40Gi asked, more than the device allows (at most 24Gi)" in decision.message


def test_schedule_keeps_an_allocated_claim_on_its_node() -> None:
    slices = [resource_slice("a", [gpu(0)]), resource_slice("b", [gpu(0)])]
    shared = allocated(
        claim("s", req("r", exactly(capacity={"memory": "1Gi"}))),
        {
            "devices": {
                "results": [
                    {
                        "request": "r",
                        "driver": DRIVER,
                        "pool": "b",
                        "device": "gpu-0",
                        "shareID": str(uuid.uuid4()),
                        "consumedCapacity": {"memory": "1Gi", "cores": "1", "shares": "1"},
                    }
                ]
            },
            "nodeSelector": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]
            },
        },
    )
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    decision = schedule(pod, [node("a"), node("b")], [shared], CLASSES, slices, [])
    assert decision.node == "b" and decision.allocations == {}


# ------------------------------------------------------------------------------ 1.35 scoring and the memo
def test_node_scores_are_normalised_like_kube_scheduler() -> None:
    from e2e.allocator.schedule import normalise

    assert normalise({"a": 8, "b": 7, "c": 1}) == {"a": 100, "b": 87, "c": 12}
    assert normalise({"a": 0, "b": 0}) == {"a": 0, "b": 0}
    h200 = type_selector(NAMES, ["H200"], negate=False)
    request = first_available(("h200", exactly(selectors=[h200])), ("any", exactly()))
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    models = {"a-node": "A100", "b-node": "A100", "c-node": "H200"}
    slices = [resource_slice(n, [gpu(0, model=m)]) for n, m in models.items()]
    nodes = [node("a-node"), node("b-node"), node("c-node")]
    decision = schedule(pod, nodes, [claim("c", request)], CLASSES, slices, [], new_share_id=share_ids())
    assert decision.scores == {"a-node": 87, "b-node": 87, "c-node": 100} and decision.node == "c-node"
    # equal scores: the first by name, or whatever tie_break picks among them (kube-scheduler: at random)
    slices[2] = resource_slice("c-node", [gpu(0, model="A100")])
    assert schedule(pod, nodes, [claim("c", request)], CLASSES, slices, []).node == "a-node"
    picked: list[list[str]] = []
    d = schedule(pod, nodes, [claim("c", request)], CLASSES, slices, [], tie_break=lambda n: picked.append(n) or n[-1])
    assert picked == [["a-node", "b-node", "c-node"]] and d.node == "c-node"


def test_state_can_be_given_and_released() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    slices = [resource_slice("node-1", [gpu(0, mem_gib=80)])]
    big = claim("big", req("r", exactly(capacity={"memory": "60Gi"})))
    first = schedule(pod, [node()], [big], CLASSES, slices, [], new_share_id=share_ids())
    held = allocated(big, first.allocations["big"])
    state = AllocatedState.from_claims([held])
    again = claim("again", req("r", exactly(capacity={"memory": "60Gi"})))
    assert schedule(pod, [node()], [again], CLASSES, slices, [], state=state).node is None
    state.remove(held)
    assert schedule(pod, [node()], [again], CLASSES, slices, [], state=state).node == "node-1"


def test_memoised_verdicts_follow_the_values_a_selector_reads() -> None:
    from e2e.allocator.cel import reads

    expression = f'has(device.attributes["{DRIVER}"].occupancy) && device.attributes["{DRIVER}"].occupancy >= 50'
    assert reads(expression) == (("attributes", DRIVER, "occupancy"),)
    assert reads(f'device.attributes["{DRIVER}"].exists(k, k == "x")') is None  # reads the whole map
    assert reads(f'"x" in device.attributes["{DRIVER}"]') is None
    busy, idle = gpu(0), gpu(0)
    busy["attributes"]["occupancy"] = {"int": 60}
    idle["attributes"]["occupancy"] = {"int": 0}
    c = claim("c", req("r", exactly(selectors=[expression])))
    for _ in range(2):  # the second round is answered from the memo
        assert alloc([c], [resource_slice("node-1", [busy])]).ok
        assert not alloc([c], [resource_slice("node-1", [idle])]).ok
    whole_map = f'device.attributes["{DRIVER}"].exists(k, k == "occupancy")'
    other = gpu(0)
    assert alloc([claim("c", req("r", exactly(selectors=[whole_map])))], [resource_slice("node-1", [busy])]).ok
    assert not alloc([claim("c", req("r", exactly(selectors=[whole_map])))], [resource_slice("node-1", [other])]).ok


def test_a_selector_error_on_a_device_never_reached_does_not_fail() -> None:
    """Upstream evaluates devices lazily in order: a later device's CEL error does not matter once one fits."""
    good, bad = gpu(0), gpu(1)
    del bad["attributes"]["numaNode"]
    selector = f'device.attributes["{DRIVER}"].numaNode == 0'
    c = claim("c", req("r", exactly(selectors=[selector])))
    assert alloc([c], [resource_slice("node-1", [good, bad])]).ok
    out = alloc([c], [resource_slice("node-1", [bad, good])])
    assert not out.ok and "CEL runtime error" in out.reason
