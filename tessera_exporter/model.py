"""The cluster's shares, from ResourceSlices, ResourceClaims and Pods: pure.

Objects arrive as the API's JSON (from watches, or one list for ``tessera top``) and are reduced at
once to small records (:func:`parse_slice`, :func:`parse_claim`, :func:`parse_pod`), which a
:class:`ClusterState` keeps up to date event by event. :meth:`ClusterState.view` computes what the
exporter and ``tessera top`` show:

* per device of our drivers (the newest generation of each pool): what its slice publishes (memory,
  cores, shares, device taints) and what allocated claims hold of it, the sum of each allocation
  result's ``consumedCapacity`` (a result without it, as when the API server drops consumable
  capacity, holds the whole device);
* per share (one allocation result), the pod that holds it (the claim's ``reservedFor``) and the
  container(s) of that pod naming the claim and the result's request (``resources.claims``);
* pods waiting to be scheduled that use claims, with the reason and message the scheduler wrote in
  their ``PodScheduled`` condition, and our claims not allocated yet, with the reason of the pod
  waiting for them.

A claim is ours when it asks one of our DeviceClasses (named like our drivers) or was allocated
devices of our drivers; other DRA drivers' claims are left out. Everything the tenant writes (pod
and claim names, the scheduler's message quoting them) is carried as data only.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import vendors
from tessera_common.quantity import QuantityError, quantity_bytes, quantity_ceil
from tessera_common.slicefields import attribute_text, capacity_value
from vendors.base import (
    ATTR_INDEX,
    ATTR_PRODUCT_NAME,
    ATTR_TYPE,
    ATTR_UUID,
    CAPACITY_CORES,
    CAPACITY_MEMORY,
    CAPACITY_SHARES,
)

log = logging.getLogger("tessera.exporter.model")

Obj = dict[str, Any]
Key = tuple[str, str]
DeviceKey = tuple[str, str, str]
"""(driver, pool, device name): how allocation results name a device."""

OUR_DRIVERS = frozenset(names.driver for names in vendors.all_names())

REASON_WAITING = "Pending"
"""Reason of a pending pod the scheduler has not written a ``PodScheduled`` condition for yet."""
REASON_NO_POD = "WaitingForPod"
"""Reason of an unallocated claim no pod uses: claims are allocated when a pod using them is scheduled."""
MAX_MESSAGE = 512
"""The scheduler's message is cut to this many characters (it is a label value)."""


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        value = f"={self.value}" if self.value else ""
        return f"{self.key}{value}:{self.effect}"


@dataclass(frozen=True)
class Device:
    """One published device."""

    driver: str
    pool: str
    name: str
    node: str
    uuid: str
    index: str
    type: str
    product_name: str
    memory: int | None
    """Published memory capacity in bytes (``None``: not published)."""
    cores: int | None
    """Published ``cores`` capacity (percent of the device, 100)."""
    shares: int | None
    """Published ``shares`` capacity: how many shares the device can carry (the split count)."""
    taints: tuple[Taint, ...] = ()

    @property
    def key(self) -> DeviceKey:
        return (self.driver, self.pool, self.name)


@dataclass(frozen=True)
class SliceRecord:
    driver: str
    pool: str
    generation: int
    node: str
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class Result:
    """One allocation result (a share of a device)."""

    request: str
    driver: str
    pool: str
    device: str
    share_id: str
    memory: int | None
    cores: int | None
    whole: bool
    """No ``consumedCapacity``: the result holds the whole device."""

    @property
    def device_key(self) -> DeviceKey:
        return (self.driver, self.pool, self.device)

    @property
    def top_request(self) -> str:
        """The request a container names (a ``firstAvailable`` result names ``request/subrequest``)."""
        return self.request.split("/", 1)[0]


@dataclass(frozen=True)
class PodRef:
    name: str
    uid: str


