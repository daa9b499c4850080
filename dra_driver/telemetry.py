"""Host figures of each device for ``/metrics``: memory, utilisation, temperature and power.

The NVIDIA backend reads them from NVML at scrape time (:class:`dra_driver.backends.nvml.NvmlTelemetry`);
backends without such a reading (the mock backend, the vendor tools for now) report what the node's
containers hold, summed from libvgpu's regions (:func:`from_containers`): memory used and utilisation,
no temperature or power. :func:`families` turns them into the metric families, Tessera's names and,
with ``--hami-metrics``, HAMi's vGPU monitor names (``hami_host_gpu_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from vendors.base import MIB, DeviceInfo, VendorNames

DEVICE_LABELS = ("device", "uuid", "index", "type")
HAMI_HOST_LABELS = ("node", "device_index", "device_uuid", "device_type", "zone")
HAMI_ZONE = "vGPU"


@dataclass(frozen=True)
class DeviceFigures:
    """What one device reports; ``None`` where the backend has no reading."""

    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    utilization: float | None = None
    """Busy fraction of the compute engine, 0-1."""
    temperature_celsius: float | None = None
    power_watts: float | None = None


Telemetry = Callable[[Sequence[DeviceInfo]], Mapping[str, DeviceFigures]]
"""Device UUID -> figures; blocking (the scrape calls it in its worker thread); never raises."""


def from_containers(
    devices: Sequence[DeviceInfo], used: Mapping[str, int], busy: Mapping[str, float]
) -> dict[str, DeviceFigures]:
    """Figures summed from the containers' regions: memory held and SM time, per device UUID. Pure."""
    return {
        d.uuid: DeviceFigures(
            memory_used_bytes=int(used.get(d.uuid, 0)),
            memory_total_bytes=(d.memory_bytes // MIB) * MIB,
            utilization=min(1.0, float(busy.get(d.uuid, 0.0))),
        )
        for d in devices
    }


def families(
    names: VendorNames,
    node: str,
    devices: Sequence[DeviceInfo],
    figures: Mapping[str, DeviceFigures],
    *,
    hami: bool,
) -> Iterator[GaugeMetricFamily]:
    """The ``tessera_device_*`` families (and ``hami_host_gpu_*`` with ``hami``). Pure."""
    used = GaugeMetricFamily(
        "tessera_device_memory_used_bytes",
        "Device memory in use, all processes (the backend's reading).",
        labels=DEVICE_LABELS,
    )
    total = GaugeMetricFamily(
        "tessera_device_memory_total_bytes", "Device memory in total (the backend's reading).", labels=DEVICE_LABELS
    )
    util = GaugeMetricFamily(
        "tessera_device_utilization_ratio", "Busy fraction of the device's compute, 0-1.", labels=DEVICE_LABELS
    )
    temp = GaugeMetricFamily(
        "tessera_device_temperature_celsius", "Device temperature (where the backend reports it).", labels=DEVICE_LABELS
    )
    power = GaugeMetricFamily(
        "tessera_device_power_watts", "Device power draw (where the backend reports it).", labels=DEVICE_LABELS
    )
    hami_used = GaugeMetricFamily(
        "hami_host_gpu_memory_used_bytes", "Device memory in use (HAMi vGPU monitor name).", labels=HAMI_HOST_LABELS
    )
    hami_util = GaugeMetricFamily(
        "hami_host_gpu_utilization_ratio",
        "Device utilisation, 0-100 (HAMi vGPU monitor name and scale).",
        labels=HAMI_HOST_LABELS,
    )
    for d in devices:
        f = figures.get(d.uuid)
        if f is None:
            continue
        labels = [names.device_name(d.index), d.uuid, str(d.index), d.model]
        hami_labels = [node, str(d.index), d.uuid, d.model, HAMI_ZONE]
        if f.memory_used_bytes is not None:
            used.add_metric(labels, float(f.memory_used_bytes))
            hami_used.add_metric(hami_labels, float(f.memory_used_bytes))
        if f.memory_total_bytes is not None:
            total.add_metric(labels, float(f.memory_total_bytes))
        if f.utilization is not None:
            util.add_metric(labels, f.utilization)
            hami_util.add_metric(hami_labels, f.utilization * 100.0)
        if f.temperature_celsius is not None:
            temp.add_metric(labels, f.temperature_celsius)
        if f.power_watts is not None:
            power.add_metric(labels, f.power_watts)
    yield from (used, total, util, temp, power)
    if hami:
        yield from (hami_used, hami_util)
