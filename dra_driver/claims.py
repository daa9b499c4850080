"""From a ResourceClaim to what this node must prepare: pure functions, no I/O.

``plan_claim`` reads ``status.allocation`` (the results of this driver in this node's pool, the
consumed capacity of each share, the opaque ``SharingConfig``) and ``spec.devices`` (whether a
request asked for cores) and yields one :class:`RequestPlan` per request of the claim.

The ``SharingConfig`` of a request follows the cluster's :class:`~vendors.base.SharingPolicy`: config
the scheduler copied from the DeviceClass (``source: FromClass``, the admin's) is honoured as it is;
config from the claim itself (``source: FromClaim``, which whoever can create a claim or a template
wrote, the webhook or a user alike) only within the policy, else the claim is refused with the field,
the setting that forbids it and how to fix it. Refused, not clamped: a share never runs with other
settings than its claim says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeapi import ObjectRef
from tessera_common.quantity import QuantityError, quantity_ceil
from vendors.base import (
    CAPACITY_CORES,
    CAPACITY_MEMORY,
    DeviceInfo,
    Share,
    SharingConfig,
    SharingPolicy,
    VendorNames,
)

FROM_CLASS = "FromClass"
"""``source`` of an allocation config entry copied from the DeviceClass (resource.k8s.io/v1)."""


class ClaimError(Exception):
    """Preparing one claim failed; ``reason`` is a short metric label, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


ClaimRef = ObjectRef


@dataclass(frozen=True)
class AllocatedDevice:
    """One allocation result of this driver in this node's pool."""

    request: str
    """As in the result: ``<request>`` or ``<request>/<subrequest>``."""
    device: str
    pool: str
    share_id: str | None
    memory_bytes: int | None
    cores: int | None
    admin_access: bool = False

    @property
    def base_request(self) -> str:
        return self.request.split("/", 1)[0]


@dataclass(frozen=True)
class RequestPlan:
    """The devices one request of the claim got, and how the container that uses them is limited."""

    name: str
    results: tuple[AllocatedDevice, ...]
    shares: tuple[Share, ...]
    """One per distinct device, sorted by device index (the container's CUDA ordinal order)."""
    config: SharingConfig = field(default_factory=SharingConfig)


@dataclass(frozen=True)
class ClaimPlan:
    ref: ClaimRef
    requests: tuple[RequestPlan, ...]

    @property
    def results(self) -> list[AllocatedDevice]:
        return [r for req in self.requests for r in req.results]


def _capacity_value(consumed: Mapping[str, Any], names: VendorNames, key: str) -> Any:
    for k in (key, names.qualified(key)):
        if k in consumed:
            return consumed[k]
    return None


def _asked_capacity(claim: Mapping[str, Any], request: str) -> Mapping[str, Any]:
    """``capacity.requests`` of the request (or the chosen subrequest) named in a result."""
    base, _, sub = request.partition("/")
    for req in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []:
        if req.get("name") != base:
            continue
        if sub:
            for alt in req.get("firstAvailable") or []:
                if alt.get("name") == sub:
                    return ((alt.get("capacity") or {}).get("requests")) or {}
            return {}
        exactly = req.get("exactly") or {}
        return ((exactly.get("capacity") or {}).get("requests")) or {}
    return {}


def _sharing_config(
    ref: ClaimRef,
    configs: Sequence[Mapping[str, Any]],
    names: VendorNames,
    result_names: set[str],
    policy: SharingPolicy,
) -> SharingConfig:
    """The SharingConfig for one request: class configs first, claim configs later; the last one wins,
    fields it leaves out take the policy's defaults. A claim config beyond the policy is refused."""
    ordered = sorted(
        (c for c in configs if ((c.get("opaque") or {}).get("driver")) == names.driver),
        key=lambda c: 0 if c.get("source") == FROM_CLASS else 1,
    )
    chosen = policy.defaults()
    for entry in ordered:
        applies_to = entry.get("requests") or []
        if applies_to and not (set(applies_to) & result_names):
            continue
        params = (entry.get("opaque") or {}).get("parameters")
        if not isinstance(params, Mapping):
            raise ClaimError("config", f"ResourceClaim {ref}: opaque config for {names.driver} is not a JSON object")
        try:
            config = SharingConfig.from_parameters(params, policy.defaults())
        except ValueError as exc:
            raise ClaimError(
                "config", f"ResourceClaim {ref}: invalid opaque config for request(s) {sorted(result_names)}: {exc}"
            ) from exc
        if entry.get("source") != FROM_CLASS:
            problems = policy.check_claim(config, chosen)
            if problems:
                raise ClaimError(
                    "policy",
                    f"ResourceClaim {ref}: its opaque config for request(s) {sorted(result_names)} goes beyond the "
                    f"cluster's sharing policy: {'; '.join(problems)}. Remove the setting from the claim's "
                    "spec.devices.config (or its template's), or ask the cluster admin to allow it in the policy "
                    f"or to offer it through a DeviceClass config",
                )
        chosen = config
    return chosen


