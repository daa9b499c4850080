"""Device asks -> one ResourceClaimTemplate (docs/webhook.md), pure.

One template per pod; one request per (container, vendor) that asks; named by a hash of its content
so identical pods share it. Capacity requests name ``memory`` only when the container gave a size
(the driver's default is the whole device) and ``cores`` only when it asked for cores (default 1).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from vendors.base import (
    ATTR_TYPE,
    CAPACITY_CORES,
    CAPACITY_MEMORY,
    DOMAIN,
    MIB,
    ConversionError,
    CoreLimitPolicy,
    DeviceAsk,
    SharingConfig,
    VendorNames,
    cel_string,
)

from .inventory import Inventory, Model

TEMPLATE_PREFIX = "tessera-"
HASH_LENGTH = 20
TEMPLATE_NAME_RE = re.compile(rf"^{TEMPLATE_PREFIX}[0-9a-f]{{{HASH_LENGTH}}}$")
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tessera-webhook"

NODE_POLICY_ANNOTATION = f"{DOMAIN}/node-scheduler-policy"
GPU_POLICY_ANNOTATION = f"{DOMAIN}/gpu-scheduler-policy"

# Limits of resource.k8s.io/v1 (ResourceClaimSpec validation).
MAX_REQUESTS = 32
MAX_SUBREQUESTS = 8
MAX_CONSTRAINTS = 32
MAX_SELECTORS = 32
MAX_SELECTOR_LENGTH = 10 * 1024
DNS_LABEL_MAX = 63
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(value: str) -> bool:
    return len(value) <= DNS_LABEL_MAX and bool(_DNS_LABEL_RE.match(value))


@dataclass(frozen=True)
class Want:
    """One container's ask of one vendor, ready to become one device request."""

    container: str
    request: str
    """The request name (a DNS label unique in the claim)."""
    names: VendorNames
    ask: DeviceAsk
    selectors: tuple[str, ...]
    """CEL selectors from the pod's annotations for this vendor."""
    match_attributes: tuple[str, ...]
    """Attributes all of the container's devices must share (``numaNode`` for NVIDIA's numa-bind)."""


def template_name(spec: Mapping[str, Any]) -> str:
    """``tessera-<hash>`` of the template's ``spec`` (claim metadata and claim spec), canonical JSON."""
    canonical = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    return TEMPLATE_PREFIX + hashlib.sha256(canonical).hexdigest()[:HASH_LENGTH]


def model_label(model: str, taken: set[str]) -> str:
    """A DNS label for a subrequest named after a device model (``H200`` -> ``h200``), unique in ``taken``."""
    base = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:DNS_LABEL_MAX].strip("-") or "model"
    name, n = base, 2
    while name in taken:
        suffix = f"-{n}"
        name = base[: DNS_LABEL_MAX - len(suffix)].rstrip("-") + suffix
        n += 1
    taken.add(name)
    return name


def _model_selector(names: VendorNames, models: Sequence[str]) -> str:
    attr = f"device.attributes[{cel_string(names.driver)}].{ATTR_TYPE}"
    if len(models) == 1:
        return f"{attr} == {cel_string(models[0])}"
    return f"{attr} in [{', '.join(cel_string(m) for m in models)}]"


def _capacity(memory_mib: int | None, cores: int | None) -> dict[str, Any]:
    requests: dict[str, str] = {}
    if memory_mib is not None:
        requests[CAPACITY_MEMORY] = f"{memory_mib}Mi"
    if cores is not None:
        requests[CAPACITY_CORES] = str(cores)
    return {"requests": requests} if requests else {}


