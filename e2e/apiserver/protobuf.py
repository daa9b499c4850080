"""Request bodies in Kubernetes' protobuf encoding, for the few kinds kubectl sends that way.

client-go's typed clients (``kubectl create namespace``, ``create configmap``, ``create secret``,
``create serviceaccount``) post ``application/vnd.kubernetes.protobuf``: the ``k8s\\x00`` magic, then a
``runtime.Unknown`` (``typeMeta`` 1, ``raw`` 2) whose raw bytes are the object in the field numbers of
``k8s.io/api/core/v1/generated.proto``. This decodes those kinds (wire format read by hand: varints
and length-delimited fields) into the JSON form the rest of the server handles; any other kind, or a
field this table does not know, is refused (415) rather than guessed. Responses are always JSON,
which those clients also accept.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from .errors import APIError

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
Obj = dict[str, Any]
Field = tuple[int, int, Any]  # (number, wire type, value: int or bytes)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[Field]:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, wire, data[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")


def _text(value: Any) -> str:
    if not isinstance(value, bytes):
        raise ValueError("expected a string")
    return value.decode("utf-8")


def _entry(value: Any, as_value: Callable[[bytes], Any]) -> tuple[str, Any]:
    key, val = "", as_value(b"")
    for number, _, item in _fields(value):
        if number == 1:
            key = _text(item)
        elif number == 2:
            val = as_value(item)
    return key, val


def _message(data: bytes, table: dict[int, tuple[str, str]], what: str) -> Obj:
    """Decode ``data`` with ``table``: number -> (JSON name, how: string, bytes, bool, int, strings,
    map, bytesmap, meta, a nested table's name)."""
    out: Obj = {}
    for number, _, value in _fields(data):
        if number not in table:
            raise ValueError(f"{what}: field number {number} is not decoded by the stand-in")
        name, how = table[number]
        if how == "skip":  # system metadata the server sets itself (gogo protobuf writes even empty ones)
            continue
        if how == "string":
            text = _text(value)
            if text:  # an empty string is what Go's omitempty leaves out of JSON
                out[name] = text
        elif how == "bool":
            out[name] = bool(value)
        elif how == "int":
            out[name] = int(value)
        elif how == "strings":
            out.setdefault(name, []).append(_text(value))
        elif how == "map":
            key, val = _entry(value, lambda b: b.decode("utf-8"))
            out.setdefault(name, {})[key] = val
        elif how == "bytesmap":
            key, val = _entry(value, lambda b: base64.b64encode(b).decode())
            out.setdefault(name, {})[key] = val
        elif how.endswith("[]"):
            out.setdefault(name, []).append(_message(value, TABLES[how[:-2]], f"{what}.{name}"))
        else:
            out[name] = _message(value, TABLES[how], f"{what}.{name}")
    return out


TABLES: dict[str, dict[int, tuple[str, str]]] = {
    "ObjectMeta": {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        **{n: ("", "skip") for n in (4, 5, 6, 7, 8, 9, 10, 13, 17)},
        11: ("labels", "map"),
        12: ("annotations", "map"),
        14: ("finalizers", "strings"),
    },
    "NamespaceSpec": {1: ("finalizers", "strings")},
    "ObjectReference": {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string")},
    "LocalObjectReference": {1: ("name", "string")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"), 3: ("", "skip")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map"), 3: ("binaryData", "bytesmap"),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "bytesmap"), 3: ("type", "string"),
               4: ("stringData", "map"), 5: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 2: ("secrets", "ObjectReference[]"),
                       3: ("imagePullSecrets", "LocalObjectReference[]"),
                       4: ("automountServiceAccountToken", "bool")},
}  # fmt: skip


def decode(body: bytes) -> Obj:
    """The JSON form of a protobuf-encoded object; :class:`APIError` 415 for what is not decoded."""
    try:
        if not body.startswith(MAGIC):
            raise ValueError("the body does not start with the k8s protobuf magic")
        api_version = kind = ""
        raw = b""
        for number, _, value in _fields(body[len(MAGIC) :]):
            if number == 1:
                for n, _, v in _fields(value):
                    if n == 1:
                        api_version = _text(v)
                    elif n == 2:
                        kind = _text(v)
            elif number == 2:
                raw = value
        if kind not in ("Namespace", "ConfigMap", "Secret", "ServiceAccount"):
            raise ValueError(f"{api_version}/{kind} bodies are not decoded from protobuf")
        obj = _message(raw, TABLES[kind], kind)
    except ValueError as exc:
        raise APIError(
            415,
            f"the API server stand-in reads protobuf bodies of Namespaces, ConfigMaps, Secrets and "
            f"ServiceAccounts only ({exc}); send JSON or YAML instead (kubectl apply -f / create -f a manifest)",
        ) from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
