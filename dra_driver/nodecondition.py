"""The Node condition that says whether this driver's devices are shared (docs/driver.md, Node condition).

One condition per driver, ``Tessera<Vendor>Sharing`` (:func:`condition_type`): ``True`` while the
devices are published as shareable, ``False`` with reason ``ConsumableCapacityDisabled`` while the API
server drops the consumable-capacity fields and devices are published whole. It joins the log line,
the Event and the ``tessera_dra_sharing_enabled`` metric of the gate-off fallback.

The pure half merges our condition into a Node's ``status.conditions`` without touching the others
(the kubelet's ``Ready``, ``MemoryPressure``..., node-problem-detector's); :class:`NodeConditionWriter`
writes it with GET + PUT ``/api/v1/nodes/<name>/status`` carrying the resourceVersion, so a concurrent
kubelet heartbeat is never overwritten (409, re-read, retry). It writes only when the condition
changes; a failure (the ClusterRole lacks ``nodes/status`` ``update``, the API server is down) is
logged and retried later, never fatal.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeapi import KubeClient, KubeError
from vendors.base import VendorNames

log = logging.getLogger("dra_driver.nodecondition")

REASON_ENABLED = "ConsumableCapacityEnabled"
REASON_DISABLED = "ConsumableCapacityDisabled"
MAX_CONFLICT_RETRIES = 5
RETRY_SECONDS = 300.0
"""After a failed write, the same condition is tried again no sooner than this."""


def condition_type(names: VendorNames) -> str:
    """The condition's type for one driver: ``nvidia`` -> ``TesseraNvidiaSharing``."""
    words = names.vendor.replace("_", "-").split("-")
    return "Tessera" + "".join(w[:1].upper() + w[1:] for w in words if w) + "Sharing"


def rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


@dataclass(frozen=True)
class SharingCondition:
    """What our condition says; timestamps are added when it is merged into a Node."""

    type: str
    status: str
    reason: str
    message: str


def sharing_condition(names: VendorNames, shareable: bool) -> SharingCondition:
    """The condition for devices published as shares (``True``) or whole (``False``)."""
    kind = condition_type(names)
    if shareable:
        return SharingCondition(
            kind,
            "True",
            REASON_ENABLED,
            f"Devices of {names.driver} are published as shareable: pods get memory and core shares "
            "(consumable capacity).",
        )
    return SharingCondition(
        kind,
        "False",
        REASON_DISABLED,
        f"The API server drops allowMultipleAllocations and the capacity request policies from "
        f"ResourceSlices (feature gate DRAConsumableCapacity off), so devices of {names.driver} are published "
        "whole: one pod per device, no memory or core shares. Enable DRAConsumableCapacity on kube-apiserver, "
        "kube-scheduler and kubelet to share devices; the driver notices within 10 minutes.",
    )


def merge_condition(
    conditions: Sequence[Mapping[str, Any]], wanted: SharingCondition, now: float
) -> list[dict[str, Any]] | None:
    """``conditions`` with ``wanted`` in place of the entry of its type (appended if there is none);
    ``None`` when the entry already says the same (status, reason, message). Every other entry is kept
    as it is, in its place. ``lastTransitionTime`` moves only when the status changes."""
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != wanted.type:
            out.append(copy.deepcopy(dict(cond)))
            continue
        if found:
            continue  # a duplicate of our type (never written by us): dropped
        found = True
        if (cond.get("status"), cond.get("reason"), cond.get("message")) == (
            wanted.status,
            wanted.reason,
            wanted.message,
        ):
            return None
        transition = cond.get("lastTransitionTime") if cond.get("status") == wanted.status else None
        out.append(_entry(wanted, now, transition))
    if not found:
        out.append(_entry(wanted, now, None))
    return out


def _entry(wanted: SharingCondition, now: float, transition: Any) -> dict[str, Any]:
    stamp = rfc3339(now)
    return {
        "type": wanted.type,
        "status": wanted.status,
        "reason": wanted.reason,
        "message": wanted.message,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": transition or stamp,
    }


class NodeConditionWriter:
    """Keeps this driver's sharing condition on the Node equal to what is published."""

    def __init__(
        self,
        client: KubeClient,
        names: VendorNames,
        node_name: str,
        *,
        max_conflicts: int = MAX_CONFLICT_RETRIES,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._names = names
        self._node = node_name
        self._max_conflicts = max_conflicts
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._monotonic = monotonic
        self.type = condition_type(names)
        self.written: bool | None = None
        """The status the Node is known to hold (``None``: not known yet)."""
        self._node_uid: str | None = None
        self._failed: tuple[bool, float] | None = None
        """The status of the last failed write and when it failed."""

    @property
    def path(self) -> str:
        return f"/api/v1/nodes/{self._node}"

    async def ensure(self, shareable: bool, node_uid: str | None = None) -> bool:
        """Make the Node hold the condition for ``shareable``; True when it does. A write happens only
        when the condition changes (or the Node was re-created); failures are logged, never raised
        (a failed write is retried on a later call, after ``retry_seconds``)."""
        if node_uid is not None and node_uid != self._node_uid:
            self._node_uid = node_uid
            self.written = None  # a re-created Node starts without our condition
        if self.written is shareable:
            return True
        failed = self._failed
        if failed is not None and failed[0] is shareable and self._monotonic() - failed[1] < self.retry_seconds:
            return False
        wanted = sharing_condition(self._names, shareable)
        try:
            changed = await self._write(wanted)
        except Exception as exc:  # never fatal: the slices are published either way
            self._failed = (shareable, self._monotonic())
            hint = (
                "; grant the driver's ServiceAccount update on nodes/status (the chart's driver ClusterRole does)"
                if isinstance(exc, KubeError) and exc.status in (401, 403)
                else f"; retrying in {self.retry_seconds:g}s"
            )
            log.warning(
                "cannot set the Node condition" + hint,
                extra={"node": self._node, "condition": self.type, "status": wanted.status, "error": str(exc)},
            )
            return False
        self._failed = None
        self.written = shareable
        if changed:
            log.info(
                "Node condition set",
                extra={"node": self._node, "condition": self.type, "status": wanted.status, "reason": wanted.reason},
            )
        return True

    async def _write(self, wanted: SharingCondition) -> bool:
        """GET, merge, PUT ``/status`` with the resourceVersion read; re-read on 409. True if written,
        False when the Node already held it. KubeError when it cannot be written."""
        conflicts = 0
        while True:
            node = await self._client.get(self.path)
            status = node.setdefault("status", {})
            merged = merge_condition(status.get("conditions") or [], wanted, self._clock())
            if merged is None:
                return False
            status["conditions"] = merged
            try:
                await self._client.replace(f"{self.path}/status", node)
                return True
            except KubeError as exc:
                if not exc.conflict:
                    raise
                conflicts += 1
                if conflicts > self._max_conflicts:
                    raise KubeError(
                        409,
                        f"the Node changed under each of {conflicts} writes (resourceVersion conflicts)",
                        method="PUT",
                        path=f"{self.path}/status",
                    ) from exc
                log.debug(
                    "Node changed while setting the condition; reading it again",
                    extra={"node": self._node, "condition": self.type, "attempt": conflicts},
                )
