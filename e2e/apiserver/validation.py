"""Validation of writes: the Kubernetes 1.34 OpenAPI schemas in strict mode (``kubernetes_validate``'s
files, validators compiled once per kind and cached), object names, and the cross-field rules of
kube-apiserver's validation that matter for the kinds we use (DRA claims, slices, pod claim refs).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import referencing
from referencing.jsonschema import DRAFT202012

from e2e.allocator.quantity import Quantity, QuantityError

from .kinds import Kind
from .matchconditions import validation_problems as match_condition_problems
from .schemas import schema_dir

Obj = dict[str, Any]
Problem = tuple[str, str]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# kinds whose names must be DNS labels; the rest take DNS subdomains (events take anything path-safe)
_LABEL_NAMED = {"Namespace"}
_FREE_NAMED = {"Event"}


@cache
def _registry(version: str) -> referencing.Registry[Any]:
    defs = json.loads(schema_dir(version).joinpath("_definitions.json").read_text())
    return DRAFT202012.create_resource(defs) @ referencing.Registry()


@cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir(version).joinpath(f"{kind.lower()}-{group_version}.json")
    schema = json.loads(path.read_text())
    cls: Any = jsonschema.validators.Draft202012Validator
    validator: jsonschema.protocols.Validator = cls(schema, registry=_registry(version))
    return validator


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class SchemaValidator:
    """``validator(kind, obj) -> [(field, message)]``; empty when the object is valid."""

    def __init__(self, kubernetes_version: str = "1.34") -> None:
        self.version = kubernetes_version
        _registry(self.version)

    def __call__(self, kind: Kind, obj: Obj) -> list[Problem]:
        problems = list(self.schema_problems(kind, obj))
        problems.extend(metadata_problems(kind, obj))
        problems.extend(semantic_problems(kind, obj))
        return problems

    def schema_problems(self, kind: Kind, obj: Obj) -> Iterator[Problem]:
        validator = _validator(self.version, kind.api_version, kind.kind)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            yield _path(error.absolute_path) or "<root>", _short(error.message)


def _short(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."


def metadata_problems(kind: Kind, obj: Obj) -> Iterator[Problem]:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    if kind.kind in _LABEL_NAMED:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            yield (
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 label must consist of lower case "
                "alphanumeric characters or '-', and must start and end with an alphanumeric character",
            )
    elif kind.kind not in _FREE_NAMED and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        yield (
            "metadata.name",
            f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        )
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_name(str(key)):
            yield (
                "metadata.labels",
                f"Invalid value: {key!r}: name part must consist of alphanumeric characters, '-', "
                "'_' or '.', and must start and end with an alphanumeric character",
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            yield (
                "metadata.labels",
                f"Invalid value: {value!r}: a valid label must be an empty string or consist of "
                "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character",
            )
    for key in meta.get("annotations") or {}:
        if not _qualified_name(str(key)):
            yield "metadata.annotations", f"Invalid value: {key!r}: name part must consist of alphanumeric characters"
    total = sum(len(str(k)) + len(str(v)) for k, v in (meta.get("annotations") or {}).items())
    if total > 256 * 1024:
        yield "metadata.annotations", "Too long: may not be more than 262144 bytes"


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and _QUALIFIED.match(name) is not None


# ---------------------------------------------------------------------------- cross-field rules
def semantic_problems(kind: Kind, obj: Obj) -> Iterator[Problem]:
    if kind.kind == "Pod":
        yield from _pod_claims(obj.get("spec") or {})
        yield from _pod_resources(obj.get("spec") or {})
    elif kind.kind == "ResourceClaim":
        yield from _claim_spec(obj.get("spec") or {}, "spec")
        yield from _claim_status(obj.get("spec") or {}, obj.get("status") or {})
    elif kind.kind == "ResourceClaimTemplate":
        yield from _claim_spec((obj.get("spec") or {}).get("spec") or {}, "spec.spec")
    elif kind.kind == "ResourceSlice":
        yield from _slice(obj.get("spec") or {})
    elif kind.kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        yield from match_condition_problems(obj)


def _extended(name: str) -> bool:
    """An extended resource (``nvidia.com/gpu``): a qualified name outside ``kubernetes.io``."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def _pod_resources(spec: Obj) -> Iterator[Problem]:
    """kube-apiserver's rules for extended resources: whole numbers, not negative, limit set and equal
    to the request (they cannot be overcommitted)."""
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            resources = container.get("resources") if isinstance(container, dict) else None
            if not isinstance(resources, dict):
                continue
            where = f"spec.{group}[{i}].resources"
            limits = resources.get("limits") or {}
            requests = resources.get("requests") or {}
            parsed: dict[str, dict[str, Quantity]] = {"limits": {}, "requests": {}}
            for part, values in (("limits", limits), ("requests", requests)):
                for name, text in values.items() if isinstance(values, dict) else ():
                    try:
                        value = Quantity.parse(text)
                    except QuantityError:
                        continue  # the decoder refuses it first
                    parsed[part][name] = value
                    if value.value < 0:
                        yield f"{where}.{part}[{name}]", f"Invalid value: {text!r}: must be greater than or equal to 0"
                    elif _extended(name) and not value.is_integer():
                        yield f"{where}.{part}[{name}]", f"Invalid value: {text!r}: must be an integer"
            for name, value in parsed["requests"].items():
                if not _extended(name):
                    continue
                limit = parsed["limits"].get(name)
                if limit is None:
                    yield f"{where}.limits", "Required value: Limit must be set for non overcommitable resources"
                elif limit != value:
                    yield (
                        f"{where}.requests",
                        f"Invalid value: {str(requests[name])!r}: must be equal to {name} limit of {limits[name]}",
                    )


