"""Showing what happened to a pod, step by step: as submitted, as mutated by the webhook, its
ResourceClaimTemplate, its claim and allocation, the CDI spec the driver wrote, and the output."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import yaml

from kubeapi import KubeClient, KubeError, namespaced_path

from .harness import Harness, wait_for

Obj = dict[str, Any]
BOLD = "\033[1m"
DIM = "\033[2m"
RESET = "\033[0m"


class Narrator:
    def __init__(self, out: TextIO = sys.stdout, *, color: bool | None = None) -> None:
        self.out = out
        self.color = out.isatty() if color is None else color

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def title(self, text: str) -> None:
        self.out.write("\n" + self._c(BOLD, f"== {text} ==") + "\n")
        self.out.flush()

    def step(self, text: str) -> None:
        self.out.write(self._c(BOLD, f"-- {text}") + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def block(self, obj: Any) -> None:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj, sort_keys=False, width=120)
        for line in text.rstrip().splitlines():
            self.out.write(self._c(DIM, "   | ") + line + "\n")
        self.out.flush()


def pod_view(pod: Obj) -> Obj:
    """The parts of a pod that the conversion touches."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    view: Obj = {"metadata": {k: meta[k] for k in ("name", "annotations") if meta.get(k)}}
    containers = []
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            containers.append(
                {
                    "name": c.get("name"),
                    **({"command": c["command"]} if c.get("command") else {}),
                    "resources": c.get("resources") or {},
                }
            )
    view["spec"] = {"containers": containers}
    if spec.get("resourceClaims"):
        view["spec"]["resourceClaims"] = spec["resourceClaims"]
    return view


def cdi_view(spec: Obj) -> Obj:
    devices = []
    for d in spec.get("devices") or []:
        edits = d.get("containerEdits") or {}
        devices.append(
            {
                "name": d.get("name"),
                "env": edits.get("env") or [],
                "mounts": [f"{m.get('hostPath')} -> {m.get('containerPath')}" for m in edits.get("mounts") or []],
            }
        )
    return {"kind": spec.get("kind"), "devices": devices}


