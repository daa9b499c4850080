"""Scheduling policies: HAMi's annotations (and the cluster defaults) -> firstAvailable alternatives.

The alternatives are checked for what the API allows (strict schema, at most 8, the last one without
occupancy), and for what they do: allocated by the harness allocator (kube-scheduler's rules) from
slices carrying the driver's occupancy attributes.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

import vendors
from dra_driver.backends import mock
from dra_driver.occupancy import attributes_by_pool, device_totals, pool_loads
from dra_driver.slices import build_slice_specs
from e2e.allocator import AllocatedState, schedule
from e2e.allocator.cel import device_input, evaluate
from vendors import nvidia
from vendors.base import ConversionError
from webhook.convert import Converter
from webhook.inventory import Inventory
from webhook.placement import (
    MAX_ALTERNATIVES,
    NO_POLICIES,
    Policies,
    alternatives,
    parse_gpu_policy,
    parse_node_policy,
    policies_for,
)

from .conftest import NVIDIA, container, make_pod, patched, requests_of, validate

BINPACK = {"hami.io/node-scheduler-policy": "binpack", "hami.io/gpu-scheduler-policy": "binpack"}
SPREAD = {"hami.io/node-scheduler-policy": "spread", "hami.io/gpu-scheduler-policy": "spread"}
QUARTER = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 20480, "nvidia.com/gpucores": 25}
CLASSES = {
    NVIDIA: {
        "metadata": {"name": NVIDIA},
        "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{NVIDIA}'"}}]},
    }
}
ALL_POLICIES = [
    Policies(node, gpu)
    for node in (None, "binpack", "spread")
    for gpu in ((), ("binpack",), ("spread",), ("mutex",), ("numa",), ("binpack", "numa"), ("spread", "mutex"),
                ("topology-aware",))
]  # fmt: skip


# --- annotations and defaults ---------------------------------------------------------------------


def test_annotations_override_the_cluster_defaults_one_by_one() -> None:
    defaults = Policies("binpack", ("spread",))  # HAMi's own defaults
    assert policies_for({}, defaults) == defaults
    assert policies_for({"hami.io/node-scheduler-policy": " spread "}, defaults) == Policies("spread", ("spread",))
    assert policies_for({"hami.io/gpu-scheduler-policy": "binpack, numa"}, defaults) == Policies(
        "binpack", ("binpack", "numa")
    )
    assert policies_for({}, NO_POLICIES) == NO_POLICIES


@pytest.mark.parametrize(
    ("annotations", "needle"),
    [
        ({"hami.io/node-scheduler-policy": "mutex"}, "binpack, spread"),
        ({"hami.io/node-scheduler-policy": ""}, "cluster default"),
        ({"hami.io/gpu-scheduler-policy": ""}, "cluster default"),
        ({"hami.io/gpu-scheduler-policy": "binpack,,spread"}, "comma list"),
    ],
)
def test_bad_annotations_are_refused(annotations: dict[str, str], needle: str) -> None:
    with pytest.raises(ConversionError, match=needle):
        policies_for(annotations)


def test_flag_values_parse_like_annotations() -> None:
    assert parse_node_policy("", "--node-scheduler-policy") is None
    assert parse_gpu_policy("spread,numa", "--gpu-scheduler-policy") == ("spread", "numa")
    with pytest.raises(ConversionError, match="--gpu-scheduler-policy"):
        parse_gpu_policy("closest", "--gpu-scheduler-policy")


# --- the alternatives -----------------------------------------------------------------------------


@pytest.mark.parametrize("policies", ALL_POLICIES, ids=str)
@pytest.mark.parametrize(("whole", "count"), [(False, 1), (True, 1), (False, 2)])
def test_alternatives_fit_the_api_and_end_with_one_that_takes_any_device(
    policies: Policies, whole: bool, count: int
) -> None:
    for budget in range(1, MAX_ALTERNATIVES + 1):
        alts = alternatives(policies, whole=whole, count=count, budget=budget)
        assert 1 <= len(alts) <= budget
        last = alts[-1]
        # the last alternative names no occupancy (mutex: only "idle"), so stale attributes cannot block
        assert all(c.attribute == "occupancy" and c.idle_only for c in last.conditions)
        assert bool(last.conditions) == policies.mutex and not last.same_numa
        if policies.mutex:
            assert all(any(c.idle_only for c in a.conditions) for a in alts)
        if whole or policies.mutex:
            assert all(c.attribute in ("nodeOccupancy", "nodeRank", "occupancy") for a in alts for c in a.conditions)
            assert not any(c.attribute == "deviceRank" for a in alts for c in a.conditions)
        assert any(a.same_numa for a in alts) == (policies.numa and count > 1 and budget > 1)


def test_no_policy_is_plain_first_fit(converter: Converter) -> None:
    result = converter.convert(make_pod(container(limits=QUARTER)), "team-a", None)
    assert result.template is not None
    assert "exactly" in requests_of(result.template)["c"]


def _template(pod: dict[str, Any], inventory: Inventory | None = None, **kw: Any) -> dict[str, Any]:
    result = Converter(vendors.admission_vendors(), **kw).convert(pod, "team-a", inventory)
    assert result.allowed and result.template is not None, result.message
    validate(result.template)
    validate(patched(pod, result))
    return result.template


def test_binpack_template_is_valid_and_content_stable() -> None:
    pod = make_pod(container(limits=QUARTER), annotations=BINPACK)
    template = _template(pod)
    request = requests_of(template)["c"]
    subs = request["firstAvailable"]
    assert 2 <= len(subs) <= MAX_ALTERNATIVES
    assert [s["name"] for s in subs][-1] == "any" and "selectors" not in subs[-1]
    assert all(s["capacity"] == {"requests": {"memory": "20480Mi", "cores": "25"}} for s in subs)
    assert template["spec"]["metadata"]["annotations"] == {
        "tessera.dev/gpu-scheduler-policy": "binpack",
        "tessera.dev/node-scheduler-policy": "binpack",
    }
    # same shape, same policies -> same template; another pod name or container order does not matter
    again = _template(make_pod(container(limits=dict(QUARTER)), name="other", annotations=dict(BINPACK)))
    assert again["metadata"]["name"] == template["metadata"]["name"]
    # the cluster default gives the same template as the annotation
    by_default = _template(make_pod(container(limits=QUARTER)), scheduling=Policies("binpack", ("binpack",)))
    assert by_default["metadata"]["name"] == template["metadata"]["name"]
    spread = _template(make_pod(container(limits=QUARTER), annotations=SPREAD))
    assert spread["metadata"]["name"] != template["metadata"]["name"]


def test_mutex_is_a_hard_filter_on_idle_devices() -> None:
    template = _template(make_pod(container(limits=QUARTER), annotations={"hami.io/gpu-scheduler-policy": "mutex"}))
    (selector,) = requests_of(template)["c"]["exactly"]["selectors"]
    expression = selector["cel"]["expression"]
    assert "occupancy == 0" in expression


def test_numa_prefers_one_numa_node_for_several_devices() -> None:
    limits = {"nvidia.com/gpu": 2, "nvidia.com/gpumem": 1024}
    template = _template(make_pod(container(limits=limits), annotations={"hami.io/gpu-scheduler-policy": "numa"}))
    subs = requests_of(template)["c"]["firstAvailable"]
    assert [s["name"] for s in subs] == ["tier-1", "any"]
    constraints = template["spec"]["spec"]["devices"]["constraints"]
    assert {"requests": ["c/tier-1"], "matchAttribute": f"{NVIDIA}/numaNode"} in constraints
    assert {"requests": ["c"], "distinctAttribute": f"{NVIDIA}/uuid"} in constraints


def test_topology_aware_is_accepted_and_noted(converter: Converter) -> None:
    pod = make_pod(container(limits=QUARTER), annotations={"hami.io/gpu-scheduler-policy": "topology-aware"})
    result = converter.convert(pod, "team-a", None)
    assert result.allowed and result.template is not None
    assert "exactly" in requests_of(result.template)["c"]
    assert any("topology-aware has no effect" in n for n in result.notes)


def test_percentages_share_the_eight_alternatives_with_the_policy(inventory: Inventory) -> None:
    models = {m.model for m in inventory.models(NVIDIA)}
    assert len(models) == 3
    pod = make_pod(container(limits={"nvidia.com/gpumem-percentage": 50}), annotations=BINPACK)
    result = Converter(vendors.admission_vendors()).convert(pod, "team-a", inventory)
    assert result.allowed and result.template is not None
    validate(result.template)
    subs = requests_of(result.template)["c"]["firstAvailable"]
    assert len(subs) == 6  # 2 alternatives x 3 models, tier major
    assert sorted(s["name"] for s in subs[3:]) == ["a100", "h200", "l4"]
    assert all(s["name"].endswith("-tier-1") for s in subs[:3])
    assert all("selectors" in s for s in subs)  # the model selector stays on every one
    assert any("only 1 of the" in n for n in result.notes)


def test_five_models_leave_no_room_for_a_policy() -> None:
    slices = []
    for i, model in enumerate(("H200", "H100", "A100", "L4", "T4")):
        devices = mock.discover(f"1x{model}", nvidia.NAMES, nvidia.MOCK_MODELS, f"n{i}")
        (spec,) = build_slice_specs(devices, nvidia.NAMES, f"n{i}", 10, shareable=True)
        slices.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"s{i}"},
                       "spec": {**spec, "pool": {**spec["pool"], "generation": 1}}})  # fmt: skip
    pod = make_pod(container(limits={"nvidia.com/gpumem-percentage": 25}), annotations=SPREAD)
    result = Converter(vendors.admission_vendors()).convert(pod, "team-a", Inventory.from_slices(slices))
    assert result.allowed and result.template is not None
    subs = requests_of(result.template)["c"]["firstAvailable"]
    assert len(subs) == 5 and not any("occupancy" in str(s) or "Rank" in str(s) for s in subs)
    assert any("no effect" in n for n in result.notes)


# --- what the alternatives do, on the harness allocator --------------------------------------------


class Cluster:
    """Nodes with simulated cards, their slices carrying the occupancy of the claims allocated so far."""

    def __init__(self, nodes: dict[str, str]) -> None:
        self.devices = {n: mock.discover(spec, nvidia.NAMES, nvidia.MOCK_MODELS, n) for n, spec in nodes.items()}
        self.totals = {n: device_totals(d, nvidia.NAMES, 10) for n, d in self.devices.items()}
        self.claims: list[dict[str, Any]] = []
        self.nodes = [{"metadata": {"name": n, "labels": {}}, "spec": {}} for n in nodes]
        self.stale: dict[str, Any] | None = None

    def slices(self, *, fresh: bool = True) -> list[dict[str, Any]]:
        if not fresh and self.stale is not None:
            return self.stale
        results = [r for c in self.claims for r in c["status"]["allocation"]["devices"]["results"]]
        attrs = attributes_by_pool(pool_loads(results, self.totals))
        out = []
        for node, devices in self.devices.items():
            (spec,) = build_slice_specs(devices, nvidia.NAMES, node, 10, shareable=True, attributes=attrs[node])
            spec["pool"]["generation"] = 1
            out.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                        "metadata": {"name": f"{node}-slice"}, "spec": spec})  # fmt: skip
        self.stale = out
        return out

    def place(
        self, limits: dict[str, Any], annotations: dict[str, str] | None = None, *, fresh: bool = True
    ) -> list[tuple[str, str]]:
        template = _template(make_pod(container(limits=limits), annotations=annotations))
        claim = {"metadata": {"name": f"c{len(self.claims)}", "namespace": "ns", "uid": str(len(self.claims))},
                 "spec": copy.deepcopy(template["spec"]["spec"])}  # fmt: skip
        decision = schedule(
            {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}},
            self.nodes,
            [claim],
            CLASSES,
            self.slices(fresh=fresh),
            [],
            state=AllocatedState.from_claims(self.claims),
        )
        assert decision.node is not None, decision.message
        claim["status"] = {"allocation": decision.allocations[claim["metadata"]["name"]]}
        self.claims.append(claim)
        return [(r["pool"], r["device"]) for r in claim["status"]["allocation"]["devices"]["results"]]


def test_gpu_binpack_fills_the_busy_card_and_spread_takes_an_idle_one() -> None:
    c = Cluster({"n1": "4xA100"})
    c.claims.append({"status": {"allocation": {"devices": {"results": [
        {"request": "x", "driver": NVIDIA, "pool": "n1", "device": "gpu-2", "shareID": "s",
         "consumedCapacity": {"memory": "40960Mi", "cores": "50", "shares": "1"}}]}}}})  # fmt: skip
    assert c.place(QUARTER) == [("n1", "gpu-0")]  # first fit: the first card with room
    assert c.place(QUARTER, {"hami.io/gpu-scheduler-policy": "binpack"}) == [("n1", "gpu-2")]
    assert c.place(QUARTER, {"hami.io/gpu-scheduler-policy": "spread"}) in ([("n1", "gpu-1")], [("n1", "gpu-3")])


def test_node_binpack_and_spread_choose_between_nodes() -> None:
    c = Cluster({"a": "2xA100", "b": "2xA100", "c": "2xA100"})
    c.claims.append({"status": {"allocation": {"devices": {"results": [
        {"request": "x", "driver": NVIDIA, "pool": "b", "device": "gpu-0", "shareID": "s",
         "consumedCapacity": {"memory": "81920Mi", "cores": "100", "shares": "1"}}]}}}})  # fmt: skip
    assert c.place(QUARTER)[0][0] == "a"  # no policy: every node scores 0, the first by name
    assert c.place({"nvidia.com/gpu": 1}, {"hami.io/node-scheduler-policy": "binpack"})[0][0] == "b"
    spread = c.place(QUARTER, {"hami.io/node-scheduler-policy": "spread"})
    assert spread[0][0] == "c"  # a and b each hold something now


def test_stale_occupancy_never_makes_a_pod_unschedulable() -> None:
    """The slices claim every card is idle, but three of four are full: the last alternative still fits."""
    c = Cluster({"n1": "4xA100"})
    stale = c.slices()
    for device in ("gpu-0", "gpu-1", "gpu-3"):
        c.claims.append({"status": {"allocation": {"devices": {"results": [
            {"request": "x", "driver": NVIDIA, "pool": "n1", "device": device, "shareID": "s",
             "consumedCapacity": {"memory": "81920Mi", "cores": "100", "shares": "1"}}]}}}})  # fmt: skip
    c.stale = stale
    for wanted in (BINPACK, SPREAD, {"hami.io/gpu-scheduler-policy": "binpack,numa"}):
        assert c.place(QUARTER, wanted, fresh=False) == [("n1", "gpu-2")]
    # and the other way round: slices that call a free card full do not hide it
    d = Cluster({"n1": "1xA100"})
    for a in d.slices()[0]["spec"]["devices"]:
        a["attributes"].update({"occupancy": {"int": 100}, "deviceRank": {"int": 99}, "nodeOccupancy": {"int": 100},
                                "nodeRank": {"int": 99}})  # fmt: skip
    for wanted in (BINPACK, SPREAD):
        assert d.place(QUARTER, wanted, fresh=False) == [("n1", "gpu-0")]


def test_devices_without_occupancy_attributes_fall_to_the_last_alternative() -> None:
    """An old driver, or occupancy off: the selectors do not fail on the missing attributes."""
    devices = mock.discover("2xA100", nvidia.NAMES, nvidia.MOCK_MODELS, "n1")
    (spec,) = build_slice_specs(devices, nvidia.NAMES, "n1", 10, shareable=True)
    for policies in (BINPACK, SPREAD):
        template = _template(make_pod(container(limits=QUARTER), annotations=policies))
        for sub in requests_of(template)["c"]["firstAvailable"]:
            for selector in sub.get("selectors", []):
                assert evaluate(selector["cel"]["expression"], device_input(NVIDIA, spec["devices"][0])) is False


@pytest.mark.parametrize("policies", [BINPACK, SPREAD], ids=["binpack", "spread"])
def test_selectors_read_only_the_occupancy_attributes(policies: dict[str, str]) -> None:
    """Each selector is true exactly when its condition holds on the attributes (checked on a grid)."""
    template = _template(make_pod(container(limits=QUARTER), annotations=policies))
    devices = mock.discover("1xA100", nvidia.NAMES, nvidia.MOCK_MODELS, "n1")
    (spec,) = build_slice_specs(devices, nvidia.NAMES, "n1", 10, shareable=True)
    for occ, node_occ, rank, node_rank in itertools.product((0, 10, 50, 100), (0, 10, 60), (0, 50), (0, 20)):
        device = copy.deepcopy(spec["devices"][0])
        device["attributes"].update({"occupancy": {"int": occ}, "nodeOccupancy": {"int": node_occ},
                                     "deviceRank": {"int": rank}, "nodeRank": {"int": node_rank}})  # fmt: skip
        cel = device_input(NVIDIA, device)
        for sub in requests_of(template)["c"]["firstAvailable"]:
            for selector in sub.get("selectors", []):
                text = selector["cel"]["expression"]
                want = _expected(text, {"occupancy": occ, "nodeOccupancy": node_occ, "deviceRank": rank,
                                        "nodeRank": node_rank})  # fmt: skip
                assert evaluate(text, cel) is want, (text, occ, node_occ, rank, node_rank)


def _expected(expression: str, values: dict[str, int]) -> bool:
    """The selector's meaning, read off its text independently of CEL."""
    import re

    attr = r'device\.attributes\["nvidia\.tessera\.dev"\]\.(\w+)'
    m = re.fullmatch(rf"has\({attr}\) && has\({attr}\) && {attr} (<=|>=) {attr}", expression)
    if m:
        left, right = values[m.group(3)], values[m.group(5)]
        return left <= right if m.group(4) == "<=" else left >= right
    m = re.fullmatch(rf"has\({attr}\) && {attr} (==|<=|>=) (\d+)", expression)
    assert m, expression
    value, bound = values[m.group(2)], int(m.group(4))
    return {"==": value == bound, "<=": value <= bound, ">=": value >= bound}[m.group(3)]


def test_spread_on_nodes_and_cards_starts_with_the_least_loaded_tenth_of_the_nodes() -> None:
    """Node and GPU spread: the least loaded card of a node among the least loaded tenth (not only the
    single least loaded node, which every pod of a throttle interval would see and pile onto), then
    wider node tiers; the last alternative takes any device."""
    alts = alternatives(Policies("spread", ("spread",)), whole=False, count=1)
    tiers = [sorted((c.attribute, c.value) for c in a.conditions) for a in alts]
    assert tiers == [
        [("deviceRank", 0), ("nodeRank", 10)],
        [("nodeRank", 10)],
        [("deviceRank", 0), ("nodeRank", 20)],
        [("nodeRank", 20)],
        [("deviceRank", 0), ("nodeRank", 30)],
        [("nodeRank", 30)],
        [("deviceRank", 0), ("nodeRank", 50)],
        [],
    ]
    assert all(not c.at_least for a in alts for c in a.conditions)