def _pod_claims(spec: Obj) -> Iterator[Problem]:
    names = []
    for i, ref in enumerate(spec.get("resourceClaims") or []):
        where = f"spec.resourceClaims[{i}]"
        names.append(ref.get("name"))
        if ref.get("name") and not _DNS_LABEL.match(str(ref["name"])):
            yield f"{where}.name", f"Invalid value: {ref['name']!r}: must be a DNS label"
        if bool(ref.get("resourceClaimName")) == bool(ref.get("resourceClaimTemplateName")):
            yield where, "Invalid value: must specify exactly one of resourceClaimName or resourceClaimTemplateName"
    if len(set(names)) != len(names):
        yield "spec.resourceClaims", "Duplicate value: claim names must be unique"
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            for j, claim in enumerate(((container.get("resources") or {}).get("claims")) or []):
                if claim.get("name") not in names:
                    yield (
                        f"spec.{group}[{i}].resources.claims[{j}].name",
                        f"Not found: {claim.get('name')!r}: must be the name of an entry in spec.resourceClaims",
                    )


def _request_names(spec: Obj) -> tuple[set[str], set[str]]:
    top: set[str] = set()
    sub: set[str] = set()
    for request in (spec.get("devices") or {}).get("requests") or []:
        top.add(str(request.get("name")))
        for subrequest in request.get("firstAvailable") or []:
            sub.add(f"{request.get('name')}/{subrequest.get('name')}")
    return top, sub


def _claim_spec(spec: Obj, where: str) -> Iterator[Problem]:
    devices = spec.get("devices") or {}
    seen: set[str] = set()
    for i, request in enumerate(devices.get("requests") or []):
        path = f"{where}.devices.requests[{i}]"
        name = str(request.get("name", ""))
        if not _DNS_LABEL.match(name):
            yield f"{path}.name", f"Invalid value: {name!r}: must be a DNS label"
        if name in seen:
            yield f"{path}.name", f"Duplicate value: {name!r}"
        seen.add(name)
        if ("exactly" in request) == ("firstAvailable" in request):
            yield path, "Required value: exactly one of `exactly` or `firstAvailable` is required"
        subs = request.get("firstAvailable") or []
        if len(subs) > 8:
            yield f"{path}.firstAvailable", f"Too many: {len(subs)}: must have at most 8 items"
        for j, exact in enumerate([request.get("exactly")] if "exactly" in request else subs):
            sub_path = f"{path}.exactly" if "exactly" in request else f"{path}.firstAvailable[{j}]"
            if not isinstance(exact, dict):
                continue
            if not exact.get("deviceClassName"):
                yield f"{sub_path}.deviceClassName", "Required value"
            mode = exact.get("allocationMode", "ExactCount")
            if mode not in ("ExactCount", "All"):
                yield (
                    f"{sub_path}.allocationMode",
                    f'Unsupported value: {mode!r}: supported values: "All", "ExactCount"',
                )
            count = exact.get("count")
            if mode == "ExactCount" and count is not None and int(count) <= 0:
                yield f"{sub_path}.count", f"Invalid value: {count}: must be greater than zero"
            if mode == "All" and count not in (None, 0):
                yield f"{sub_path}.count", "Invalid value: must not be specified when allocationMode is All"
    top, sub = _request_names(spec)
    for i, constraint in enumerate(devices.get("constraints") or []):
        for name in constraint.get("requests") or []:
            if name not in top and name not in sub:
                yield (
                    f"{where}.devices.constraints[{i}].requests",
                    f"Invalid value: {name!r}: must be the name of a request",
                )
        attrs = [a for a in ("matchAttribute", "distinctAttribute") if constraint.get(a)]
        if len(attrs) != 1:
            yield (
                f"{where}.devices.constraints[{i}]",
                "Required value: exactly one of matchAttribute or distinctAttribute is required",
            )
        for attr in attrs:
            if "/" not in str(constraint[attr]):
                yield (
                    f"{where}.devices.constraints[{i}].{attr}",
                    "Required value: a fully qualified name (<domain>/<name>) is required",
                )
    for i, config in enumerate(devices.get("config") or []):
        for name in config.get("requests") or []:
            if name not in top and name not in sub:
                yield f"{where}.devices.config[{i}].requests", f"Invalid value: {name!r}: must be the name of a request"


