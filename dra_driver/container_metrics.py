"""Per-container metrics, read at scrape time (the node exporter's side of the path of one pod,
docs/architecture.md), and the devices' host figures.

Every prepared container is reported, whether or not it has touched CUDA yet: the prepared claims in
the checkpoint say which containers there are (one per request), which devices each got and the
limits applied (never the region's word: the container can write its region, which holds usage
only). Its use comes from its libvgpu region file (``CUDA_DEVICE_MEMORY_SHARED_CACHE``, in
its claim directory ``<host-lib-dir>/claims/<uid>/``; the path is the env value in the claim's CDI
spec): per device the bytes its processes hold, the utilisation the library last measured and the
time of the last kernel launch. A container without a region yet shows its limit and zero use.
Nothing runs between scrapes: :class:`ContainerCollector` reads the files when Prometheus asks, so a
container whose claim was unprepared is gone from the very next scrape.

A file that is missing or empty (no CUDA call yet; the driver creates it empty), truncated, foreign
(a HAMi-core cache, anything else), of another layout or written over (its totals fail their check
values, on every one of a few reads) is skipped with a debug log and counted in
``tessera_container_regions``; it never fails the scrape. The containers can write their region (and
the driver assumes the worst of their claim directory), so a region is read the safe way
(:mod:`tessera_common.safefs`): a link, a FIFO, a device or an oversized file in its place is skipped
as invalid, never followed or waited on; only its header and device records are read (3 KiB of the
263 KiB: a scrape needs no process slot).

The collector also exports the host figures of each device (:mod:`telemetry`): the backend's own
reading (NVML) or, without one, the sums of the containers' regions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from isolation import env as isolation_env
from isolation import region as regions
from tessera_common import safefs
from vendors.base import DeviceInfo, VendorNames

from . import telemetry
from .checkpoint import ClaimEntry

log = logging.getLogger("dra_driver.metrics")

LABELS = ("namespace", "pod", "container", "claim", "claim_uid", "request", "device", "uuid", "index")
"""Tessera's labels: the pod(s) and container, the claim and its request, the device as published."""
HAMI_LABELS = ("namespace", "pod", "container", "vdevice_index", "device_uuid", "zone")
"""HAMi vGPU monitor's labels; ``vdevice_index`` is the device's CUDA ordinal inside the container."""
HAMI_ZONE = "vGPU"


@dataclass(frozen=True)
class ContainerDevice:
    """One device a container got, as prepared (known before the container touches CUDA)."""

    name: str
    uuid: str
    index: int
    ordinal: int
    """The device's CUDA ordinal inside the container (device-index order)."""
    memory_limit: int
    """Bytes the container may hold on it; the device's memory for a whole device."""


@dataclass(frozen=True)
class RegionSource:
    """One prepared container: whose it is, the devices it got, and its region file."""

    namespace: str
    claim: str
    claim_uid: str
    request: str
    pods: tuple[str, ...]
    path: str
    container: str = ""
    devices: tuple[ContainerDevice, ...] = ()
    claim_dir: str = ""
    """The claim directory the path lies in (opened as the trusted root of the read)."""


def container_devices(
    entry: ClaimEntry, request: str, devices: Mapping[str, DeviceInfo]
) -> tuple[ContainerDevice, ...]:
    """The devices one request of a prepared claim got, with the memory limit applied (two shares of one
    card in one request add up, as in prepare; no memory capacity = the whole device). Pure."""
    holds = {(h.device, h.share_id): h for h in entry.holds}
    limits: dict[str, int | None] = {}
    for prepared in entry.devices:
        if request not in prepared.request_names or prepared.device_name not in devices:
            continue
        hold = holds.get((prepared.device_name, prepared.share_id))
        memory = hold.memory_bytes if hold is not None else None
        if prepared.device_name in limits:
            prev = limits[prepared.device_name]
            limits[prepared.device_name] = None if prev is None or memory is None else prev + memory
        else:
            limits[prepared.device_name] = memory
    ordered = sorted(limits, key=lambda name: devices[name].index)
    return tuple(
        ContainerDevice(
            name=name,
            uuid=devices[name].uuid,
            index=devices[name].index,
            ordinal=ordinal,
            memory_limit=_or(limits[name], devices[name].memory_bytes),
        )
        for ordinal, name in enumerate(ordered)
    )


