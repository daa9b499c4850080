"""Workloads as ``python -m webhook convert`` sees them: the pod template of a Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job, CronJob, ReplicationController or PodTemplate is what each of its pods
will be when the API server sends it to the webhook; converting the template shows what they become.
Pure functions.

The webhook itself only sees pods (its rules name ``pods``): a workload reaches the cluster as it is
and its pods are converted one by one when they are created. A converted template is still a valid
one (its pods then pass the webhook unchanged), so the output of ``convert`` can be applied as well.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import vendors

Obj = dict[str, Any]

TEMPLATE_PATHS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("apps/v1", "Deployment"): ("spec", "template"),
    ("apps/v1", "StatefulSet"): ("spec", "template"),
    ("apps/v1", "DaemonSet"): ("spec", "template"),
    ("apps/v1", "ReplicaSet"): ("spec", "template"),
    ("batch/v1", "Job"): ("spec", "template"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
    ("v1", "ReplicationController"): ("spec", "template"),
    ("v1", "PodTemplate"): ("template",),
}
"""Where each workload kind keeps the template of its pods."""


class NotAWorkload(ValueError):
    """A workload whose pod template is missing or not an object; the message says where."""


def template_path(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The path of ``obj``'s pod template, or None when ``obj`` is not a workload kind we know."""
    return TEMPLATE_PATHS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))


def template_as_pod(obj: Mapping[str, Any], path: tuple[str, ...], namespace: str) -> Obj:
    """The pod the template describes (in the workload's namespace), as the webhook will receive it."""
    node: Any = obj
    for i, key in enumerate(path):
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise NotAWorkload(f"{'.'.join(path[: i + 1])} is missing or not an object")
    meta = node.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise NotAWorkload(f"{'.'.join(path)}.metadata must be an object")
    pod_meta: Obj = copy.deepcopy(meta) if meta else {}
    pod_meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(node.get("spec"))}


def with_pod(obj: Mapping[str, Any], path: tuple[str, ...], pod: Mapping[str, Any], namespace: str) -> Obj:
    """A copy of ``obj`` whose pod template is ``pod`` (its metadata without the namespace we added)."""
    out: Obj = copy.deepcopy(dict(obj))
    node = out
    for key in path[:-1]:
        node = node[key]
    template = node[path[-1]]
    meta = copy.deepcopy(pod.get("metadata") or {})
    if meta.get("namespace") == namespace and "namespace" not in (template.get("metadata") or {}):
        meta.pop("namespace")
    if meta or "metadata" in template:
        template["metadata"] = meta
    template["spec"] = copy.deepcopy(pod.get("spec"))
    return out


def vendor_resources(obj: Any) -> list[str]:
    """Every key under a ``limits`` or ``requests`` map anywhere in ``obj`` that names a vendor resource
    the webhook converts (sorted): what a kind we do not know asks for in its pods."""
    found: set[str] = set()
    for mapping in _resource_maps(obj):
        found.update(k for k in mapping if isinstance(k, str) and vendors.vendor_for_resource(k) is not None)
    return sorted(found)


def _resource_maps(obj: Any) -> Iterator[Mapping[Any, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("limits", "requests") and isinstance(value, dict):
                yield value
            yield from _resource_maps(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _resource_maps(item)