def _claim_status(spec: Obj, status: Obj) -> Iterator[Problem]:
    top, sub = _request_names(spec)
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    for i, result in enumerate(results):
        if result.get("request") not in top and result.get("request") not in sub:
            yield (
                f"status.allocation.devices.results[{i}].request",
                f"Invalid value: {result.get('request')!r}: must be the name of a request in the claim spec",
            )
    yield from _device_statuses(status)
    if len(status.get("reservedFor") or []) > 256:
        yield "status.reservedFor", "Too many: must have at most 256 items"
    if (status.get("reservedFor") or []) and not status.get("allocation"):
        yield "status.reservedFor", "Forbidden: may not be specified when `allocated` is not set"


_UID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_CONDITION_STATUSES = ("True", "False", "Unknown")
MAX_DEVICE_STATUS_CONDITIONS = 8
MAX_DEVICE_STATUS_DATA = 10 * 1024
_TAINT_EFFECTS = ("NoExecute", "NoSchedule")


def _device_statuses(status: Obj) -> Iterator[Problem]:
    """KEP-4817's rules for ``status.devices``: only devices the claim is allocated, each once (driver,
    pool, device, shareID), a UID as shareID, at most 8 valid conditions, ``data`` a JSON object of at
    most 10 KiB."""
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    allocated = {
        (r.get("driver"), r.get("pool"), r.get("device"), r.get("shareID") or None)
        for r in results
        if isinstance(r, dict)
    }
    seen: set[tuple[Any, ...]] = set()
    for i, device in enumerate(status.get("devices") or []):
        if not isinstance(device, dict):
            continue
        where = f"status.devices[{i}]"
        key = (device.get("driver"), device.get("pool"), device.get("device"), device.get("shareID") or None)
        if key in seen:
            yield where, f"Duplicate value: {'/'.join(str(k) for k in key if k)}"
        seen.add(key)
        share = device.get("shareID")
        if share is not None and not _UID.match(str(share)):
            yield f"{where}.shareID", f"Invalid value: {share!r}: must be a lowercase UUID in 8-4-4-4-12 format"
        if key not in allocated:
            yield (
                where,
                f"Invalid value: {'/'.join(str(k) for k in key if k)}: must be an allocated device in the claim",
            )
        conditions = device.get("conditions") or []
        if len(conditions) > MAX_DEVICE_STATUS_CONDITIONS:
            yield f"{where}.conditions", f"Too many: {len(conditions)}: must have at most 8 items"
        types: set[str] = set()
        for j, condition in enumerate(conditions):
            path = f"{where}.conditions[{j}]"
            kind = str(condition.get("type", ""))
            if not _qualified_name(kind):
                yield f"{path}.type", f"Invalid value: {kind!r}: must be a qualified name"
            if kind in types:
                yield f"{path}.type", f"Duplicate value: {kind!r}"
            types.add(kind)
            if condition.get("status") not in _CONDITION_STATUSES:
                yield f"{path}.status", f'Unsupported value: {condition.get("status")!r}: "False", "True", "Unknown"'
            reason = str(condition.get("reason", ""))
            if not reason or len(reason) > 1024 or not _CONDITION_REASON.match(reason):
                yield f"{path}.reason", f"Invalid value: {reason!r}: a condition reason must start with a letter"
            if len(str(condition.get("message", ""))) > 32768:
                yield f"{path}.message", "Too long: may not be more than 32768 bytes"
        if "data" in device and device["data"] is not None:
            data = device["data"]
            if not isinstance(data, dict):
                yield f"{where}.data", "Invalid value: must be a valid JSON object"
            elif len(json.dumps(data, separators=(",", ":"))) > MAX_DEVICE_STATUS_DATA:
                yield f"{where}.data", "Too long: may not be more than 10240 bytes"


def _taints(where: str, device: Obj) -> Iterator[Problem]:
    taints = device.get("taints") or []
    if len(taints) > 4:
        yield f"{where}.taints", f"Too many: {len(taints)}: must have at most 4 items"
    for k, taint in enumerate(taints):
        path = f"{where}.taints[{k}]"
        if not _qualified_name(str(taint.get("key", ""))):
            yield f"{path}.key", f"Invalid value: {taint.get('key')!r}: must be a label name"
        value = taint.get("value")
        if value and (len(str(value)) > 63 or not _LABEL_VALUE.match(str(value))):
            yield f"{path}.value", f"Invalid value: {value!r}: must be a label value"
        if taint.get("effect") not in _TAINT_EFFECTS:
            yield f"{path}.effect", f'Unsupported value: {taint.get("effect")!r}: "NoExecute", "NoSchedule"'


