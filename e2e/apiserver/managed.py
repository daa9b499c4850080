"""Field management: ``metadata.managedFields`` and server-side apply, as kube-apiserver keeps them.

Every write records which manager set which fields (``fieldManager``, else the client's User-Agent
product): ``operation: Update`` for creates, updates and patches (the fields the write changed move to
that manager), ``operation: Apply`` for an ``application/apply-patch+yaml`` patch, whose manager then
owns exactly the fields of its configuration. Fields are paths in ``FieldsV1`` form (``f:spec``,
``k:{"name":"c"}`` for an item of a list keyed by name, ``v:"x"`` for an item of a set, ``.`` for
an item itself), computed from the kind's upstream schema (``x-kubernetes-list-type``,
``x-kubernetes-list-map-keys``, ``x-kubernetes-map-type``).

Apply (structured-merge-diff's rules, the parts kubectl relies on): the configuration is merged into
the live object (keyed lists by key, sets as sets, atomic lists and scalars replaced); a field of the
configuration that another manager owns with a different value is a conflict (409, one cause per
field) unless ``force=true``, which takes it over; fields the manager applied before and no longer
applies are removed unless another manager owns them too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import APIError
from .kinds import Kind
from .schemas import KUBERNETES_VERSION, definition_name, definitions, ref_name

Obj = dict[str, Any]
Path = tuple[str, ...]
MISSING: Any = object()
_IGNORED_META = frozenset(
    {
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
        "deletionGracePeriodSeconds", "managedFields", "selfLink",
    }
)  # fmt: skip


def _resolve(node: Any) -> Any:
    name = ref_name(node)
    return definitions(KUBERNETES_VERSION).get(name, {}) if name else node


def _root(kind: Kind) -> Any:
    name = definition_name(kind)
    return {"$ref": f"#/$defs/{name}"} if name else {}


def _list_info(node: Any) -> tuple[str, list[str]]:
    node = node if isinstance(node, dict) else {}
    return str(node.get("x-kubernetes-list-type") or "atomic"), list(node.get("x-kubernetes-list-map-keys") or [])


def _key(item: Mapping[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys if k in item}, sort_keys=True, separators=(",", ":"))


def _value_key(value: Any) -> str:
    return "v:" + json.dumps(value, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------ field sets
def _walk(value: Any, node: Any, prefix: Path, out: set[Path]) -> None:
    node = _resolve(node)
    if isinstance(value, dict) and value and isinstance(node, dict) and node.get("x-kubernetes-map-type") != "atomic":
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        if not props and not isinstance(extra, dict):
            out.add(prefix)  # an object without a schema (RawExtension, opaque parameters): one field
            return
        for key, sub in value.items():
            child = props.get(key, extra if isinstance(extra, dict) else {})
            _walk(sub, child, (*prefix, f"f:{key}"), out)
        return
    if isinstance(value, list) and value and isinstance(node, dict):
        list_type, keys = _list_info(node)
        items = node.get("items") or {}
        if list_type == "map" and keys and all(isinstance(i, dict) for i in value):
            for item in value:
                here = (*prefix, _key(item, keys))
                out.add((*here, "."))
                _walk(item, items, here, out)
            return
        if list_type == "set":
            for item in value:
                out.add((*prefix, _value_key(item)))
            return
    out.add(prefix)


def fieldset(kind: Kind, obj: Mapping[str, Any], *, subresource: str | None = None) -> set[Path]:
    """The fields ``obj`` sets, as FieldsV1 paths (identity and system metadata left out; on a kind with a
    status subresource, status for the main resource and everything but status for ``/status``)."""
    body: Obj = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _IGNORED_META}
    if meta:
        body["metadata"] = meta
    else:
        body.pop("metadata", None)
    if kind.has_status:
        body = {"status": body["status"]} if subresource == "status" and "status" in body else body
        if subresource != "status":
            body.pop("status", None)
    out: set[Path] = set()
    root = _resolve(_root(kind))
    props = root.get("properties") or {} if isinstance(root, dict) else {}
    for key, value in body.items():
        _walk(value, props.get(key, {}), (f"f:{key}",), out)
    return out


def to_fields_v1(paths: Iterable[Path]) -> Obj:
    out: Obj = {}
    for path in sorted(paths):
        node = out
        for element in path:
            node = node.setdefault(element, {})
    return out


def from_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    for key, sub in fields.items():
        path = (*prefix, key)
        if isinstance(sub, dict) and sub and key != ".":
            out |= from_fields_v1(sub, path)
        else:
            out.add(path)
    return out


# ------------------------------------------------------------------------------ navigating
def _find(container: Any, element: str) -> Any:
    """The child of ``container`` an element names, or MISSING."""
    if element.startswith("f:") and isinstance(container, dict):
        return container.get(element[2:], MISSING)
    if element.startswith("k:") and isinstance(container, list):
        wanted = json.loads(element[2:])
        return next(
            (i for i in container if isinstance(i, dict) and all(i.get(k) == v for k, v in wanted.items())), MISSING
        )
    if element.startswith("v:") and isinstance(container, list):
        value = json.loads(element[2:])
        return value if value in container else MISSING
    return MISSING


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for element in path:
        if element == ".":
            return node
        node = _find(node, element)
        if node is MISSING:
            return MISSING
    return node


def _remove(obj: Any, path: Path) -> None:
    if path and path[-1] == ".":
        path = path[:-1]
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        item = _find(parent, last)
        if item is not MISSING:
            parent.remove(item)


# ------------------------------------------------------------------------------ merging
def _merge(live: Any, config: Any, node: Any) -> Any:
    node = _resolve(node)
    if isinstance(config, dict) and isinstance(live, dict) and (node or {}).get("x-kubernetes-map-type") != "atomic":
        props = (node or {}).get("properties") or {}
        extra = (node or {}).get("additionalProperties")
        out = copy.deepcopy(live)
        for key, value in config.items():
            child = props.get(key, extra if isinstance(extra, dict) else {})
            out[key] = _merge(live.get(key, MISSING), value, child)
        return out
    if isinstance(config, list) and isinstance(live, list) and isinstance(node, dict):
        list_type, keys = _list_info(node)
        if list_type == "map" and keys:
            out_list = copy.deepcopy(live)
            for item in config:
                index = next(
                    (i for i, o in enumerate(out_list) if isinstance(o, dict) and _key(o, keys) == _key(item, keys)),
                    None,
                )
                if index is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[index] = _merge(out_list[index], item, node.get("items") or {})
            return out_list
        if list_type == "set":
            return [*copy.deepcopy(live), *(copy.deepcopy(v) for v in config if v not in live)]
    return copy.deepcopy(config)


# ------------------------------------------------------------------------------ managedFields
def _entries(obj: Mapping[str, Any]) -> list[Obj]:
    return [dict(e) for e in (obj.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict)]


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], now: str, sub: str | None) -> Obj:
    entry: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if sub:
        entry["subresource"] = sub
    return entry


def _same(entry: Mapping[str, Any], manager: str, operation: str, sub: str | None) -> bool:
    return (entry.get("manager"), entry.get("operation"), entry.get("subresource") or None) == (
        manager,
        operation,
        sub,
    )


def record_update(
    kind: Kind, old: Mapping[str, Any] | None, new: Obj, manager: str, now: str, sub: str | None = None
) -> None:
    """Set ``new``'s managedFields after a create, update or non-apply patch by ``manager``."""
    before = fieldset(kind, old, subresource=sub) if old is not None else set()
    after = fieldset(kind, new, subresource=sub)
    changed = {p for p in after if p not in before or value_at(old, p) != value_at(new, p)}
    entries = _entries(old) if old is not None else []
    if not changed:
        new.setdefault("metadata", {})["managedFields"] = entries
        _tidy(new)
        return
    kept: list[Obj] = []
    mine: set[Path] = set(changed)
    for entry in entries:
        owned = from_fields_v1(entry.get("fieldsV1"))
        if _same(entry, manager, "Update", sub):
            mine |= owned & after
            continue
        owned = (owned - changed) & (after | _other_scope(kind, new, sub))
        if owned:
            kept.append({**entry, "fieldsV1": to_fields_v1(owned)})
    kept.append(_entry(manager, "Update", kind.api_version, mine, now, sub))
    new.setdefault("metadata", {})["managedFields"] = kept
    _tidy(new)