def region_sources(uid: str, entry: ClaimEntry, devices: Mapping[str, DeviceInfo] | None = None) -> list[RegionSource]:
    """The containers of one prepared claim, one per request, with their region file
    (``CUDA_DEVICE_MEMORY_SHARED_CACHE`` in the env of its CDI devices, inside the claim directory) and,
    given the node's ``devices`` by name, what each got. Pure."""
    if not entry.completed:
        return []
    by_cdi: dict[str, str] = {}
    for device in entry.devices:
        for cdi_id in device.cdi_device_ids:
            if device.request_names:
                by_cdi.setdefault(cdi_id.rpartition("=")[2], device.request_names[0])
    prefix = isolation_env.SHARED_CACHE + "="
    claim_dir = os.path.normpath(entry.claim_dir) + os.sep
    paths: dict[str, str] = {}
    for cdi_device in entry.cdi_spec.get("devices") or []:
        edits = cdi_device.get("containerEdits") or {}
        path = next((e[len(prefix) :] for e in edits.get("env") or [] if str(e).startswith(prefix)), "")
        if not path or not os.path.normpath(path).startswith(claim_dir):
            path = ""
        request = by_cdi.get(str(cdi_device.get("name"))) or (
            os.path.splitext(os.path.basename(path))[0] if path else ""
        )
        if request and (request not in paths or (path and not paths[request])):
            paths[request] = path
    out = []
    for request, path in paths.items():
        got = container_devices(entry, request, devices) if devices is not None else ()
        container = entry.containers.get(request, request)
        out.append(
            RegionSource(entry.namespace, entry.name, uid, request, entry.pods, path, container, got, entry.claim_dir)
        )
    return out


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


SourceProvider = Callable[[], Iterable[RegionSource]]


