"""``up -f FILE``: apply the user's files to the local cluster and narrate what becomes of each object.

Nothing a file holds stops the cluster: a file that cannot be read or parsed, an object the
harness does not serve, one the API server refuses or the webhook denies is reported with the
server's message and the next one is applied. Every pod is then followed on its own, one line per
step, each line naming the pod: created (and what the webhook made of it: its claim template),
claim allocated where, prepared by the driver (the CDI edits), running, finished with each
container's exit code and the end of its output, or pending with the scheduler's reason (and left
pending). :func:`apply_files` returns once every pod has settled (running, finished, pending with a
reason, or still starting after ``settle_timeout``); the followers go on narrating while the cluster
serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.apiserver.kinds import kind_for_object
from e2e.controllers.scheduler import SCHEDULER_NAME
from kubeapi import KubeClient, KubeError, namespaced_path

from .harness import Harness
from .narrate import AllocationRecorder, Narrator, cdi_view, pod_log

Obj = dict[str, Any]
POLL_SECONDS = 0.2
OUTPUT_LINES = 10
"""Lines of a finished container's output shown."""


@dataclass(frozen=True)
class Document:
    source: str
    """``file:index`` (for messages)."""
    obj: Obj


def load_documents(paths: Sequence[str], narrator: Narrator) -> list[Document]:
    """Every object of ``paths`` (multi-document YAML, ``kind: List`` expanded); what cannot be read is
    reported and left out."""
    out: list[Document] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
            docs = list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError) as exc:
            narrator.say(f"{path}: cannot read it ({exc.strerror if isinstance(exc, OSError) else exc}); skipped")
            continue
        except yaml.YAMLError as exc:
            narrator.say(f"{path}: not valid YAML ({' '.join(str(exc).split())}); skipped")
            continue
        for index, doc in enumerate(docs):
            source = f"{path}#{index + 1}"
            if doc is None:
                continue
            for where, obj in _expand(source, doc):
                if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
                    narrator.say(f"{where}: not a Kubernetes object (it needs apiVersion and kind); skipped")
                    continue
                out.append(Document(where, obj))
    return out


