"""A strict check of CDI spec files, written by us from the CDI specification (SPEC.md).

It is stricter than the upstream JSON schema (which leaves env entries and device names unchecked):
every field the spec defines is typed, unknown fields are refused, names and the kind follow the
spec's grammar, and the declared ``cdiVersion`` must be at least the version whose features the
file uses (the rule runtimes apply when they load a spec).
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]

_STRINGS = {"type": "array", "items": {"type": "string"}}
_UINT32 = {"type": "integer", "minimum": 0, "maximum": 4294967295}
_INT64 = {"type": "integer"}
HOOK_NAMES = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
_ANNOTATIONS = {"type": "object", "additionalProperties": {"type": "string"}}

CONTAINER_EDITS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "env": {"type": "array", "items": {"type": "string", "pattern": r"^[^=]+=.*$"}},
        "deviceNodes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["path"],
                "properties": {
                    "path": {"type": "string", "pattern": "^/"},
                    "hostPath": {"type": "string", "pattern": "^/"},
                    "type": {"enum": ["b", "c", "u", "p"]},
                    "major": _INT64,
                    "minor": _INT64,
                    "fileMode": _UINT32,
                    "permissions": {"type": "string", "pattern": "^[rwm]{1,3}$"},
                    "uid": _UINT32,
                    "gid": _UINT32,
                },
            },
        },
        "mounts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["hostPath", "containerPath"],
                "properties": {
                    "hostPath": {"type": "string", "minLength": 1},
                    "containerPath": {"type": "string", "pattern": "^/"},
                    "type": {"type": "string"},
                    "options": _STRINGS,
                },
            },
        },
        "hooks": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["hookName", "path"],
                "properties": {
                    "hookName": {"enum": HOOK_NAMES},
                    "path": {"type": "string", "pattern": "^/"},
                    "args": _STRINGS,
                    "env": _STRINGS,
                    "timeout": _UINT32,
                },
            },
        },
        "additionalGids": {"type": "array", "items": _UINT32},
        "intelRdt": {"type": "object"},
        "netDevices": {"type": "array"},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["cdiVersion", "kind", "devices"],
    "properties": {
        "cdiVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "kind": {"type": "string"},
        "annotations": _ANNOTATIONS,
        "devices": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "containerEdits"],
                "properties": {
                    "name": {"type": "string"},
                    "annotations": _ANNOTATIONS,
                    "containerEdits": CONTAINER_EDITS,
                },
            },
        },
        "containerEdits": CONTAINER_EDITS,
    },
}

KNOWN_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
_VENDOR_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_CLASS_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_DEVICE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def required_version(spec: dict[str, Any]) -> str:
    """The lowest spec version having every feature used (the spec's version history, our own code)."""
    need = (0, 3, 0)
    edits = [spec.get("containerEdits") or {}] + [d.get("containerEdits") or {} for d in spec["devices"]]
    for e in edits:
        if any("type" in m for m in e.get("mounts", [])):
            need = max(need, (0, 4, 0))
        if any("hostPath" in n for n in e.get("deviceNodes", [])):
            need = max(need, (0, 5, 0))
        if e.get("additionalGids") or e.get("intelRdt"):
            need = max(need, (0, 7, 0))
        if e.get("netDevices"):
            need = max(need, (1, 1, 0))
    if any(not d["name"][0].isalpha() for d in spec["devices"]):
        need = max(need, (0, 5, 0))
    if spec.get("annotations") or any(d.get("annotations") for d in spec["devices"]):
        need = max(need, (0, 6, 0))
    if "." in spec["kind"].split("/", 1)[-1]:
        need = max(need, (0, 6, 0))
    return ".".join(map(str, need))


def check_cdi_spec(spec: dict[str, Any]) -> None:
    """Raise ``AssertionError`` or ``jsonschema.ValidationError`` when ``spec`` is not a valid CDI spec."""
    jsonschema.validate(spec, SCHEMA)
    assert spec["cdiVersion"] in KNOWN_VERSIONS, spec["cdiVersion"]
    vendor, _, cls = spec["kind"].partition("/")
    assert _VENDOR_RE.match(vendor) and "." in vendor, f"bad vendor {vendor!r}"
    assert _CLASS_RE.match(cls) and len(cls) <= 63, f"bad class {cls!r}"
    names = [d["name"] for d in spec["devices"]]
    assert len(names) == len(set(names)), f"duplicate device names {names}"
    for name in names:
        assert _DEVICE_RE.match(name), f"bad device name {name!r}"
    assert _version(spec["cdiVersion"]) >= _version(required_version(spec)), (
        f"cdiVersion {spec['cdiVersion']} is lower than the {required_version(spec)} its fields need"
    )


def parse_qualified(device_id: str) -> tuple[str, str, str]:
    """``vendor/class=name`` -> (vendor, class, name); AssertionError if malformed."""
    kind, sep, name = device_id.partition("=")
    vendor, slash, cls = kind.partition("/")
    assert sep and slash and vendor and cls and name, f"not a qualified CDI device ID: {device_id!r}"
    assert _VENDOR_RE.match(vendor) and _CLASS_RE.match(cls) and _DEVICE_RE.match(name), device_id
    return vendor, cls, name
