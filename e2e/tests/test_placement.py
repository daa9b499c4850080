"""Scheduling policies: HAMi's binpack and spread annotations, per GPU and per node.

Each test first places a pod, waits until its driver has published the device's occupancy in the
node's ResourceSlice, then creates a pod with a policy and checks where it lands, and one without a
policy to show that first fit would have put it elsewhere. Node policies rely on the node scoring of
``firstAvailable`` alternatives (Kubernetes 1.35+; the harness's allocator has it).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")

SMALL = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1024, "nvidia.com/gpucores": 10}
WHOLE = {"nvidia.com/gpu": 1}
GPU_BINPACK = {"hami.io/gpu-scheduler-policy": "binpack"}
GPU_SPREAD = {"hami.io/gpu-scheduler-policy": "spread"}
NODE_BINPACK = {"hami.io/node-scheduler-policy": "binpack"}
NODE_SPREAD = {"hami.io/node-scheduler-policy": "spread"}


async def occupancy(cluster: Cluster) -> dict[tuple[str, str], dict[str, int]]:
    """(node, device) -> the occupancy attributes its slice publishes now."""
    out = {}
    for node, device in await cluster.inventory():
        attributes = device.get("attributes") or {}
        out[(node, str(device["name"]))] = {k: int(v["int"]) for k, v in attributes.items() if "int" in v}
    return out


async def idle(cluster: Cluster) -> None:
    """Until every device says it is idle (what earlier tests left has been released)."""

    async def check() -> bool:
        return all(a.get("occupancy") == 0 for a in (await occupancy(cluster)).values())

    await cluster.wait(check, what="every device to publish occupancy 0")


async def published(cluster: Cluster, node: str, device: str) -> None:
    """Until the device's slice shows it in use (the driver publishes at most once a second)."""

    async def check() -> bool:
        return (await occupancy(cluster)).get((node, device), {}).get("occupancy", 0) > 0

    await cluster.wait(check, what=f"{node}/{device} to publish its occupancy")


async def placed(cluster: Cluster, ns: str, name: str, spec: dict[str, Any]) -> tuple[str, str]:
    await cluster.create(ns, spec)
    await cluster.wait_running(ns, name)
    (device,) = await cluster.devices(ns, name)
    return device.node, device.name


async def node_scoring(cluster: Cluster) -> None:
    """Skip on a real cluster whose scheduler does not score firstAvailable alternatives (before 1.35)."""
    if not os.environ.get("TESSERA_E2E_KUBECONFIG"):
        return  # the harness's allocator scores as 1.35 does
    version = await cluster.kube.get("/version")
    if (int(version["major"]), int(str(version["minor"]).rstrip("+"))) < (1, 35):
        pytest.skip(f"node policies need kube-scheduler 1.35+ (cluster: {version.get('gitVersion')})")


async def test_gpu_binpack_puts_a_second_small_pod_on_the_card_in_use(cluster: Cluster, ns: str) -> None:
    await idle(cluster)
    node = (await cluster.control.nodes_with_devices())[0]
    cards = [d for n, d in await cluster.inventory() if n == node]
    busy = cards[1]  # not the first card: first fit would take that one
    uuid = busy["attributes"]["uuid"]["string"]
    first = pod("first", "sleep 3600", limits=SMALL, annotations={"nvidia.com/use-gpuuuid": uuid}, node=node)
    assert await placed(cluster, ns, "first", first) == (node, busy["name"])
    await published(cluster, node, busy["name"])
    packed = pod("packed", "sleep 3600", limits=SMALL, annotations=GPU_BINPACK, node=node)
    assert await placed(cluster, ns, "packed", packed) == (node, busy["name"])
    plain = pod("plain", "sleep 3600", limits=SMALL, node=node)
    assert await placed(cluster, ns, "plain", plain) == (node, cards[0]["name"])


async def test_gpu_spread_puts_a_second_small_pod_on_an_idle_card(cluster: Cluster, ns: str) -> None:
    await idle(cluster)
    node = (await cluster.control.nodes_with_devices())[0]
    first = pod("first", "sleep 3600", limits=SMALL, node=node)
    _, card = await placed(cluster, ns, "first", first)
    await published(cluster, node, card)
    spread = pod("spread", "sleep 3600", limits=SMALL, annotations=GPU_SPREAD, node=node)
    where = await placed(cluster, ns, "spread", spread)
    assert where[0] == node and where[1] != card
    plain = pod("plain", "sleep 3600", limits=SMALL, node=node)
    assert await placed(cluster, ns, "plain", plain) == (node, card)


