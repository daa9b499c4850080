"""Helpers of the e2e tests: only the Kubernetes API (plus the cluster control for node-level facts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from e2e.cluster import Harness, NodeSpec
from kubeapi import KubeClient, KubeError

from .control import ClusterControl, HarnessControl, KindControl

Obj = dict[str, Any]
DRIVER = "nvidia.tessera.dev"
IMAGE = "busybox:1.36"


def pod(
    name: str,
    command: str,
    *,
    limits: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    node: str | None = None,
    init: list[tuple[str, str, dict[str, Any]]] | None = None,
    restart: str = "Never",
) -> Obj:
    """A pod whose container runs ``sh -c command`` with the given vendor resources."""
    spec: Obj = {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "main",
                "image": IMAGE,
                "command": ["sh", "-c", command],
                "resources": {"limits": limits} if limits else {},
            }
        ],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if init:
        spec["initContainers"] = [
            {"name": n, "image": IMAGE, "command": ["sh", "-c", c], "resources": {"limits": lim} if lim else {}}
            for n, c, lim in init
        ]
    meta: Obj = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


SHOW = "env | sort; echo preload: $(cat /etc/ld.so.preload 2>/dev/null)"


@dataclass
class Device:
    node: str
    pool: str
    name: str
    share_id: str | None
    consumed: dict[str, str]
    attributes: dict[str, Any]
    driver: str = DRIVER
    capacity: dict[str, Any] | None = None

    @property
    def type(self) -> str:
        return str(self.attributes.get("type", {}).get("string", ""))

    @property
    def uuid(self) -> str:
        return str(self.attributes.get("uuid", {}).get("string", ""))


class Cluster:
    def __init__(self, kube: KubeClient, control: ClusterControl, *, timeout: float) -> None:
        self.kube = kube
        self.control = control
        self.timeout = timeout

    async def wait(self, check: Callable[[], Awaitable[Any]], *, what: str, timeout: float | None = None) -> Any:
        deadline = asyncio.get_running_loop().time() + (timeout or self.timeout)
        while True:
            try:
                result = await check()
                if result:
                    return result
            except KubeError as exc:
                if exc.status not in (0, 404, 500, 503):
                    raise
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout or self.timeout:g}s waiting for {what}")
            await asyncio.sleep(0.1)

    async def gone(self, path: str) -> bool:
        try:
            await self.kube.get(path)
        except KubeError as exc:
            if exc.not_found:
                return True
            raise
        return False

    # ------------------------------------------------------------------ pods
    async def create(self, ns: str, obj: Obj) -> Obj:
        return await self.kube.create(f"/api/v1/namespaces/{ns}/pods", obj)

    async def get(self, ns: str, name: str) -> Obj:
        return await self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")

    async def phase(self, ns: str, name: str) -> str:
        return str(((await self.get(ns, name)).get("status") or {}).get("phase", ""))

    async def wait_phase(self, ns: str, name: str, *phases: str) -> Obj:
        last: Obj = {}

        async def check() -> Obj | None:
            nonlocal last
            last = await self.get(ns, name)
            return last if (last.get("status") or {}).get("phase") in phases else None

        try:
            return await self.wait(check, what=f"pod {ns}/{name} to be {'/'.join(phases)}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {pod_summary(last)}") from None

    async def wait_running(self, ns: str, name: str) -> Obj:
        return await self.wait_phase(ns, name, "Running")

    async def wait_done(self, ns: str, name: str) -> Obj:
        return await self.wait_phase(ns, name, "Succeeded", "Failed")

    async def logs(self, ns: str, name: str, container: str = "main") -> str:
        return await self.kube.text(f"/api/v1/namespaces/{ns}/pods/{name}/log", container=container)

    async def logs_with(self, ns: str, name: str, text: str, container: str = "main") -> str:
        async def check() -> str | None:
            out = await self.logs(ns, name, container)
            return out if text in out else None

        return await self.wait(check, what=f"{text!r} in the log of {ns}/{name}/{container}")

    async def delete_and_wait(self, ns: str, name: str) -> None:
        try:
            await self.kube.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
        except KubeError as exc:
            if not exc.not_found:
                raise
        await self.wait(lambda: self.gone(f"/api/v1/namespaces/{ns}/pods/{name}"), what=f"pod {ns}/{name} to go")

    async def events(self, ns: str, name: str, reason: str) -> list[Obj]:
        got = await self.kube.list(
            f"/api/v1/namespaces/{ns}/events", fieldSelector=f"involvedObject.name={name},reason={reason}"
        )
        return list(got.get("items") or [])

    async def webhook_converts(self, ns: str, pod: Obj) -> bool:
        """Whether the webhook can convert ``pod`` now (a dry-run create): a percentage of a device's memory
        needs the devices in the webhook's inventory, which it refreshes from the ResourceSlices."""
        try:
            await self.kube.create(f"/api/v1/namespaces/{ns}/pods", pod, dry_run=True)
        except KubeError as exc:
            if exc.status == 400 and "devices are published" in exc.reason:
                return False
            raise
        return True

    async def wait_unschedulable(self, ns: str, name: str) -> str:
        async def check() -> str | None:
            items = await self.events(ns, name, "FailedScheduling")
            return str(items[-1].get("message")) if items else None

        return await self.wait(check, what=f"pod {ns}/{name} to be reported unschedulable")

    # ------------------------------------------------------------------ claims and devices
    async def claims(self, ns: str, name: str) -> list[Obj]:
        current = await self.get(ns, name)
        out = []
        for status in (current.get("status") or {}).get("resourceClaimStatuses") or []:
            out.append(
                await self.kube.get(
                    f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{status['resourceClaimName']}"
                )
            )
        return out

    async def devices(self, ns: str, name: str) -> list[Device]:
        """The devices allocated to the pod's claims (any driver), with what their slices publish."""
        return [d for claim in await self.claims(ns, name) for d in await self.allocated(claim)]

    async def allocated(self, claim: Obj) -> list[Device]:
        """The devices of an allocated claim, with the node, attributes and capacity their slices publish."""
        slices = (await self.kube.list("/apis/resource.k8s.io/v1/resourceslices")).get("items") or []
        published = {
            (s["spec"]["driver"], s["spec"]["pool"]["name"], d["name"]): (s["spec"].get("nodeName", ""), d)
            for s in slices
            for d in s["spec"].get("devices") or []
        }
        out = []
        for r in claim["status"]["allocation"]["devices"]["results"]:
            node, device = published[(r["driver"], r["pool"], r["device"])]
            out.append(
                Device(
                    node,
                    r["pool"],
                    r["device"],
                    r.get("shareID"),
                    r.get("consumedCapacity") or {},
                    device.get("attributes") or {},
                    r["driver"],
                    device.get("capacity") or {},
                )
            )
        return out

    async def inventory(self) -> list[tuple[str, Obj]]:
        """(node, device) for every published device."""
        slices = (
            await self.kube.list("/apis/resource.k8s.io/v1/resourceslices", fieldSelector=f"spec.driver={DRIVER}")
        ).get("items") or []
        return [(s["spec"].get("nodeName", ""), d) for s in slices for d in s["spec"].get("devices") or []]


