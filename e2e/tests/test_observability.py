"""What a user and an admin see: the node exporter, the claim's status, and a device that goes bad.

* Two pods share one card: the node exporter reports each container with its labels, limit and use
  (the one that has not touched CUDA yet with zero use); once a pod is deleted its series are gone at
  the next scrape. The claim of a running pod shows ``status.devices`` with the limits applied in
  ``kubectl get resourceclaim -o yaml``.
* An XID injected on a simulated card taints the card in its ResourceSlice, the next pod lands on
  another card, and the pod holding a share of the bad card sees it in its status.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .helpers import DRIVER, Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIB = 1024 * 1024
KUBECTL = os.environ.get("TESSERA_E2E_KUBECTL", "/usr/bin/kubectl")
TAINT_KEY = f"{DRIVER}/unhealthy"


def series(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples of ``name`` whose labels include ``labels``, read with Prometheus's own text parser."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out.append((dict(sample.labels), float(sample.value)))
    return out


def one(text: str, name: str, **labels: str) -> float:
    found = series(text, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0][1]


async def card(cluster: Cluster, node: str, model: str = "H200", nth: int = 0) -> dict[str, Any]:
    cards = [d for n, d in await cluster.inventory() if n == node and d["attributes"]["type"]["string"] == model]
    return sorted(cards, key=lambda d: d["attributes"]["index"]["int"])[nth]


async def kubectl(kubeconfig: str, *args: str) -> str:
    """The real kubectl, as its own process (the harness's API server runs on this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", kubeconfig, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


async def test_node_exporter_and_claim_status(cluster: Cluster, ns: str) -> None:
    node = (await cluster.control.nodes_with_devices())[0]
    target = await card(cluster, node)
    uuid = target["attributes"]["uuid"]["string"]
    pin = {"nvidia.com/use-gpuuuid": uuid}
    # one container allocates 1 GiB and holds it; the other never touches CUDA
    await cluster.create(
        ns,
        pod(
            "busy",
            "cuda-workload --total-mib 1024 --step-mib 512 --hold-seconds 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 8192},
            annotations=pin,
            node=node,
        ),
    )
    await cluster.create(
        ns,
        pod(
            "idle",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096, "nvidia.com/gpucores": 30},
            annotations=pin,
            node=node,
        ),
    )
    await cluster.wait_running(ns, "busy")
    await cluster.wait_running(ns, "idle")
    busy = {"namespace": ns, "pod": "busy", "container": "main", "request": "main", "uuid": uuid}
    idle = {"namespace": ns, "pod": "idle", "container": "main", "request": "main", "uuid": uuid}

    async def busy_holds_its_memory() -> str | None:
        text = await cluster.control.driver_metrics(node)
        found = series(text, "tessera_container_memory_used_bytes", **busy)
        return text if found and found[0][1] == 1024 * MIB else None

    text = await cluster.wait(busy_holds_its_memory, what="the busy pod's 1 GiB in the node exporter")
    (claim_busy,) = await cluster.claims(ns, "busy")
    (claim_idle,) = await cluster.claims(ns, "idle")
    device = target["name"]
    assert one(text, "tessera_container_memory_limit_bytes", **busy) == 8192 * MIB
    labels = series(text, "tessera_container_memory_limit_bytes", **busy)[0][0]
    assert labels["claim"] == claim_busy["metadata"]["name"] and labels["device"] == device
    assert labels["claim_uid"] == claim_busy["metadata"]["uid"] and labels["index"] == str(
        target["attributes"]["index"]["int"]
    )
    # the pod that has not touched CUDA yet: there, with its limit and zero use
    assert one(text, "tessera_container_memory_used_bytes", **idle) == 0
    assert one(text, "tessera_container_memory_limit_bytes", **idle) == 4096 * MIB
    assert one(text, "tessera_container_utilization_ratio", **idle) == 0
    # the device's host figures count what its containers hold
    assert one(text, "tessera_device_memory_used_bytes", uuid=uuid) >= 1024 * MIB
    assert one(text, "tessera_dra_device_shares", uuid=uuid) == 2

    # kubectl shows what the container got
    out = await kubectl(
        cluster.control.kubeconfig, "get", "resourceclaim", claim_idle["metadata"]["name"], "-n", ns, "-o", "yaml"
    )
    shown = yaml.safe_load(out)
    (entry,) = shown["status"]["devices"]
    assert (entry["driver"], entry["device"]) == (DRIVER, device)
    assert entry["shareID"] == claim_idle["status"]["allocation"]["devices"]["results"][0]["shareID"]
    (ready,) = entry["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Prepared")
    data = entry["data"]
    assert data["memoryLimitBytes"] == 4096 * MIB and data["coresPercent"] == 30, data
    assert (data["container"], data["uuid"], data["enforcer"]) == ("main", uuid, "libvgpu")

    # the deleted pod's series are gone from the very next scrape
    await cluster.delete_and_wait(ns, "busy")
    text = await cluster.control.driver_metrics(node)
    assert series(text, "tessera_container_memory_used_bytes", namespace=ns, pod="busy") == []
    assert series(text, "tessera_container_memory_limit_bytes", namespace=ns, pod="busy") == []
    assert one(text, "tessera_container_memory_limit_bytes", **idle) == 4096 * MIB
    assert one(text, "tessera_dra_device_shares", uuid=uuid) == 1


