"""Objects as the API serves them: a node's ResourceSlices (built by the driver's own code), pods that
use claims, claims reserved for them (tests/driver/helpers builds the allocations)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from dra_driver.backends.mock import discover
from dra_driver.slices import build_slice_specs
from tests.driver.helpers import claim, request, result
from vendors import node_vendor

Obj = dict[str, Any]
DRIVER = "nvidia.tessera.dev"
GIB = 1024**3

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