def _exact(names: VendorNames, count: int, selectors: Sequence[str], capacity: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceClassName": names.device_class, "allocationMode": "ExactCount", "count": count}
    if selectors:
        if len(selectors) > MAX_SELECTORS:
            raise ConversionError(f"too many device selectors ({len(selectors)}, at most {MAX_SELECTORS})")
        for expr in selectors:
            if len(expr) > MAX_SELECTOR_LENGTH:
                raise ConversionError(
                    f"a device selector built from the pod's annotations is {len(expr)} characters long, "
                    f"more than the {MAX_SELECTOR_LENGTH} Kubernetes allows; list fewer types or UUIDs"
                )
        body["selectors"] = [{"cel": {"expression": expr}} for expr in selectors]
    if capacity:
        body["capacity"] = capacity
    return body


def percent_share_mib(model: Model, percent: int) -> int:
    """``percent`` of the model's memory in whole MiB (rounded down, at least 1 MiB)."""
    return max(1, model.memory_bytes * percent // 100 // MIB)


def _percent_models(want: Want, inventory: Inventory | None) -> list[Model]:
    ask, names = want.ask, want.names
    who = f"container {want.container!r}"
    if inventory is None:
        raise ConversionError(
            f"{who} asks for {ask.memory_percent}% of each device's memory; turning a percentage into a size "
            f"needs the device models of the cluster, and no device inventory is available (`convert` takes "
            f"--inventory FILE or --kubeconfig; the server reads the ResourceSlices from the API): ask for "
            f"memory in MiB instead, or retry once the inventory is loaded"
        )
    models = list(inventory.models(names.driver))
    if ask.models:
        models = [m for m in models if m.model in ask.models]
    if not models:
        raise ConversionError(
            f"{who} asks for {ask.memory_percent}% of each device's memory, but no {names.driver} devices"
            + (f" of model {', '.join(ask.models)}" if ask.models else "")
            + " are published in the cluster yet, so the percentage cannot be turned into a size; "
            "ask for memory in MiB instead, or retry once the driver runs on a node with such devices"
        )
    if len(models) > MAX_SUBREQUESTS:
        listed = ", ".join(m.model for m in models)
        raise ConversionError(
            f"{who} asks for {ask.memory_percent}% of each device's memory, but the cluster publishes "
            f"{len(models)} {names.driver} models ({listed}) and a claim can list at most {MAX_SUBREQUESTS} "
            f"alternatives; ask for memory in MiB instead"
        )
    return models


def device_request(want: Want, inventory: Inventory | None) -> dict[str, Any]:
    """The DeviceRequest for one want (``exactly``, or ``firstAvailable`` for a memory percentage)."""
    ask, names = want.ask, want.names
    selectors = list(want.selectors)
    if ask.models:
        selectors.append(_model_selector(names, ask.models))
    if ask.memory_percent is None:
        body = _exact(names, ask.count, selectors, _capacity(ask.memory_mib, ask.cores))
        return {"name": want.request, "exactly": body}
    subrequests = []
    taken: set[str] = set()
    for model in _percent_models(want, inventory):
        sub = _exact(
            names,
            ask.count,
            [*want.selectors, _model_selector(names, [model.model])],
            _capacity(percent_share_mib(model, ask.memory_percent), ask.cores),
        )
        subrequests.append({"name": model_label(model.model, taken), **sub})
    return {"name": want.request, "firstAvailable": subrequests}


def build_template(
    wants: Sequence[Want],
    *,
    namespace: str,
    core_policy: CoreLimitPolicy,
    inventory: Inventory | None,
    claim_annotations: Mapping[str, str],
) -> dict[str, Any]:
    """The ResourceClaimTemplate for a pod's wants (at least one)."""
    if len(wants) > MAX_REQUESTS:
        raise ConversionError(
            f"{len(wants)} containers ask for devices; one claim holds at most {MAX_REQUESTS} requests"
        )
    requests = [device_request(w, inventory) for w in wants]
    constraints: list[dict[str, Any]] = []
    configs: dict[tuple[str, int | None], dict[str, Any]] = {}
    for w in wants:
        if w.ask.count > 1:
            constraints.append({"requests": [w.request], "distinctAttribute": w.names.qualified("uuid")})
            for attr in w.match_attributes:
                constraints.append({"requests": [w.request], "matchAttribute": w.names.qualified(attr)})
        key = (w.names.driver, w.ask.priority)
        entry = configs.get(key)
        if entry is None:
            params = SharingConfig(priority=w.ask.priority, core_limit_policy=core_policy).to_parameters()
            entry = configs[key] = {"requests": [], "opaque": {"driver": w.names.driver, "parameters": params}}
        entry["requests"].append(w.request)
    if len(constraints) > MAX_CONSTRAINTS:
        raise ConversionError(
            f"the pod needs {len(constraints)} device constraints (one per container with several devices, "
            f"plus NUMA binding); a claim holds at most {MAX_CONSTRAINTS}: split the pod"
        )
    devices: dict[str, Any] = {"requests": requests}
    if constraints:
        devices["constraints"] = constraints
    devices["config"] = list(configs.values())
    claim_meta: dict[str, Any] = {"labels": {MANAGED_BY_LABEL: MANAGED_BY}}
    if claim_annotations:
        claim_meta["annotations"] = dict(sorted(claim_annotations.items()))
    spec = {"metadata": claim_meta, "spec": {"devices": devices}}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": template_name(spec), "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "spec": spec,
    }