def _other_scope(kind: Kind, obj: Mapping[str, Any], sub: str | None) -> set[Path]:
    """Fields outside what a write through ``sub`` can change (kept as they are)."""
    if not kind.has_status:
        return set()
    other = None if sub == "status" else "status"
    return fieldset(kind, obj, subresource=other)


def _tidy(obj: Obj) -> None:
    meta = obj.get("metadata") or {}
    if not meta.get("managedFields"):
        meta.pop("managedFields", None)


def apply(kind: Kind, live: Mapping[str, Any] | None, config: Obj, manager: str, *, force: bool, now: str) -> Obj:
    """The object after ``manager`` applies ``config`` to ``live`` (None: the object is created), with
    its managedFields; raises a 409 listing the conflicts."""
    applied = fieldset(kind, config)
    if live is None:
        result = copy.deepcopy(config)
        result.setdefault("metadata", {})["managedFields"] = [
            _entry(manager, "Apply", kind.api_version, applied, now, None)
        ]
        _tidy(result)
        return result
    entries = _entries(live)
    previous: set[Path] = set()
    others: list[tuple[Obj, set[Path]]] = []
    for entry in entries:
        owned = from_fields_v1(entry.get("fieldsV1"))
        if _same(entry, manager, "Apply", None):
            previous = owned
        else:
            others.append((entry, owned))
    conflicts: list[tuple[str, Path]] = []
    for entry, owned in others:
        for path in sorted(applied & owned):
            if path[-1] != "." and value_at(live, path) != value_at(config, path):
                conflicts.append((str(entry.get("manager")), path))
    if conflicts and not force:
        raise _conflict_error(kind, str((config.get("metadata") or {}).get("name", "")), conflicts, entries)
    taken = {p for _, p in conflicts}
    merged: Obj = _merge(copy.deepcopy(dict(live)), config, _root(kind))
    still_owned = set().union(*(owned - taken for _, owned in others)) if others else set()
    for path in sorted(previous - applied - still_owned, key=len, reverse=True):
        _remove(merged, path)
    kept = []
    for entry, owned in others:
        owned = owned - taken
        if owned:
            kept.append({**entry, "fieldsV1": to_fields_v1(owned)})
    kept.append(_entry(manager, "Apply", kind.api_version, applied, now, None))
    merged.setdefault("metadata", {})["managedFields"] = kept
    return merged