def env_of(log: str) -> dict[str, str]:
    out = {}
    for line in log.splitlines():
        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def preloads_libvgpu(log: str) -> bool:
    """True when the container has libvgpu.so preloaded (LD_PRELOAD on the harness, the
    /etc/ld.so.preload mount in a real container)."""
    env = env_of(log)
    preload_line = next((line for line in log.splitlines() if line.startswith("preload:")), "")
    return "libvgpu.so" in env.get("LD_PRELOAD", "") or "libvgpu.so" in preload_line


@contextlib.asynccontextmanager
async def open_cluster(harness_nodes: list[NodeSpec]) -> AsyncIterator[Cluster]:
    """The cluster the tests run against: ``TESSERA_E2E_KUBECONFIG``'s (kind or real), else a local
    harness with ``harness_nodes``."""
    kubeconfig = os.environ.get("TESSERA_E2E_KUBECONFIG")
    if kubeconfig:
        kube = await KubeClient.connect(kubeconfig, timeout=30)
        try:
            yield Cluster(
                kube, KindControl(kubeconfig, kube), timeout=float(os.environ.get("TESSERA_E2E_TIMEOUT", "240"))
            )
        finally:
            await kube.close()
        return
    async with Harness(harness_nodes) as harness:
        kube = await KubeClient.connect(harness.kubeconfig, timeout=30)
        try:
            yield Cluster(kube, HarnessControl(harness), timeout=float(os.environ.get("TESSERA_E2E_TIMEOUT", "60")))
        finally:
            await kube.close()


def pod_summary(pod: Obj) -> str:
    """What a test that timed out waiting on a pod shows: its phase, node, conditions and container
    states, so that a failure in CI says why without a rerun."""
    if not pod:
        return "never read"
    status = pod.get("status") or {}
    conditions = [
        f"{c.get('type')}={c.get('status')}"
        + (f" ({c.get('reason')}: {c.get('message', '')})" if c.get("reason") else "")
        for c in status.get("conditions") or []
    ]
    containers = [
        f"{c.get('name')}: {next(iter((c.get('state') or {}).items()), ('?', {}))}"
        for c in status.get("containerStatuses") or []
    ]
    return (
        f"phase={status.get('phase', '')!r} node={(pod.get('spec') or {}).get('nodeName', '')!r} "
        f"conditions={conditions} containers={containers}"
    )