def reserved_pods(claim: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the pods the claim is reserved for (``status.reservedFor``, core ``pods``), sorted."""
    names = set()
    for ref in (claim.get("status") or {}).get("reservedFor") or []:
        if isinstance(ref, Mapping) and ref.get("resource") == "pods" and not ref.get("apiGroup") and ref.get("name"):
            names.add(str(ref["name"]))
    return tuple(sorted(names))


def reserved_pod_uids(claim: Mapping[str, Any]) -> dict[str, str]:
    """UID -> name of the pods the claim is reserved for (``status.reservedFor``, core ``pods``): the
    watchdog finds a process's pod by UID in its cgroup path."""
    out: dict[str, str] = {}
    for ref in (claim.get("status") or {}).get("reservedFor") or []:
        if isinstance(ref, Mapping) and ref.get("resource") == "pods" and not ref.get("apiGroup") and ref.get("uid"):
            out[str(ref["uid"])] = str(ref.get("name") or "")
    return dict(sorted(out.items()))


def pod_refs(namespace: str, names: Iterable[str], uids: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """``{(namespace, pod name): uid}`` from the pods' names and their UIDs (UID -> name, as
    :func:`reserved_pod_uids` and the checkpoint keep them; a name without a UID gets ``""``): the pods an
    Event is recorded on. Pure."""
    by_name = {name: uid for uid, name in uids.items()}
    return {(namespace, name): by_name.get(name, "") for name in names}


def plan_claim(
    claim: Mapping[str, Any],
    ref: ClaimRef,
    names: VendorNames,
    pool: str,
    devices: Mapping[str, DeviceInfo],
    policy: SharingPolicy | None = None,
) -> ClaimPlan:
    """What to prepare for ``claim`` on this node; :class:`ClaimError` when it cannot be prepared.

    ``policy``: the cluster's sharing policy (default: :class:`SharingPolicy`'s defaults)."""
    policy = policy or SharingPolicy()
    meta = claim.get("metadata") or {}
    if meta.get("uid") != ref.uid:
        raise ClaimError(
            "claim",
            f"ResourceClaim {ref} has UID {meta.get('uid')!r} but kubelet asked for {ref.uid!r}: the claim was "
            "replaced; kubelet will retry with the current one",
        )
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise ClaimError(
            "claim", f"ResourceClaim {ref} is not allocated (status.allocation is empty); kubelet will retry"
        )
    alloc_devices = allocation.get("devices") or {}
    results: list[AllocatedDevice] = []
    for res in alloc_devices.get("results") or []:
        if res.get("driver") != names.driver or res.get("pool") != pool:
            continue
        device_name = str(res.get("device", ""))
        if device_name not in devices:
            raise ClaimError(
                "claim",
                f"ResourceClaim {ref} was allocated device {device_name!r} of pool {pool}, which this node does not "
                f"have (it has {', '.join(sorted(devices)) or 'no devices'}); delete the pod so that the claim "
                "is allocated again",
            )
        consumed = res.get("consumedCapacity") or {}
        request = str(res.get("request", ""))
        try:
            mem_value = _capacity_value(consumed, names, CAPACITY_MEMORY)
            memory = quantity_ceil(mem_value) if mem_value is not None else None
            asked = _asked_capacity(claim, request)
            cores: int | None = None
            if _capacity_value(asked, names, CAPACITY_CORES) is not None:
                consumed_cores = _capacity_value(consumed, names, CAPACITY_CORES)
                raw = consumed_cores if consumed_cores is not None else _capacity_value(asked, names, CAPACITY_CORES)
                cores = max(0, min(100, quantity_ceil(raw)))
        except QuantityError as exc:
            raise ClaimError(
                "claim", f"ResourceClaim {ref}: unreadable capacity for device {device_name}: {exc}"
            ) from exc
        share_id = res.get("shareID") or None
        results.append(
            AllocatedDevice(
                request=request,
                device=device_name,
                pool=pool,
                share_id=str(share_id) if share_id else None,
                memory_bytes=memory,
                cores=cores,
                admin_access=bool(res.get("adminAccess")),
            )
        )
    configs = alloc_devices.get("config") or []
    plans: list[RequestPlan] = []
    for base in dict.fromkeys(r.base_request for r in results):
        mine = tuple(r for r in results if r.base_request == base)
        config = _sharing_config(ref, configs, names, {base} | {r.request for r in mine}, policy)
        plans.append(RequestPlan(name=base, results=mine, shares=_merge_shares(mine, base, devices), config=config))
    return ClaimPlan(ref=ref, requests=tuple(plans))


def _merge_shares(
    results: Sequence[AllocatedDevice], request: str, devices: Mapping[str, DeviceInfo]
) -> tuple[Share, ...]:
    """One share per device: two shares of the same card in one request add up (the container sees it once)."""
    merged: dict[str, Share] = {}
    for r in results:
        info = devices[r.device]
        prev = merged.get(r.device)
        if prev is None:
            merged[r.device] = Share(
                device=info, request=request, share_id=r.share_id, memory_bytes=r.memory_bytes, cores=r.cores
            )
            continue
        memory = None if prev.memory_bytes is None or r.memory_bytes is None else prev.memory_bytes + r.memory_bytes
        cores = None if prev.cores is None and r.cores is None else min(100, (prev.cores or 0) + (r.cores or 0))
        merged[r.device] = Share(device=info, request=request, share_id=prev.share_id, memory_bytes=memory, cores=cores)
    return tuple(sorted(merged.values(), key=lambda s: s.device.index))
