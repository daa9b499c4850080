"""Per-container metrics from libvgpu's shared regions, read at scrape time (DESIGN §2 step 6).

Every container that got a share writes one usage region (in its claim directory
``<host-lib-dir>/claims/<uid>/``): per device the bytes its processes hold, the utilisation the
library last measured and the time of the last kernel launch. The container can write that file, so
the limit and the device of each figure come from the driver's own limits file instead, as recorded
in the checkpoint (:mod:`isolation.limits`): the one mounted at libvgpu's limits path in each CDI
device names the region; the request (= the container) is the CDI device's request. Nothing runs
between scrapes: :class:`ContainerCollector` reads the files when Prometheus asks.

A file that is missing or empty (no CUDA call yet), truncated, foreign (a HAMi-core cache, anything
else), of another layout or written over (its totals fail their checks) is skipped with a debug log
and counted in ``tessera_container_regions``; it never fails the scrape.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from isolation import limits as isolation_limits
from isolation import region as regions
from vendors.base import DeviceInfo, VendorNames

from .checkpoint import ClaimEntry

log = logging.getLogger("dra_driver.metrics")

LABELS = ("namespace", "claim", "claim_uid", "pod", "request", "device", "uuid", "index")
"""Tessera's labels: the claim, its pod(s), the request (one container), the device as published."""
HAMI_LABELS = ("namespace", "pod", "container", "vdevice_index", "device_uuid", "zone")
"""HAMi vGPU monitor's labels; ``vdevice_index`` is the device's CUDA ordinal inside the container."""
HAMI_ZONE = "vGPU"


@dataclass(frozen=True)
class RegionSource:
    """One container's region file, and whose it is."""

    namespace: str
    claim: str
    claim_uid: str
    request: str
    pods: tuple[str, ...]
    path: str
    limits: isolation_limits.Limits
    """The driver's limits of the container (never the region's word)."""


def region_sources(uid: str, entry: ClaimEntry) -> list[RegionSource]:
    """The region files of one prepared claim, one per request: the region its limits file names (the
    file mounted at libvgpu's limits path in its CDI devices, as recorded in the checkpoint), inside
    the claim directory. Pure."""
    if not entry.completed:
        return []
    requests: dict[str, str] = {}
    for device in entry.devices:
        for cdi_id in device.cdi_device_ids:
            if device.request_names:
                requests.setdefault(cdi_id.rpartition("=")[2], device.request_names[0])
    claim_dir = os.path.normpath(entry.claim_dir) + os.sep
    out: dict[str, RegionSource] = {}
    for cdi_device in entry.cdi_spec.get("devices") or []:
        edits = cdi_device.get("containerEdits") or {}
        host = next(
            (
                str(m.get("hostPath"))
                for m in edits.get("mounts") or []
                if m.get("containerPath") == isolation_limits.CONTAINER_PATH
            ),
            "",
        )
        try:
            limits = isolation_limits.parse(entry.files[host])
        except (KeyError, isolation_limits.LimitsError):
            continue
        path = limits.region
        if path in out or not os.path.normpath(path).startswith(claim_dir):
            continue
        request = requests.get(str(cdi_device.get("name"))) or os.path.splitext(os.path.basename(path))[0]
        out[path] = RegionSource(entry.namespace, entry.name, uid, request, entry.pods, path, limits)
    return list(out.values())


SourceProvider = Callable[[], Iterable[RegionSource]]


