"""What the container got, written where ``kubectl get resourceclaim -o yaml`` shows it.

After a prepare the driver writes one ``status.devices[]`` entry (``resource.k8s.io/v1``
``AllocatedDeviceStatus``) per allocated device of this driver and pool: ``driver``, ``pool``,
``device``, ``shareID``, a ``Ready`` condition (``True``, reason ``Prepared``; ``False`` with the reason
of a failed prepare and its message) and, in ``data``, the limits it applied (:data:`DATA_KIND`):
request and container, device UUID, memory limit in bytes, SM percentage, priority, core limit
policy, oversubscription and what enforces them. Entries of other drivers and pools stay as they are.

The API server keeps an entry only for a device the claim is allocated (``must be an allocated
device in the claim``), ``data`` at most 10 KiB of JSON object, at most 8 conditions; it drops the
entries of devices that get deallocated. Gate ``DRAResourceClaimDeviceStatus`` (beta, on since 1.33)
must be on: with it off the API server drops ``status.devices`` and the write changes nothing.

The pure half builds and merges the entries; :class:`ClaimStatusWriter` writes them with GET + PUT
``.../resourceclaims/<name>/status`` carrying the resourceVersion read, retrying on a conflict, in the
background so that the kubelet's prepare is never held up by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from isolation import env as isolation_env
from kubeapi import KubeClient, KubeError, namespaced_path
from tessera_common.quantity import format_binary
from tessera_common.tasks import cancel_and_wait
from vendors.base import DOMAIN, MIB, VendorNames
from vendors.common import ENFORCER_ENV

from . import cdi
from .claims import ClaimPlan, ClaimRef, RequestPlan

log = logging.getLogger("dra_driver.claimstatus")

DATA_API_VERSION = f"{DOMAIN}/v1alpha1"
DATA_KIND = "AppliedLimits"
CONDITION_READY = "Ready"
REASON_PREPARED = "Prepared"
FAILURE_REASONS = {
    "api": "ClaimUnreadable",
    "claim": "AllocationNotPreparable",
    "conflict": "DeviceConflict",
    "config": "InvalidConfig",
    "io": "PrepareError",
}
"""``ClaimError.reason`` -> the ``Ready=False`` condition's reason."""
MAX_DATA_BYTES = 10 * 1024
MAX_CONDITION_MESSAGE = 32768
MAX_CONFLICT_RETRIES = 5
ENFORCER_LIBVGPU = "libvgpu"

DeviceKey = tuple[str, str, str, str]
"""(driver, pool, device, shareID or "")."""


def rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def container_names(claim: Mapping[str, Any], names: VendorNames, known_vendors: Iterable[str]) -> dict[str, str]:
    """Request -> the container it belongs to. The webhook names a request after its container and,
    when one container asks two vendors, ``<container>-<vendor>`` for each; any other request (a
    claim written by hand) is its own container name. Pure."""
    requests = [str(r.get("name", "")) for r in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []]
    vendors = set(known_vendors)
    out: dict[str, str] = {}
    for request in requests:
        container = request
        suffix = f"-{names.vendor}"
        if request.endswith(suffix):
            base = request[: -len(suffix)]
            siblings = [r for r in requests if r != request and r.startswith(base + "-")]
            if any(r[len(base) + 1 :] in vendors for r in siblings):
                container = base
        out[request] = container
    return out


def enforcer_of(env: Sequence[str]) -> str:
    """What enforces a CDI device's limits, from its env: the vendor's ``TESSERA_LIMIT_ENFORCER``,
    ``libvgpu`` where the container gets libvgpu's shared region, else ``none``. Pure."""
    values = dict(str(e).partition("=")[::2] for e in env)
    if values.get(ENFORCER_ENV):
        return values[ENFORCER_ENV]
    return ENFORCER_LIBVGPU if isolation_env.SHARED_CACHE in values else "none"


