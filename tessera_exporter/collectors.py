"""Prometheus collectors of the cluster exporter, computed at scrape time from a :class:`ClusterView`.

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

Other collectors (e.g. quota, ``hami_resource_quota_*``) are added to the exporter's registry with
:meth:`tessera_exporter.exporter.Exporter.add_collector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vendors.base import MIB

from .model import ClusterView, DeviceView

if TYPE_CHECKING:
    from kubeapi.informer import Informer

HAMI_ZONE = "vGPU"
HAMI_DEVICE_LABELS = ["node", "device_uuid", "device_index", "device_type", "zone"]
HAMI_CONTAINER_LABELS = ["namespace", "node", "pod", "container_index", "device_uuid", "zone"]
DEVICE_LABELS = ["node", "device_uuid", "device_index", "device_type"]
SHARE_LABELS = ["namespace", "pod", "container", "claim", "request", "share_id", "device_uuid"]

ViewSource = Callable[[], ClusterView]


def _device(v: DeviceView) -> list[str]:
    d = v.device
    return [d.node, d.uuid, d.index, d.type]


class HamiCollector(Collector):
    """HAMi scheduler's allocation metrics (current names, ``hami_*``)."""

    def __init__(self, source: ViewSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        view = self._source()
        limit = GaugeMetricFamily("hami_gpu_memory_limit_bytes", "Device memory published.", labels=HAMI_DEVICE_LABELS)
        core_limit = GaugeMetricFamily(
            "hami_gpu_core_limit_ratio", "Device cores published, 0-100.", labels=HAMI_DEVICE_LABELS
        )
        allocated = GaugeMetricFamily(
            "hami_gpu_memory_allocated_bytes",
            "Device memory held by allocated claims.",
            labels=["node", "device_uuid", "device_index", "device_cores", "device_type", "zone"],
        )
        core_allocated = GaugeMetricFamily(
            "hami_gpu_core_allocated_ratio", "Device cores held by allocated claims, 0-100.", labels=HAMI_DEVICE_LABELS
        )
        shared = GaugeMetricFamily(
            "hami_gpu_shared_count", "Shares (allocation results) on the device.", labels=HAMI_DEVICE_LABELS
        )
        overview = GaugeMetricFamily(
            "hami_node_gpu_overview",
            "Device memory held by allocated claims, with the device's cores and memory (MiB) as labels.",
            labels=[
                "node",
                "device_uuid",
                "device_index",
                "device_cores",
                "device_memory_limit",
                "device_type",
                "zone",
            ],
        )
        ratio = GaugeMetricFamily(
            "hami_node_gpu_memory_allocated_ratio",
            "Device memory held by allocated claims over the memory published, 0-1.",
            labels=HAMI_DEVICE_LABELS,
        )
        for v in view.devices:
            d = v.device
            if not d.uuid:
                continue
            base = [*_device(v), HAMI_ZONE]
            total_cores = str(d.cores if d.cores is not None else 100)
            memory = float(d.memory or 0)
            limit.add_metric(base, memory)
            core_limit.add_metric(base, float(d.cores if d.cores is not None else 100))
            allocated.add_metric([d.node, d.uuid, d.index, total_cores, d.type, HAMI_ZONE], float(v.memory_allocated))
            core_allocated.add_metric(base, float(v.cores_allocated))
            shared.add_metric(base, float(v.shares_allocated))
            overview.add_metric(
                [d.node, d.uuid, d.index, total_cores, str((d.memory or 0) // MIB), d.type, HAMI_ZONE],
                float(v.memory_allocated),
            )
            ratio.add_metric(base, v.memory_allocated / memory if memory else 0.0)
        yield from (limit, core_limit, allocated, core_allocated, shared, overview, ratio)
        memory_by: dict[tuple[str, ...], float] = {}
        cores_by: dict[tuple[str, ...], float] = {}
        for share in view.shares:
            if not share.pod or not share.device_uuid:
                continue
            labels = (share.namespace, share.node, share.pod, share.container_index, share.device_uuid, HAMI_ZONE)
            memory_by[labels] = memory_by.get(labels, 0.0) + share.memory
            cores_by[labels] = cores_by.get(labels, 0.0) + share.cores
        yield _family("hami_vgpu_memory_allocated_bytes", "A container's memory on a device.", memory_by)
        yield _family("hami_vgpu_core_allocated_ratio", "A container's cores on a device, 0-100.", cores_by)


def _family(name: str, doc: str, values: Mapping[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=HAMI_CONTAINER_LABELS)
    for labels, value in values.items():
        family.add_metric(list(labels), value)
    return family


class ClusterCollector(Collector):
    """Tessera's own cluster figures (``tessera_cluster_*``): device names and shares capacity, device
    taints, each share with its pod and container, pending pods and claims with the scheduler's reason."""

    def __init__(self, source: ViewSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        view = self._source()
        info = GaugeMetricFamily(
            "tessera_cluster_device_info",
            "A published device of our drivers (value 1); joins device names to uuids.",
            labels=["node", "driver", "pool", "device", "device_uuid", "device_index", "device_type", "product_name"],
        )
        capacity = GaugeMetricFamily(
            "tessera_cluster_device_shares", "Shares the device can carry (its published shares).", labels=DEVICE_LABELS
        )
        taints = GaugeMetricFamily(
            "tessera_cluster_device_taint_info",
            "A device taint in the device's ResourceSlice (value 1): no new share lands on it (NoSchedule), "
            "or shares on it are evicted (NoExecute).",
            labels=[*DEVICE_LABELS, "key", "value", "effect"],
        )
        for v in view.devices:
            d = v.device
            info.add_metric([d.node, d.driver, d.pool, d.name, d.uuid, d.index, d.type, d.product_name], 1.0)
            if d.shares is not None:
                capacity.add_metric(_device(v), float(d.shares))
            seen: set[tuple[str, str, str]] = set()
            for taint in d.taints:
                if (taint.key, taint.value, taint.effect) not in seen:
                    seen.add((taint.key, taint.value, taint.effect))
                    taints.add_metric([*_device(v), taint.key, taint.value, taint.effect], 1.0)
        yield from (info, capacity, taints)
        share_info = GaugeMetricFamily(
            "tessera_cluster_share_info",
            "A share (allocation result) held by a container (value 1); pod and container empty while no pod holds it.",
            labels=["namespace", "pod", "container", "container_index", "claim", "request", "share_id", "node",
                    "driver", "pool", "device", "device_uuid"],
        )  # fmt: skip
        share_memory = GaugeMetricFamily(
            "tessera_cluster_share_memory_bytes", "Memory of a share, as allocated.", labels=SHARE_LABELS
        )
        share_cores = GaugeMetricFamily(
            "tessera_cluster_share_cores_percent", "Cores of a share (percent of the device), as allocated.",
            labels=SHARE_LABELS,
        )  # fmt: skip
        for s in view.shares:
            share_info.add_metric(
                [s.namespace, s.pod, s.container, s.container_index, s.claim, s.request, s.share_id, s.node,
                 s.driver, s.pool, s.device, s.device_uuid], 1.0
            )  # fmt: skip
            labels = [s.namespace, s.pod, s.container, s.claim, s.request, s.share_id, s.device_uuid]
            share_memory.add_metric(labels, float(s.memory))
            share_cores.add_metric(labels, float(s.cores))
        yield from (share_info, share_memory, share_cores)
        pending = GaugeMetricFamily(
            "tessera_cluster_pending_pod_info",
            "A pod using claims that waits to be scheduled (value 1), with the scheduler's reason and message.",
            labels=["namespace", "pod", "reason", "message"],
        )
        by_reason: dict[str, int] = {}
        for p in view.pending_pods:
            pending.add_metric([p.namespace, p.name, p.reason, p.message], 1.0)
            by_reason[p.reason] = by_reason.get(p.reason, 0) + 1
        count = GaugeMetricFamily(
            "tessera_cluster_pending_pods", "Pods waiting to be scheduled, by reason.", labels=["reason"]
        )
        for reason, n in sorted(by_reason.items()):
            count.add_metric([reason], float(n))
        claims = GaugeMetricFamily(
            "tessera_cluster_pending_claim_info",
            "A claim of our device classes not allocated yet (value 1), with the reason of the pod waiting for it.",
            labels=["namespace", "claim", "pod", "reason"],
        )
        for c in view.pending_claims:
            claims.add_metric([c.namespace, c.name, c.pod, c.reason], 1.0)
        yield from (pending, count, claims)


class InformerCollector(Collector):
    """The exporter's own health: per watched resource, whether it is synced, how many objects it
    holds, how many watch events and lists it has seen."""

    def __init__(self, informers: Callable[[], Iterable[tuple[str, Informer]]]) -> None:
        self._informers = informers

    def collect(self) -> Iterator[Metric]:
        synced = GaugeMetricFamily(
            "tessera_cluster_exporter_synced", "1 once the resource's first list is done.", labels=["resource"]
        )
        objects = GaugeMetricFamily(
            "tessera_cluster_exporter_objects", "Objects of the resource in the watch cache.", labels=["resource"]
        )
        events = CounterMetricFamily(
            "tessera_cluster_exporter_watch_events", "Watch events applied.", labels=["resource"]
        )
        lists = CounterMetricFamily(
            "tessera_cluster_exporter_lists",
            "Lists of the resource (1 at start; more after 410 Gone or a lost connection).",
            labels=["resource"],
        )
        for resource, informer in self._informers():
            synced.add_metric([resource], 1.0 if informer.synced.is_set() else 0.0)
            objects.add_metric([resource], float(len(informer.cache)))
            events.add_metric([resource], float(informer.events))
            lists.add_metric([resource], float(informer.lists))
        yield from (synced, objects, events, lists)
