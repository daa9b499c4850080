"""Objects as the API serves them: a node's ResourceSlices (built by the driver's own code), pods that
use claims, claims reserved for them (tests/driver/helpers builds the allocations)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from dra_driver.backends.mock import discover
from dra_driver.slices import build_slice_specs
from e2e.apiserver import APIServer
from kubeapi import KubeClient
from tessera_exporter.exporter import Exporter
from tests.driver.helpers import claim, request, result
from vendors import node_vendor

Obj = dict[str, Any]
DRIVER = "nvidia.tessera.dev"
GIB = 1024**3
TAINT = {"key": "nvidia.tessera.dev/unhealthy", "value": "xid-79", "effect": "NoSchedule"}

__all__ = ["DRIVER", "claim", "pod", "request", "reserved", "result", "slices"]


def slices(
    node: str, devices: str = "2xH200", *, vendor: str = "nvidia", generation: int = 1, split: int = 10
) -> list[Obj]:
    """The ResourceSlices the driver publishes for ``devices`` on ``node`` (simulated cards)."""
    names = node_vendor(vendor).names
    found = discover(devices, names, node_vendor(vendor).mock_models, node)
    out = []
    for i, spec in enumerate(build_slice_specs(found, names, node, split, shareable=True)):
        spec["pool"]["generation"] = generation
        out.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-{names.driver}-{generation}-{i}"},
                "spec": spec,
            }
        )
    return out


def device_uuid(slice_objs: Sequence[Obj], device: str) -> str:
    for s in slice_objs:
        for d in s["spec"]["devices"]:
            if d["name"] == device:
                return str(d["attributes"]["uuid"]["string"])
    raise KeyError(device)


def pod(
    name: str,
    containers: Mapping[str, Sequence[tuple[str, str]]],
    *,
    namespace: str = "default",
    claims: Mapping[str, str] | None = None,
    templates: Mapping[str, str] | None = None,
    created: Mapping[str, str] | None = None,
    node: str = "",
    uid: str | None = None,
    unschedulable: str | None = None,
    phase: str = "Pending",
) -> Obj:
    """A pod whose containers name claims: ``containers`` maps a container to its (entry, request)
    pairs; ``claims`` maps an entry to a claim name, ``templates`` to a template (``created`` gives the
    claim made from it); ``unschedulable`` is the scheduler's message."""
    entries = [{"name": e, "resourceClaimName": c} for e, c in (claims or {}).items()]
    entries += [{"name": e, "resourceClaimTemplateName": t} for e, t in (templates or {}).items()]
    spec: Obj = {
        "containers": [
            {
                "name": c,
                "image": "busybox:1.36",
                "env": [{"name": "SECRET", "value": "hunter2"}],
                "resources": {"claims": [{"name": e, **({"request": r} if r else {})} for e, r in refs]},
            }
            for c, refs in containers.items()
        ],
        "resourceClaims": entries,
    }
    if node:
        spec["nodeName"] = node
    status: Obj = {"phase": phase}
    if created:
        status["resourceClaimStatuses"] = [{"name": e, "resourceClaimName": c} for e, c in created.items()]
    if unschedulable is not None:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": spec,
        "status": status,
    }


def reserved(claim_obj: Obj, *pods: Obj) -> Obj:
    """``claim_obj`` with ``status.reservedFor`` naming ``pods``."""
    claim_obj["status"]["reservedFor"] = [
        {"resource": "pods", "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]} for p in pods
    ]
    return claim_obj


NODE = "node1"
NS = "default"
CLAIMS = f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims"
PODS = f"/api/v1/namespaces/{NS}/pods"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"


async def put(kube: KubeClient, collection: str, obj: Obj) -> Obj:
    """Create ``obj``, then write its status as its controller would (create ignores status)."""
    status = obj.pop("status", None)
    created = await kube.create(collection, obj)
    if status is not None:
        created = await kube.replace(
            f"{collection}/{created['metadata']['name']}/status", {**created, "status": status}
        )
    return created


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[APIServer, KubeClient]]:
    async with APIServer.running() as api:
        kube = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kubeconfig"), timeout=5)
        try:
            yield api, kube
        finally:
            await kube.close()


@contextlib.asynccontextmanager
async def exporter_at(kube: KubeClient) -> AsyncIterator[tuple[Exporter, str]]:
    exporter = Exporter(kube)
    runner = web.AppRunner(exporter.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await exporter.start()
    try:
        yield exporter, f"http://127.0.0.1:{port}"
    finally:
        await exporter.stop()
        await runner.cleanup()


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return await resp.text()


async def until(check: Any, timeout: float = 5.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            got = await check()
            if got:
                return got
            await asyncio.sleep(0.02)


async def shared_card(kube: KubeClient) -> tuple[list[Obj], Obj, Obj]:
    """Two pods on node1's gpu-0: a (40 GiB, 30 % of the cores), b (20 GiB, no core limit asked)."""
    sl = slices(NODE, "2xH200")
    for s in sl:
        await kube.create(SLICES, s)
    pods = {}
    for name, memory, cores in (("a", "40Gi", "30"), ("b", "20Gi", "1")):
        p = await put(kube, PODS, pod(name, {"main": [("gpu", "")]}, claims={"gpu": f"claim-{name}"}, node=NODE,
                                      phase="Running"))  # fmt: skip
        c = claim(f"claim-{name}", [result("gpu-0", pool=NODE, memory=memory, cores=cores)], [request()])
        await put(kube, CLAIMS, reserved(c, p))
        pods[name] = p
    return sl, pods["a"], pods["b"]
