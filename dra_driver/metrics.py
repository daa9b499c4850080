"""Prometheus metrics of the driver, on ``--metrics-port`` (``/metrics``).

Tessera's own names start with ``tessera_dra_`` (the driver, its devices' allocation and health),
``tessera_container_`` (each prepared container, from libvgpu's shared regions; see
:mod:`container_metrics`) and ``tessera_device_`` (the devices' host figures, :mod:`telemetry`).
With ``--hami-metrics`` the per-container and host figures are also exported under the names of
HAMi's vGPU monitor, HAMi's node-side exporter (``hami_vgpu_memory_used_bytes``, ``hami_host_gpu_*``
and friends, const label ``zone="vGPU"``), so existing HAMi dashboards keep working. The names of
HAMi's scheduler (``hami_gpu_*``, ``hami_node_gpu_*``: allocation per device) belong to the cluster
exporter (:mod:`tessera_exporter`), which sees every node's allocations; the driver's own view of its
devices' allocation is ``tessera_dra_device_*``. Device and container figures
are computed at scrape time; a scrape renders in a thread of the metrics server's own small pool
(it reads the region files), never in the threads prepares use, and answers 503 after
:data:`SCRAPE_DEADLINE` seconds or when every metrics thread is still busy: a scrape can never
starve a prepare, and a stuck scrape never queues more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from vendors.base import MIB, DeviceInfo, VendorNames

from .container_metrics import ContainerCollector, RegionSource, SourceProvider
from .telemetry import Telemetry

log = logging.getLogger("dra_driver.metrics")

SCRAPE_WORKERS = 2
"""Threads that render scrapes (their own pool)."""
SCRAPE_DEADLINE = 10.0
"""Seconds a scrape may take before it is answered 503 (Prometheus' default scrape timeout)."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class DeviceUsage:
    """What prepared claims hold of one device."""

    memory_bytes: int = 0
    cores: int = 0
    shares: int = 0


UsageProvider = Callable[[], Mapping[str, DeviceUsage]]
"""Device name -> usage, computed from the checkpoint at scrape time."""


@dataclass(frozen=True)
class DeviceHealthFigures:
    """One device's health for the metrics: healthy or not, and its current faults by kind."""

    healthy: bool
    faults: Mapping[str, int]


HealthProvider = Callable[[], Mapping[str, DeviceHealthFigures]]
"""Device name -> health, from the device health monitor."""


class _DeviceCollector(Collector):
    def __init__(self, owner: DriverMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterable[GaugeMetricFamily]:
        owner = self._owner
        usage = owner.usage_provider() if owner.usage_provider else {}
        labels = ["device", "uuid", "index", "type"]
        devices = GaugeMetricFamily("tessera_dra_devices", "Devices this driver publishes, by model.", labels=["type"])
        total = GaugeMetricFamily("tessera_dra_device_memory_bytes", "Published memory of each device.", labels=labels)
        mem = GaugeMetricFamily(
            "tessera_dra_device_allocated_memory_bytes", "Memory of each device held by prepared claims.", labels=labels
        )
        cores = GaugeMetricFamily(
            "tessera_dra_device_allocated_cores_percent",
            "Cores (percent of SM time) of each device held by prepared claims.",
            labels=labels,
        )
        shares = GaugeMetricFamily(
            "tessera_dra_device_shares", "Prepared shares (allocations) on each device.", labels=labels
        )
        by_model: dict[str, int] = {}
        for d in owner.devices:
            by_model[d.model] = by_model.get(d.model, 0) + 1
            name = owner.names.device_name(d.index)
            values = [name, d.uuid, str(d.index), d.model]
            u = usage.get(name, DeviceUsage())
            total.add_metric(values, float((d.memory_bytes // MIB) * MIB))
            mem.add_metric(values, float(u.memory_bytes))
            cores.add_metric(values, float(u.cores))
            shares.add_metric(values, float(u.shares))
        for model, count in sorted(by_model.items()):
            devices.add_metric([model], float(count))
        yield from (devices, total, mem, cores, shares)
        health = owner.health_provider() if owner.health_provider else {}
        if health:
            healthy = GaugeMetricFamily(
                "tessera_dra_device_healthy",
                "1 while the device is healthy; 0 while it has a fault or its health is unknown.",
                labels=labels,
            )
            faults = GaugeMetricFamily(
                "tessera_dra_device_faults",
                "Current faults of the device by kind (xid, ecc, device-lost, vendor-tool).",
                labels=[*labels, "kind"],
            )
            for d in owner.devices:
                name = owner.names.device_name(d.index)
                h = health.get(name)
                if h is None:
                    continue
                values = [name, d.uuid, str(d.index), d.model]
                healthy.add_metric(values, 1.0 if h.healthy else 0.0)
                for kind, count in sorted(h.faults.items()):
                    faults.add_metric([*values, kind], float(count))
            yield from (healthy, faults)


class DriverMetrics:
    """Every metric of one driver instance, in its own registry."""

    def __init__(self, names: VendorNames, node: str, *, hami: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        """Every metric of the driver."""
        self.standard = CollectorRegistry(auto_describe=True)
        """Where every part of the driver registers its counters, gauges and histograms of
        prometheus_client (rendered by it; the watchdog's too)."""
        self.names = names
        self.node = node
        self.hami = hami
        self.devices: Sequence[DeviceInfo] = ()
        self.usage_provider: UsageProvider | None = None
        self.region_provider: SourceProvider | None = None
        """The region files of prepared containers (set by the preparer, from the checkpoint)."""
        self.health_provider: HealthProvider | None = None
        """Each device's health (set by the driver, from the device health monitor)."""
        self.telemetry: Telemetry | None = None
        """The backend's own device figures (NVML); ``None``: summed from the containers' regions."""
        r = self.standard
        self.prepares = Counter(
            "tessera_dra_prepares", "Claims prepared, by result (ok, error).", ["result"], registry=r
        )
        self.prepare_errors = Counter(
            "tessera_dra_prepare_errors",
            "Claims whose prepare failed, by reason (api, claim, conflict, config, io).",
            ["reason"],
            registry=r,
        )
        self.unprepares = Counter(
            "tessera_dra_unprepares", "Claims unprepared, by result (ok, error).", ["result"], registry=r
        )
        self.prepare_seconds = Histogram(
            "tessera_dra_prepare_duration_seconds",
            "Time to prepare one claim (API read, CDI write and checkpoint included).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.slice_publish = Counter(
            "tessera_dra_slice_reconciles",
            "ResourceSlice reconciles, by result (changed, unchanged, error).",
            ["result"],
            registry=r,
        )
        self.slice_publish_seconds = Histogram(
            "tessera_dra_slice_publish_duration_seconds",
            "Time to publish a changed pool.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sharing_enabled = Gauge(
            "tessera_dra_sharing_enabled",
            "1 when devices are published as shareable; 0 when the API server dropped the consumable-capacity "
            "fields (DRAConsumableCapacity gate off) and devices are published whole.",
            registry=r,
        )
        self.fields_dropped = Counter(
            "tessera_dra_consumable_capacity_dropped",
            "Times the API server was found dropping allowMultipleAllocations or request policies.",
            registry=r,
        )
        self.prepared_claims = Gauge("tessera_dra_prepared_claims", "Claims in the checkpoint.", registry=r)
        self._collectors: list[Collector] = [
            _DeviceCollector(self),
            ContainerCollector(
                names,
                self._region_sources,
                lambda: self.devices,
                hami=hami,
                node=node,
                device_figures=lambda: self.telemetry,
            ),
        ]
        self.registry.register(self.standard)
        for collector in self._collectors:
            self.registry.register(collector)

    def _region_sources(self) -> list[RegionSource]:
        return list(self.region_provider()) if self.region_provider else []

    def render(self) -> bytes:
        """The text exposition: prometheus_client renders its own metrics; the per-device and
        per-container families (most of the series) are rendered by :func:`gauge_text`, several times
        faster than the library's per-sample escaping and validation of label names."""
        parts = [generate_latest(self.standard)]
        for collector in self._collectors:
            parts.extend(gauge_text(family) for family in collector.collect())
        return b"".join(parts)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def gauge_text(family: Metric) -> bytes:
    """One gauge family in the Prometheus text format (HELP, TYPE, one line per sample), as
    ``generate_latest`` writes it. Our label names are fixed identifiers; values are escaped."""
    lines = [f"# HELP {family.name} {_help(family.documentation)}", f"# TYPE {family.name} {family.type}"]
    for sample in family.samples:
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
        value = floatToGoString(sample.value)  # type: ignore[no-untyped-call]
        lines.append(f"{sample.name}{{{labels}}} {value}" if labels else f"{sample.name} {value}")
    return ("\n".join(lines) + "\n").encode()


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Renderer:
    """Renders scrapes in its own threads, at most :data:`SCRAPE_WORKERS` at a time, each within a
    deadline: the container figures read one file per prepared container, and none of that may
    happen on the event loop or in the threads prepares use."""

    def __init__(self, metrics: DriverMetrics, *, workers: int = SCRAPE_WORKERS, deadline: float = SCRAPE_DEADLINE):
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metrics")
        self._workers = workers
        self._deadline = deadline
        self._running = 0

    async def handle(self, _: web.Request) -> web.Response:
        if self._running >= self._workers:
            log.warning("scrape refused: every metrics thread is still busy", extra={"busy": self._running})
            return web.Response(status=503, text="a previous scrape is still being rendered; try again later\n")
        self._running += 1
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._metrics.render)
        future.add_done_callback(self._done)  # on the event loop, when the thread really finishes
        try:
            body = await asyncio.wait_for(asyncio.shield(future), timeout=self._deadline)
        except TimeoutError:
            log.warning("scrape took too long; answered 503", extra={"deadline_s": self._deadline})
            return web.Response(status=503, text=f"the scrape took more than {self._deadline:g}s\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _done(self, _: object) -> None:
        self._running -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def serve(metrics: DriverMetrics, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` over HTTP; the caller cleans up the returned runner."""
    renderer = Renderer(metrics)
    app = web.Application()
    app.router.add_get("/metrics", renderer.handle)

    async def close(_: web.Application) -> None:
        renderer.close()

    app.on_cleanup.append(close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics listening", extra={"address": f"{host}:{port}", "hami_names": metrics.hami})
    return runner
