"""The cluster exporter against the API server stand-in, scraped over HTTP: the figures of two pods
sharing a card with their labels, a deleted pod's series gone in the next scrape, a pending pod's
reason, readiness, and an exposition that parses and follows the naming conventions."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from kubeapi import KubeClient, KubeError

from . import promtext
from .helpers import (
    CLAIMS,
    GIB,
    NODE,
    NS,
    PODS,
    SLICES,
    TAINT,
    claim,
    cluster,
    device_uuid,
    exporter_at,
    pod,
    put,
    request,
    scrape,
    shared_card,
    slices,
    until,
)  # fmt: skip


async def test_two_pods_sharing_a_card(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (_api, kube), exporter_at(kube) as (_exporter, url):
        sl, _a, _b = await shared_card(kube)
        uuid = device_uuid(sl, "gpu-0")
        card = {"node": NODE, "device_uuid": uuid, "device_index": "0", "device_type": "H200", "zone": "vGPU"}

        async def both() -> str | None:
            text = await scrape(url)
            found = promtext.series(text, "hami_gpu_shared_count", **card)
            return text if found and found[0].value == 2 else None

        text = await until(both)
        assert promtext.value(text, "hami_gpu_memory_allocated_bytes", **card) == 60 * GIB
        assert promtext.series(text, "hami_gpu_memory_allocated_bytes", **card)[0].labels["device_cores"] == "100"
        assert promtext.value(text, "hami_gpu_core_allocated_ratio", **card) == 31
        assert promtext.value(text, "hami_gpu_core_limit_ratio", **card) == 100
        total = promtext.value(text, "hami_gpu_memory_limit_bytes", **card)
        assert total == 141 * GIB or total > 100 * GIB
        assert promtext.value(text, "hami_node_gpu_memory_allocated_ratio", **card) == 60 * GIB / total
        assert promtext.value(text, "tessera_cluster_device_shares", node=NODE, device_uuid=uuid) == 10
        other = {**card, "device_uuid": device_uuid(sl, "gpu-1"), "device_index": "1"}
        assert promtext.value(text, "hami_gpu_shared_count", **other) == 0
        for name, memory, cores in (("a", 40 * GIB, 30), ("b", 20 * GIB, 1)):
            where = {"namespace": NS, "node": NODE, "pod": name, "container_index": "0", "device_uuid": uuid}
            assert promtext.value(text, "hami_vgpu_memory_allocated_bytes", **where) == memory
            assert promtext.value(text, "hami_vgpu_core_allocated_ratio", **where) == cores
            (info,) = promtext.series(text, "tessera_cluster_share_info", pod=name)
            assert info.labels | {"share_id": ""} == {
                "namespace": NS, "pod": name, "container": "main", "container_index": "0", "claim": f"claim-{name}",
                "request": "gpu", "share_id": "", "node": NODE, "driver": "nvidia.tessera.dev", "pool": NODE,
                "device": "gpu-0", "device_uuid": uuid,
            }  # fmt: skip
            assert promtext.value(text, "tessera_cluster_share_memory_bytes", pod=name) == memory
        assert promtext.value(text, "tessera_cluster_device_info", device="gpu-0")
        assert promtext.series(text, "tessera_cluster_device_info", device="gpu-0")[0].labels["device_uuid"] == uuid


async def test_a_deleted_pods_series_are_gone_in_the_next_scrape(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (_api, kube), exporter_at(kube) as (_exporter, url):
        sl, _a, _b = await shared_card(kube)
        await until(lambda: _has(url, "hami_vgpu_memory_allocated_bytes", pod="b"))
        # as when the pod goes: kubelet is done with it, the claim is released and deleted
        await kube.delete(f"{CLAIMS}/claim-a")
        await kube.request("DELETE", f"{PODS}/a", body={"gracePeriodSeconds": 0})  # no kubelet here to confirm
        await until(lambda: _gone(kube, f"{PODS}/a"))
        text = await scrape(url)
        assert not [s for s in promtext.samples(text) if s.labels.get("pod") == "a"]
        assert not [s for s in promtext.samples(text) if s.labels.get("claim") == "claim-a"]
        uuid = device_uuid(sl, "gpu-0")
        assert promtext.value(text, "hami_gpu_shared_count", device_uuid=uuid) == 1
        assert promtext.value(text, "hami_gpu_memory_allocated_bytes", device_uuid=uuid) == 20 * GIB


async def test_a_pending_pods_reason_is_exported(tmp_path: Path) -> None:
    message = '0/1 nodes are available: 1 cannot allocate all claims. resourceclaim "big-gpu" does not fit\nagain'
    async with cluster(tmp_path) as (_api, kube), exporter_at(kube) as (_exporter, url):
        for s in slices(NODE, "1xH200"):
            await kube.create(SLICES, s)
        p = pod("big", {"main": [("gpu", "")]}, claims={"gpu": "big-gpu"}, unschedulable=message)
        await put(kube, PODS, p)
        await put(kube, CLAIMS, claim("big-gpu", [], [request()], allocated=False))
        text = await until(lambda: _has(url, "tessera_cluster_pending_claim_info", claim="big-gpu"))
        (pending,) = promtext.series(text, "tessera_cluster_pending_pod_info", pod="big")
        assert pending.labels == {"namespace": NS, "pod": "big", "reason": "Unschedulable", "message": message}
        assert promtext.value(text, "tessera_cluster_pending_pods", reason="Unschedulable") == 1
        (claim_info,) = promtext.series(text, "tessera_cluster_pending_claim_info", claim="big-gpu")
        assert claim_info.labels == {"namespace": NS, "claim": "big-gpu", "pod": "big", "reason": "Unschedulable"}
        promtext.check_exposition(text)


async def test_exposition_parses_and_follows_the_conventions(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (_api, kube), exporter_at(kube) as (_exporter, url):
        sl, _a, _b = await shared_card(kube)
        sl[0]["spec"]["devices"][1]["taints"] = [TAINT]
        current = await kube.get(f"{SLICES}/{sl[0]['metadata']['name']}")
        await kube.replace(f"{SLICES}/{sl[0]['metadata']['name']}", {**current, "spec": sl[0]["spec"]})
        text = await until(lambda: _has(url, "tessera_cluster_device_taint_info", device_index="1"))
        promtext.check_exposition(text)
        (taint,) = promtext.series(text, "tessera_cluster_device_taint_info")
        assert (taint.labels["key"], taint.labels["value"], taint.labels["effect"]) == (
            "nvidia.tessera.dev/unhealthy", "xid-79", "NoSchedule")  # fmt: skip
        assert promtext.value(text, "tessera_cluster_exporter_synced", resource="pods") == 1
        assert promtext.value(text, "tessera_cluster_exporter_lists_total", resource="resourceclaims") == 1


def test_the_convention_check_catches_what_it_should() -> None:
    """Control: each broken exposition is refused."""
    good = '# HELP tessera_x_bytes d\n# TYPE tessera_x_bytes gauge\ntessera_x_bytes{a="1"} 1\n'
    promtext.check_exposition(good)
    for bad in (
        good + 'tessera_x_bytes{a="1"} 2\n',  # a series twice
        good.replace("tessera_x_bytes", "tessera_x_memory"),  # memory not in _bytes
        good.replace("# HELP tessera_x_bytes d\n", ""),  # no HELP
        good.replace('{a="1"}', '{A="1"}'),  # label not snake_case
        good.replace("gauge", "counter"),  # a counter not named _total
        good.replace("} 1", "} one"),
    ):
        try:
            promtext.check_exposition(bad)
        except (AssertionError, ValueError):
            continue
        raise AssertionError(f"accepted: {bad!r}")


async def test_ready_only_once_every_resource_is_listed(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (api, kube):
        api.faults.add("GET", r"^/api/v1/pods$", status=None, delay=1.0, count=1)
        async with exporter_at(kube) as (exporter, url), aiohttp.ClientSession() as http:
            async with http.get(f"{url}/readyz") as resp:
                assert resp.status == 503 and "pods" in await resp.text()
            await exporter.wait_synced(5)
            async with http.get(f"{url}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{url}/healthz") as resp:
                assert resp.status == 200


async def _has(url: str, name: str, **labels: str) -> str | None:
    text = await scrape(url)
    return text if promtext.series(text, name, **labels) else None


async def _gone(kube: KubeClient, path: str) -> bool:
    try:
        await kube.get(path)
    except KubeError as exc:
        return exc.not_found
    return False
