"""Claim controller and scheduler against the API server stand-in, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.apiserver import APIServer
from e2e.controllers import ClaimController, Scheduler, claim_generate_name
from e2e.controllers.informer import cancel_all
from kubeapi import RESOURCE_V1, KubeClient, cluster_path, namespaced_path

from .test_allocator import CLASS, DRIVER, gpu, resource_slice

Obj = dict[str, Any]
PODS = namespaced_path("v1", "pods", "default")
CLAIMS = namespaced_path("resource.k8s.io/v1", "resourceclaims", "default")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except (AssertionError, KeyError, IndexError):
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[APIServer, KubeClient]]:
    async with APIServer.running() as api:
        kube = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kc"))
        tasks = [
            asyncio.create_task(ClaimController(kube).run()),
            asyncio.create_task(Scheduler(kube, retry_seconds=0.5).run()),
        ]
        await kube.create(
            cluster_path("v1", "nodes"), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}
        )
        await kube.create(f"{RESOURCE_V1}/deviceclasses", CLASS)
        await kube.create(f"{RESOURCE_V1}/resourceslices", resource_slice("node-1", [gpu(0, mem_gib=24)]))
        try:
            yield api, kube
        finally:
            await cancel_all(tasks)
            await kube.close()


def template(name: str, memory: str) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {"deviceClassName": DRIVER, "capacity": {"requests": {"memory": memory}}},
                        }
                    ]
                }
            },
        },
    }


def pod(name: str, template_name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template_name}],
            "containers": [
                {"name": "c", "image": "busybox:1.36", "resources": {"claims": [{"name": "gpu", "request": "gpu"}]}}
            ],
        },
    }


def test_generate_name_is_cut_proportionally() -> None:
    assert claim_generate_name("pod", "gpu") == "pod-gpu-"
    long = claim_generate_name("p" * 60, "c" * 20)
    assert len(long) <= 59 and long.startswith("p") and "-ccc" in long


async def test_template_claim_allocation_binding_and_cleanup(cluster: tuple[APIServer, KubeClient]) -> None:
    api, kube = cluster
    await kube.create(
        namespaced_path("resource.k8s.io/v1", "resourceclaimtemplates", "default"), template("small", "10Gi")
    )
    created = await kube.create(PODS, pod("one", "small"))

    async def bound() -> Obj | None:
        got = await kube.get(f"{PODS}/one")
        return got if got["spec"].get("nodeName") == "node-1" else None

    got = await eventually(bound)
    status = got["status"]["resourceClaimStatuses"]
    assert status[0]["name"] == "gpu" and status[0]["resourceClaimName"].startswith("one-gpu-")
    claim = await kube.get(f"{CLAIMS}/{status[0]['resourceClaimName']}")
    assert claim["metadata"]["annotations"]["resource.kubernetes.io/pod-claim-name"] == "gpu"
    assert claim["metadata"]["labels"] == {"app": "x"}
    assert claim["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert claim["metadata"]["finalizers"] == ["resource.kubernetes.io/delete-protection"]
    result = claim["status"]["allocation"]["devices"]["results"][0]
    assert result["device"] == "gpu-0" and result["consumedCapacity"]["memory"] == "10Gi"
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "one", "uid": created["metadata"]["uid"]}]
    events = await kube.list(namespaced_path("v1", "events", "default"), fieldSelector="involvedObject.name=one")
    assert any(e["reason"] == "Scheduled" for e in events["items"])
    # the pod goes (as the kubelet finishes it): the claim is released, deallocated and deleted
    await kube.request("DELETE", f"{PODS}/one", body={"gracePeriodSeconds": 0})

    async def claim_gone() -> bool:
        return api.store.get("resourceclaims", "default", status[0]["resourceClaimName"]) is None

    await eventually(claim_gone)


async def test_pod_that_does_not_fit_stays_pending_with_the_reason(cluster: tuple[APIServer, KubeClient]) -> None:
    _api, kube = cluster
    await kube.create(
        namespaced_path("resource.k8s.io/v1", "resourceclaimtemplates", "default"), template("big", "20Gi")
    )
    await kube.create(PODS, pod("a", "big"))

    async def bound_a() -> bool:
        return bool((await kube.get(f"{PODS}/a"))["spec"].get("nodeName"))

    await eventually(bound_a)
    await kube.create(PODS, pod("b", "big"))

    async def failed() -> Obj | None:
        events = await kube.list(
            namespaced_path("v1", "events", "default"), fieldSelector="involvedObject.name=b,reason=FailedScheduling"
        )
        return events["items"][0] if events["items"] else None

    event = await eventually(failed)
    assert event["message"].startswith("0/1 nodes are available: 1 cannot allocate all claims.")
    assert "memory: 20Gi asked, 4Gi of 24Gi free" in event["message"]
    got = await kube.get(f"{PODS}/b")
    assert not got["spec"].get("nodeName")
    condition = next(c for c in got["status"]["conditions"] if c["type"] == "PodScheduled")
    assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
    # room frees up when a goes: b is scheduled without anyone touching it
    await kube.request("DELETE", f"{PODS}/a", body={"gracePeriodSeconds": 0})

    async def bound_b() -> bool:
        return bool((await kube.get(f"{PODS}/b"))["spec"].get("nodeName"))

    await eventually(bound_b, timeout=15)


async def test_work_queue_collapses_keys_and_retries() -> None:
    from e2e.controllers.informer import WorkQueue

    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert [await queue.get(), await queue.get()] == [("ns", "a"), ("ns", "b")]
    for delay in (0.2, 0.05, 0.3):  # one timer per key: the earliest
        queue.add_after(("ns", "c"), delay)
    assert len(queue._timers) == 1
    assert await asyncio.wait_for(queue.get(), 0.15) == ("ns", "c")
    await asyncio.sleep(0.35)
    assert not queue._pending  # the later retries did not fire as well
    queue.close()
