"""Device health from DRA plugins into pod status, as the kubelet's DRA manager does it (KEP-4680).

For each registered plugin the kubelet opens ``NodeWatchResources`` and keeps the last health of every
device it reports (:class:`HealthCache`); a device whose report is older than its
``health_check_timeout_seconds`` (30 s when the plugin sends none) counts as ``Unknown``, and a plugin
whose stream ends has its devices forgotten (``Unknown``). When a device's health changes, the status
of every pod with a prepared claim on that device is written again: each container that references a
claim gets ``allocatedResourcesStatus`` entries named ``claim:<pod claim name>[/<request>]``, listing
every device of that claim (all its drivers, not only the request's: the kubelet's own behaviour)
with ``resourceID`` = the device's first CDI device ID (``<driver>/<pool>/<device>`` when it has none)
and ``health``. Pure functions plus the cache; the stream handling lives in the kubelet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .plugins import DeviceHealthReport, PreparedDevice

DEFAULT_TIMEOUT_SECONDS = 30.0
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
UNKNOWN = "Unknown"

DeviceKey = tuple[str, str, str]
"""(driver, pool, device)."""


@dataclass(frozen=True)
class _Entry:
    health: str
    last_updated: float
    timeout: float


class HealthCache:
    """The last reported health of every device, per driver."""

    def __init__(self) -> None:
        self._devices: dict[str, dict[tuple[str, str], _Entry]] = {}

    def update(self, driver: str, reports: Sequence[DeviceHealthReport]) -> set[DeviceKey]:
        """Take one full answer of ``driver``; the devices whose health changed (or that it no longer
        reports) are returned."""
        before = self._devices.get(driver, {})
        after = {
            (r.pool, r.device): _Entry(
                r.health, r.last_updated, r.timeout if r.timeout > 0 else DEFAULT_TIMEOUT_SECONDS
            )
            for r in reports
        }
        self._devices[driver] = after
        changed = {
            k for k in set(before) | set(after) if (before.get(k) or _GONE).health != (after.get(k) or _GONE).health
        }
        return {(driver, pool, device) for pool, device in changed}

    def clear(self, driver: str) -> set[DeviceKey]:
        """The plugin's stream ended: forget its devices (they read ``Unknown``)."""
        gone = self._devices.pop(driver, {})
        return {(driver, pool, device) for pool, device in gone}

    def get(self, driver: str, pool: str, device: str, now: float | None = None) -> str:
        entry = self._devices.get(driver, {}).get((pool, device))
        if entry is None:
            return UNKNOWN
        if (time.time() if now is None else now) - entry.last_updated > entry.timeout:
            return UNKNOWN
        return entry.health


_GONE = _Entry(UNKNOWN, 0.0, 0.0)


def resource_name(claim_ref: Mapping[str, Any]) -> str:
    """``claim:<name>/<request>`` for a container's ``resources.claims`` entry (``claim:<name>`` without a
    request)."""
    name = f"claim:{claim_ref.get('name')}"
    return f"{name}/{claim_ref['request']}" if claim_ref.get("request") else name


def resource_id(device: PreparedDevice) -> str:
    return device.cdi_ids[0] if device.cdi_ids else f"{device.driver}/{device.pool}/{device.device}"


def allocated_resources_status(
    container: Mapping[str, Any],
    prepared: Mapping[str, Sequence[PreparedDevice]],
    cache: HealthCache,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """A container's ``allocatedResourcesStatus``: per claim reference, every device of the prepared
    claim with its health (``prepared``: pod claim name -> devices). Pure but for the cache read."""
    out: dict[str, dict[str, Any]] = {}
    for ref in (container.get("resources") or {}).get("claims") or []:
        devices = prepared.get(str(ref.get("name")))
        if not devices:
            continue
        entries = [
            {"resourceID": resource_id(d), "health": cache.get(d.driver, d.pool, d.device, now)}
            for d in sorted(devices, key=lambda d: (d.driver, d.pool, d.device, d.share_id or ""))
        ]
        out[resource_name(ref)] = {"name": resource_name(ref), "resources": entries}
    return list(out.values())


def uses_any(devices: Iterable[PreparedDevice], keys: set[DeviceKey]) -> bool:
    return any((d.driver, d.pool, d.device) in keys for d in devices)