def _expand(source: str, doc: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            yield f"{source} items[{i}]", item
    else:
        yield source, doc


def _name(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or (str(meta.get("generateName") or "") + "*") or "?")


@dataclass
class Applied:
    """The pods being followed after :func:`apply_files`; :meth:`close` stops following them."""

    tasks: list[asyncio.Task[None]]
    recorders: list[AllocationRecorder]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for recorder in self.recorders:
            await recorder.__aexit__(None, None, None)


async def apply_files(
    harness: Harness, narrator: Narrator, paths: Sequence[str], *, settle_timeout: float = 60.0
) -> Applied:
    """Apply every object of ``paths``; follow each pod until it settles (the followers go on)."""
    followers: list[PodFollower] = []
    recorders: dict[str, AllocationRecorder] = {}
    applied = Applied([], [])
    kube = harness.kube
    assert kube is not None
    try:
        for doc in load_documents(paths, narrator):
            kind = kind_for_object(str(doc.obj.get("apiVersion")), str(doc.obj.get("kind")))
            what = f"{doc.obj.get('kind')} {_name(doc.obj)}"
            if kind is None:
                narrator.say(
                    f"{what} ({doc.source}): {doc.obj.get('apiVersion')}/{doc.obj.get('kind')} is not served by "
                    "the local cluster; skipped (`python -m webhook convert -f` shows what a workload's pods become)"
                )
                continue
            namespace = str((doc.obj.get("metadata") or {}).get("namespace") or "default") if kind.namespaced else ""
            if kind.kind != "Pod":
                try:
                    await harness.apply(copy.deepcopy(doc.obj))
                except KubeError as exc:
                    narrator.say(f"{what}: refused by the API server: {exc.reason}")
                else:
                    narrator.say(f"{what}: created")
                continue
            if namespace not in recorders:
                recorders[namespace] = AllocationRecorder(kube, namespace)
                applied.recorders.append(recorders[namespace])
                await recorders[namespace].__aenter__()
            follower = await submit_pod(harness, narrator, doc.obj, namespace, recorders[namespace])
            if follower is not None:
                followers.append(follower)
                applied.tasks.append(asyncio.create_task(follower.follow()))
        if followers:
            waits = [asyncio.create_task(f.settled.wait()) for f in followers]
            try:
                await asyncio.wait(waits, timeout=settle_timeout)
            finally:
                for wait in waits:
                    wait.cancel()
            for f in followers:
                if not f.settled.is_set():
                    f.say(f"still {f.phase or 'Pending'} after {settle_timeout:g}s{f.last_reason()}; still followed")
    except BaseException:
        await applied.close()
        raise
    return applied


async def submit_pod(
    harness: Harness, narrator: Narrator, pod: Obj, namespace: str, claims: AllocationRecorder
) -> PodFollower | None:
    """Create one pod and say what the webhook made of it; a follower, or None when it was refused."""
    kube = harness.kube
    assert kube is not None
    name = _name(pod)
    try:
        created = await kube.create(namespaced_path("v1", "pods", namespace), copy.deepcopy(pod))
    except KubeError as exc:
        who = "denied by the webhook" if "admission webhook" in exc.reason else "refused by the API server"
        narrator.say(f"[pod {namespace}/{name}] {who}: {exc.reason}")
        return None
    name = str(created["metadata"]["name"])
    follower = PodFollower(harness, narrator, namespace, name, claims)
    refs = [r for r in (created.get("spec") or {}).get("resourceClaims") or [] if r.get("resourceClaimTemplateName")]
    if not refs:
        follower.say("created (no accelerator asked: the webhook left it as it was)")
    for ref in refs:
        template_name = ref["resourceClaimTemplateName"]
        devices: Obj = {}
        with contextlib.suppress(KubeError):
            path = namespaced_path("resource.k8s.io/v1", "resourceclaimtemplates", namespace, template_name)
            devices = (((await kube.get(path)).get("spec") or {}).get("spec") or {}).get("devices") or {}
        follower.say(f"created; the webhook converted it: claim {ref['name']!r} from template {template_name}:")
        narrator.block({"requests": devices.get("requests")})
    return follower


@dataclass
class PodFollower:
    """Narrates one pod's steps as they happen, by polling the API server and the node's kubelet."""

    harness: Harness
    narrator: Narrator
    namespace: str
    name: str
    claims: AllocationRecorder
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    phase: str = ""
    _said: set[str] = field(default_factory=set)
    _pending_reason: str = ""

    def say(self, text: str) -> None:
        self.narrator.say(f"[pod {self.namespace}/{self.name}] {text}")

    def last_reason(self) -> str:
        return f" ({self._pending_reason})" if self._pending_reason else ""

    def _once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.say(text)

    async def follow(self) -> None:
        kube = self.harness.kube
        assert kube is not None
        path = namespaced_path("v1", "pods", self.namespace, self.name)
        while True:
            try:
                pod = await kube.get(path)
            except KubeError as exc:
                if exc.not_found:
                    self._once("gone", "deleted")
                    self.settled.set()
                    return
                await asyncio.sleep(POLL_SECONDS)
                continue
            if await self._step(kube, pod):
                self.settled.set()
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _step(self, kube: KubeClient, pod: Obj) -> bool:
        """Narrate what is new; True once the pod has finished."""
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        self.phase = str(status.get("phase") or "")
        node = spec.get("nodeName")
        if not node:
            scheduler = str(spec.get("schedulerName") or SCHEDULER_NAME)
            if scheduler != SCHEDULER_NAME and not self._pending_reason:
                self._pending_reason = f"it names schedulerName {scheduler!r}, which does not run here"
                self.say(f"pending: {self._pending_reason} (the local cluster runs {SCHEDULER_NAME} only)")
                self.settled.set()
            if spec.get("schedulingGates") and not self._pending_reason:
                gates = ", ".join(str(g.get("name")) for g in spec["schedulingGates"])
                self._pending_reason = f"scheduling gates {gates}"
                self.say(f"pending: held by {self._pending_reason}")
                self.settled.set()
            if not self._pending_reason:
                reason = await self._unschedulable(kube)
                if reason:
                    self._pending_reason = reason
                    self.say(f"pending; the scheduler says: {reason}")
                    self.settled.set()
            return False
        if self._pending_reason:
            self._pending_reason = ""
            self._once(f"scheduled:{node}", f"scheduled on {node} after all")
        for entry in status.get("resourceClaimStatuses") or []:
            claim = self.claims.allocated.get(str(entry.get("resourceClaimName")))
            if claim is not None:
                self._once(f"claim:{entry['resourceClaimName']}", self._allocation(claim, str(node)))
        self._prepared(str(node))
        if self.phase == "Running":
            self._once("running", f"running on {node}")
            self.settled.set()
        if self.phase in ("Succeeded", "Failed"):
            await self._finished(kube, pod)
            return True
        return False

    async def _unschedulable(self, kube: KubeClient) -> str:
        """The message of the scheduler's latest ``FailedScheduling`` event for the pod, or ''."""
        events = await kube.list(
            namespaced_path("v1", "events", self.namespace),
            fieldSelector=f"involvedObject.name={self.name},reason=FailedScheduling",
        )
        items = events.get("items") or []
        return str(items[-1].get("message") or "") if items else ""

    def _allocation(self, claim: Obj, node: str) -> str:
        results = (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or []
        parts = []
        for r in results:
            consumed = ", ".join(f"{k} {v}" for k, v in sorted((r.get("consumedCapacity") or {}).items()))
            parts.append(f"{r.get('device')} for request {r.get('request')}" + (f" ({consumed})" if consumed else ""))
        return f"claim {claim['metadata']['name']} allocated on {node}: " + ("; ".join(parts) or "no devices")

    def _prepared(self, node: str) -> None:
        harness_node = self.harness.nodes.get(node)
        kubelet = harness_node.kubelet if harness_node is not None else None
        if kubelet is None:
            return
        worker = next((w for w in kubelet.workers.values() if (w.ns, w.name) == (self.namespace, self.name)), None)
        if worker is None:
            return
        for container, specs in list(worker.cdi_used.items()):
            for spec in specs:
                if f"cdi:{spec.get('_path')}" in self._said:
                    continue
                self._once(
                    f"cdi:{spec.get('_path')}",
                    f"prepared by the driver on {node}; container {container} gets (CDI {spec.get('_path')}):",
                )
                self.narrator.block(cdi_view(spec))

    async def _finished(self, kube: KubeClient, pod: Obj) -> None:
        status = pod.get("status") or {}
        lines = []
        for group in ("initContainerStatuses", "containerStatuses"):
            for c in status.get(group) or []:
                terminated = ((c.get("state") or {}).get("terminated")) or {}
                if terminated:
                    lines.append(f"{c['name']} exited {terminated.get('exitCode')} ({terminated.get('reason')})")
        self._once("finished", f"finished {self.phase}: " + ("; ".join(lines) or "no container ran"))
        for c in (pod.get("spec") or {}).get("containers") or []:
            with contextlib.suppress(KubeError):
                text = (await pod_log(kube, self.namespace, self.name, c["name"])).rstrip()
                if text:
                    lines = text.splitlines()
                    cut = f" (last {OUTPUT_LINES} lines)" if len(lines) > OUTPUT_LINES else ""
                    self.say(f"output of {c['name']}{cut}:")
                    self.narrator.block("\n".join(lines[-OUTPUT_LINES:]))