def allocated_health(pod_obj: dict[str, Any]) -> list[str]:
    statuses = (pod_obj.get("status") or {}).get("containerStatuses") or []
    return [
        r.get("health", "") for s in statuses for e in s.get("allocatedResourcesStatus") or [] for r in e["resources"]
    ]


async def test_injected_xid_taints_the_card_and_the_pod_sees_it(cluster: Cluster, ns: str) -> None:
    node = (await cluster.control.nodes_with_devices())[-1]
    bad = await card(cluster, node, nth=0)
    good = await card(cluster, node, nth=1)
    holder = pod(
        "holder",
        "sleep 3600",
        limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048},
        annotations={"nvidia.com/use-gpuuuid": bad["attributes"]["uuid"]["string"]},
        node=node,
    )
    await cluster.create(ns, holder)
    await cluster.wait_running(ns, "holder")

    async def holder_health(*want: str) -> list[str] | None:
        got = allocated_health(await cluster.get(ns, "holder"))
        return got if got and all(h in want for h in got) else None

    assert await cluster.wait(lambda: holder_health("Healthy"), what="the holder's device reported Healthy")

    await cluster.control.inject_faults(node, [f"{bad['name']} xid 62"])
    try:

        async def tainted() -> list[dict[str, Any]] | None:
            for n, d in await cluster.inventory():
                if n == node and d["name"] == bad["name"] and d.get("taints"):
                    return list(d["taints"])
            return None

        (taint,) = await cluster.wait(tainted, what=f"a taint on {bad['name']}")
        assert (taint["key"], taint["value"], taint["effect"]) == (TAINT_KEY, "xid-62", "NoSchedule"), taint
        assert await cluster.wait(lambda: holder_health("Unhealthy"), what="the holder pod to see its device unhealthy")
        # a pod that asks for exactly the tainted card waits, and says why
        await cluster.create(
            ns,
            pod(
                "pinned",
                "sleep 3600",
                limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048},
                annotations={"nvidia.com/use-gpuuuid": bad["attributes"]["uuid"]["string"]},
                node=node,
            ),
        )
        message = await cluster.wait_unschedulable(ns, "pinned")
        assert "taint" in message, message
        # the next pod asks any H200 on this node: it lands on the other one
        nxt = pod(
            "next",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048},
            annotations={"nvidia.com/use-gputype": "H200"},
            node=node,
        )
        await cluster.create(ns, nxt)
        await cluster.wait_running(ns, "next")
        (placed,) = await cluster.devices(ns, "next")
        assert placed.name == good["name"] and placed.name != bad["name"]
        # the node exporter and the events say so too
        text = await cluster.control.driver_metrics(node)
        assert one(text, "tessera_dra_device_healthy", device=bad["name"]) == 0
        assert one(text, "tessera_dra_device_healthy", device=good["name"]) == 1
        assert one(text, "tessera_dra_device_faults", device=bad["name"], kind="xid") == 1
        events = await cluster.wait(
            lambda: cluster.events(ns, "holder", "DeviceUnhealthy"), what="a DeviceUnhealthy event on the holder"
        )
        assert "XID 62" in events[0]["message"], events
    finally:
        await cluster.control.inject_faults(node, [])

    async def untainted() -> bool:
        return all(not d.get("taints") for n, d in await cluster.inventory() if n == node)

    assert await cluster.wait(untainted, what="the taint to go once the fault is cleared")
    assert await cluster.wait(lambda: holder_health("Healthy"), what="the holder's device Healthy again")
    await cluster.wait_running(ns, "pinned")  # the card takes new shares again
    (placed,) = await cluster.devices(ns, "pinned")
    assert placed.name == bad["name"]
