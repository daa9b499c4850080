"""What kube-apiserver does to an object around a write, per kind (pure functions over dicts).

Scheme defaults (applied when a request is decoded, so admission webhooks see them), the built-in
admission defaults we reproduce (Priority, DefaultTolerationSeconds), and the REST strategies:
status reset on create, status/spec separation between the main and ``/status`` endpoints,
``metadata.generation`` bumps, and the immutable system metadata.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import APIError
from .kinds import Kind

EPHEMERAL_CONTAINERS = "ephemeralcontainers"
"""The pods subresource ``kubectl debug`` updates: the whole pod, of which only the ephemeral containers count."""

Obj = dict[str, Any]


# ---------------------------------------------------------------------------- scheme defaults
def apply_defaults(kind: Kind, obj: Obj) -> None:
    if kind.kind == "Pod":
        _default_pod(obj)
    elif kind.kind == "Namespace":
        meta = obj.setdefault("metadata", {})
        if meta.get("name"):
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    elif kind.kind == "Secret":
        if not obj.get("type"):
            obj["type"] = "Opaque"
    elif kind.kind == "ResourceClaim":
        _default_claim_spec(obj.get("spec"))
    elif kind.kind == "ResourceClaimTemplate":
        _default_claim_spec((obj.get("spec") or {}).get("spec"))


def _default_pod(pod: Obj) -> None:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, dict):
                _default_container(container)
    # Go serializes a PodCondition's zero times as null: every stored condition shows both fields
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict):
            condition.setdefault("lastProbeTime", None)
            condition.setdefault("lastTransitionTime", None)


def _default_container(container: Obj) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    resources = container.setdefault("resources", {})
    if isinstance(resources, dict):
        limits = resources.get("limits") or {}
        if limits:
            requests = resources.setdefault("requests", {})
            for name, value in limits.items():
                requests.setdefault(name, value)
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def _default_request(req: Obj) -> None:
    req.setdefault("allocationMode", "ExactCount")
    if req["allocationMode"] == "ExactCount":
        req.setdefault("count", 1)
    for toleration in req.get("tolerations") or []:
        if isinstance(toleration, dict):
            toleration.setdefault("operator", "Equal")


def _default_claim_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    for request in (spec.get("devices") or {}).get("requests") or []:
        if not isinstance(request, dict):
            continue
        if isinstance(request.get("exactly"), dict):
            _default_request(request["exactly"])
        for sub in request.get("firstAvailable") or []:
            if isinstance(sub, dict):
                _default_request(sub)


# ---------------------------------------------------------------------------- built-in admission
_NOT_READY = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def builtin_admission(kind: Kind, obj: Obj) -> None:
    """The in-tree mutating plugins that run before webhooks on pod CREATE (Priority,
    DefaultTolerationSeconds)."""
    if kind.kind != "Pod" or not isinstance(obj.get("spec"), dict):
        return
    spec = obj["spec"]
    if "priorityClassName" not in spec:
        spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for key in _NOT_READY:
        if not any(isinstance(t, dict) and t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})


# ---------------------------------------------------------------------------- REST strategy
def qos_class(pod: Obj) -> str:
    containers = [
        c for g in ("initContainers", "containers") for c in (pod.get("spec", {}).get(g) or []) if isinstance(c, dict)
    ]
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits = res.get("limits") or {}
        requests = res.get("requests") or {}
        for name in ("cpu", "memory"):
            if name in limits or name in requests:
                any_set = True
            if name not in limits or str(requests.get(name, limits[name])) != str(limits[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def prepare_for_create(kind: Kind, obj: Obj) -> None:
    if kind.kind == "Pod":
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj)}
    elif kind.kind == "Namespace":
        obj["status"] = {"phase": "Active"}
    elif kind.kind in ("ResourceClaim", "ResourceQuota"):
        obj.pop("status", None)  # their strategies reset status on create; the quota controller writes it


_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "name",
    "namespace",
)


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def prepare_for_update(kind: Kind, new: Obj, old: Obj, subresource: str | None) -> Obj:
    """The object to store for an update of ``old`` with ``new`` through the given endpoint."""
    if subresource == EPHEMERAL_CONTAINERS:
        # kube-apiserver keeps the old pod and takes only the ephemeral containers from the new one.
        result = copy.deepcopy(old)
        ephemeral = (new.get("spec") or {}).get("ephemeralContainers")
        if ephemeral:
            result.setdefault("spec", {})["ephemeralContainers"] = copy.deepcopy(ephemeral)
        else:
            result.get("spec", {}).pop("ephemeralContainers", None)
        result["metadata"]["resourceVersion"] = (new.get("metadata") or {}).get("resourceVersion")
        return result
    if subresource in ("status", "finalize"):
        result = copy.deepcopy(old)
        if subresource == "status":
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:  # namespaces/finalize writes spec.finalizers
            result.setdefault("spec", {})["finalizers"] = list((new.get("spec") or {}).get("finalizers") or [])
        new_meta = new.get("metadata") or {}
        for field in ("labels", "annotations"):
            if field in new_meta:
                result["metadata"][field] = copy.deepcopy(new_meta[field])
            else:
                result["metadata"].pop(field, None)
        result["metadata"]["resourceVersion"] = new_meta.get("resourceVersion")
        return result
    result = copy.deepcopy(new)
    meta = result.setdefault("metadata", {})
    for field in _SYSTEM_META:
        if field in old["metadata"]:
            meta[field] = old["metadata"][field]
        else:
            meta.pop(field, None)
    if kind.has_status:
        if "status" in old:
            result["status"] = copy.deepcopy(old["status"])
        else:
            result.pop("status", None)
    if _spec_part(result) != _spec_part(old):
        meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
    old_finalizers = set(old["metadata"].get("finalizers") or [])
    added = [f for f in meta.get("finalizers") or [] if f not in old_finalizers]
    if old["metadata"].get("deletionTimestamp") and added:
        raise APIError(
            422,
            f'{kind.kind} "{meta.get("name")}" is invalid: metadata.finalizers: Forbidden: no new finalizers can '
            f"be added if the object is being deleted, found new finalizers {added}",
            kind=kind,
            name=str(meta.get("name")),
        )
    return result


def graceful_delete_seconds(kind: Kind, obj: Obj, requested: int | None) -> int:
    """Grace period for a DELETE: pods bound to a node and still running get one (default from
    spec.terminationGracePeriodSeconds); everything else goes at once."""
    if kind.kind != "Pod":
        return 0
    spec = obj.get("spec") or {}
    phase = (obj.get("status") or {}).get("phase")
    if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
        return 0
    if requested is not None:
        return max(0, requested)
    return int(spec.get("terminationGracePeriodSeconds", 30))


# ---------------------------------------------------------------------------- update rules
_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _pod_spec_for_compare(spec: Obj) -> Obj:
    out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE_SPEC}
    for group in ("initContainers", "containers", "ephemeralContainers"):
        if isinstance(out.get(group), list):
            out[group] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in out[group]
            ]
    return out


def check_update(kind: Kind, new: Obj, old: Obj, subresource: str | None = None) -> list[tuple[str, str]]:
    """The update rules of kube-apiserver's validation for the kinds where they bite: a pod's spec is
    immutable apart from a few fields (``spec.nodeName`` is set through ``pods/binding``, ephemeral
    containers are added through ``pods/ephemeralcontainers``, never changed or removed), and a
    ResourceClaim's or ResourceClaimTemplate's spec is immutable."""
    if kind.kind == "Pod" and subresource == EPHEMERAL_CONTAINERS:
        before = (old.get("spec") or {}).get("ephemeralContainers") or []
        after = (new.get("spec") or {}).get("ephemeralContainers") or []
        if after[: len(before)] != before:
            return [("spec.ephemeralContainers", "Forbidden: existing ephemeral containers may not be changed")]
        names = [c.get("name") for c in after if isinstance(c, dict)]
        if len(set(names)) != len(names):
            return [("spec.ephemeralContainers", "Duplicate value: container names must be unique")]
        return []
    if kind.kind == "Pod" and _pod_spec_for_compare(new.get("spec") or {}) != _pod_spec_for_compare(
        old.get("spec") or {}
    ):
        return [
            (
                "spec",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                "(only additions to existing tolerations), `spec.terminationGracePeriodSeconds`, "
                "`spec.schedulingGates` (set spec.nodeName through the pods/binding subresource)",
            )
        ]
    if kind.kind in ("ResourceClaim", "ResourceClaimTemplate") and new.get("spec") != old.get("spec"):
        return [("spec", "Invalid value: field is immutable")]
    if kind.kind == "ResourceSlice":
        errors = []
        for path in ("driver",):
            if (new.get("spec") or {}).get(path) != (old.get("spec") or {}).get(path):
                errors.append((f"spec.{path}", "Invalid value: field is immutable"))
        if ((new.get("spec") or {}).get("pool") or {}).get("name") != ((old.get("spec") or {}).get("pool") or {}).get(
            "name"
        ):
            errors.append(("spec.pool.name", "Invalid value: field is immutable"))
        return errors
    return []


# ---------------------------------------------------------------------------- feature gates
def _drop_request_capacity(request: Any) -> None:
    if isinstance(request, dict):
        request.pop("capacity", None)


def drop_disabled_fields(kind: Kind, obj: Obj, gates: dict[str, bool]) -> None:
    """What kube-apiserver silently drops on write when a gate is off: with ``DRADeviceTaints`` off (the
    1.34 and 1.35 default) ``taints`` on devices and ``tolerations`` on requests; with
    ``ResourceHealthStatus`` off (alpha, the 1.34 default) the pods' ``allocatedResourcesStatus``; with
    ``DRAConsumableCapacity`` off (the 1.34 and 1.35 default) ``allowMultipleAllocations`` and capacity
    ``requestPolicy`` on devices, capacity requests and ``distinctAttribute`` constraints on claims,
    ``shareID``/``consumedCapacity`` results."""
    if not gates.get("DRADeviceTaints", True):
        _drop_device_taints(kind, obj)
    if not gates.get("ResourceHealthStatus", True) and kind.kind == "Pod":
        for group in ("containerStatuses", "initContainerStatuses"):
            for status in (obj.get("status") or {}).get(group) or []:
                if isinstance(status, dict):
                    status.pop("allocatedResourcesStatus", None)
    if gates.get("DRAConsumableCapacity", True):
        return
    if kind.kind == "ResourceSlice":
        for device in (obj.get("spec") or {}).get("devices") or []:
            if not isinstance(device, dict):
                continue
            device.pop("allowMultipleAllocations", None)
            for capacity in (device.get("capacity") or {}).values():
                if isinstance(capacity, dict):
                    capacity.pop("requestPolicy", None)
        return
    if kind.kind not in ("ResourceClaim", "ResourceClaimTemplate"):
        return
    spec = obj.get("spec") or {}
    if kind.kind == "ResourceClaimTemplate":
        spec = spec.get("spec") or {}
    devices = spec.get("devices") or {}
    for request in devices.get("requests") or []:
        if isinstance(request, dict):
            _drop_request_capacity(request.get("exactly"))
            for sub in request.get("firstAvailable") or []:
                _drop_request_capacity(sub)
    if isinstance(devices.get("constraints"), list):
        kept = []
        for constraint in devices["constraints"]:
            if isinstance(constraint, dict):
                constraint.pop("distinctAttribute", None)
                if constraint.get("matchAttribute"):
                    kept.append(constraint)
        devices["constraints"] = kept
    results = (((obj.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or []
    for result in results:
        if isinstance(result, dict):
            result.pop("shareID", None)
            result.pop("consumedCapacity", None)


def _drop_device_taints(kind: Kind, obj: Obj) -> None:
    if kind.kind == "ResourceSlice":
        for device in (obj.get("spec") or {}).get("devices") or []:
            if isinstance(device, dict):
                device.pop("taints", None)
        return
    if kind.kind not in ("ResourceClaim", "ResourceClaimTemplate"):
        return
    spec = obj.get("spec") or {}
    if kind.kind == "ResourceClaimTemplate":
        spec = spec.get("spec") or {}
    for request in (spec.get("devices") or {}).get("requests") or []:
        if not isinstance(request, dict):
            continue
        for exact in [request.get("exactly"), *(request.get("firstAvailable") or [])]:
            if isinstance(exact, dict):
                exact.pop("tolerations", None)


def _device_ids(status: Any) -> set[tuple[str, str, str]]:
    results = (((status or {}).get("allocation") or {}).get("devices") or {}).get("results") or []
    return {(str(r.get("driver")), str(r.get("pool")), str(r.get("device"))) for r in results if isinstance(r, dict)}


def claim_status_update(kind: Kind, new: Obj, old: Obj | None, gates: dict[str, bool]) -> None:
    """kube-apiserver's ResourceClaim status strategy for ``status.devices``: dropped when the gate
    ``DRAResourceClaimDeviceStatus`` is off and the old claim had none; entries of devices that this
    write deallocates are removed (stale entries go with the allocation)."""
    if kind.kind != "ResourceClaim":
        return
    status = new.get("status")
    if not isinstance(status, dict):
        return
    old_status = (old or {}).get("status") or {}
    in_use = bool(old_status.get("devices"))
    if not gates.get("DRAResourceClaimDeviceStatus", True) and not in_use:
        status.pop("devices", None)
        return
    if not (gates.get("DRAResourceClaimDeviceStatus", True) or in_use):
        return
    gone = _device_ids(old_status) - _device_ids(status)
    if gone and isinstance(status.get("devices"), list):
        kept = [
            d
            for d in status["devices"]
            if not (isinstance(d, dict) and (str(d.get("driver")), str(d.get("pool")), str(d.get("device"))) in gone)
        ]
        if kept:
            status["devices"] = kept
        else:
            status.pop("devices", None)
