"""The upstream Kubernetes 1.34 object schemas the stand-in serves and validates with.

They come from ``kubernetes_validate`` (kube-apiserver's OpenAPI definitions, converted to JSON
Schema: ``$defs``, nullable ``type`` lists, the ``x-kubernetes-*`` extensions kept). Validation
(:mod:`e2e.apiserver.validation`), quantity canonicalization (:mod:`e2e.apiserver.quantities`) and the
OpenAPI documents (:mod:`e2e.apiserver.openapi`) all read them from here.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from .kinds import Kind

KUBERNETES_VERSION = "1.34"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIX = "#/$defs/"


def schema_dir(version: str = KUBERNETES_VERSION, *, strict: bool = True) -> Any:
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    return root.joinpath(f"v{version}.0-local{'-strict' if strict else ''}")


@cache
def definitions(version: str = KUBERNETES_VERSION) -> dict[str, Any]:
    """Every definition by its OpenAPI name (``io.k8s.api.core.v1.Pod``), as upstream writes them
    (not the strict variant, which adds ``additionalProperties: false`` everywhere)."""
    defs: dict[str, Any] = json.loads(schema_dir(version, strict=False).joinpath("_definitions.json").read_text())[
        "$defs"
    ]
    return defs


@cache
def _by_gvk(version: str) -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions(version).items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            out.setdefault((gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")), name)
    return out


def definition_name(kind: Kind, version: str = KUBERNETES_VERSION) -> str | None:
    """The definition of a served kind (``io.k8s.api.resource.v1.ResourceClaim``), or None."""
    return _by_gvk(version).get((kind.group, kind.version, kind.kind))


def ref_name(schema: Any) -> str | None:
    """The definition a schema node refers to (``{"$ref": "#/$defs/X"}`` -> ``X``), or None."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            return ref[len(REF_PREFIX) :]
    return None


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    name = ref_name(node)
    return defs.get(name) if name else node


def unknown_fields(kind: Kind, obj: Any, version: str = KUBERNETES_VERSION) -> list[str]:
    """Paths of the fields of ``obj`` its kind's schema does not declare (``spec.containers[0].foo``),
    as kube-apiserver's strict decoding names them."""
    name = definition_name(kind, version)
    if name is None:
        return []
    defs = definitions(version)
    out: list[str] = []

    def walk(value: Any, node: Any, path: str) -> None:
        node = _resolve(node, defs)
        if not isinstance(node, dict) or node.get("x-kubernetes-preserve-unknown-fields"):
            return
        if isinstance(value, dict):
            props = node.get("properties")
            extra = node.get("additionalProperties")
            for key, sub in value.items():
                where = f"{path}.{key}" if path else str(key)
                if props is not None and key in props:
                    walk(sub, props[key], where)
                elif isinstance(extra, dict):
                    walk(sub, extra, where)
                elif props is not None and extra is None:
                    out.append(where)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(item, node["items"], f"{path}[{i}]")

    walk(obj, {"$ref": REF_PREFIX + name}, "")
    return out


def drop_fields(obj: Any, paths: list[str]) -> None:
    """Remove the fields :func:`unknown_fields` named (kube-apiserver's decoder drops them)."""
    for path in paths:
        parent: Any = obj
        parts = _split(path)
        for part in parts[:-1]:
            parent = parent[part]
        del parent[parts[-1]]


def _split(path: str) -> list[str | int]:
    out: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        out.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            out.append(int(index))
            rest = rest.lstrip("[")
    return out
