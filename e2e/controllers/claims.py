"""The ResourceClaim controller of kube-controller-manager, for the harness.

* A pod's ``spec.resourceClaims[]`` entry with ``resourceClaimTemplateName`` gets a claim made from
  the template: ``generateName: <pod>-<podClaimName>-`` (both cut proportionally to fit 57 chars),
  annotation ``resource.kubernetes.io/pod-claim-name``, the pod as controlling owner, the template's
  labels, annotations and spec; the pod's ``status.resourceClaimStatuses`` then names it. A claim
  made earlier for the same pod and entry is reused (a crash between create and status update).
* Claims drop ``reservedFor`` entries of pods that are gone or finished; a claim nobody reserves is
  deallocated (``status.allocation`` cleared, ``resource.kubernetes.io/delete-protection`` removed);
  a claim made for a pod that finished is deleted, and (the garbage collector's part) so is a claim
  whose owning pod is gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubeapi import RESOURCE_V1, KubeClient, KubeError, namespaced_path

from .informer import Informer, Key, WorkQueue, cancel_all, key_of, run_worker

log = logging.getLogger("e2e.controllers.claims")

Obj = dict[str, Any]
POD_CLAIM_NAME = "resource.kubernetes.io/pod-claim-name"
DELETE_PROTECTION = "resource.kubernetes.io/delete-protection"
_MAX_BASE = 57


def claim_generate_name(pod_name: str, pod_claim_name: str) -> str:
    """``<pod>-<claim>-``, both parts cut proportionally when longer than 57 characters."""
    base = f"{pod_name}-{pod_claim_name}-"
    if len(base) > _MAX_BASE:
        pod_part = pod_name[: len(pod_name) * _MAX_BASE // len(base)]
        claim_part = pod_claim_name[: len(pod_claim_name) * _MAX_BASE // len(base)]
        base = f"{pod_part}-{claim_part}-"
    return base


def claim_from_template(pod: Obj, pod_claim_name: str, template: Obj) -> Obj:
    meta = pod["metadata"]
    tmeta = (template.get("spec") or {}).get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[POD_CLAIM_NAME] = pod_claim_name
    claim_meta: Obj = {
        "generateName": claim_generate_name(meta["name"], pod_claim_name),
        "namespace": meta["namespace"],
        "annotations": annotations,
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if tmeta.get("labels"):
        claim_meta["labels"] = dict(tmeta["labels"])
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": claim_meta,
        "spec": (template.get("spec") or {}).get("spec") or {},
    }


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def pod_finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class ClaimController:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.pod_queue = WorkQueue()
        self.claim_queue = WorkQueue()
        self.pods = Informer(kube, "/api/v1/pods", name="claims/pods", handler=self._on_pod)
        self.claims = Informer(kube, f"{RESOURCE_V1}/resourceclaims", name="claims/claims", handler=self._on_claim)
        self._create_lock = asyncio.Lock()

    def _on_pod(self, kind: str, pod: Obj, old: Obj | None) -> None:
        self.pod_queue.add(key_of(pod))
        for claim in self.claims.items():
            if any(
                r.get("uid") == pod["metadata"].get("uid") for r in (claim.get("status") or {}).get("reservedFor") or []
            ) or owned_by(claim, str(pod["metadata"].get("uid"))):
                self.claim_queue.add(key_of(claim))

    def _on_claim(self, kind: str, claim: Obj, old: Obj | None) -> None:
        self.claim_queue.add(key_of(claim))
        for ref in claim["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Pod":
                self.pod_queue.add((claim["metadata"]["namespace"], str(ref.get("name"))))

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.pods.run()), asyncio.create_task(self.claims.run())]
        await self.pods.synced.wait()
        await self.claims.synced.wait()
        tasks.append(asyncio.create_task(run_worker(self.pod_queue, self.sync_pod, "claims/pod")))
        tasks.append(asyncio.create_task(run_worker(self.claim_queue, self.sync_claim, "claims/claim")))
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_all(tasks)

    # ------------------------------------------------------------------ pods
    async def sync_pod(self, key: Key) -> float | None:
        pod = self.pods.get(*key)
        if pod is None or pod["metadata"].get("deletionTimestamp") or pod_finished(pod):
            return None
        statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
        wanted = []
        for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
            template_name = entry.get("resourceClaimTemplateName")
            if not template_name or entry["name"] in statuses:
                continue
            wanted.append((str(entry["name"]), str(template_name)))
        if not wanted:
            return None
        ns, uid = key[0], str(pod["metadata"]["uid"])
        new_statuses = []
        for pod_claim_name, template_name in wanted:
            existing = next(
                (
                    c
                    for c in self.claims.items()
                    if c["metadata"].get("namespace") == ns
                    and owned_by(c, uid)
                    and (c["metadata"].get("annotations") or {}).get(POD_CLAIM_NAME) == pod_claim_name
                ),
                None,
            )
            if existing is None:
                try:
                    template = await self.kube.get(
                        namespaced_path("resource.k8s.io/v1", "resourceclaimtemplates", ns, template_name)
                    )
                except KubeError as exc:
                    if exc.not_found:
                        log.info("pod %s/%s: waiting for resourceclaimtemplate %s", ns, key[1], template_name)
                        return 1.0
                    raise
                existing = await self.kube.create(
                    namespaced_path("resource.k8s.io/v1", "resourceclaims", ns),
                    claim_from_template(pod, pod_claim_name, template),
                )
                self.claims.cache[key_of(existing)] = existing
                log.info(
                    "pod %s/%s: created claim %s from template %s",
                    ns,
                    key[1],
                    existing["metadata"]["name"],
                    template_name,
                )
            new_statuses.append({"name": pod_claim_name, "resourceClaimName": existing["metadata"]["name"]})
        await self.kube.request(
            "PATCH",
            namespaced_path("v1", "pods", ns, key[1]) + "/status",
            body={"metadata": {"uid": uid}, "status": {"resourceClaimStatuses": new_statuses}},
            content_type="application/strategic-merge-patch+json",
        )
        return None

    # ------------------------------------------------------------------ claims
    def _pod_alive(self, namespace: str, ref: Obj) -> bool:
        pod = self.pods.get(namespace, str(ref.get("name")))
        return pod is not None and pod["metadata"].get("uid") == ref.get("uid") and not pod_finished(pod)

    async def sync_claim(self, key: Key) -> float | None:
        claim = self.claims.get(*key)
        if claim is None:
            return None
        ns, name = key
        path = namespaced_path("resource.k8s.io/v1", "resourceclaims", ns, name)
        status = claim.get("status") or {}
        reserved = status.get("reservedFor") or []
        keep = [r for r in reserved if r.get("resource") != "pods" or self._pod_alive(ns, r)]
        if keep != reserved:
            new_status = dict(status)
            if keep:
                new_status["reservedFor"] = keep
            else:
                new_status.pop("reservedFor", None)
            claim = await self.kube.replace(f"{path}/status", {**claim, "status": new_status})
            self.claims.cache[key] = claim
            status = new_status
            log.info("claim %s/%s: released by pods that are gone or finished", ns, name)
        if not keep and status.get("allocation"):
            new_status = {k: v for k, v in status.items() if k not in ("allocation", "devices")}
            claim = await self.kube.replace(f"{path}/status", {**claim, "status": new_status})
            self.claims.cache[key] = claim
            log.info("claim %s/%s: deallocated (no longer reserved)", ns, name)
        finalizers = claim["metadata"].get("finalizers") or []
        if not (claim.get("status") or {}).get("allocation") and DELETE_PROTECTION in finalizers:
            remaining = [f for f in finalizers if f != DELETE_PROTECTION]
            claim = await self.kube.replace(path, {**claim, "metadata": {**claim["metadata"], "finalizers": remaining}})
            if claim:
                self.claims.cache[key] = claim
        owner = next(
            (
                r
                for r in claim["metadata"].get("ownerReferences") or []
                if r.get("kind") == "Pod" and r.get("controller")
            ),
            None,
        )
        if owner is not None and not claim["metadata"].get("deletionTimestamp"):
            pod = self.pods.get(ns, str(owner.get("name")))
            if pod is None or pod["metadata"].get("uid") != owner.get("uid"):
                # the garbage collector's part: the owning pod is gone
                await self._delete(path, f"its pod {owner.get('name')} is gone")
            elif pod_finished(pod):
                await self._delete(path, f"its pod {owner.get('name')} finished")
        return None

    async def _delete(self, path: str, why: str) -> None:
        try:
            await self.kube.delete(path)
        except KubeError as exc:
            if not exc.not_found:
                raise
            return
        log.info("claim %s: deleted, %s", path.rsplit("/", 1)[-1], why)