def applied_data(
    request: RequestPlan, device: str, names: VendorNames, *, container: str, enforcer: str
) -> dict[str, Any]:
    """The ``data`` of one device entry: what the container of ``request`` got on ``device``. Pure."""
    share = next((s for s in request.shares if names.device_name(s.device.index) == device), None)
    data: dict[str, Any] = {
        "apiVersion": DATA_API_VERSION,
        "kind": DATA_KIND,
        "request": request.name,
        "container": container,
    }
    if share is not None:
        data["uuid"] = share.device.uuid
        ordinal = [s.device.index for s in request.shares].index(share.device.index)
        data["cudaOrdinal"] = ordinal
        if share.memory_bytes is not None:
            data["memoryLimitBytes"] = share.memory_bytes
            exact = share.memory_bytes % MIB == 0
            data["memoryLimit"] = format_binary(share.memory_bytes) if exact else str(share.memory_bytes)
        else:
            data["memoryLimit"] = "whole device"
        if share.cores is not None:
            data["coresPercent"] = share.cores
    cfg = request.config
    if cfg.priority is not None:
        data["priority"] = cfg.priority
    data["coreLimitPolicy"] = cfg.core_limit_policy
    data["oversubscribe"] = cfg.oversubscribe
    data["enforcer"] = enforcer
    return data


def _summary(data: Mapping[str, Any]) -> str:
    parts = [f"memory {data.get('memoryLimit', 'whole device')}"]
    parts.append(f"cores {data['coresPercent']}%" if "coresPercent" in data else "no SM limit")
    if "priority" in data:
        parts.append(f"priority {data['priority']}")
    return f"prepared for container {data.get('container')}: {', '.join(parts)}, enforced by {data.get('enforcer')}"


def _condition(status: str, reason: str, message: str, now: float) -> dict[str, Any]:
    return {
        "type": CONDITION_READY,
        "status": status,
        "reason": reason,
        "message": message[:MAX_CONDITION_MESSAGE],
        "lastTransitionTime": rfc3339(now),
    }


def _entry(driver: str, pool: str, device: str, share_id: str | None, condition: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"driver": driver, "pool": pool, "device": device}
    if share_id:
        entry["shareID"] = share_id
    entry["conditions"] = [condition]
    return entry


def ready_statuses(
    plan: ClaimPlan,
    names: VendorNames,
    spec: Mapping[str, Any],
    containers: Mapping[str, str],
    now: float,
) -> list[dict[str, Any]]:
    """One ``Ready=True`` entry per prepared device, ``data`` = the limits applied (from the plan and the
    CDI spec written for it). Pure."""
    env_of = {str(d.get("name")): (d.get("containerEdits") or {}).get("env") or [] for d in spec.get("devices") or []}
    out = []
    for request in plan.requests:
        for res in request.results:
            env = env_of.get(cdi.device_name(plan.ref.uid, res.device, res.share_id), [])
            container = containers.get(request.name, request.name)
            data = applied_data(request, res.device, names, container=container, enforcer=enforcer_of(env))
            entry = _entry(names.driver, res.pool, res.device, res.share_id,
                           _condition("True", REASON_PREPARED, _summary(data), now))  # fmt: skip
            encoded = json.dumps(data, separators=(",", ":"))
            if len(encoded) <= MAX_DATA_BYTES:
                entry["data"] = data
            out.append(entry)
    return out