class ContainerCollector(Collector):
    """Reports every prepared container (its region read at scrape time) and the devices' host figures."""

    def __init__(
        self,
        names: VendorNames,
        sources: Callable[[], Iterable[RegionSource]],
        devices: Callable[[], Sequence[DeviceInfo]],
        *,
        hami: bool = False,
        clock: Callable[[], float] = time.time,
        node: str = "",
        device_figures: Callable[[], telemetry.Telemetry | None] = lambda: None,
    ) -> None:
        self._names = names
        self._sources = sources
        self._devices = devices
        self._hami = hami
        self._clock = clock
        self._node = node
        self._device_figures = device_figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "tessera_container_memory_used_bytes",
            "Device memory held by the container's processes (libvgpu's usage region; 0 before its first CUDA call).",
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
            "(about every second, or every SM-limit period; 0 before its first CUDA call).",
            labels=LABELS,
        )
        age = GaugeMetricFamily(
            "tessera_container_last_kernel_age_seconds",
            "Seconds since the container last launched a kernel on the device (no sample before the first).",
            labels=LABELS,
        )
        files = GaugeMetricFamily(
            "tessera_container_regions",
            "Region files of prepared containers at this scrape, by state: ok, missing (no CUDA call yet), "
            "invalid (truncated, foreign or another layout; skipped).",
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
        devices = list(self._devices())
        by_uuid = {d.uuid: d for d in devices}
        now = self._clock()
        seen_hami: set[tuple[str, ...]] = set()
        sums_used: dict[str, int] = {}
        sums_busy: dict[str, float] = {}
        for source in self._sources():
            region: regions.Region | None = None
            # Use is known from a region, or known to be nothing while the region is not there yet (no
            # CUDA call so far); a region that cannot be read, or a container whose limits are not
            # enforced by libvgpu (no region at all), shows its limit only.
            use_known = False
            if source.path:
                state, region = _read(source)
                states[state] += 1
                use_known = state != "invalid"
            pods = ",".join(source.pods)
            container = source.container or source.request
            measured = {dev.uuid: dev for dev in region.devices} if region is not None else {}
            rows: list[tuple[str, str, int, int, regions.DeviceUsage | None]] = []
            for got in source.devices:
                rows.append((got.name, got.uuid, got.index, got.ordinal, measured.pop(got.uuid, None)))
            for extra in measured.values():  # a device the region has but the checkpoint does not name
                info = by_uuid.get(extra.uuid)
                name = self._names.device_name(info.index) if info else ""
                rows.append((name, extra.uuid, info.index if info else -1, extra.index, extra))
            expected = {got.uuid: got for got in source.devices}
            for name, uuid, index, ordinal, dev in rows:
                labels = [
                    source.namespace, pods, container, source.claim, source.claim_uid, source.request, name, uuid,
                    str(index) if index >= 0 else "",
                ]  # fmt: skip
                info = by_uuid.get(uuid)
                memory_limit = (expected[uuid].memory_limit if uuid in expected else 0) or (
                    info.memory_bytes if info else 0
                )
                memory_used = float(dev.memory_used) if dev is not None else 0.0
                if dev is not None and dev.memory_used >= regions.USED_INVALID and memory_limit:
                    memory_used = float(memory_limit)  # a damaged live slot: libvgpu counts the device as full
                utilization = dev.utilization if dev is not None else 0.0
                since = max(0.0, now - dev.last_kernel_unix) if dev is not None and dev.last_kernel_unix else None
                sums_used[uuid] = sums_used.get(uuid, 0) + int(memory_used)
                sums_busy[uuid] = sums_busy.get(uuid, 0.0) + utilization
                if memory_limit:
                    limit.add_metric(labels, float(memory_limit))
                if use_known:
                    used.add_metric(labels, memory_used)
                    util.add_metric(labels, utilization)
                if since is not None:
                    age.add_metric(labels, since)
                if not self._hami:
                    continue
                hami = (source.namespace, pods, container, str(ordinal), uuid, HAMI_ZONE)
                if hami in seen_hami:
                    # Two claims of one pod-less namespace with the same request on one device: HAMi's
                    # labels cannot tell them apart (Tessera's can); a duplicate series would fail the scrape.
                    log.debug(
                        "HAMi labels not unique; series left out",
                        extra={"claim": _claim(source), "uid": source.claim_uid},
                    )
                    continue
                seen_hami.add(hami)
                if memory_limit:
                    hami_limit.add_metric(list(hami), float(memory_limit))
                if use_known:
                    hami_used.add_metric(list(hami), memory_used)
                    hami_util.add_metric(list(hami), utilization * 100.0)
                if since is not None:
                    hami_age.add_metric(list(hami), since)
        for state, count in states.items():
            files.add_metric([state], float(count))
        yield from (used, limit, util, age, files)
        if self._hami:
            yield from (hami_used, hami_limit, hami_util, hami_age)
        reader = self._device_figures()
        figures = reader(devices) if reader is not None else telemetry.from_containers(devices, sums_used, sums_busy)
        yield from telemetry.families(self._names, self._node, devices, figures, hami=self._hami)


def _claim(source: RegionSource) -> str:
    return f"{source.namespace}/{source.claim}"


def read_region(source: RegionSource, attempts: int = 3) -> regions.Region:
    """One container's region, read without following links or blocking (the container can put
    anything at that path); :class:`regions.RegionError` when it is missing, empty, unsafe, not a
    region, or inconsistent on every attempt (a read can catch a total half-way through its update)."""
    root = source.claim_dir or os.path.dirname(source.path)
    for attempt in range(attempts):
        try:
            data, size = safefs.read_head_beneath(
                root, os.path.relpath(source.path, root), length=regions.SLOT_OFFSET, max_bytes=regions.REGION_SIZE
            )
        except FileNotFoundError as exc:
            raise MissingRegion(f"{source.path}: {exc.strerror}") from exc
        except (OSError, ValueError) as exc:
            raise regions.RegionError(f"{source.path}: {exc}") from exc
        if size == 0:
            raise MissingRegion(f"{source.path}: empty (no CUDA call in the container yet)")
        try:
            return regions.parse_region(data, source.path, processes=False, file_size=size)
        except regions.RegionInconsistent:
            if attempt == attempts - 1:
                raise
    raise regions.RegionError(f"{source.path}: not read")


class MissingRegion(regions.RegionError):
    """No region file yet (no CUDA call in the container so far)."""


def _read(source: RegionSource) -> tuple[str, regions.Region | None]:
    """Read one region; never raises (a scrape must not fail on one container's file)."""
    try:
        return "ok", read_region(source)
    except regions.RegionError as exc:
        state = "missing" if isinstance(exc, MissingRegion) else "invalid"
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
