"""HAMi's type and UUID annotations choose the cards."""

from __future__ import annotations

import pytest

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_use_and_avoid_types(cluster: Cluster, ns: str) -> None:
    await cluster.create(
        ns,
        pod(
            "want-a100",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000},
            annotations={"nvidia.com/use-gputype": "a100"},
        ),
    )
    await cluster.create(
        ns,
        pod(
            "avoid-h200",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000},
            annotations={"nvidia.com/nouse-gputype": "H200"},
        ),
    )
    await cluster.create(
        ns,
        pod(
            "want-h200",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000},
            annotations={"nvidia.com/use-gputype": "NVIDIA H200"},
        ),
    )
    for name, want in (("want-a100", "A100"), ("avoid-h200", "A100"), ("want-h200", "H200")):
        await cluster.wait_running(ns, name)
        (device,) = await cluster.devices(ns, name)
        assert device.type == want, (name, device)


async def test_use_and_avoid_uuids(cluster: Cluster, ns: str) -> None:
    inventory = await cluster.inventory()
    node, chosen = inventory[-1]
    uuid = chosen["attributes"]["uuid"]["string"]
    await cluster.create(
        ns,
        pod(
            "want-uuid",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000},
            annotations={"nvidia.com/use-gpuuuid": uuid},
        ),
    )
    await cluster.wait_running(ns, "want-uuid")
    (device,) = await cluster.devices(ns, "want-uuid")
    assert (device.node, device.uuid) == (node, uuid)
    all_but_one = ",".join(d["attributes"]["uuid"]["string"] for _, d in inventory[1:])
    first_node, first = inventory[0]
    await cluster.create(
        ns,
        pod(
            "avoid-uuids",
            "sleep 3600",
            limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000},
            annotations={"nvidia.com/nouse-gpuuuid": all_but_one},
        ),
    )
    await cluster.wait_running(ns, "avoid-uuids")
    (device,) = await cluster.devices(ns, "avoid-uuids")
    assert (device.node, device.uuid) == (first_node, first["attributes"]["uuid"]["string"])
