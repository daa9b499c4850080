"""Two pods share one card within its memory; a third that does not fit stays Pending, with why."""

from __future__ import annotations

import pytest

from .helpers import SHOW, Cluster, env_of, pod, preloads_libvgpu

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_two_pods_share_one_card_and_a_third_waits(cluster: Cluster, ns: str) -> None:
    node = (await cluster.control.nodes_with_devices())[0]
    card = next(d for n, d in await cluster.inventory() if n == node and d["attributes"]["type"]["string"] == "H200")
    uuid = card["attributes"]["uuid"]["string"]
    total_mib = int(card["capacity"]["memory"]["value"].removesuffix("Mi"))
    pin = {"nvidia.com/use-gpuuuid": uuid}
    first = total_mib // 2
    second = total_mib // 3
    await cluster.create(
        ns,
        pod(
            "share-a",
            f"{SHOW}; sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": first},
            annotations=pin,
            node=node,
        ),
    )
    await cluster.create(
        ns,
        pod(
            "share-b",
            f"{SHOW}; sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": second, "nvidia.com/gpucores": 40},
            annotations=pin,
            node=node,
        ),
    )
    await cluster.wait_running(ns, "share-a")
    await cluster.wait_running(ns, "share-b")
    (a,) = await cluster.devices(ns, "share-a")
    (b,) = await cluster.devices(ns, "share-b")
    assert (a.node, a.name) == (b.node, b.name) and a.uuid == uuid
    assert a.share_id and b.share_id and a.share_id != b.share_id
    assert b.consumed["cores"] == "40" and a.consumed["cores"] == "1"
    log_a = await cluster.logs_with(ns, "share-a", "CUDA_DEVICE_MEMORY_LIMIT_0")
    log_b = await cluster.logs_with(ns, "share-b", "CUDA_DEVICE_MEMORY_LIMIT_0")
    assert env_of(log_a)["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{first}m"
    assert env_of(log_b)["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{second}m"
    assert env_of(log_b)["CUDA_DEVICE_SM_LIMIT_0"] == "40" and "CUDA_DEVICE_SM_LIMIT_0" not in env_of(log_a)
    assert env_of(log_a)["NVIDIA_VISIBLE_DEVICES"] == uuid == env_of(log_b)["NVIDIA_VISIBLE_DEVICES"]
    assert preloads_libvgpu(log_a) and preloads_libvgpu(log_b)
    # what is left is less than a third asks: it waits, and says why
    third = total_mib - first - second + 1024
    await cluster.create(
        ns,
        pod(
            "share-c",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": third},
            annotations=pin,
            node=node,
        ),
    )
    message = await cluster.wait_unschedulable(ns, "share-c")
    assert "cannot allocate all claims" in message, message
    got = await cluster.get(ns, "share-c")
    assert not got["spec"].get("nodeName")
    condition = next(c for c in got["status"]["conditions"] if c["type"] == "PodScheduled")
    assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
    # room made: it runs, on the card it asked for
    await cluster.delete_and_wait(ns, "share-a")
    await cluster.wait_running(ns, "share-c")
    (c,) = await cluster.devices(ns, "share-c")
    assert c.uuid == uuid and c.share_id not in (a.share_id, b.share_id)
