"""The cluster exporter's metrics: a :class:`ClusterView` as Prometheus text, at scrape time.

Where HAMi's scheduler exports a figure with the same meaning, it is exported under HAMi's current
name and labels (``hami_*``, const label ``zone="vGPU"``), so dashboards and alerts written for
HAMi keep working; the rest is ``tessera_cluster_*``.

Per device (labels ``node device_uuid device_index device_type``, plus ``zone`` on HAMi's names):

* ``hami_gpu_memory_limit_bytes``, ``hami_gpu_core_limit_ratio``: published memory, cores (100);
* ``hami_gpu_memory_allocated_bytes`` (+ ``device_cores``), ``hami_gpu_core_allocated_ratio``: memory
  and cores (0-100) held by allocated claims; ``hami_gpu_shared_count``: shares (allocation results);
* ``hami_node_gpu_overview`` (+ ``device_cores device_memory_limit``, MiB): memory held;
  ``hami_node_gpu_memory_allocated_ratio``: memory held over memory published (0-1);
* ``tessera_cluster_device_info`` (+ ``driver pool device product_name``, value 1): joins a device's
  name to its uuid; ``tessera_cluster_device_shares``: shares the device can carry;
  ``tessera_cluster_device_taint_info`` (+ ``key value effect``, value 1): each device taint of its slice.

Per container and device, HAMi's (labels ``namespace node pod container_index device_uuid zone``):
``hami_vgpu_memory_allocated_bytes``, ``hami_vgpu_core_allocated_ratio``.

Per share (allocation result) and holder: ``tessera_cluster_share_info`` (value 1, labels ``namespace
pod container container_index claim request share_id node driver pool device device_uuid``; pod and
container empty while nothing holds it), ``tessera_cluster_share_memory_bytes`` and
``tessera_cluster_share_cores_percent`` (labels ``namespace pod container claim request share_id
device_uuid``).

Waiting: ``tessera_cluster_pending_pod_info`` (``namespace pod reason message``, value 1),
``tessera_cluster_pending_pods`` (by ``reason``), ``tessera_cluster_pending_claim_info`` (``namespace
claim pod reason``, value 1).

The text is written here rather than through ``prometheus_client``'s generic collectors, whose
per-label checks cost about 50 us a series (0.6 s for a cluster of 800 devices and 1,000 shares); the
lines of a device or a share are kept from one scrape to the next while it does not change. Other
collectors (the exporter's own health; quota, ``hami_resource_quota_*``, later) go through the
exporter's ``prometheus_client`` registry and are appended.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vendors.base import MIB

from .model import ClusterView, Device, Share

HAMI_ZONE = "vGPU"


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    type: str = "gauge"


def _labels(*names: str) -> tuple[str, ...]:
    return names


DEVICE = _labels("node", "device_uuid", "device_index", "device_type")
HAMI_DEVICE = (*DEVICE, "zone")
HAMI_CONTAINER = _labels("namespace", "node", "pod", "container_index", "device_uuid", "zone")
SHARE = _labels("namespace", "pod", "container", "claim", "request", "share_id", "device_uuid")

MEMORY_LIMIT = Family("hami_gpu_memory_limit_bytes", "Device memory published.", HAMI_DEVICE)
CORE_LIMIT = Family("hami_gpu_core_limit_ratio", "Device cores published, 0-100.", HAMI_DEVICE)
MEMORY_ALLOCATED = Family(
    "hami_gpu_memory_allocated_bytes",
    "Device memory held by allocated claims.",
    ("node", "device_uuid", "device_index", "device_cores", "device_type", "zone"),
)
CORE_ALLOCATED = Family("hami_gpu_core_allocated_ratio", "Device cores held by allocated claims, 0-100.", HAMI_DEVICE)
SHARED = Family("hami_gpu_shared_count", "Shares (allocation results) on the device.", HAMI_DEVICE)
OVERVIEW = Family(
    "hami_node_gpu_overview",
    "Device memory held by allocated claims, with the device's cores and memory (MiB) as labels.",
    ("node", "device_uuid", "device_index", "device_cores", "device_memory_limit", "device_type", "zone"),
)
MEMORY_RATIO = Family(
    "hami_node_gpu_memory_allocated_ratio",
    "Device memory held by allocated claims over the memory published, 0-1.",
    HAMI_DEVICE,
)
DEVICE_INFO = Family(
    "tessera_cluster_device_info",
    "A published device of our drivers (value 1); joins device names to uuids.",
    ("node", "driver", "pool", "device", "device_uuid", "device_index", "device_type", "product_name"),
)
DEVICE_SHARES = Family("tessera_cluster_device_shares", "Shares the device can carry (its published shares).", DEVICE)
TAINT = Family(
    "tessera_cluster_device_taint_info",
    "A device taint in the device's ResourceSlice (value 1): no new share lands on it (NoSchedule), or "
    "shares on it are evicted (NoExecute).",
    (*DEVICE, "key", "value", "effect"),
)
DEVICE_FAMILIES = (
    MEMORY_LIMIT, CORE_LIMIT, MEMORY_ALLOCATED, CORE_ALLOCATED, SHARED, OVERVIEW, MEMORY_RATIO, DEVICE_INFO,
    DEVICE_SHARES, TAINT,
)  # fmt: skip
VGPU_MEMORY = Family("hami_vgpu_memory_allocated_bytes", "A container's memory on a device.", HAMI_CONTAINER)
VGPU_CORES = Family("hami_vgpu_core_allocated_ratio", "A container's cores on a device, 0-100.", HAMI_CONTAINER)
SHARE_INFO = Family(
    "tessera_cluster_share_info",
    "A share (allocation result) held by a container (value 1); pod and container empty while no pod holds it.",
    ("namespace", "pod", "container", "container_index", "claim", "request", "share_id", "node", "driver", "pool",
     "device", "device_uuid"),
)  # fmt: skip
SHARE_MEMORY = Family("tessera_cluster_share_memory_bytes", "Memory of a share, as allocated.", SHARE)
SHARE_CORES = Family(
    "tessera_cluster_share_cores_percent", "Cores of a share (percent of the device), as allocated.", SHARE
)
SHARE_FAMILIES = (SHARE_INFO, SHARE_MEMORY, SHARE_CORES)
PENDING_POD = Family(
    "tessera_cluster_pending_pod_info",
    "A pod using claims that waits to be scheduled (value 1), with the scheduler's reason and message.",
    ("namespace", "pod", "reason", "message"),
)
PENDING_PODS = Family("tessera_cluster_pending_pods", "Pods waiting to be scheduled, by reason.", ("reason",))
PENDING_CLAIM = Family(
    "tessera_cluster_pending_claim_info",
    "A claim of our device classes not allocated yet (value 1), with the reason of the pod waiting for it.",
    ("namespace", "claim", "pod", "reason"),
)
FAMILIES = (*DEVICE_FAMILIES, VGPU_MEMORY, VGPU_CORES, *SHARE_FAMILIES, PENDING_POD, PENDING_PODS, PENDING_CLAIM)
"""Every family, in the order of the exposition."""


def escape(value: str) -> str:
    """A label value as the text format writes it (backslash, double quote and newline escaped)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def line(family: Family, values: Sequence[str], value: float) -> str:
    pairs = ",".join(f'{k}="{escape(v)}"' for k, v in zip(family.labels, values, strict=True))
    return f"{family.name}{{{pairs}}} {number(value)}\n"


