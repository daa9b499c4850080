"""Which devices a node can use: ResourceSlices gathered into pools, as kube-scheduler gathers them.

A slice serves a node when its ``nodeName`` is the node, ``allNodes`` is set, its ``nodeSelector``
matches the node, or (``perDeviceNodeSelection``) the device's own node fields do. Slices are grouped
by (driver, pool name); only the highest ``pool.generation`` counts; a pool whose slice count at that
generation (cluster-wide) differs from ``resourceSliceCount`` is incomplete, and one that lists a
device name twice is invalid: neither is allocated from. Pools are ordered by (driver, pool), slices
by name, devices as published (the order first-fit follows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
DeviceID = tuple[str, str, str]  # (driver, pool, device)


def _node_field(node: Mapping[str, Any], key: str) -> str | None:
    if key == "metadata.name":
        return str(node.get("metadata", {}).get("name", ""))
    return None


def _requirement_matches(
    values: Mapping[str, str] | None, req: Mapping[str, Any], *, field_value: str | None = None, is_field: bool = False
) -> bool:
    op = req.get("operator")
    wanted = [str(v) for v in req.get("values") or []]
    have = field_value if is_field else (values or {}).get(str(req.get("key")))
    if op == "In":
        return have is not None and have in wanted
    if op == "NotIn":
        return have is None or have not in wanted
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt"):
        try:
            number, bound = int(have or ""), int(wanted[0])
        except (ValueError, IndexError):
            return False
        return number > bound if op == "Gt" else number < bound
    return False


def node_selector_matches(selector: Mapping[str, Any] | None, node: Mapping[str, Any]) -> bool:
    """A core ``NodeSelector``: terms are ORed, requirements inside a term ANDed (empty term: none)."""
    if selector is None:
        return True
    labels = node.get("metadata", {}).get("labels") or {}
    for term in selector.get("nodeSelectorTerms") or []:
        exprs = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            continue
        if all(_requirement_matches(labels, r) for r in exprs) and all(
            _requirement_matches(None, r, field_value=_node_field(node, str(r.get("key"))), is_field=True)
            for r in fields
        ):
            return True
    return False


def node_affinity_mismatch(pod: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """Why the pod's ``nodeSelector`` or required node affinity rules ``node`` out; None when they
    do not."""
    spec = pod.get("spec") or {}
    labels = node.get("metadata", {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return f"nodeSelector {key}={value} does not match"
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required and not node_selector_matches(required, node):
        return "required node affinity does not match"
    return None


def slice_targets_node(spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    node_name = node.get("metadata", {}).get("name")
    if spec.get("nodeName"):
        return bool(spec["nodeName"] == node_name)
    if spec.get("allNodes"):
        return True
    if spec.get("nodeSelector"):
        return node_selector_matches(spec["nodeSelector"], node)
    return bool(spec.get("perDeviceNodeSelection"))


def device_targets_node(device: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    if device.get("nodeName"):
        return bool(device["nodeName"] == node.get("metadata", {}).get("name"))
    if device.get("allNodes"):
        return True
    if device.get("nodeSelector"):
        return node_selector_matches(device["nodeSelector"], node)
    return False


@dataclass
class Candidate:
    """One device of a usable pool, in first-fit order."""

    driver: str
    pool: str
    slice_name: str
    device: Obj
    slice_spec: Obj
    order: int
    id: DeviceID = field(init=False)
    """(driver, pool, device name)."""

    def __post_init__(self) -> None:
        self.id = (self.driver, self.pool, str(self.device.get("name")))

    @property
    def name(self) -> str:
        return str(self.device.get("name"))

    @property
    def multi(self) -> bool:
        return bool(self.device.get("allowMultipleAllocations"))

    def label(self) -> str:
        return f"{self.pool}/{self.name}" if self.pool else self.name


@dataclass
class Pool:
    driver: str
    name: str
    generation: int
    slice_count: int
    slices: list[Obj] = field(default_factory=list)  # slices at the current generation targeting the node
    incomplete: bool = False
    invalid: str | None = None

    @property
    def usable(self) -> bool:
        return not self.incomplete and self.invalid is None

    def describe(self) -> str:
        if self.incomplete:
            return f"pool {self.driver}/{self.name} is incomplete (being updated)"
        if self.invalid:
            return f"pool {self.driver}/{self.name} is invalid: {self.invalid}"
        return f"pool {self.driver}/{self.name}"


def gather_pools(slices: Sequence[Mapping[str, Any]], node: Mapping[str, Any]) -> list[Pool]:
    by_pool: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in slices:
        spec = s.get("spec") or {}
        by_pool.setdefault((str(spec.get("driver")), str((spec.get("pool") or {}).get("name"))), []).append(s)
    pools: list[Pool] = []
    for (driver, name), members in sorted(by_pool.items()):
        generation = max(int((m["spec"].get("pool") or {}).get("generation", 0)) for m in members)
        current = [m for m in members if int((m["spec"].get("pool") or {}).get("generation", 0)) == generation]
        expected = int((current[0]["spec"].get("pool") or {}).get("resourceSliceCount", 1))
        targeting = sorted(
            (dict(m) for m in current if slice_targets_node(m["spec"], node)),
            key=lambda m: str(m.get("metadata", {}).get("name", "")),
        )
        if not targeting:
            continue
        pool = Pool(driver, name, generation, expected, targeting, incomplete=len(current) != expected)
        seen: set[str] = set()
        for m in current:
            for device in m["spec"].get("devices") or []:
                if device.get("name") in seen:
                    pool.invalid = f"device {device.get('name')!r} is listed twice"
                seen.add(str(device.get("name")))
        pools.append(pool)
    return pools


def candidates(pools: Iterable[Pool], node: Mapping[str, Any]) -> list[Candidate]:
    out: list[Candidate] = []
    for pool in pools:
        if not pool.usable:
            continue
        for s in pool.slices:
            spec = s["spec"]
            for device in spec.get("devices") or []:
                if spec.get("perDeviceNodeSelection") and not device_targets_node(device, node):
                    continue
                out.append(Candidate(pool.driver, pool.name, str(s["metadata"]["name"]), device, spec, len(out)))
    return out
