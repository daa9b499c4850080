"""The seed pods, as users wrote them: NVIDIA and Volcano ones run with the devices they ask for;
the other vendors' pods are converted and wait for devices no node of this cluster has."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeapi import KubeError

from .helpers import Cluster

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEEDS = {
    d["metadata"]["name"]: d
    for d in yaml.safe_load_all(
        (Path(__file__).resolve().parents[2] / "examples" / "seed-pods.yaml").read_text(encoding="utf-8")
    )
    if d
}
GIB = 1024**3


def seed(name: str) -> dict[str, Any]:
    pod = copy.deepcopy(SEEDS[name])
    pod["spec"]["terminationGracePeriodSeconds"] = 2
    return pod


def mib(value: str) -> int:
    units = {"Gi": 1024, "Mi": 1}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value) // (1024 * 1024)


async def test_nvidia_and_volcano_seed_pods_run_with_what_they_ask(cluster: Cluster, ns: str) -> None:
    # Whole cards first, and running before any share is created: a scheduler takes pods in no set
    # order (one whose claim its controller has not made yet is retried later), and shares placed first
    # can take a card on each node that gpu-pod2 needs both of.
    whole = ["gpu-pod2", "gpu-pod"]
    shares = ["gpu-pod12", "volcano-gpu-pod12", "gpu-priority-pod", "gpu-policy-pod"]
    order = [*whole, *shares]

    async def create(name: str) -> None:
        pod = seed(name)
        if name == "volcano-gpu-pod12":
            # the seed names the Volcano scheduler, which this cluster does not run: converted as it is
            # below, and run here by the default scheduler
            volcano = await cluster.create(ns, seed(name) | {"metadata": {"name": "volcano-as-written"}})
            assert volcano["spec"]["schedulerName"] == "volcano" and volcano["spec"].get("resourceClaims")
            del pod["spec"]["schedulerName"]
        created = await cluster.create(ns, pod)
        assert created["spec"].get("resourceClaims"), f"{name} was not converted"
        limits = created["spec"]["containers"][0]["resources"].get("limits") or {}
        assert not any(k.startswith(("nvidia.com/", "volcano.sh/")) for k in limits), limits

    for name in whole:
        await create(name)
    for name in whole:
        await cluster.wait_running(ns, name)
    for name in shares:
        await create(name)
    for name in order:
        await cluster.wait_running(ns, name)
    devices = {name: await cluster.devices(ns, name) for name in order}

    h200 = devices["gpu-pod2"]  # nvidia.com/nouse-gputype: A100, 2 whole cards
    assert len(h200) == 2 and {d.type for d in h200} == {"H200"} and len({d.uuid for d in h200}) == 2
    assert all(d.consumed["cores"] == "100" for d in h200)
    a100 = devices["gpu-pod"]  # nvidia.com/use-gputype: A100
    assert len(a100) == 2 and {d.type for d in a100} == {"A100"}
    for name in ("gpu-pod12", "volcano-gpu-pod12"):  # 2 GPUs with 10240 MiB each, on different cards
        got = devices[name]
        assert len(got) == 2 and len({d.uuid for d in got}) == 2, got
        assert all(mib(d.consumed["memory"]) == 10240 for d in got)
    assert [d.consumed["cores"] for d in devices["gpu-pod12"]] == ["30", "30"]
    (priority,) = devices["gpu-priority-pod"]
    assert mib(priority.consumed["memory"]) == 3000 and priority.consumed["cores"] == "30"
    (claim,) = await cluster.claims(ns, "gpu-priority-pod")
    configs = [c["opaque"]["parameters"] for c in claim["spec"]["devices"].get("config") or []]
    assert any(c.get("priority") == 0 for c in configs), configs  # CUDA_TASK_PRIORITY=0 became config
    (policy,) = devices["gpu-policy-pod"]
    assert mib(policy.consumed["memory"]) == 4096
    assert await cluster.phase(ns, "volcano-as-written") == "Pending"  # waits for its own scheduler
    # every share holds its own shareID; two shares of one card never collide
    share_ids = [d.share_id for got in devices.values() for d in got if d.share_id]
    assert len(share_ids) == len(set(share_ids))


async def published_drivers(cluster: Cluster) -> set[str]:
    slices = (await cluster.kube.list("/apis/resource.k8s.io/v1/resourceslices")).get("items") or []
    return {s["spec"]["driver"] for s in slices if s["spec"].get("devices")}


async def test_other_vendor_seed_pods_are_converted_or_refused_with_the_reason(cluster: Cluster, ns: str) -> None:
    # on a cluster with nodes of these vendors (kind) the pods run: test_mixed_vendors covers that
    drivers = await published_drivers(cluster)
    wanted = {"ascend-pod": "ascend", "iluvatar-pod": "iluvatar", "mlu-pod": "cambricon"}
    waiting = [name for name, vendor in wanted.items() if f"{vendor}.tessera.dev" not in drivers]
    if not waiting:
        pytest.skip("this cluster publishes Ascend, Iluvatar and Cambricon devices: test_mixed_vendors runs their pods")
    for name in ("ascend-pod", "iluvatar-pod"):
        if name not in waiting:
            continue
        created = await cluster.create(ns, seed(name))
        assert created["spec"].get("resourceClaims"), f"{name} was not converted"
        message = await cluster.wait_unschedulable(ns, name)
        assert "cannot allocate all claims" in message or "device class" in message, message
        assert await cluster.phase(ns, name) == "Pending"
    # a share given in percent needs the card's size, and no Cambricon card is published here
    if "mlu-pod" not in waiting:
        return
    try:
        await cluster.create(ns, seed("mlu-pod"))
    except KubeError as exc:
        assert exc.status == 400 and "no cambricon.tessera.dev devices are published" in exc.reason, exc
    else:
        raise AssertionError("mlu-pod was admitted although its memory percentage cannot be resolved")
