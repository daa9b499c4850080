"""Device occupancy: computed from allocated claims, published in the slices, paced, validated strict."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from fractions import Fraction
from typing import Any

import kubernetes_validate
import pytest

from dra_driver.backends import mock
from dra_driver.cli import ConfigError
from dra_driver.occupancy import (
    CLAIMS_PATH,
    Throttle,
    Totals,
    attributes_by_pool,
    bucket,
    device_loads,
    rank,
    slice_totals,
)
from dra_driver.slices import SLICES_PATH, build_slice_specs, slice_object
from e2e.apiserver import APIServer
from e2e.apiserver.store import Store
from vendors import nvidia
from vendors.base import MIB

from .conftest import strict_validator
from .helpers import DRIVER, NODE, add_node, claim, result, running_driver, settings

H200 = Totals(143771 * MIB, 100, 10)
TOTALS = {f"gpu-{i}": H200 for i in range(4)}


def occupancy(obj: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Device name -> occupancy attributes of a stored slice."""
    return {
        d["name"]: {k: v["int"] for k, v in d["attributes"].items() if k in ("occupancy", "deviceRank",
                                                                                 "nodeOccupancy", "nodeRank")}
        for d in obj["spec"]["devices"]
    }  # fmt: skip


def test_loads_are_the_largest_consumed_fraction() -> None:
    results = [
        result("gpu-0", memory=f"{143771 // 4}Mi", cores="10"),  # memory 25 %
        result("gpu-1", memory="1Mi", cores="60"),  # cores 60 %
        result("gpu-1", memory="1Mi", cores="30"),  # ... 90 % together
        result("gpu-2", share=False),  # exclusive: the whole device
        {**result("gpu-3", memory="100Gi"), "adminAccess": True},  # admin access holds nothing
        result("gpu-9", memory="1Gi"),  # not a device of this node
        result("gpu-3", memory="nonsense"),  # unreadable: counts for nothing, shares still count
    ]
    loads = device_loads(results, TOTALS)
    assert loads["gpu-0"] == Fraction(143771 // 4, 143771)
    assert loads["gpu-1"] == Fraction(9, 10)
    assert loads["gpu-2"] == 1
    assert loads["gpu-3"] == Fraction(1, 10)  # one share of 10
    assert set(loads) == set(TOTALS)


def test_buckets_round_up_and_ranks_count_the_less_loaded() -> None:
    assert [bucket(Fraction(x)) for x in (0, Fraction(1, 1000), Fraction(1, 4), Fraction(1, 2), 1)] == [
        0,
        10,
        30,
        50,
        100,
    ]
    assert rank(Fraction(1, 2), [Fraction(0), Fraction(1, 2), Fraction(1)]) == 33
    assert rank(Fraction(0), [Fraction(0), Fraction(0)]) == 0


def test_attributes_by_pool_rank_nodes_and_devices() -> None:
    totals = {"a": TOTALS, "b": TOTALS}
    results = [
        result("gpu-0", pool="a", memory="143771Mi"),  # a: one full device of four
        result("gpu-1", pool="b", memory=f"{143771 // 2}Mi"),  # b: half a device
    ]
    from dra_driver.occupancy import pool_loads

    attrs = attributes_by_pool(pool_loads(results, totals))
    assert attrs["a"]["gpu-0"] == {
        "occupancy": {"int": 100},
        "deviceRank": {"int": 75},
        "nodeOccupancy": {"int": 30},
        "nodeRank": {"int": 50},
    }
    assert attrs["a"]["gpu-1"]["occupancy"] == {"int": 0} and attrs["a"]["gpu-1"]["deviceRank"] == {"int": 0}
    assert attrs["b"]["gpu-1"]["occupancy"] == {"int": 50}
    assert attrs["b"]["gpu-0"]["nodeRank"] == {"int": 0}  # b is the least occupied node


def test_equally_loaded_nodes_rank_by_their_least_loaded_device() -> None:
    """Two nodes with the same load: the one that still has an idle device ranks first (spread puts the
    next share there, on the idle device, instead of beside another share)."""
    totals = {"a": TOTALS, "b": TOTALS, "c": TOTALS}
    results = [
        *(result(f"gpu-{i}", pool="a", memory="1Mi", cores="50") for i in range(4)),  # a: four halves, none idle
        result("gpu-0", pool="b", memory="143771Mi"),  # b: as loaded as a, three idle devices
        result("gpu-1", pool="b", memory="143771Mi"),
        result("gpu-0", pool="c", memory="143771Mi"),  # c: more loaded
        result("gpu-1", pool="c", memory="143771Mi"),
        result("gpu-2", pool="c", memory="1Mi"),
    ]
    from dra_driver.occupancy import pool_loads

    attrs = attributes_by_pool(pool_loads(results, totals))
    ranks = {node: attrs[node]["gpu-0"]["nodeRank"]["int"] for node in totals}
    assert attrs["a"]["gpu-0"]["nodeOccupancy"] == attrs["b"]["gpu-0"]["nodeOccupancy"] == {"int": 50}
    assert ranks == {"b": 0, "a": 33, "c": 66}


def test_slice_totals_read_another_nodes_devices() -> None:
    devices = mock.discover("2xH200", nvidia.NAMES, nvidia.MOCK_MODELS, "other")
    (spec,) = build_slice_specs(devices, nvidia.NAMES, "other", 10, shareable=True)
    assert slice_totals(spec) == {"gpu-0": H200, "gpu-1": H200}


@pytest.mark.parametrize("version", ["1.34", "1.36"])
def test_slices_with_occupancy_validate_strict(version: str) -> None:
    devices = mock.discover("8xH200", nvidia.NAMES, nvidia.MOCK_MODELS, NODE)
    from dra_driver.occupancy import device_totals, pool_loads

    totals = {NODE: device_totals(devices, nvidia.NAMES, 10)}
    attrs = attributes_by_pool(pool_loads([result("gpu-3", memory="10Gi")], totals))[NODE]
    (spec,) = build_slice_specs(devices, nvidia.NAMES, NODE, 10, shareable=True, attributes=attrs)
    obj = slice_object(spec, 1, node_name=NODE, node_uid="6c1f3e2a-0000-4000-8000-000000000001", driver=DRIVER)
    obj["metadata"]["name"] = f"{NODE}-{DRIVER}-abcde"
    kubernetes_validate.validate(obj, version, strict=True)
    device = spec["devices"][3]
    assert device["attributes"]["occupancy"] == {"int": 10} and device["attributes"]["uuid"]["string"]
    assert len(device["attributes"]) + len(device["capacity"]) <= 32


def test_throttle_lets_the_first_change_through_and_paces_the_rest() -> None:
    t = Throttle(1.0)
    assert t.delay(100.0) == 0
    t.sent(100.0)
    assert t.delay(100.25) == pytest.approx(0.75)
    assert t.delay(101.5) == 0


def test_occupancy_interval_flag() -> None:
    base = ["--backend", "mock", "--mock-devices", "1xH200", "--node-name", "n"]
    from dra_driver.cli import settings_from_args

    assert settings_from_args(base, environ={}).occupancy_interval == 1.0
    assert settings_from_args(base, environ={"TESSERA_OCCUPANCY_INTERVAL": "0"}).occupancy_interval == 0
    for bad in ("-1", "0.01", "nan", "inf"):
        with pytest.raises(ConfigError, match="occupancy-interval"):
            settings_from_args([*base, "--occupancy-interval", bad], environ={})


async def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def node_slice(api: APIServer, node: str = NODE) -> dict[str, Any]:
    (obj,) = [s for s in api.store.list("resourceslices") if s["spec"]["nodeName"] == node]
    return obj


async def store_claim(api: APIServer, obj: dict[str, Any]) -> None:
    api.store.put(obj)


async def test_driver_publishes_occupancy_as_claims_are_allocated_and_released(
    api: APIServer, kubeconfig: str, root: str
) -> None:
    s = settings(root, kubeconfig, "4xH200", "--occupancy-interval", "0.3")
    async with running_driver(s) as driver:
        assert driver.occupancy is not None
        await wait_for(lambda: occupancy(node_slice(api)).get("gpu-0", {}).get("occupancy") == 0)
        assert occupancy(node_slice(api))["gpu-0"] == {
            "occupancy": 0,
            "deviceRank": 0,
            "nodeOccupancy": 0,
            "nodeRank": 0,
        }
        # the scheduler allocates half of gpu-2: the slice says so before any prepare
        half = claim("half", [result("gpu-2", memory=f"{143771 // 2}Mi", cores="50")])
        await store_claim(api, half)
        got = await wait_for(lambda: (o := occupancy(node_slice(api)))["gpu-2"]["occupancy"] == 50 and o)
        assert got["gpu-2"]["deviceRank"] == 75 and got["gpu-0"]["nodeOccupancy"] == 20
        # another node's driver publishes a pool that is idle: this node is now the more occupied one
        other = mock.discover("4xH200", nvidia.NAMES, nvidia.MOCK_MODELS, "node2")
        (spec,) = build_slice_specs(other, nvidia.NAMES, "node2", 10, shareable=True)
        body = slice_object(spec, 1, node_name="node2", node_uid="6c1f3e2a-0000-4000-8000-000000000002", driver=DRIVER)
        await add_node(api, "node2")
        body["metadata"] = {"name": "node2-slice", "ownerReferences": body["metadata"]["ownerReferences"]}
        api.store.put(body)
        await wait_for(lambda: occupancy(node_slice(api))["gpu-0"]["nodeRank"] == 50)
        # released: back to idle
        api.store.delete("resourceclaims", "default", "half")
        await wait_for(lambda: occupancy(node_slice(api))["gpu-2"]["occupancy"] == 0)
        assert occupancy(node_slice(api))["gpu-0"]["nodeRank"] == 0


async def test_updates_are_paced_to_one_slice_write_per_interval(api: APIServer, kubeconfig: str, root: str) -> None:
    interval = 0.4
    s = settings(root, kubeconfig, "4xH200", "--occupancy-interval", str(interval))
    async with running_driver(s) as driver:
        assert driver.occupancy is not None
        await wait_for(lambda: driver.occupancy.published is not None)  # type: ignore[union-attr]
        await asyncio.sleep(interval)
        writes_before = sum(1 for r in api.requests if r.method == "PUT" and r.path.startswith(SLICES_PATH))
        started = time.monotonic()
        for i in range(40):  # 40 changes in about 1.2 s
            api.store.put(claim(f"c{i}", [result(f"gpu-{i % 4}", memory=f"{(i + 1) * 1000}Mi")]))
            await asyncio.sleep(0.03)
        await wait_for(lambda: occupancy(node_slice(api))["gpu-3"]["occupancy"] > 0)
        await asyncio.sleep(2 * interval)
        elapsed = time.monotonic() - started
        writes = [r for r in api.requests if r.method == "PUT" and r.path.startswith(SLICES_PATH)][writes_before:]
        assert 1 <= len(writes) <= elapsed / interval + 1, (len(writes), elapsed)
        times = driver.occupancy.push_times  # type: ignore[union-attr]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and min(gaps) >= interval, gaps
        # the last write holds the final state
        final = occupancy(node_slice(api))
        loads = device_loads(
            [r for c in api.store.list("resourceclaims") for r in c["status"]["allocation"]["devices"]["results"]],
            TOTALS,
        )
        assert {n: a["occupancy"] for n, a in final.items()} == {n: bucket(v) for n, v in loads.items()}


async def test_off_means_no_attributes_and_no_claims_watch(api: APIServer, kubeconfig: str, root: str) -> None:
    s = settings(root, kubeconfig, "2xH200", "--occupancy-interval", "0")
    async with running_driver(s) as driver:
        assert driver.occupancy is None
        api.store.put(claim("c", [result("gpu-0")]))
        await asyncio.sleep(0.3)
        assert occupancy(node_slice(api)) == {"gpu-0": {}, "gpu-1": {}}
    assert not [r for r in api.requests if "resourceclaims" in r.path]


async def test_occupancy_is_withdrawn_while_claims_cannot_be_read(api: APIServer, kubeconfig: str, root: str) -> None:
    """Forbidden to list claims (RBAC without list/watch): the attributes go rather than go stale."""
    s = settings(root, kubeconfig, "2xH200", "--occupancy-interval", "0.2")
    async with running_driver(s):
        api.store.put(claim("c", [result("gpu-1", memory="10Gi")]))
        await wait_for(lambda: occupancy(node_slice(api))["gpu-1"].get("occupancy") == 10)
        api.faults.add("GET", r"/resourceclaims$", status=403, count=None, message="forbidden")
        await api.stop()  # ends every watch: the tracker lists again, and is refused
        await api.start()
        await wait_for(lambda: occupancy(node_slice(api)) == {"gpu-0": {}, "gpu-1": {}}, timeout=15)
        api.faults.clear()
        await wait_for(lambda: occupancy(node_slice(api))["gpu-1"].get("occupancy") == 10, timeout=15)


async def test_a_claims_watch_too_old_lists_again_and_drops_what_went_meanwhile(root: str) -> None:
    """The claims watch is cut and its renewal delayed while a claim goes and the server's history moves
    on: the renewed watch gets 410 Gone, the tracker lists again, and the released device shows idle."""
    async with APIServer.running(validator=strict_validator(), store=Store(history=20)) as api:
        await add_node(api)
        s = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "2xH200", "--occupancy-interval", "0.2")
        async with running_driver(s):
            api.store.put(claim("c", [result("gpu-1", memory="10Gi")]))
            await wait_for(lambda: occupancy(node_slice(api))["gpu-1"].get("occupancy") == 10)
            lists = sum(1 for r in api.requests if r.path == CLAIMS_PATH and r.query.get("watch") != "true")
            api.faults.add("GET", f"^{CLAIMS_PATH}$", status=None, delay=1.0, count=1)  # the renewed watch waits
            api.store.close_watchers()
            api.store.delete("resourceclaims", "default", "c")
            for i in range(25):  # push the history past the watch's resourceVersion
                api.store.put({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": f"cm{i}", "namespace": "default"}})  # fmt: skip
            await wait_for(lambda: occupancy(node_slice(api))["gpu-1"].get("occupancy") == 0, timeout=15)
            relists = sum(1 for r in api.requests if r.path == CLAIMS_PATH and r.query.get("watch") != "true")
            assert relists > lists


def test_the_tracker_keeps_its_sums_claim_by_claim_equal_to_a_recount() -> None:
    """Claims allocated, changed and released in a random order: after every event the tracker's
    attributes (sums kept claim by claim) equal a recount of every result, and nothing stays held
    once every claim is gone."""
    from dra_driver.occupancy import OccupancyTracker, _claim_view, _slice_view, cluster_attributes

    async def publish(_: Any) -> None:
        return None

    rng = random.Random(7)
    devices = mock.discover("4xH200", nvidia.NAMES, nvidia.MOCK_MODELS, NODE)
    tracker = OccupancyTracker(None, nvidia.NAMES, NODE, devices, 10, publish)  # type: ignore[arg-type]
    (spec,) = build_slice_specs(devices, nvidia.NAMES, "node-b", 10, shareable=True)
    other = slice_object(spec, 1, node_name="node-b", node_uid="6c1f3e2a-0000-4000-8000-00000000000b", driver=DRIVER)
    tracker._slice_event("ADDED", {**_slice_view(other), "metadata": {"name": "node-b-slice"}})
    view = _claim_view(DRIVER)

    def random_result() -> dict[str, Any]:
        device = f"gpu-{rng.randrange(5)}"  # gpu-4 is no device of either node
        pool = rng.choice([NODE, "node-b", "node-c"])  # node-c publishes no slice
        kind = rng.random()
        if kind < 0.15:
            return result(device, share=False, pool=pool)
        if kind < 0.2:
            return {**result(device, memory="100Gi", pool=pool), "adminAccess": True}
        if kind < 0.25:
            return result(device, memory="nonsense", pool=pool)
        return result(device, memory=f"{rng.randrange(1, 40)}Gi", cores=str(rng.randrange(1, 50)), pool=pool)

    live: dict[str, list[dict[str, Any]]] = {}
    for step in range(400):
        name = f"c{rng.randrange(30)}"
        if name in live and rng.random() < 0.4:
            del live[name]
            tracker._claim_event("DELETED", view(claim(name, [])))
        else:
            live[name] = [random_result() for _ in range(rng.randrange(1, 4))]
            tracker._claim_event("MODIFIED", view(claim(name, live[name])))
        everything = [r for results in live.values() for r in results]
        assert tracker.current() == cluster_attributes(everything, tracker.pool_totals(), NODE), step
    for name in list(live):
        tracker._claim_event("DELETED", view(claim(name, [])))
    assert tracker._held == {} and tracker._claim_held == {}
    assert all(a["occupancy"]["int"] == 0 for a in tracker.current().values())