class AllocationRecorder:
    """The latest allocated version of every claim of a namespace, from a watch.

    A pod that finishes at once has its claim released (``reservedFor`` and the allocation cleared)
    before a read after its binding could show the allocation; the watch sees every version."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.path = namespaced_path("resource.k8s.io/v1", "resourceclaims", namespace)
        self.allocated: dict[str, Obj] = {}
        self._task: asyncio.Task[None] | None = None

    def _see(self, claim: Obj) -> None:
        if ((claim.get("status") or {}).get("allocation")) is not None:
            self.allocated[str(claim["metadata"]["name"])] = claim

    async def _list(self) -> str:
        listed = await self.kube.list(self.path)
        for item in listed.get("items") or []:
            self._see(item)
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    async def _run(self, version: str) -> None:
        while True:
            try:
                async for event in self.kube.watch(self.path, resource_version=version or None):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":  # expired: list again
                        version = await self._list()
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._see(obj)
            except KubeError:
                await asyncio.sleep(0.2)
                with contextlib.suppress(KubeError):
                    version = await self._list()

    async def __aenter__(self) -> AllocationRecorder:
        self._task = asyncio.create_task(self._run(await self._list()))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def claim(self, name: str, timeout: float) -> Obj:
        async def seen() -> Obj | None:
            return self.allocated.get(name)

        result: Obj = await wait_for(seen, timeout=timeout, what=f"claim {name} to be allocated")
        return result


async def submit_and_show(
    harness: Harness,
    narrator: Narrator,
    pod: Obj,
    *,
    namespace: str = "default",
    wait: str = "done",
    timeout: float = 60.0,
) -> Obj:
    """Create ``pod`` and narrate it; ``wait`` is ``done`` (finished), ``running`` or ``pending``."""
    assert harness.kube is not None
    async with AllocationRecorder(harness.kube, namespace) as claims:
        return await _submit_and_show(harness, narrator, pod, claims, namespace=namespace, wait=wait, timeout=timeout)


async def _submit_and_show(
    harness: Harness,
    narrator: Narrator,
    pod: Obj,
    claims: AllocationRecorder,
    *,
    namespace: str,
    wait: str,
    timeout: float,
) -> Obj:
    kube = harness.kube
    assert kube is not None
    name = pod["metadata"]["name"]
    narrator.step(f"pod {name} as submitted")
    narrator.block(pod_view(pod))
    created = await kube.create(namespaced_path("v1", "pods", namespace), copy.deepcopy(pod))
    narrator.step(f"pod {name} as the webhook mutated it")
    narrator.block(pod_view(created))
    for ref in (created.get("spec") or {}).get("resourceClaims") or []:
        if ref.get("resourceClaimTemplateName"):
            template = await kube.get(
                namespaced_path(
                    "resource.k8s.io/v1", "resourceclaimtemplates", namespace, ref["resourceClaimTemplateName"]
                )
            )
            narrator.step(f"ResourceClaimTemplate {template['metadata']['name']}")
            narrator.block({"spec": template["spec"]})
    path = namespaced_path("v1", "pods", namespace, name)
    if wait == "pending":

        async def pending_reason() -> str | None:
            events = await kube.list(
                namespaced_path("v1", "events", namespace),
                fieldSelector=f"involvedObject.name={name},reason=FailedScheduling",
            )
            items = events.get("items") or []
            return str(items[-1]["message"]) if items else None

        message = await wait_for(pending_reason, timeout=timeout, what=f"pod {name} to be reported unschedulable")
        narrator.step(f"pod {name} stays Pending; the scheduler says")
        narrator.block(message)
        return await kube.get(path)

    async def placed() -> Obj | None:
        got = await kube.get(path)
        return got if (got.get("spec") or {}).get("nodeName") else None

    bound = await wait_for(placed, timeout=timeout, what=f"pod {name} to be scheduled")
    node = bound["spec"]["nodeName"]
    for status in (bound.get("status") or {}).get("resourceClaimStatuses") or []:
        claim = await claims.claim(status["resourceClaimName"], timeout)
        narrator.step(f"claim {claim['metadata']['name']} allocated on {node}")
        narrator.block(
            {
                "allocation": {"devices": {"results": claim["status"]["allocation"]["devices"]["results"]}},
                "reservedFor": claim["status"].get("reservedFor"),
            }
        )
    kubelet = harness.nodes[node].kubelet
    assert kubelet is not None

    async def cdi_seen() -> list[Obj] | None:
        worker = next((w for w in kubelet.workers.values() if (w.ns, w.name) == (namespace, name)), None)
        if worker is None:
            return None
        containers = [
            c["name"]
            for c in (bound.get("spec") or {}).get("containers") or []
            if (c.get("resources") or {}).get("claims")
        ]
        if not all(c in worker.cdi_used for c in containers):
            return None
        return [s for c in containers for s in worker.cdi_used[c]]

    if any((c.get("resources") or {}).get("claims") for c in (bound.get("spec") or {}).get("containers") or []):
        seen = await wait_for(cdi_seen, timeout=timeout, what=f"the containers of {name} to start")
        shown: set[str] = set()
        for spec in seen:
            if spec["_path"] in shown:
                continue
            shown.add(spec["_path"])
            narrator.step(f"CDI spec the driver wrote, as the runtime applied it ({spec['_path']})")
            narrator.block(cdi_view(spec))
    if wait == "running":

        async def running() -> bool:
            return await _phase(kube, path) == "Running"

        await wait_for(running, timeout=timeout, what=f"pod {name} to run")
        return await kube.get(path)

    async def finished() -> str | None:
        phase = await _phase(kube, path)
        return phase if phase in ("Succeeded", "Failed") else None

    phase = await wait_for(finished, timeout=timeout, what=f"pod {name} to finish")
    for c in (created.get("spec") or {}).get("containers") or []:
        text = await pod_log(kube, namespace, name, c["name"])
        narrator.step(f"output of {name}/{c['name']} ({phase})")
        narrator.block(text or "(no output)")
    return await kube.get(path)


async def _phase(kube: KubeClient, path: str) -> str:
    return str(((await kube.get(path)).get("status") or {}).get("phase", ""))


async def pod_log(kube: KubeClient, namespace: str, name: str, container: str) -> str:
    return await kube.text(namespaced_path("v1", "pods", namespace, name) + "/log", container=container)


async def delete_and_wait(
    kube: KubeClient,
    namespace: str,
    names: list[str],
    timeout: float = 30.0,
    on_gone: Callable[[str], None] | None = None,
) -> None:
    for name in names:
        try:
            await kube.delete(namespaced_path("v1", "pods", namespace, name))
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def gone() -> bool:
        left = [n for n in names if await _exists(kube, namespaced_path("v1", "pods", namespace, n))]
        return not left

    await wait_for(gone, timeout=timeout, what=f"pods {names} to go")
    if on_gone is not None:
        for name in names:
            on_gone(name)


async def _exists(kube: KubeClient, path: str) -> bool:
    try:
        await kube.get(path)
    except KubeError as exc:
        if exc.not_found:
            return False
        raise
    return True