async def test_node_binpack_puts_a_second_pod_on_the_node_in_use(cluster: Cluster, ns: str) -> None:
    await node_scoring(cluster)
    await idle(cluster)
    nodes = sorted(await cluster.control.nodes_with_devices())
    busy = nodes[-1]  # not the first: with equal scores the harness picks the first by name
    first = pod("first", "sleep 3600", limits=WHOLE, node=busy)
    _, card = await placed(cluster, ns, "first", first)
    await published(cluster, busy, card)
    packed = pod("packed", "sleep 3600", limits=WHOLE, annotations=NODE_BINPACK)
    assert (await placed(cluster, ns, "packed", packed))[0] == busy
    if not os.environ.get("TESSERA_E2E_KUBECONFIG"):  # kube-scheduler breaks ties at random
        plain = pod("plain", "sleep 3600", limits=WHOLE)
        assert (await placed(cluster, ns, "plain", plain))[0] == nodes[0]


async def test_node_spread_puts_a_second_pod_on_the_idle_node(cluster: Cluster, ns: str) -> None:
    await node_scoring(cluster)
    await idle(cluster)
    nodes = sorted(await cluster.control.nodes_with_devices())
    busy = nodes[0]
    first = pod("first", "sleep 3600", limits=SMALL, node=busy)
    _, card = await placed(cluster, ns, "first", first)
    await published(cluster, busy, card)
    spread = pod("spread", "sleep 3600", limits=SMALL, annotations=NODE_SPREAD)
    assert (await placed(cluster, ns, "spread", spread))[0] == nodes[1]
    if not os.environ.get("TESSERA_E2E_KUBECONFIG"):
        plain = pod("plain", "sleep 3600", limits=SMALL)
        assert (await placed(cluster, ns, "plain", plain))[0] == busy


async def test_node_spread_splits_a_burst_of_one_workloads_pods_over_the_nodes(cluster: Cluster, ns: str) -> None:
    # Created together, the pods are all scheduled before any slice shows the first of them: only the
    # topology spread constraint the webhook adds (kube-scheduler counts the pods it places) splits them.
    # Their controller is a ConfigMap here (any owner reference with controller: true counts; a real
    # cluster's garbage collector keeps the pods while it exists).
    await node_scoring(cluster)
    await idle(cluster)
    nodes = sorted(await cluster.control.nodes_with_devices())
    owner = await cluster.kube.create(
        f"/api/v1/namespaces/{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "job"}}
    )
    uid = owner["metadata"]["uid"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "job", "uid": uid, "controller": True}
    names = [f"worker-{i}" for i in range(2 * len(nodes))]
    specs = []
    for name in names:
        spec = pod(name, "sleep 3600", limits=SMALL, annotations=NODE_SPREAD)
        spec["metadata"]["ownerReferences"] = [ref]
        specs.append(spec)
    created = await asyncio.gather(*(cluster.create(ns, s) for s in specs))
    for c in created:
        assert c["metadata"]["labels"]["tessera.dev/workload"] == uid
        selectors = [t["labelSelector"] for t in c["spec"]["topologySpreadConstraints"]]
        assert {"matchLabels": {"tessera.dev/workload": uid}} in selectors
    for name in names:
        await cluster.wait_running(ns, name)
    on = [(await cluster.get(ns, name))["spec"]["nodeName"] for name in names]
    assert sorted(on) == sorted(nodes * 2), on


async def test_node_spread_splits_a_burst_of_pods_of_no_workload_admitted_together(
    cluster: Cluster, ns: str
) -> None:
    # Pods of their own share no controller; the webhook labels each node-spread pod with its
    # admission windows (two, shifted by half a window), and pods admitted within a second of each
    # other share one: kube-scheduler's count of them splits the burst.
    await node_scoring(cluster)
    await idle(cluster)
    nodes = sorted(await cluster.control.nodes_with_devices())
    names = [f"solo-{i}" for i in range(2 * len(nodes))]
    started = asyncio.get_running_loop().time()
    created = await asyncio.gather(
        *(cluster.create(ns, pod(n, "sleep 3600", limits=SMALL, annotations=NODE_SPREAD)) for n in names)
    )
    took = asyncio.get_running_loop().time() - started
    for c in created:
        labels = c["metadata"]["labels"]
        assert {"tessera.dev/spread-window", "tessera.dev/spread-window-shifted"} <= set(labels)
        assert len(c["spec"]["topologySpreadConstraints"]) == 2
    for name in names:
        await cluster.wait_running(ns, name)
    if took >= 1.0:
        pytest.skip(f"creating the pods took {took:.1f} s: they need not share an admission window")
    on = [(await cluster.get(ns, name))["spec"]["nodeName"] for name in names]
    assert sorted(on) == sorted(nodes * 2), on
