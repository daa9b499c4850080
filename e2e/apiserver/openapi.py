"""``/openapi/v2`` and ``/openapi/v3``: kube-apiserver's OpenAPI documents for the kinds we serve.

Built from the upstream 1.34 definitions the stand-in validates with (:mod:`e2e.apiserver.schemas`),
turned back into OpenAPI form (``#/components/schemas/...`` or ``#/definitions/...`` references,
single ``type`` names, a ``$ref`` with siblings wrapped in ``allOf`` in v3), each carrying its
``x-kubernetes-group-version-kind`` and patch extensions; plus one path per endpoint with the
operations, query parameters (``fieldValidation``, ``fieldManager``, ``dryRun``, ``force``...) and the
patch content types kube-apiserver accepts. That is what kubectl reads: it sees that the server
validates fields (``fieldValidation`` on PATCH), computes strategic merge patches from the patch
extensions, and explains fields.

v3 is served as ``/openapi/v3`` (the index: each group-version's ``serverRelativeURL`` with a content
hash) and ``/openapi/v3/api/v1``, ``/openapi/v3/apis/<group>/<version>``; v2 as one JSON document.
v2 in protobuf (what client-go asks for) is not served: 406, and clients use v3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cache
from typing import Any

from . import kinds
from .kinds import Kind
from .schemas import KUBERNETES_VERSION, REF_PREFIX, definition_name, definitions, ref_name

Obj = dict[str, Any]
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_EXTRA = [META + n for n in ("Status", "DeleteOptions", "Patch", "WatchEvent", "APIResourceList")]
PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
INFO = {"title": "Kubernetes", "version": f"v{KUBERNETES_VERSION}.0"}


# ------------------------------------------------------------------------------ schemas
def _closure(roots: Iterable[str], version: str) -> list[str]:
    defs = definitions(version)
    seen: set[str] = set()
    stack = [r for r in roots if r in defs]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        todo = [defs[name]]
        while todo:
            node = todo.pop()
            if isinstance(node, dict):
                target = ref_name(node)
                if target and target not in seen and target in defs:
                    stack.append(target)
                todo.extend(node.values())
            elif isinstance(node, list):
                todo.extend(node)
    return sorted(seen)


def _schema(node: Any, prefix: str, v3: bool) -> Any:
    """One JSON Schema node of the definitions as an OpenAPI schema."""
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out["$ref"] = prefix + value[len(REF_PREFIX) :]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if types:
                out["type"] = types[0]
        elif key == "enum" and isinstance(value, list):
            out["enum"] = [v for v in value if v is not None]
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: _schema(sub, prefix, v3) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _schema(value, prefix, v3)
        elif key in ("oneOf", "anyOf", "allOf") and isinstance(value, list):
            out[key] = [_schema(sub, prefix, v3) for sub in value]
        else:
            out[key] = value
    if "oneOf" in out and not v3:
        # v2 has no oneOf: Quantity is a string, IntOrString a string of format int-or-string
        alternatives = {alt.get("type") for alt in out.pop("oneOf") if isinstance(alt, dict)}
        out["type"] = "string"
        if "integer" in alternatives:
            out["format"] = "int-or-string"
    if v3 and "$ref" in out and len(out) > 1:
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def _schemas(names: Iterable[str], version: str, v3: bool) -> Obj:
    defs = definitions(version)
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    return {name: _schema(defs[name], prefix, v3) for name in names}


# ------------------------------------------------------------------------------ paths
def _param(name: str, where: str, description: str, kind: str = "string", *, required: bool = False) -> Obj:
    return {"name": name, "in": where, "description": description, "required": required, "type": kind}


_QUERY = {
    "dryRun": _param("dryRun", "query", "When present, modifications are not persisted (All)."),
    "fieldManager": _param("fieldManager", "query", "A name for the actor making these changes."),
    "fieldValidation": _param(
        "fieldValidation",
        "query",
        "How the server handles unknown or duplicate fields: Ignore, Warn (the default) or Strict.",
    ),
    "force": _param("force", "query", "Force apply requests to take fields owned by others.", "boolean"),
    "pretty": _param("pretty", "query", "If 'true', the output is pretty printed."),
    "labelSelector": _param("labelSelector", "query", "A selector on labels."),
    "fieldSelector": _param("fieldSelector", "query", "A selector on fields."),
    "limit": _param("limit", "query", "The maximum number of items to return.", "integer"),
    "continue": _param("continue", "query", "The continue token of a previous list."),
    "resourceVersion": _param("resourceVersion", "query", "Which version of the data to serve."),
    "watch": _param("watch", "query", "Watch for changes instead of listing.", "boolean"),
    "timeoutSeconds": _param("timeoutSeconds", "query", "Timeout for the list/watch call.", "integer"),
    "gracePeriodSeconds": _param("gracePeriodSeconds", "query", "The duration before deletion.", "integer"),
}


def _query(names: Iterable[str], v3: bool) -> list[Obj]:
    return [_as_v3(_QUERY[n]) if v3 else dict(_QUERY[n]) for n in names]


def _as_v3(param: Obj) -> Obj:
    out = {k: v for k, v in param.items() if k != "type"}
    out["schema"] = {"type": param["type"], "uniqueItems": True}
    return out


def _body(schema_ref: Obj, content_types: Iterable[str], v3: bool) -> Any:
    if v3:
        return {"content": {t: {"schema": schema_ref} for t in content_types}, "required": True}
    return [{"name": "body", "in": "body", "required": True, "schema": schema_ref}]


def _response(schema_ref: Obj, v3: bool, codes: Iterable[str] = ("200",)) -> Obj:
    if v3:
        body = {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}
    else:
        body = {"description": "OK", "schema": schema_ref}
    out: Obj = {code: body for code in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _operation(
    kind: Kind, action: str, op_id: str, params: list[Obj], responses: Obj, body: Any, v3: bool, gvk: Kind | None
) -> Obj:
    op: Obj = {
        "description": f"{action} {kind.kind}",
        "operationId": op_id,
        "tags": [kind.group.replace(".", "_") + "_" + kind.version if kind.group else f"core_{kind.version}"],
        "x-kubernetes-action": action,
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    if body is not None:
        if v3:
            op["requestBody"] = body
        else:
            op["parameters"] = body + op.get("parameters", [])
    target = gvk or kind
    op["x-kubernetes-group-version-kind"] = {"group": target.group, "kind": target.kind, "version": target.version}
    return op


def _paths(group: str, version: str, v3: bool, ref: str) -> Obj:
    paths: Obj = {}
    for kind in kinds.kinds_in(group, version):
        name = definition_name(kind)
        if name is None:
            continue
        one = {"$ref": ref + name}
        many = {"$ref": ref + name + "List"}
        status = {"$ref": ref + META + "Status"}
        patch_body = _body({"$ref": ref + META + "Patch"}, PATCH_TYPES, v3)
        write_body = _body(one, ("application/json",), v3) if v3 else _body(one, (), v3)
        suffix = kind.kind + ("Namespaced" if kind.namespaced else "")
        tag = (kind.group.split(".")[0].capitalize() if kind.group else "Core") + kind.version.capitalize()
        scopes = [True, False] if kind.namespaced else [False]
        for namespaced in scopes:
            base = kind.collection_path("{namespace}" if namespaced else None)
            ns_param = _param("namespace", "path", "object name and auth scope", required=True)
            path_params = [ns_param] if namespaced else []
            if v3:
                path_params = [_as_v3(p) for p in path_params]
            collection: Obj = {"parameters": path_params + _query(["pretty"], v3)}
            list_q = _query(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch",
                             "timeoutSeconds"], v3)  # fmt: skip
            collection["get"] = _operation(
                kind, "list", f"list{tag}{suffix if namespaced else kind.kind + 'ForAllNamespaces'}", list_q,
                _response(many, v3), None, v3, None,
            )  # fmt: skip
            if namespaced or not kind.namespaced:
                collection["post"] = _operation(
                    kind, "post", f"create{tag}{suffix}", _query(["dryRun", "fieldManager", "fieldValidation"], v3),
                    _response(one, v3, ("200", "201", "202")), write_body, v3, None,
                )  # fmt: skip
                collection["delete"] = _operation(
                    kind, "deletecollection", f"deletecollection{tag}{suffix}",
                    _query(["dryRun", "labelSelector", "fieldSelector", "gracePeriodSeconds"], v3),
                    _response(status, v3), None, v3, None,
                )  # fmt: skip
            paths[base] = collection
            if not (namespaced or not kind.namespaced):
                continue
            name_param = _param("name", "path", f"name of the {kind.kind}", required=True)
            name_first = _as_v3(name_param) if v3 else name_param
            item: Obj = {"parameters": [name_first, *path_params, *_query(["pretty"], v3)]}
            item["get"] = _operation(kind, "get", f"read{tag}{suffix}", [], _response(one, v3), None, v3, None)
            item["put"] = _operation(
                kind, "put", f"replace{tag}{suffix}", _query(["dryRun", "fieldManager", "fieldValidation"], v3),
                _response(one, v3, ("200", "201")), write_body, v3, None,
            )  # fmt: skip
            item["patch"] = _operation(
                kind, "patch", f"patch{tag}{suffix}",
                _query(["dryRun", "fieldManager", "fieldValidation", "force"], v3),
                _response(one, v3, ("200", "201")), patch_body, v3, None,
            )  # fmt: skip
            item["delete"] = _operation(
                kind, "delete", f"delete{tag}{suffix}", _query(["dryRun", "gracePeriodSeconds"], v3),
                _response(one, v3, ("200", "202")), None, v3, None,
            )  # fmt: skip
            paths[f"{base}/{{name}}"] = item
            for sub in kind.subresources:
                sub_path = f"{base}/{{name}}/{sub}"
                if sub == "status":
                    paths[sub_path] = {
                        "parameters": item["parameters"],
                        "get": _operation(kind, "get", f"read{tag}{suffix}Status", [], _response(one, v3), None, v3,
                                          None),
                        "put": _operation(kind, "put", f"replace{tag}{suffix}Status",
                                          _query(["dryRun", "fieldManager", "fieldValidation"], v3),
                                          _response(one, v3, ("200", "201")), write_body, v3, None),
                        "patch": _operation(kind, "patch", f"patch{tag}{suffix}Status",
                                            _query(["dryRun", "fieldManager", "fieldValidation", "force"], v3),
                                            _response(one, v3, ("200", "201")), patch_body, v3, None),
                    }  # fmt: skip
                elif sub == "log":
                    text = {"type": "string"}
                    responses = (
                        {"200": {"description": "OK", "content": {"text/plain": {"schema": text}}}}
                        if v3
                        else {"200": {"description": "OK", "schema": text}}
                    )
                    paths[sub_path] = {
                        "parameters": item["parameters"],
                        "get": _operation(kind, "get", f"read{tag}{suffix}Log", [], responses, None, v3, None),
                    }
                elif sub == "exec":
                    paths[sub_path] = {
                        "parameters": item["parameters"],
                        "get": _operation(kind, "connect", f"connectGet{tag}{suffix}Exec", [],
                                          {"200": {"description": "OK"}}, None, v3, None),
                        "post": _operation(kind, "connect", f"connectPost{tag}{suffix}Exec", [],
                                           {"200": {"description": "OK"}}, None, v3, None),
                    }  # fmt: skip
    return paths


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


@cache
def v3_document(group: str, version: str) -> Obj:
    """The OpenAPI v3 document of one group-version (``/openapi/v3/apis/resource.k8s.io/v1``)."""
    served = [definition_name(k) for k in kinds.kinds_in(group, version)]
    roots = [n for n in served if n] + [n + "List" for n in served if n] + _EXTRA
    return {
        "openapi": "3.0.0",
        "info": INFO,
        "paths": _paths(group, version, True, "#/components/schemas/"),
        "components": {
            "schemas": _schemas(_closure(roots, KUBERNETES_VERSION), KUBERNETES_VERSION, True),
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                                                "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    }  # fmt: skip


@cache
def v3_body(group: str, version: str) -> bytes:
    return json.dumps(v3_document(group, version), separators=(",", ":")).encode()


@cache
def v3_index() -> Obj:
    """``/openapi/v3``: where each group-version's document is, with its content hash."""
    out: Obj = {}
    for group, versions in kinds.groups().items():
        for version in versions:
            digest = hashlib.sha512(v3_body(group, version)).hexdigest().upper()[:128]
            path = _gv_path(group, version)
            out[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": out}


def v3_lookup(path: str) -> tuple[str, str] | None:
    """``apis/resource.k8s.io/v1`` -> (group, version), for a served group-version."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        group, version = "", parts[1]
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    return (group, version) if version in kinds.groups().get(group, []) else None


@cache
def v2_body() -> bytes:
    """``/openapi/v2`` (swagger 2.0, JSON): every served kind."""
    paths: Obj = {}
    roots: list[str] = list(_EXTRA)
    for group, versions in kinds.groups().items():
        for version in versions:
            paths.update(_paths(group, version, False, "#/definitions/"))
            served = [definition_name(k) for k in kinds.kinds_in(group, version)]
            roots.extend(n for n in served if n)
            roots.extend(n + "List" for n in served if n)
    doc = {
        "swagger": "2.0",
        "info": INFO,
        "paths": paths,
        "definitions": _schemas(_closure(roots, KUBERNETES_VERSION), KUBERNETES_VERSION, False),
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }
    return json.dumps(doc, separators=(",", ":")).encode()