def _slice(spec: Obj) -> Iterator[Problem]:
    chosen = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(k)]
    if len(chosen) != 1:
        yield (
            "spec",
            "Invalid value: exactly one of `nodeName`, `nodeSelector`, `allNodes`, "
            "`perDeviceNodeSelection` is required",
        )
    names: set[str] = set()
    devices = spec.get("devices") or []
    if len(devices) > 128:
        yield "spec.devices", f"Too many: {len(devices)}: must have at most 128 items"
    for i, device in enumerate(devices):
        name = str(device.get("name", ""))
        if not _DNS_LABEL.match(name):
            yield f"spec.devices[{i}].name", f"Invalid value: {name!r}: must be a DNS label"
        if name in names:
            yield f"spec.devices[{i}].name", f"Duplicate value: {name!r}"
        names.add(name)
        yield from _taints(f"spec.devices[{i}]", device)
        attributes = device.get("attributes") or {}
        capacity = device.get("capacity") or {}
        if len(attributes) + len(capacity) > 32:
            yield f"spec.devices[{i}]", "Too many: attributes and capacities together must be at most 32"
        for key, value in attributes.items():
            kinds = [k for k in ("int", "bool", "string", "version") if isinstance(value, dict) and k in value]
            if len(kinds) != 1:
                yield f"spec.devices[{i}].attributes[{key}]", "Invalid value: exactly one value must be specified"
            elif kinds == ["string"] and len(str(value["string"])) > 64:
                yield f"spec.devices[{i}].attributes[{key}].string", "Too long: may not be more than 64 bytes"
        for key, value in capacity.items():
            policy = (value or {}).get("requestPolicy")
            if policy and not device.get("allowMultipleAllocations"):
                yield (
                    f"spec.devices[{i}].capacity[{key}].requestPolicy",
                    "Forbidden: allowed only when allowMultipleAllocations is true",
                )
            if policy:
                yield from _policy(f"spec.devices[{i}].capacity[{key}]", value.get("value"), policy)


def _policy(where: str, total_text: Any, policy: Obj) -> Iterator[Problem]:
    """KEP-5075's rules for a capacity's requestPolicy."""
    path = f"{where}.requestPolicy"
    try:
        total = Quantity.parse(total_text)
        default = Quantity.parse(policy["default"]) if policy.get("default") is not None else None
        values = [Quantity.parse(v) for v in policy.get("validValues") or []]
        rng = policy.get("validRange")
        low = Quantity.parse(rng["min"]) if rng and rng.get("min") is not None else None
        high = Quantity.parse(rng["max"]) if rng and rng.get("max") is not None else None
        step = Quantity.parse(rng["step"]) if rng and rng.get("step") is not None else None
    except (QuantityError, TypeError) as exc:
        yield path, f"Invalid value: {exc}"
        return
    if values and rng:
        yield path, "Invalid value: validValues and validRange are mutually exclusive"
        return
    if (values or rng) and default is None:
        yield f"{path}.default", "Required value: required when validValues or validRange is set"
    if values:
        if len(values) > 10:
            yield f"{path}.validValues", f"Too many: {len(values)}: must have at most 10 items"
        if any(b <= a for a, b in itertools.pairwise(values)):
            yield f"{path}.validValues", "Invalid value: must be sorted in ascending order and unique"
        if values[-1] > total:
            yield f"{path}.validValues", "Invalid value: must not exceed the capacity value"
        if default is not None and default not in values:
            yield f"{path}.default", "Invalid value: must be one of validValues"
    if rng is not None:
        if low is None:
            yield f"{path}.validRange.min", "Required value"
            return
        if low.value < 0 or low > total:
            yield f"{path}.validRange.min", "Invalid value: must be between 0 and the capacity value"
        if high is not None and (high < low or high > total):
            yield f"{path}.validRange.max", "Invalid value: must be between min and the capacity value"
        if step is not None:
            if step.value <= 0 or low + step > total:
                yield f"{path}.validRange.step", "Invalid value: min + step must not exceed the capacity value"
            elif high is not None and ((high.value - low.value) / step.value).denominator != 1:
                yield f"{path}.validRange.max", "Invalid value: must be min plus a multiple of step"
        if default is not None:
            if default < low or (high is not None and default > high):
                yield f"{path}.default", "Invalid value: must be within validRange"
            elif step is not None and step.value > 0 and ((default.value - low.value) / step.value).denominator != 1:
                yield f"{path}.default", "Invalid value: must be min plus a multiple of step"