def allocated_devices(claim: Mapping[str, Any]) -> set[DeviceKey]:
    results = ((((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results")) or []
    return {
        (str(r.get("driver")), str(r.get("pool")), str(r.get("device")), str(r.get("shareID") or ""))
        for r in results
        if isinstance(r, Mapping)
    }


def failed_statuses(
    claim: Mapping[str, Any], names: VendorNames, pool: str, reason: str, message: str, now: float
) -> list[dict[str, Any]]:
    """One ``Ready=False`` entry per device of this driver and pool allocated to ``claim``. Pure."""
    condition_reason = FAILURE_REASONS.get(reason, "PrepareFailed")
    return [
        _entry(driver, p, device, share or None, _condition("False", condition_reason, message, now))
        for driver, p, device, share in sorted(allocated_devices(claim))
        if driver == names.driver and p == pool
    ]


def _key(entry: Mapping[str, Any]) -> DeviceKey:
    return (
        str(entry.get("driver")),
        str(entry.get("pool")),
        str(entry.get("device")),
        str(entry.get("shareID") or ""),
    )


def merge_device_statuses(
    existing: Sequence[Mapping[str, Any]], ours: Sequence[Mapping[str, Any]], driver: str, pool: str,
    allocated: set[DeviceKey],
) -> list[dict[str, Any]]:  # fmt: skip
    """``status.devices`` with this driver's and pool's entries replaced by ``ours`` (only devices the
    claim is allocated; a condition whose status did not change keeps its ``lastTransitionTime``);
    every other entry unchanged and in place. Pure."""
    previous = {_key(e): e for e in existing}
    mine = {_key(e): dict(e) for e in ours if _key(e) in allocated}
    for key, entry in mine.items():
        old_conditions = {c.get("type"): c for c in (previous.get(key) or {}).get("conditions") or []}
        kept = []
        for condition in entry.get("conditions") or []:
            old = old_conditions.get(condition["type"])
            if old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
                kept.append({**condition, "lastTransitionTime": old["lastTransitionTime"]})
            else:
                kept.append(dict(condition))
        entry["conditions"] = kept
    out: list[dict[str, Any]] = []
    for item in existing:
        key = _key(item)
        if key[0] == driver and key[1] == pool:
            if key in mine:
                out.append(mine.pop(key))
            continue
        out.append(dict(item))
    out.extend(mine[k] for k in sorted(mine))
    return out


class ClaimStatusWriter:
    """Writes this driver's ``status.devices`` entries of a claim in the background, one claim at a time."""

    def __init__(self, client: KubeClient | None, names: VendorNames, pool: str, *, timeout: float = 10.0) -> None:
        self._client = client
        self._names = names
        self._pool = pool
        self._timeout = timeout
        self._tasks: dict[str, asyncio.Task[bool]] = {}

    def schedule(self, ref: ClaimRef, ours: Sequence[Mapping[str, Any]], claim: Mapping[str, Any] | None) -> None:
        """Write ``ours`` after any write of the same claim still running (never blocks the caller)."""
        if self._client is None:
            return
        previous = self._tasks.get(ref.uid)
        task = asyncio.get_running_loop().create_task(self._after(previous, ref, list(ours), claim))
        self._tasks[ref.uid] = task

        def done(t: asyncio.Task[bool], uid: str = ref.uid) -> None:
            if self._tasks.get(uid) is t:
                del self._tasks[uid]

        task.add_done_callback(done)

    async def _after(
        self,
        previous: asyncio.Task[bool] | None,
        ref: ClaimRef,
        ours: list[Mapping[str, Any]],
        claim: Mapping[str, Any] | None,
    ) -> bool:
        if previous is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await previous
            claim = None  # what we read is older than the previous write
        return await self.write(ref, ours, claim)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait for the writes in flight (at most ``timeout`` seconds); cancel what is left."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        await cancel_and_wait(pending, ignore_errors=True)

    async def write(
        self, ref: ClaimRef, ours: Sequence[Mapping[str, Any]], claim: Mapping[str, Any] | None = None
    ) -> bool:
        """GET (unless ``claim`` is a fresh read), merge, PUT ``/status`` with its resourceVersion; a
        conflict re-reads. True when written or already in place; failures are logged, never raised."""
        assert self._client is not None
        path = namespaced_path("resource.k8s.io/v1", "resourceclaims", ref.namespace, ref.name)
        ctx = {"claim": str(ref), "uid": ref.uid}
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            try:
                current = copy.deepcopy(dict(claim)) if claim is not None else await self._get(path)
                claim = None
                if (current.get("metadata") or {}).get("uid") != ref.uid:
                    log.info("claim replaced; its device status is not written", extra=ctx)
                    return False
                status = current.setdefault("status", {})
                merged = merge_device_statuses(
                    status.get("devices") or [], ours, self._names.driver, self._pool, allocated_devices(current)
                )
                if merged == (status.get("devices") or []):
                    return True
                if merged:
                    status["devices"] = merged
                else:
                    status.pop("devices", None)
                await asyncio.wait_for(self._client.replace(f"{path}/status", current), timeout=self._timeout + 1)
                log.debug("claim device status written", extra={**ctx, "devices": len(ours)})
                return True
            except KubeError as exc:
                if exc.conflict and attempt < MAX_CONFLICT_RETRIES:
                    continue
                if exc.not_found:
                    return False
                log.warning(
                    "cannot write the claim's device status (resourceclaims/status update); the prepare "
                    "itself is not affected",
                    extra={**ctx, "error": str(exc)},
                )
                return False
            except TimeoutError:
                log.warning("claim device status write timed out", extra=ctx)
                return False
        return False

    async def _get(self, path: str) -> dict[str, Any]:
        assert self._client is not None
        return await asyncio.wait_for(self._client.get(path), timeout=self._timeout + 1)