def header(family: Family) -> str:
    return f"# HELP {family.name} {family.help}\n# TYPE {family.name} {family.type}\n"


DeviceKey = tuple[Device, int, int, int]


def device_lines(key: DeviceKey) -> tuple[str, ...]:
    """One device's lines, one string per family of :data:`DEVICE_FAMILIES` (empty when none)."""
    d, memory_allocated, cores_allocated, shares_allocated = key
    if not d.uuid:
        hami = ("",) * 7
    else:
        base = (d.node, d.uuid, d.index, d.type, HAMI_ZONE)
        total_cores = d.cores if d.cores is not None else 100
        memory = d.memory or 0
        hami = (
            line(MEMORY_LIMIT, base, memory),
            line(CORE_LIMIT, base, total_cores),
            line(MEMORY_ALLOCATED, (d.node, d.uuid, d.index, str(total_cores), d.type, HAMI_ZONE), memory_allocated),
            line(CORE_ALLOCATED, base, cores_allocated),
            line(SHARED, base, shares_allocated),
            line(OVERVIEW, (d.node, d.uuid, d.index, str(total_cores), str(memory // MIB), d.type, HAMI_ZONE),
                 memory_allocated),
            line(MEMORY_RATIO, base, memory_allocated / memory if memory else 0.0),
        )  # fmt: skip
    device = (d.node, d.uuid, d.index, d.type)
    info = line(DEVICE_INFO, (d.node, d.driver, d.pool, d.name, d.uuid, d.index, d.type, d.product_name), 1)
    shares = line(DEVICE_SHARES, device, d.shares) if d.shares is not None else ""
    taints = "".join(dict.fromkeys(line(TAINT, (*device, t.key, t.value, t.effect), 1) for t in d.taints))
    return (*hami, info, shares, taints)


def share_lines(s: Share) -> tuple[str, str, str]:
    labels = (s.namespace, s.pod, s.container, s.claim, s.request, s.share_id, s.device_uuid)
    info = (s.namespace, s.pod, s.container, s.container_index, s.claim, s.request, s.share_id, s.node, s.driver,
            s.pool, s.device, s.device_uuid)  # fmt: skip
    return line(SHARE_INFO, info, 1), line(SHARE_MEMORY, labels, s.memory), line(SHARE_CORES, labels, s.cores)


class Renderer:
    """Renders views; the lines of each device and share are reused while they do not change (the
    cache holds what the last scrape showed, nothing more)."""

    def __init__(self) -> None:
        self._devices: dict[DeviceKey, tuple[str, ...]] = {}
        self._shares: dict[Share, tuple[str, str, str]] = {}
        self._lines: dict[tuple[Family, tuple[str, ...], float], str] = {}

    def render(self, view: ClusterView) -> str:
        devices: dict[DeviceKey, tuple[str, ...]] = {}
        for v in view.devices:
            dkey = (v.device, v.memory_allocated, v.cores_allocated, v.shares_allocated)
            devices[dkey] = self._devices.get(dkey) or device_lines(dkey)
        shares: dict[Share, tuple[str, str, str]] = {}
        for s in view.shares:
            shares[s] = self._shares.get(s) or share_lines(s)
        self._devices, self._shares = devices, shares
        out: list[str] = []
        for i, family in enumerate(DEVICE_FAMILIES):
            out.append(header(family))
            out.extend(lines[i] for lines in devices.values())
        memory: dict[tuple[str, ...], int] = {}
        cores: dict[tuple[str, ...], int] = {}
        for s in view.shares:
            if s.pod and s.device_uuid:
                holder = (s.namespace, s.node, s.pod, s.container_index, s.device_uuid, HAMI_ZONE)
                memory[holder] = memory.get(holder, 0) + s.memory
                cores[holder] = cores.get(holder, 0) + s.cores
        lines: dict[tuple[Family, tuple[str, ...], float], str] = {}

        def cached(family: Family, labels: tuple[str, ...], value: float) -> str:
            key = (family, labels, value)
            text = lines[key] = self._lines.get(key) or line(family, labels, value)
            return text

        out.append(header(VGPU_MEMORY))
        out.extend(cached(VGPU_MEMORY, k, v) for k, v in memory.items())
        out.append(header(VGPU_CORES))
        out.extend(cached(VGPU_CORES, k, v) for k, v in cores.items())
        self._lines = lines
        for i, family in enumerate(SHARE_FAMILIES):
            out.append(header(family))
            out.extend(lines[i] for lines in shares.values())
        out.append(header(PENDING_POD))
        by_reason: dict[str, int] = {}
        for p in view.pending_pods:
            out.append(line(PENDING_POD, (p.namespace, p.name, p.reason, p.message), 1))
            by_reason[p.reason] = by_reason.get(p.reason, 0) + 1
        out.append(header(PENDING_PODS))
        out.extend(line(PENDING_PODS, (reason,), n) for reason, n in sorted(by_reason.items()))
        out.append(header(PENDING_CLAIM))
        out.extend(line(PENDING_CLAIM, (c.namespace, c.name, c.pod, c.reason), 1) for c in view.pending_claims)
        return "".join(out)


def family_names() -> Iterable[str]:
    return (f.name for f in FAMILIES)
