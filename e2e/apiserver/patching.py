"""The three patch types kube-apiserver accepts for built-in kinds (pure functions over dicts).

* JSON merge patch (RFC 7386, ``application/merge-patch+json``);
* JSON patch (RFC 6902, ``application/json-patch+json``), through the ``jsonpatch`` library;
* strategic merge patch (``application/strategic-merge-patch+json``): a merge patch in which the
  lists Kubernetes marks ``patchStrategy: merge`` are merged by their ``patchMergeKey`` (containers
  by ``name``, conditions by ``type``, ...), with the ``$patch``, ``$deleteFromPrimitiveList`` and
  ``$setElementOrder`` directives. The table covers the kinds this server holds.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from .errors import APIError

Obj = dict[str, Any]

# field name -> merge key, for the lists with patchStrategy "merge" in the kinds we serve.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "resourceClaimStatuses": "name",
    "hostAliases": "ip",
    "addresses": "type",
    "podIPs": "ip",
    "hostIPs": "ip",
    "schedulingGates": "name",
    "topologySpreadConstraints": "topologyKey",
}
# lists of scalars merged as sets
PRIMITIVE_MERGE = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, operations: Any) -> Obj:
    if not isinstance(operations, list):
        raise APIError(400, "json patch must be a JSON array of operations")
    try:
        result = jsonpatch.JsonPatch(operations).apply(copy.deepcopy(target))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise APIError(422, f"the server rejected our request due to an error in our request: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise APIError(422, f"the server rejected our request due to an error in our request: {exc}") from exc
    if not isinstance(result, dict):
        raise APIError(422, "json patch must leave an object")
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = set(value or [])
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in drop]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE and isinstance(result.get(key), list):
            merged = list(result[key])
            merged.extend(v for v in value if v not in merged)
            result[key] = merged
        elif isinstance(value, list):
            result[key] = [_strip_directives(v) for v in value]
        else:
            merged_value = strategic_merge_patch(result.get(key), value)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise APIError(422, f"strategic merge patch: list item {item!r} lacks its merge key {key!r}")
        index = next((i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply",
}


def apply_patch(kind_of_patch: str, target: Obj, patch: Any) -> Obj:
    if kind_of_patch == "json":
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise APIError(400, f"{kind_of_patch} patch must be a JSON object")
    out = strategic_merge_patch(target, patch) if kind_of_patch == "strategic" else merge_patch(target, patch)
    if not isinstance(out, dict):
        raise APIError(422, "patch must leave an object")
    return out