def _show(path: Path) -> str:
    out = ""
    for element in path:
        if element.startswith("f:"):
            out += "." + element[2:]
        elif element.startswith("k:"):
            keys = json.loads(element[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif element.startswith("v:"):
            out += f"[{element[2:]}]"
    return out


def _conflict_error(kind: Kind, name: str, conflicts: list[tuple[str, Path]], entries: list[Obj]) -> APIError:
    versions = {str(e.get("manager")): str(e.get("apiVersion", "")) for e in entries}
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{manager}" using {versions.get(manager, kind.api_version)}',
            "field": _show(path),
        }
        for manager, path in conflicts
    ]
    lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
    plural = "conflict" if len(causes) == 1 else "conflicts"
    text = (
        f"Apply failed with {len(causes)} {plural}: {causes[0]['message']}: {causes[0]['field']}"
        if len(causes) == 1
        else f"Apply failed with {len(causes)} {plural}:\n{lines}"
    )
    return APIError(409, text, reason="Conflict", kind=kind, name=name, causes=causes)


def manager_of(query: Mapping[str, str], user_agent: str) -> str:
    """``fieldManager``, else the product of the User-Agent (``kubectl/v1.32.4 ...`` -> ``kubectl``)."""
    manager = query.get("fieldManager") or ""
    if manager:
        if len(manager) > 128:
            raise APIError(422, "fieldManager: Too long: may not be more than 128 bytes")
        return manager
    return (user_agent.split("/", 1)[0].strip() or "unknown")[:128]