@dataclass(frozen=True)
class ClaimRecord:
    namespace: str
    name: str
    uid: str
    ours: bool
    allocated: bool
    deleting: bool
    results: tuple[Result, ...]
    reserved_for: tuple[PodRef, ...]


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class ContainerRecord:
    name: str
    index: str
    """Position in ``spec.containers`` (``"0"``...); init containers ``init-0``..."""
    claims: tuple[tuple[str, str], ...]
    """(pod claim entry name, request name or "" for every request of the claim)."""


@dataclass(frozen=True)
class PodRecord:
    namespace: str
    name: str
    uid: str
    node: str
    phase: str
    deleting: bool
    scheduled: Condition | None
    claims: tuple[tuple[str, str], ...]
    """(pod claim entry name, claim name; "" until the claim of a template exists)."""
    containers: tuple[ContainerRecord, ...]

    def claim_entries(self, claim_name: str) -> set[str]:
        return {entry for entry, name in self.claims if name == claim_name}


# --- parsing ------------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return quantity_bytes(value)
    except QuantityError:
        return None


def _count(value: Any) -> int | None:
    if value is None:
        return None
    try:
        count = quantity_ceil(value)
    except QuantityError:
        return None
    return count if count >= 0 else None


def _taints(entry: Mapping[str, Any]) -> tuple[Taint, ...]:
    out = []
    for taint in _list(entry.get("taints")):
        taint = _map(taint)
        if _text(taint.get("key")):
            out.append(Taint(_text(taint.get("key")), _text(taint.get("value")), _text(taint.get("effect"))))
    return tuple(out)


def parse_slice(obj: Mapping[str, Any]) -> SliceRecord | None:
    """The devices of a ResourceSlice; ``None`` for a slice without a driver or pool."""
    spec = _map(obj.get("spec"))
    driver = _text(spec.get("driver"))
    pool = _map(spec.get("pool"))
    pool_name = _text(pool.get("name"))
    if not driver or not pool_name:
        return None
    generation = pool.get("generation")
    generation = generation if isinstance(generation, int) and not isinstance(generation, bool) else 0
    node = _text(spec.get("nodeName"))
    devices = []
    for entry in _list(spec.get("devices")):
        entry = _map(entry)
        name = _text(entry.get("name"))
        if not name:
            continue
        attributes = _map(entry.get("attributes"))
        capacity = _map(entry.get("capacity"))
        product = attribute_text(attributes, driver, ATTR_PRODUCT_NAME)
        devices.append(
            Device(
                driver=driver,
                pool=pool_name,
                name=name,
                node=node,
                uuid=attribute_text(attributes, driver, ATTR_UUID),
                index=attribute_text(attributes, driver, ATTR_INDEX),
                type=attribute_text(attributes, driver, ATTR_TYPE) or product,
                product_name=product,
                memory=_bytes(capacity_value(capacity, driver, CAPACITY_MEMORY)),
                cores=_count(capacity_value(capacity, driver, CAPACITY_CORES)),
                shares=_count(capacity_value(capacity, driver, CAPACITY_SHARES)),
                taints=_taints(entry),
            )
        )
    return SliceRecord(driver, pool_name, generation, node, tuple(devices))


def _requested_classes(spec: Mapping[str, Any]) -> set[str]:
    classes = set()
    for request in _list(_map(spec.get("devices")).get("requests")):
        request = _map(request)
        exactly = _map(request.get("exactly"))
        if exactly.get("deviceClassName"):
            classes.add(_text(exactly.get("deviceClassName")))
        for sub in _list(request.get("firstAvailable")):
            classes.add(_text(_map(sub).get("deviceClassName")))
    return classes


