"""The cluster view on a running cluster: two pods sharing a card appear in the cluster exporter with
the right labels and values and in ``tessera top``; a pod that cannot fit is exported with the
scheduler's reason; once a pod and its claim are gone, the next scrape has none of its series."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest

from tessera_exporter.model import MAX_MESSAGE
from tests.exporter import promtext
from tests.exporter.test_top import rows

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIB = 1024 * 1024


async def scrape_until(cluster: Cluster, name: str, what: str, **labels: str) -> str:
    """Scrape until a series ``name{labels}`` is there; the exposition."""

    async def check() -> str | None:
        text = await cluster.control.exporter_metrics()
        return text if promtext.series(text, name, **labels) else None

    result: str = await cluster.wait(check, what=what)
    return result


async def top(cluster: Cluster) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tessera_exporter", "top", "--kubeconfig", cluster.control.kubeconfig,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_two_pods_sharing_a_card_a_pending_pod_and_a_deleted_one(cluster: Cluster, ns: str) -> None:
    node = (await cluster.control.nodes_with_devices())[0]
    card = next(d for n, d in await cluster.inventory() if n == node and d["attributes"]["type"]["string"] == "H200")
    uuid = card["attributes"]["uuid"]["string"]
    index = str(card["attributes"]["index"]["int"])
    total_mib = int(card["capacity"]["memory"]["value"].removesuffix("Mi"))
    pin = {"nvidia.com/use-gpuuuid": uuid}
    first, second = total_mib // 2, total_mib // 3
    asks: dict[str, dict[str, Any]] = {
        "share-a": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": first},
        "share-b": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": second, "nvidia.com/gpucores": 40},
    }
    for name, limits in asks.items():
        await cluster.create(ns, pod(name, "sleep 3600", limits=limits, annotations=pin, node=node))
    for name in asks:
        await cluster.wait_running(ns, name)
    device = {"node": node, "device_uuid": uuid, "device_index": index, "device_type": "H200", "zone": "vGPU"}

    # -- the exporter: both shares, per device and per pod
    async def both() -> str | None:
        text = await cluster.control.exporter_metrics()
        found = promtext.series(text, "hami_gpu_shared_count", **device)
        return text if found and found[0].value == 2 else None

    text = await cluster.wait(both, what="the card's two shares in the exporter")
    promtext.check_exposition(text)
    assert promtext.value(text, "hami_gpu_memory_allocated_bytes", **device) == (first + second) * MIB
    assert promtext.value(text, "hami_gpu_core_allocated_ratio", **device) == 41  # cores 1 (default) + 40
    assert promtext.value(text, "hami_gpu_memory_limit_bytes", **device) == total_mib * MIB
    assert promtext.value(text, "tessera_cluster_device_shares", node=node, device_uuid=uuid) == 10
    for name, memory, cores in (("share-a", first, 1), ("share-b", second, 40)):
        where = {"namespace": ns, "node": node, "pod": name, "container_index": "0", "device_uuid": uuid}
        assert promtext.value(text, "hami_vgpu_memory_allocated_bytes", **where) == memory * MIB
        assert promtext.value(text, "hami_vgpu_core_allocated_ratio", **where) == cores
        (info,) = promtext.series(text, "tessera_cluster_share_info", namespace=ns, pod=name)
        (claim,) = await cluster.claims(ns, name)
        assert info.labels["container"] == "main" and info.labels["claim"] == claim["metadata"]["name"]
        assert info.labels["device_uuid"] == uuid and info.labels["node"] == node
        result = claim["status"]["allocation"]["devices"]["results"][0]
        assert info.labels["share_id"] == result["shareID"] and info.labels["request"] == result["request"]

    # -- one that does not fit waits, with the scheduler's reason
    third = total_mib - first - second + 1024
    await cluster.create(
        ns, pod("share-c", "sleep 3600", limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": third}, annotations=pin,
                node=node)
    )  # fmt: skip
    await cluster.wait_unschedulable(ns, "share-c")
    condition = next(
        c for c in (await cluster.get(ns, "share-c"))["status"]["conditions"] if c["type"] == "PodScheduled"
    )
    text = await scrape_until(
        cluster, "tessera_cluster_pending_pod_info", "share-c pending in the exporter", namespace=ns, pod="share-c"
    )
    (pending,) = promtext.series(text, "tessera_cluster_pending_pod_info", namespace=ns, pod="share-c")
    assert pending.labels["reason"] == condition["reason"] == "Unschedulable"
    assert pending.labels["message"] == condition["message"][:MAX_MESSAGE] or condition["message"].startswith(
        pending.labels["message"].removesuffix("...")
    )
    (waiting_claim,) = await cluster.claims(ns, "share-c")
    claim_info = promtext.series(text, "tessera_cluster_pending_claim_info", claim=waiting_claim["metadata"]["name"])
    assert [c.labels["pod"] for c in claim_info] == ["share-c"] and claim_info[0].labels["reason"] == "Unschedulable"

    # -- tessera top: the same figures, read from the API
    out = await top(cluster)
    (row,) = [r for r in rows(out, "NODE", "DEVICE", "TYPE") if r["UUID"] == uuid]
    assert row["NODE"] == node and row["TYPE"] == "H200" and row["HEALTH"] == "ok"
    assert row["SHARES"] == "2/10" and row["CORES"] == "41/100"
    assert row["MEMORY"] == f"{(first + second) / 1024:.1f}Gi/{total_mib / 1024:.1f}Gi"
    assert row["PODS"] == f"{ns}/share-a,{ns}/share-b"
    held = [r for r in rows(out, "NODE", "DEVICE", "NAMESPACE") if r["NAMESPACE"] == ns]
    assert [(r["POD"], r["CONTAINER"], r["MEMORY"], r["CORES"]) for r in held] == [
        ("share-a", "main", f"{first / 1024:.1f}Gi", "1"),
        ("share-b", "main", f"{second / 1024:.1f}Gi", "40"),
    ]
    waiting = [r for r in rows(out, "NAMESPACE", "POD", "REASON") if r["NAMESPACE"] == ns]
    assert [(r["POD"], r["REASON"]) for r in waiting] == [("share-c", "Unschedulable")]

    # -- share-a goes (and with it its claim): the next scrape has none of its series
    (claim_a,) = await cluster.claims(ns, "share-a")
    claim_path = f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{claim_a['metadata']['name']}"
    await cluster.delete_and_wait(ns, "share-a")
    await cluster.wait(lambda: cluster.gone(claim_path), what="share-a's claim to go")
    text = await cluster.control.exporter_metrics()
    assert not [s for s in promtext.samples(text) if s.labels.get("pod") == "share-a"]
    assert not [s for s in promtext.samples(text) if s.labels.get("claim") == claim_a["metadata"]["name"]]
