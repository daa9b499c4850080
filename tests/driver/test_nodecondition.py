"""The Node condition of the gate-off fallback (docs/driver.md): False while devices are published whole,
True when shares are published, written only on a change, never clobbering the kubelet's conditions."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest

from dra_driver.cli import Settings
from dra_driver.nodecondition import NodeConditionWriter
from e2e.apiserver import APIServer
from kubeapi import KubeClient
from vendors import nvidia

from .helpers import NODE, running_driver, settings
from .test_slices import GateSwitch, gated_api, our_slices, wait_for

CONDITION = "TesseraNvidiaSharing"
STATUS_PATH = f"/api/v1/nodes/{NODE}/status"
KUBELET_CONDITIONS: list[dict[str, Any]] = [
    {
        "type": "MemoryPressure",
        "status": "False",
        "reason": "KubeletHasSufficientMemory",
        "message": "kubelet has sufficient memory available",
        "lastHeartbeatTime": "2025-01-01T00:00:00Z",
        "lastTransitionTime": "2024-12-01T00:00:00Z",
    },
    {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": "2025-01-01T00:00:00Z",
        "lastTransitionTime": "2024-12-01T00:00:00Z",
    },
]


def put_node(api: APIServer) -> None:
    """A Node as the kubelet keeps it (its own conditions, capacity)."""
    api.store.put(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"conditions": copy.deepcopy(KUBELET_CONDITIONS), "capacity": {"cpu": "16", "pods": "110"}},
        }
    )


def heartbeat(api: APIServer, stamp: str) -> list[dict[str, Any]]:
    """What the kubelet does every few seconds: a new heartbeat on its conditions (new resourceVersion)."""
    node = api.store.get("nodes", None, NODE)
    assert node is not None
    for cond in node["status"]["conditions"]:
        if cond["type"] != CONDITION:
            cond["lastHeartbeatTime"] = stamp
    api.store.put(node)
    return kubelet_conditions(api)


def conditions(api: APIServer) -> list[dict[str, Any]]:
    node = api.store.get("nodes", None, NODE)
    assert node is not None
    return list((node.get("status") or {}).get("conditions") or [])


def ours(api: APIServer) -> dict[str, Any] | None:
    found = [c for c in conditions(api) if c["type"] == CONDITION]
    assert len(found) <= 1
    return found[0] if found else None


def kubelet_conditions(api: APIServer) -> list[dict[str, Any]]:
    return [c for c in conditions(api) if c["type"] != CONDITION]


def status_writes(api: APIServer) -> list[int]:
    """HTTP status of every write to the Node's status."""
    return [r.status for r in api.requests if r.path == STATUS_PATH and r.method in ("PUT", "PATCH")]


@pytest.mark.parametrize("seen_by", ["dry-run probe", "real write"])
async def test_condition_false_on_fallback_true_when_the_gate_returns(root: str, seen_by: str) -> None:
    gate = None if seen_by == "dry-run probe" else GateSwitch(off=True, dry_run_too=False)
    async with gated_api(gate) as api:
        put_node(api)
        s: Settings = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "1xH200")
        async with running_driver(s) as driver:
            assert driver.publisher is not None
            off = ours(api)
            assert off is not None, conditions(api)
            assert (off["status"], off["reason"]) == ("False", "ConsumableCapacityDisabled")
            assert "DRAConsumableCapacity" in off["message"] and "Enable DRAConsumableCapacity" in off["message"]
            assert "nvidia.tessera.dev" in off["message"] and "whole" in off["message"]
            assert off["lastTransitionTime"] == off["lastHeartbeatTime"]
            assert kubelet_conditions(api) == KUBELET_CONDITIONS, "the kubelet's conditions are untouched"
            assert status_writes(api) == [200]

            # Nothing changed: reconciles write nothing to the Node.
            for _ in range(3):
                await driver.publisher.reconcile()
            assert status_writes(api) == [200]

            # The kubelet keeps heartbeating; the gate comes back and the next probe notices.
            kubelet_now = heartbeat(api, "2025-01-01T00:05:00Z")
            if gate is None:
                api.feature_gates["DRAConsumableCapacity"] = True
            else:
                gate.off = False
            driver.publisher.probe_interval = 0
            await driver.publisher.reconcile()
            assert all(d.get("allowMultipleAllocations") for d in our_slices(api)[0]["spec"]["devices"])
            on = ours(api)
            assert on is not None
            assert (on["status"], on["reason"]) == ("True", "ConsumableCapacityEnabled")
            assert "shareable" in on["message"]
            assert on["lastTransitionTime"] == on["lastHeartbeatTime"] >= off["lastTransitionTime"]
            assert kubelet_conditions(api) == kubelet_now, "the kubelet's heartbeat is kept"
            assert status_writes(api) == [200, 200]