class ContainerCollector(Collector):
    """Reads every prepared container's region at scrape time."""

    def __init__(
        self,
        names: VendorNames,
        sources: Callable[[], Iterable[RegionSource]],
        devices: Callable[[], Sequence[DeviceInfo]],
        *,
        hami: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._names = names
        self._sources = sources
        self._devices = devices
        self._hami = hami
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "tessera_container_memory_used_bytes",
            "Device memory held by the container's processes (libvgpu's shared region).",
            labels=LABELS,
        )
        limit = GaugeMetricFamily(
            "tessera_container_memory_limit_bytes",
            "The container's device memory limit (the device's memory when the share has no limit).",
            labels=LABELS,
        )
        util = GaugeMetricFamily(
            "tessera_container_utilization_ratio",
            "The container's share of the device's compute (SM) time, 0-1, last measured by libvgpu "
            "(about every second, or every SM-limit period).",
            labels=LABELS,
        )
        age = GaugeMetricFamily(
            "tessera_container_last_kernel_age_seconds",
            "Seconds since the container last launched a kernel on the device (no sample before the first).",
            labels=LABELS,
        )
        files = GaugeMetricFamily(
            "tessera_container_regions",
            "Region files of prepared containers at this scrape, by state: ok, missing (empty: no CUDA call yet), "
            "invalid (truncated, foreign, another layout, or written over; skipped).",
            labels=["state"],
        )
        hami_used = GaugeMetricFamily(
            "hami_vgpu_memory_used_bytes", "Container device memory used (HAMi vGPU monitor name).", labels=HAMI_LABELS
        )
        hami_limit = GaugeMetricFamily(
            "hami_vgpu_memory_limit_bytes",
            "Container device memory limit (HAMi vGPU monitor name).",
            labels=HAMI_LABELS,
        )
        hami_util = GaugeMetricFamily(
            "hami_container_device_utilization_ratio",
            "Container device utilisation, 0-100 (HAMi vGPU monitor name and scale).",
            labels=HAMI_LABELS,
        )
        hami_age = GaugeMetricFamily(
            "hami_container_last_kernel_elapsed_seconds",
            "Seconds since the container's last kernel launch (HAMi vGPU monitor name).",
            labels=HAMI_LABELS,
        )
        states = {"ok": 0, "missing": 0, "invalid": 0}
        by_uuid = {d.uuid: d for d in self._devices()}
        now = self._clock()
        seen_hami: set[tuple[str, ...]] = set()
        for source in self._sources():
            state, region = _read(source)
            states[state] += 1
            if region is None:
                continue
            pods = ",".join(source.pods)
            for dev in region.devices:
                if dev.index >= len(source.limits.devices):
                    continue  # not one of the container's devices (the region is the container's to write)
                mine = source.limits.devices[dev.index]
                info = by_uuid.get(mine.uuid)
                name = self._names.device_name(info.index) if info else ""
                index = str(info.index) if info else ""
                labels = [
                    source.namespace, source.claim, source.claim_uid, pods, source.request, name, mine.uuid, index
                ]
                memory_limit = mine.memory_bytes or (info.memory_bytes if info else 0)
                memory_used = dev.memory_used
                if memory_used >= regions.USED_INVALID and memory_limit:
                    memory_used = memory_limit  # a damaged live slot: libvgpu counts the device as full
                since = max(0.0, now - dev.last_kernel_unix) if dev.last_kernel_unix else None
                used.add_metric(labels, float(memory_used))
                if memory_limit:
                    limit.add_metric(labels, float(memory_limit))
                util.add_metric(labels, dev.utilization)
                if since is not None:
                    age.add_metric(labels, since)
                if not self._hami:
                    continue
                hami = (source.namespace, pods, source.request, str(dev.index), mine.uuid, HAMI_ZONE)
                if hami in seen_hami:
                    # Two claims of one pod-less namespace with the same request on one device: HAMi's
                    # labels cannot tell them apart (Tessera's can); a duplicate series would fail the scrape.
                    log.debug(
                        "HAMi labels not unique; series left out",
                        extra={"claim": _claim(source), "uid": source.claim_uid},
                    )
                    continue
                seen_hami.add(hami)
                hami_used.add_metric(list(hami), float(memory_used))
                if memory_limit:
                    hami_limit.add_metric(list(hami), float(memory_limit))
                hami_util.add_metric(list(hami), dev.utilization * 100.0)
                if since is not None:
                    hami_age.add_metric(list(hami), since)
        for state, count in states.items():
            files.add_metric([state], float(count))
        yield from (used, limit, util, age, files)
        if self._hami:
            yield from (hami_used, hami_limit, hami_util, hami_age)


def _claim(source: RegionSource) -> str:
    return f"{source.namespace}/{source.claim}"


def _read(source: RegionSource) -> tuple[str, regions.Region | None]:
    """Read one region; never raises (a scrape must not fail on one container's file)."""
    try:
        return "ok", regions.read_region(source.path)
    except regions.RegionError as exc:
        # the driver creates the file empty: nothing written yet counts as missing
        state = "missing" if not os.path.exists(source.path) or not os.path.getsize(source.path) else "invalid"
        log.debug(
            "region file skipped",
            extra={
                "claim": _claim(source),
                "uid": source.claim_uid,
                "path": source.path,
                "state": state,
                "error": str(exc),
            },
        )
    except Exception as exc:  # a reader bug must not take the scrape down
        state = "invalid"
        log.debug(
            "region file unreadable",
            extra={"claim": _claim(source), "uid": source.claim_uid, "path": source.path, "error": repr(exc)},
        )
    return state, None