def parse_claim(obj: Mapping[str, Any], drivers: frozenset[str] = OUR_DRIVERS) -> ClaimRecord:
    meta = _meta(obj)
    status = _map(obj.get("status"))
    allocation = status.get("allocation")
    results = []
    for result in _list(_map(_map(allocation).get("devices")).get("results")):
        result = _map(result)
        driver = _text(result.get("driver"))
        if driver not in drivers:
            continue
        consumed = result.get("consumedCapacity")
        consumed_map = _map(consumed)
        results.append(
            Result(
                request=_text(result.get("request")),
                driver=driver,
                pool=_text(result.get("pool")),
                device=_text(result.get("device")),
                share_id=_text(result.get("shareID")),
                memory=_bytes(consumed_map.get(CAPACITY_MEMORY)),
                cores=_count(consumed_map.get(CAPACITY_CORES)),
                whole=not consumed_map,
            )
        )
    reserved = tuple(
        PodRef(_text(_map(r).get("name")), _text(_map(r).get("uid")))
        for r in _list(status.get("reservedFor"))
        if _map(r).get("resource") == "pods" and _map(r).get("name")
    )
    ours = bool(results) or bool(_requested_classes(_map(obj.get("spec"))) & drivers)
    return ClaimRecord(
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
        uid=_text(meta.get("uid")),
        ours=ours,
        allocated=isinstance(allocation, Mapping),
        deleting=bool(meta.get("deletionTimestamp")),
        results=tuple(results),
        reserved_for=reserved,
    )


def _container_claims(container: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    resources = _map(container.get("resources"))
    out = []
    for ref in _list(resources.get("claims")):
        ref = _map(ref)
        if _text(ref.get("name")):
            out.append((_text(ref.get("name")), _text(ref.get("request"))))
    return tuple(out)


def parse_pod(obj: Mapping[str, Any]) -> PodRecord:
    meta = _meta(obj)
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    created = {
        _text(_map(s).get("name")): _text(_map(s).get("resourceClaimName"))
        for s in _list(status.get("resourceClaimStatuses"))
    }
    claims = []
    for entry in _list(spec.get("resourceClaims")):
        entry = _map(entry)
        name = _text(entry.get("name"))
        if name:
            claims.append((name, _text(entry.get("resourceClaimName")) or created.get(name, "")))
    containers = [
        ContainerRecord(_text(_map(c).get("name")), str(i), _container_claims(_map(c)))
        for i, c in enumerate(_list(spec.get("containers")))
    ]
    containers += [
        ContainerRecord(_text(_map(c).get("name")), f"init-{i}", _container_claims(_map(c)))
        for i, c in enumerate(_list(spec.get("initContainers")))
    ]
    scheduled = None
    for condition in _list(status.get("conditions")):
        condition = _map(condition)
        if condition.get("type") == "PodScheduled":
            scheduled = Condition(
                _text(condition.get("status")), _text(condition.get("reason")), _text(condition.get("message"))
            )
    return PodRecord(
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
        uid=_text(meta.get("uid")),
        node=_text(spec.get("nodeName")),
        phase=_text(status.get("phase")),
        deleting=bool(meta.get("deletionTimestamp")),
        scheduled=scheduled,
        claims=tuple(claims),
        containers=tuple(containers),
    )


def reduce_pod(obj: Obj) -> Obj:
    """The fields of a Pod :func:`parse_pod` reads, nothing else (no env, no volumes): what a watch
    cache keeps of each pod of the cluster."""
    meta = _meta(obj)
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))

    def containers(key: str) -> list[Obj]:
        out = []
        for c in _list(spec.get(key)):
            c = _map(c)
            claims = _list(_map(c.get("resources")).get("claims"))
            out.append({"name": c.get("name"), **({"resources": {"claims": claims}} if claims else {})})
        return out

    reduced_meta = {
        k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp") if k in meta
    }
    reduced_spec: Obj = {"nodeName": spec.get("nodeName")}
    reduced_status: Obj = {"phase": status.get("phase")}
    if spec.get("resourceClaims"):
        reduced_spec["resourceClaims"] = spec.get("resourceClaims")
        reduced_spec["containers"] = containers("containers")
        reduced_spec["initContainers"] = containers("initContainers")
        reduced_status["resourceClaimStatuses"] = status.get("resourceClaimStatuses")
        reduced_status["conditions"] = [
            c for c in _list(status.get("conditions")) if _map(c).get("type") == "PodScheduled"
        ]
    return {"metadata": reduced_meta, "spec": reduced_spec, "status": reduced_status}