async def test_condition_true_when_shares_are_published(api: APIServer, root: str, kubeconfig: str) -> None:
    put_node(api)
    async with running_driver(settings(root, kubeconfig, "1xL4")) as driver:
        on = ours(api)
        assert on is not None and (on["status"], on["reason"]) == ("True", "ConsumableCapacityEnabled")
        assert kubelet_conditions(api) == KUBELET_CONDITIONS
        assert driver.publisher is not None and driver.publisher.condition.written is True
    # A restart finds the condition in place and writes nothing.
    async with running_driver(settings(root, kubeconfig, "1xL4")):
        assert status_writes(api) == [200]


async def test_a_conflicting_kubelet_write_is_retried_not_overwritten(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    put_node(api)
    client = await KubeClient.connect(kubeconfig)
    try:
        writer = NodeConditionWriter(client, nvidia.NAMES, NODE)
        # The first PUT waits in the server while the kubelet writes a heartbeat: its resourceVersion
        # is stale by the time it is handled (a real 409), so the writer reads the Node again.
        fault = api.faults.add("PUT", f"^{STATUS_PATH}$", status=None, count=1, delay=0.3)
        task = asyncio.create_task(writer.ensure(False))
        await wait_for(lambda: fault.hits == 1)
        kubelet_now = heartbeat(api, "2025-01-01T00:10:00Z")
        assert await task is True
    finally:
        await client.close()
    assert status_writes(api) == [409, 200]
    cond = ours(api)
    assert cond is not None and cond["status"] == "False"
    assert kubelet_conditions(api) == kubelet_now


async def test_endless_conflicts_give_up_bounded(
    api: APIServer, kubeconfig: str, caplog: pytest.LogCaptureFixture
) -> None:
    put_node(api)
    api.faults.add("PUT", f"^{STATUS_PATH}$", status=409, count=None, message="the object has been modified")
    client = await KubeClient.connect(kubeconfig)
    try:
        writer = NodeConditionWriter(client, nvidia.NAMES, NODE, max_conflicts=3)
        with caplog.at_level(logging.WARNING, logger="dra_driver"):
            assert await writer.ensure(True) is False
    finally:
        await client.close()
    assert status_writes(api) == [409] * 4
    assert ours(api) is None
    assert any("cannot set the Node condition" in r.getMessage() for r in caplog.records)


async def test_a_refused_write_is_logged_not_fatal(
    api: APIServer, root: str, kubeconfig: str, caplog: pytest.LogCaptureFixture
) -> None:
    put_node(api)
    api.faults.add("PUT", f"^{STATUS_PATH}$", status=403, count=None, message='nodes "node1" is forbidden')
    with caplog.at_level(logging.WARNING, logger="dra_driver"):
        async with running_driver(settings(root, kubeconfig, "1xL4")) as driver:
            assert len(our_slices(api)) == 1, "slices are published all the same"
            assert ours(api) is None and status_writes(api) == [403]
            (warning,) = [r for r in caplog.records if "cannot set the Node condition" in r.getMessage()]
            assert "nodes/status" in warning.getMessage()
            publisher = driver.publisher
            assert publisher is not None
            await publisher.reconcile()
            assert status_writes(api) == [403], "not retried before retry_seconds"
            # RBAC fixed (the chart upgraded): the next try after the pause succeeds.
            api.faults.clear()
            publisher.condition.retry_seconds = 0
            await publisher.reconcile()
            cond = ours(api)
            assert cond is not None and cond["status"] == "True"
            assert kubelet_conditions(api) == KUBELET_CONDITIONS


async def test_a_recreated_node_gets_the_condition_again(api: APIServer, root: str, kubeconfig: str) -> None:
    put_node(api)
    async with running_driver(settings(root, kubeconfig, "1xL4")):
        (old,) = our_slices(api)
        api.store.delete("nodes", None, NODE)
        put_node(api)
        api.store.delete("resourceslices", None, old["metadata"]["name"])  # the garbage collector
        await wait_for(lambda: ours(api) is not None)
        assert kubelet_conditions(api) == KUBELET_CONDITIONS
