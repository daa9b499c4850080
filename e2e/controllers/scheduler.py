"""A kube-scheduler stand-in: pending pods get devices allocated and a node, or an explanation.

One pod at a time (as kube-scheduler's single scheduling cycle): the pod's claims must exist
(template claims are named in ``status.resourceClaimStatuses``) and not be deleting; the pure
:func:`e2e.allocator.schedule` picks the node and the allocations from a fresh view of claims
(fresh so that two pods never book the same capacity), then, as the DynamicResources plugin's
PreBind does, each new allocation is written: the ``resource.kubernetes.io/delete-protection``
finalizer, then ``status.allocation`` with ``reservedFor`` naming the pod; already allocated claims
get the pod added to ``reservedFor``; finally the pod is bound through ``pods/binding``. A pod that
fits nowhere keeps ``PodScheduled=False`` (reason ``Unschedulable``) and gets a ``FailedScheduling``
event with the reason per node; it is retried when nodes, slices, claims or classes change. Nodes are
scored as kube-scheduler's default profile does for these pods (DynamicResources and
PodTopologySpread, see :mod:`e2e.allocator.schedule`), counting the pods bound to each node and those
this scheduler bound that its informer has not shown bound yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from e2e.allocator import schedule
from kubeapi import RESOURCE_V1, KubeClient, KubeError, namespaced_path

from .claims import DELETE_PROTECTION
from .informer import Informer, Key, WorkQueue, cancel_all, key_of, run_worker

log = logging.getLogger("e2e.controllers.scheduler")

Obj = dict[str, Any]
SCHEDULER_NAME = "default-scheduler"


def now_micro() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def scheduling_event(pod: Obj, reason: str, note: str, kind: str) -> Obj:
    meta = pod["metadata"]
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "eventTime": now_micro(),
        "reportingController": SCHEDULER_NAME,
        "reportingInstance": f"{SCHEDULER_NAME}-tessera-e2e",
        "action": "Scheduling" if reason == "FailedScheduling" else "Binding",
        "reason": reason,
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "note": note[:1024],
        "type": kind,
    }


class Scheduler:
    def __init__(self, kube: KubeClient, *, retry_seconds: float = 5.0) -> None:
        self.kube = kube
        self.retry_seconds = retry_seconds
        self.queue = WorkQueue()
        # every pod: the pending ones are scheduled, the bound ones counted for PodTopologySpread
        self.pods = Informer(kube, "/api/v1/pods", name="scheduler/pods", handler=self._on_pod)
        self._assumed: dict[Key, tuple[str, Obj]] = {}
        """Pods bound in this process that the informer has not shown bound yet (kube-scheduler's
        assumed pods): counted on their node so that a burst does not see them all as pending."""
        self.nodes = Informer(kube, "/api/v1/nodes", name="scheduler/nodes", handler=self._on_cluster)
        self.slices = Informer(kube, f"{RESOURCE_V1}/resourceslices", name="scheduler/slices", handler=self._on_cluster)
        self.classes = Informer(
            kube, f"{RESOURCE_V1}/deviceclasses", name="scheduler/classes", handler=self._on_cluster
        )
        self.claims = Informer(kube, f"{RESOURCE_V1}/resourceclaims", name="scheduler/claims", handler=self._on_cluster)
        self._last_failure: dict[Key, str] = {}

    def _on_pod(self, kind: str, pod: Obj, old: Obj | None) -> None:
        key = key_of(pod)
        if kind == "DELETED":
            self._last_failure.pop(key, None)
            self._assumed.pop(key, None)
        elif (pod.get("spec") or {}).get("nodeName"):
            self._assumed.pop(key, None)
        else:
            self.queue.add(key)

    def _pods_on(self) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for pod in self.pods.items():
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                out.setdefault(str(node), []).append(pod)
        for node, pod in self._assumed.values():
            out.setdefault(node, []).append(pod)
        return out

    def _on_cluster(self, kind: str, obj: Obj, old: Obj | None) -> None:
        for key in self._last_failure:
            self.queue.add(key)

    async def run(self) -> None:
        informers = [self.pods, self.nodes, self.slices, self.classes, self.claims]
        tasks = [asyncio.create_task(i.run()) for i in informers]
        for informer in informers:
            await informer.synced.wait()
        tasks.append(asyncio.create_task(run_worker(self.queue, self.sync_pod, "scheduler")))
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_all(tasks)

    # ------------------------------------------------------------------ one cycle
    async def sync_pod(self, key: Key) -> float | None:
        pod = self.pods.get(*key)
        log.debug("pod %s/%s: scheduling cycle (%s)", key[0], key[1], "known" if pod else "gone")
        if pod is None:
            return None
        spec = pod.get("spec") or {}
        if spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return None
        if spec.get("schedulerName", SCHEDULER_NAME) != SCHEDULER_NAME or spec.get("schedulingGates"):
            return None
        ns, name = key
        claims: list[Obj] = []
        statuses = {
            s.get("name"): s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        for entry in spec.get("resourceClaims") or []:
            claim_name = entry.get("resourceClaimName") or statuses.get(entry.get("name"))
            if not claim_name:
                return await self._unschedulable(
                    pod,
                    f'waiting for dynamic resource controller to create the resourceclaim "{entry.get("name")}"',
                    event=False,
                )
            try:
                claim = await self.kube.get(namespaced_path("resource.k8s.io/v1", "resourceclaims", ns, claim_name))
            except KubeError as exc:
                if exc.not_found:
                    return await self._unschedulable(pod, f'resourceclaim "{claim_name}" not found', event=True)
                raise
            if claim["metadata"].get("deletionTimestamp"):
                return await self._unschedulable(pod, f'resourceclaim "{claim_name}" is being deleted', event=True)
            claims.append(claim)
        every_claim = (await self.kube.list(f"{RESOURCE_V1}/resourceclaims")).get("items") or []
        mine = {(c["metadata"]["namespace"], c["metadata"]["name"]) for c in claims}
        others = [c for c in every_claim if (c["metadata"].get("namespace"), c["metadata"]["name"]) not in mine]
        classes = {c["metadata"]["name"]: c for c in self.classes.items()}
        decision = schedule(
            pod, self.nodes.items(), claims, classes, self.slices.items(), others, pods_on=self._pods_on()
        )
        if not decision.scheduled:
            return await self._unschedulable(pod, decision.message, event=True)
        assert decision.node is not None
        reserved = {"resource": "pods", "name": name, "uid": pod["metadata"]["uid"]}
        for claim in claims:
            path = namespaced_path("resource.k8s.io/v1", "resourceclaims", ns, claim["metadata"]["name"])
            allocation = decision.allocations.get(claim["metadata"]["name"])
            if allocation is not None:
                finalizers = list(claim["metadata"].get("finalizers") or [])
                if DELETE_PROTECTION not in finalizers:
                    claim = await self.kube.replace(
                        path,
                        {**claim, "metadata": {**claim["metadata"], "finalizers": [*finalizers, DELETE_PROTECTION]}},
                    )
                status = {**(claim.get("status") or {}), "allocation": allocation, "reservedFor": [reserved]}
                await self.kube.replace(f"{path}/status", {**claim, "status": status})
                log.info(
                    "pod %s/%s: claim %s allocated on %s: %s",
                    ns,
                    name,
                    claim["metadata"]["name"],
                    decision.node,
                    _summary(allocation),
                )
            else:
                status = dict(claim.get("status") or {})
                refs = list(status.get("reservedFor") or [])
                if not any(r.get("uid") == reserved["uid"] for r in refs):
                    status["reservedFor"] = [*refs, reserved]
                    await self.kube.replace(f"{path}/status", {**claim, "status": status})
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": pod["metadata"]["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": decision.node},
        }
        await self.kube.create(namespaced_path("v1", "pods", ns, name) + "/binding", binding)
        self._assumed[key] = (decision.node, pod)
        self._last_failure.pop(key, None)
        log.info("pod %s/%s: bound to %s", ns, name, decision.node)
        await self._event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {decision.node}", "Normal")
        return None

    async def _unschedulable(self, pod: Obj, message: str, *, event: bool) -> float:
        key = key_of(pod)
        changed = self._last_failure.get(key) != message
        self._last_failure[key] = message
        if changed:
            log.info("pod %s/%s: unschedulable: %s", key[0], key[1], message)
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
            }
            await self.kube.request(
                "PATCH",
                namespaced_path("v1", "pods", key[0], key[1]) + "/status",
                body={"status": {"conditions": [condition]}},
                content_type="application/strategic-merge-patch+json",
            )
            if event:
                await self._event(pod, "FailedScheduling", message, "Warning")
        return self.retry_seconds

    async def _event(self, pod: Obj, reason: str, note: str, kind: str) -> None:
        try:
            await self.kube.create(
                f"/apis/events.k8s.io/v1/namespaces/{pod['metadata']['namespace']}/events",
                scheduling_event(pod, reason, note, kind),
            )
        except KubeError as exc:
            log.warning(
                "pod %s/%s: cannot record event %s: %s",
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                reason,
                exc,
            )


def _summary(allocation: Obj) -> str:
    parts = []
    for r in (allocation.get("devices") or {}).get("results") or []:
        consumed = r.get("consumedCapacity")
        extra = f" {consumed}" if consumed else ""
        parts.append(f"{r['request']} -> {r['pool']}/{r['device']}{extra}")
    return ", ".join(parts)