# --- the view -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One allocation result, as held by one container (or by no known container)."""

    namespace: str
    claim: str
    request: str
    share_id: str
    driver: str
    pool: str
    device: str
    node: str
    device_uuid: str
    memory: int
    cores: int
    pod: str = ""
    pod_uid: str = ""
    container: str = ""
    container_index: str = ""


@dataclass(frozen=True)
class DeviceView:
    device: Device
    memory_allocated: int = 0
    cores_allocated: int = 0
    shares_allocated: int = 0
    holders: tuple[Share, ...] = ()


@dataclass(frozen=True)
class PendingPod:
    namespace: str
    name: str
    reason: str
    message: str


@dataclass(frozen=True)
class PendingClaim:
    namespace: str
    name: str
    pod: str
    reason: str
    message: str


@dataclass(frozen=True)
class ClusterView:
    """Devices sorted by node and name; shares (also each device's holders) in no order (see
    :func:`share_order`); pending pods and claims by namespace and name."""

    devices: tuple[DeviceView, ...] = ()
    shares: tuple[Share, ...] = ()
    pending_pods: tuple[PendingPod, ...] = ()
    pending_claims: tuple[PendingClaim, ...] = ()


@functools.lru_cache(maxsize=4096)
def _natural(text: str) -> tuple[Any, ...]:
    """``gpu-10`` after ``gpu-9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _cut(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


@dataclass
class ClusterState:
    """The records of one cluster, updated by watch events (``on_slice``, ``on_claim``, ``on_pod``
    take an informer's ``(type, object, old)``); :meth:`view` is recomputed only after a change."""

    drivers: frozenset[str] = OUR_DRIVERS
    slices: dict[str, SliceRecord] = field(default_factory=dict)
    claims: dict[Key, ClaimRecord] = field(default_factory=dict)
    pods: dict[Key, PodRecord] = field(default_factory=dict)
    version: int = 0
    _view: ClusterView | None = None
    _view_version: int = -1
    _memo: dict[Key, _ClaimShares] = field(default_factory=dict)

    def on_slice(self, kind: str, obj: Obj, old: Obj | None = None) -> None:
        name = _text(_meta(obj).get("name"))
        record = parse_slice(obj) if kind != "DELETED" else None
        if record is None or record.driver not in self.drivers:
            if self.slices.pop(name, None) is not None:
                self.version += 1
            return
        self.slices[name] = record
        self.version += 1

    def on_claim(self, kind: str, obj: Obj, old: Obj | None = None) -> None:
        meta = _meta(obj)
        key = (_text(meta.get("namespace")), _text(meta.get("name")))
        record = parse_claim(obj, self.drivers) if kind != "DELETED" else None
        if record is None or not record.ours:
            if self.claims.pop(key, None) is not None:
                self.version += 1
            return
        self.claims[key] = record
        self.version += 1

    def on_pod(self, kind: str, obj: Obj, old: Obj | None = None) -> None:
        meta = _meta(obj)
        key = (_text(meta.get("namespace")), _text(meta.get("name")))
        record = parse_pod(obj) if kind != "DELETED" else None
        if record is None or not record.claims:
            if self.pods.pop(key, None) is not None:
                self.version += 1
            return
        self.pods[key] = record
        self.version += 1

    def load(self, slices: Iterable[Obj], claims: Iterable[Obj], pods: Iterable[Obj]) -> ClusterState:
        """Fill from lists (``tessera top`` without ``--watch``)."""
        for obj in slices:
            self.on_slice("ADDED", obj)
        for obj in claims:
            self.on_claim("ADDED", obj)
        for obj in pods:
            self.on_pod("ADDED", obj)
        return self

    def view(self) -> ClusterView:
        if self._view is None or self._view_version != self.version:
            self._view = compute_view(self.slices.values(), self.claims.values(), self.pods, self._memo)
            self._view_version = self.version
        return self._view


def current_devices(slices: Iterable[SliceRecord]) -> dict[DeviceKey, Device]:
    """The devices of the newest generation of each pool (older generations are being replaced)."""
    records = list(slices)
    newest: dict[tuple[str, str], int] = {}
    for s in records:
        newest[(s.driver, s.pool)] = max(newest.get((s.driver, s.pool), s.generation), s.generation)
    return {d.key: d for s in records if s.generation == newest[(s.driver, s.pool)] for d in s.devices}


def _with(share: Share, **changes: str) -> Share:
    """``share`` with other holder fields (``dataclasses.replace`` costs ten times more)."""
    fields = dict(share.__dict__)
    fields.update(changes)
    return Share(**fields)


def _holders(claim: ClaimRecord, result: Result, base: Share, pods: Mapping[Key, PodRecord]) -> list[Share]:
    """``base`` once per container holding it: the claim's reserving pods, their containers naming
    the claim (and this result's request, or no request: all of the claim)."""
    if not claim.reserved_for:
        return [base]
    out = []
    for ref in claim.reserved_for:
        pod = pods.get((claim.namespace, ref.name))
        held = _with(base, pod=ref.name, pod_uid=ref.uid)
        if pod is None or (ref.uid and pod.uid and pod.uid != ref.uid):
            out.append(held)
            continue
        entries = pod.claim_entries(claim.name)
        containers = [
            c
            for c in pod.containers
            if any(entry in entries and request in ("", result.top_request) for entry, request in c.claims)
        ]
        if not containers:
            out.append(held)
        for c in containers:
            out.append(_with(held, container=c.name, container_index=c.index))
    return out


@dataclass(frozen=True)
class _ClaimShares:
    """What one claim holds, and the records it was computed from (reused while they are the same
    objects: records are replaced, never changed, when their object changes)."""

    inputs: tuple[ClaimRecord, tuple[Device | None, ...], tuple[PodRecord | None, ...]]
    results: tuple[tuple[DeviceKey, int, int, tuple[Share, ...]], ...]


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Element-wise identity, one level into tuples."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple) and isinstance(y, tuple):
            if len(x) != len(y) or any(i is not j for i, j in zip(x, y, strict=True)):
                return False
        elif x is not y:
            return False
    return True


def _claim_shares(
    claim: ClaimRecord, devices: tuple[Device | None, ...], pods: Mapping[Key, PodRecord]
) -> tuple[tuple[DeviceKey, int, int, tuple[Share, ...]], ...]:
    out = []
    for result, device in zip(claim.results, devices, strict=True):
        if result.whole:
            used_memory = (device.memory or 0) if device else 0
            used_cores = (device.cores or 0) if device else 0
        else:
            used_memory, used_cores = result.memory or 0, result.cores or 0
        base = Share(
            namespace=claim.namespace,
            claim=claim.name,
            request=result.request,
            share_id=result.share_id,
            driver=result.driver,
            pool=result.pool,
            device=result.device,
            node=device.node if device else "",
            device_uuid=device.uuid if device else "",
            memory=used_memory,
            cores=used_cores,
        )
        out.append((result.device_key, used_memory, used_cores, tuple(_holders(claim, result, base, pods))))
    return tuple(out)


def compute_view(
    slices: Iterable[SliceRecord],
    claims: Iterable[ClaimRecord],
    pods: Mapping[Key, PodRecord],
    memo: dict[Key, _ClaimShares] | None = None,
) -> ClusterView:
    """The view; with ``memo`` (kept by the caller between calls) the shares of a claim whose records
    did not change are reused instead of computed again."""
    devices = current_devices(slices)
    memory: dict[DeviceKey, int] = {}
    cores: dict[DeviceKey, int] = {}
    count: dict[DeviceKey, int] = {}
    holders: dict[DeviceKey, list[Share]] = {}
    shares: list[Share] = []
    pending_claims: list[PendingClaim] = []
    claim_list = list(claims)
    fresh: dict[Key, _ClaimShares] = {}
    for claim in claim_list:
        key_of_claim = (claim.namespace, claim.name)
        inputs = (
            claim,
            tuple(devices.get(r.device_key) for r in claim.results),
            tuple(pods.get((claim.namespace, ref.name)) for ref in claim.reserved_for),
        )
        cached = memo.get(key_of_claim) if memo is not None else None
        if cached is None or not _same(cached.inputs, inputs):
            cached = _ClaimShares(inputs, _claim_shares(claim, inputs[1], pods))
        fresh[key_of_claim] = cached
        for key, used_memory, used_cores, held in cached.results:
            memory[key] = memory.get(key, 0) + used_memory
            cores[key] = cores.get(key, 0) + used_cores
            count[key] = count.get(key, 0) + 1
            shares.extend(held)
            holders.setdefault(key, []).extend(held)
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    pending_pods: list[PendingPod] = []
    waiting: dict[Key, list[PodRecord]] = {}
    used: set[Key] = set()
    known = {(c.namespace, c.name): c for c in claim_list}
    for pod in pods.values():
        used.update((pod.namespace, name) for _, name in pod.claims if name)
        if pod.node or pod.deleting or pod.phase not in ("", "Pending"):
            continue
        names = [name for _, name in pod.claims]
        if not any(not name or (pod.namespace, name) in known for name in names):
            continue  # every claim of the pod exists and none is ours
        condition = pod.scheduled
        if condition is not None and condition.status == "False":
            reason, message = condition.reason or REASON_WAITING, _cut(condition.message)
        else:
            reason, message = REASON_WAITING, ""
        pending_pods.append(PendingPod(pod.namespace, pod.name, reason, message))
        for name in names:
            if name:
                waiting.setdefault((pod.namespace, name), []).append(pod)
    reasons = {(p.namespace, p.name): p for p in pending_pods}
    for claim in claim_list:
        if claim.allocated or claim.deleting:
            continue
        users = waiting.get((claim.namespace, claim.name), [])
        if not users:
            if (claim.namespace, claim.name) not in used:
                pending_claims.append(PendingClaim(claim.namespace, claim.name, "", REASON_NO_POD, ""))
            continue
        for pod in users:
            p = reasons[(pod.namespace, pod.name)]
            pending_claims.append(PendingClaim(claim.namespace, claim.name, pod.name, p.reason, p.message))
    device_views = []
    for key, device in devices.items():
        device_views.append(
            DeviceView(
                device=device,
                memory_allocated=memory.get(key, 0),
                cores_allocated=cores.get(key, 0),
                shares_allocated=count.get(key, 0),
                holders=tuple(holders.get(key, ())),
            )
        )
    device_views.sort(key=lambda v: (v.device.node, v.device.driver, v.device.pool, _natural(v.device.name)))
    return ClusterView(
        devices=tuple(device_views),
        shares=tuple(shares),
        pending_pods=tuple(sorted(pending_pods, key=lambda p: (p.namespace, p.name))),
        pending_claims=tuple(sorted(pending_claims, key=lambda c: (c.namespace, c.name, c.pod))),
    )


def share_order(share: Share) -> tuple[Any, ...]:
    """Shares by node, device, namespace, pod and container (the view leaves them unsorted: a scrape
    does not need an order, ``tessera top`` does)."""
    return (share.node, share.driver, share.pool, _natural(share.device), share.namespace, share.pod,
            share.container_index, share.claim, share.request)  # fmt: skip
