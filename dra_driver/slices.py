"""ResourceSlices: what the scheduler learns about this node's devices (docs/driver.md, ResourceSlices).

The pure half builds the slices (one pool per node, named after the node) and compares them with
what the API server holds; :class:`SlicePublisher` is the I/O half: it publishes, repairs slices
deleted or changed behind its back (kubelet wipes a node's slices when it starts), and notices when
the API server drops the consumable-capacity fields (gate ``DRAConsumableCapacity`` off), in which
case it publishes whole devices and says so loudly (log, Node event, metric, Node condition).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeapi import RESOURCE_V1, KubeClient, KubeError, Obj
from tessera_common.quantity import QuantityError, format_binary, format_decimal, parse_quantity
from tessera_common.tasks import cancel_and_wait
from vendors.base import (
    ATTR_ARCHITECTURE,
    ATTR_DRIVER_VERSION,
    ATTR_INDEX,
    ATTR_NUMA_NODE,
    ATTR_PCIE_BUS_ID,
    ATTR_PRODUCT_NAME,
    ATTR_TYPE,
    ATTR_UUID,
    CAPACITY_CORES,
    CAPACITY_MEMORY,
    CAPACITY_SHARES,
    MIB,
    AttributeValue,
    DeviceInfo,
    VendorNames,
)

from .events import EventRecorder, Target
from .metrics import DriverMetrics
from .nodecondition import NodeConditionWriter

log = logging.getLogger("dra_driver.slices")

SLICES_PATH = f"{RESOURCE_V1}/resourceslices"
MAX_DEVICES_PER_SLICE = 128
MAX_STRING_ATTRIBUTE = 64
ATTR_COMPUTE_CAPABILITY = "computeCapability"

TAINTS_FIELD = "taints"
DeviceTaints = Mapping[str, Sequence[Mapping[str, Any]]]
"""Device name -> its ``taints`` (``{key, value, effect, timeAdded}``); devices not named have none."""

# --- pure: building ------------------------------------------------------------------------------

_SEMVER_RE = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?((?:\.\d+)*)$")


def semantic_version(text: str) -> str | None:
    """A driver version as semver: ``560.35`` -> ``560.35.0``, ``560.35.03`` -> ``560.35.3``,
    ``1.2.3.4`` -> ``1.2.3+4``; ``None`` when it is not numeric."""
    match = _SEMVER_RE.match(text.strip())
    if not match:
        return None
    major, minor, patch = (int(match.group(i) or 0) for i in (1, 2, 3))
    version = f"{major}.{minor}.{patch}"
    extra = [str(int(p)) for p in match.group(4).split(".") if p]
    return f"{version}+{'.'.join(extra)}" if extra else version


def device_attributes(device: DeviceInfo) -> dict[str, dict[str, AttributeValue]]:
    """The typed attributes of one device (empty strings and unknown values are left out)."""
    attrs: dict[str, dict[str, AttributeValue]] = {
        ATTR_UUID: {"string": device.uuid},
        ATTR_INDEX: {"int": device.index},
    }

    def put_string(name: str, value: str) -> None:
        if value:
            attrs[name] = {"string": value[:MAX_STRING_ATTRIBUTE]}

    put_string(ATTR_PRODUCT_NAME, device.product_name)
    put_string(ATTR_TYPE, device.model)
    put_string(ATTR_ARCHITECTURE, device.architecture)
    if device.numa_node is not None and device.numa_node >= 0:
        attrs[ATTR_NUMA_NODE] = {"int": device.numa_node}
    put_string(ATTR_PCIE_BUS_ID, device.pci_bus_id)
    version = semantic_version(device.driver_version) if device.driver_version else None
    if version:
        attrs[ATTR_DRIVER_VERSION] = {"version": version}
    capability = semantic_version(device.compute_capability) if device.compute_capability else None
    if capability:
        attrs[ATTR_COMPUTE_CAPABILITY] = {"version": capability}
    for name, value in device.extra_attributes.items():
        if isinstance(value, bool):
            attrs[name] = {"bool": value}
        elif isinstance(value, int):
            attrs[name] = {"int": value}
        else:
            put_string(name, str(value))
    return attrs


def memory_capacity_bytes(device: DeviceInfo) -> int:
    """Published memory: the device total rounded down to a whole MiB (a valid step of the range), and
    at least the largest of the vendor's valid amounts (``memory_valid_mib``)."""
    largest = max(device.memory_valid_mib, default=0) * MIB
    return max((device.memory_bytes // MIB) * MIB, largest)


def device_entry(
    device: DeviceInfo,
    names: VendorNames,
    split_count: int,
    *,
    shareable: bool,
    taints: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One ``spec.devices[]`` entry. Shareable: consumable memory, cores and shares (docs/driver.md);
    otherwise the same capacities without request policies (whole-device mode). ``taints``: the
    device's taints (an unhealthy device, see :mod:`health`).

    Memory is a range in 1 MiB steps, or the vendor's fixed amounts (``memory_valid_mib``, e.g. Ascend
    vNPU templates) as ``validValues``; ``cores`` is left out for devices whose compute cannot be split
    by percentage (``cores_shareable`` false), so a claim asking for cores does not fit them."""
    memory = memory_capacity_bytes(device)
    capacity: dict[str, dict[str, Any]] = {CAPACITY_MEMORY: {"value": format_binary(memory)}}
    if device.cores_shareable:
        capacity[CAPACITY_CORES] = {"value": "100"}
    capacity[CAPACITY_SHARES] = {"value": format_decimal(split_count)}
    entry: dict[str, Any] = {"name": names.device_name(device.index), "attributes": device_attributes(device)}
    if shareable:
        if device.memory_valid_mib:
            valid = [format_binary(v * MIB) for v in sorted(set(device.memory_valid_mib))][-10:]
            capacity[CAPACITY_MEMORY]["requestPolicy"] = {"default": valid[-1], "validValues": valid}
        else:
            capacity[CAPACITY_MEMORY]["requestPolicy"] = {
                "default": format_binary(memory),
                "validRange": {"min": format_binary(MIB), "max": format_binary(memory), "step": format_binary(MIB)},
            }
        if device.cores_shareable:
            capacity[CAPACITY_CORES]["requestPolicy"] = {
                "default": "1",
                "validRange": {"min": "1", "max": "100", "step": "1"},
            }
        capacity[CAPACITY_SHARES]["requestPolicy"] = {"default": "1", "validValues": ["1"]}
        entry["allowMultipleAllocations"] = True
    entry["capacity"] = capacity
    if taints:
        entry["taints"] = [dict(t) for t in taints]
    return entry


def build_slice_specs(
    devices: Sequence[DeviceInfo],
    names: VendorNames,
    node_name: str,
    split_count: int,
    *,
    shareable: bool,
    taints: DeviceTaints | None = None,
    without_tainted: bool = False,
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The ``spec`` of each slice of the node's pool (without generation), at most 128 devices each.

    ``taints`` go on their devices; with ``without_tainted`` (the API server drops device taints,
    gate ``DRADeviceTaints`` off) a tainted device is left out of the pool instead, so that nothing new
    is allocated on it either. ``attributes`` (device name -> typed attributes, the occupancy) are added
    to the devices they name."""
    taints = taints or {}
    entries = [
        device_entry(d, names, split_count, shareable=shareable, taints=taints.get(names.device_name(d.index), ()))
        for d in sorted(devices, key=lambda d: d.index)
        if not (without_tainted and taints.get(names.device_name(d.index)))
    ]
    for entry in entries:
        extra = (attributes or {}).get(entry["name"])
        if extra:
            entry["attributes"].update(copy.deepcopy(dict(extra)))
    chunks = [entries[i : i + MAX_DEVICES_PER_SLICE] for i in range(0, len(entries), MAX_DEVICES_PER_SLICE)] or [[]]
    return [
        {
            "driver": names.driver,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": 0, "resourceSliceCount": len(chunks)},
            "devices": chunk,
        }
        for chunk in chunks
    ]


def owner_reference(node_name: str, node_uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid, "controller": True}


def slice_object(spec: Mapping[str, Any], generation: int, *, node_name: str, node_uid: str, driver: str) -> Obj:
    """A complete ResourceSlice to create (``generateName``, owned by the Node)."""
    body = copy.deepcopy(dict(spec))
    body["pool"]["generation"] = generation
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {
            "generateName": f"{node_name}-{driver}-",
            "ownerReferences": [owner_reference(node_name, node_uid)],
        },
        "spec": body,
    }


# --- pure: comparing -----------------------------------------------------------------------------


def _normalise(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, key) for v in value]
    if isinstance(value, str) and key in ("value", "default", "min", "max", "step", "validValues"):
        try:
            return parse_quantity(value)
        except QuantityError:
            return value
    return value


def _normalised_capacity(spec: Mapping[str, Any]) -> Any:
    devices = []
    for d in spec.get("devices") or []:
        d = dict(d)
        d["capacity"] = _normalise(d.get("capacity") or {})
        devices.append(d)
    out = dict(spec)
    out["devices"] = devices
    out["pool"] = {k: v for k, v in (spec.get("pool") or {}).items() if k != "generation"}
    return out


def spec_matches(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Same slice content, quantities compared by value, generation ignored."""
    return bool(_normalised_capacity(existing) == _normalised_capacity(desired))


def dropped_fields(sent: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """Fields of ``sent`` (a slice spec) the API server did not keep: the consumable-capacity gate is off
    (``allowMultipleAllocations``, request policies), or the device-taints gate is (``taints``)."""
    stored_devices = {d.get("name"): d for d in stored.get("devices") or []}
    dropped: set[str] = set()
    for device in sent.get("devices") or []:
        got = stored_devices.get(device.get("name")) or {}
        if device.get("allowMultipleAllocations") and not got.get("allowMultipleAllocations"):
            dropped.add("allowMultipleAllocations")
        if device.get("taints") and not got.get("taints"):
            dropped.add(TAINTS_FIELD)
        got_capacity = got.get("capacity") or {}
        for name, cap in (device.get("capacity") or {}).items():
            if "requestPolicy" in cap and "requestPolicy" not in (got_capacity.get(name) or {}):
                dropped.add(f"capacity.{name}.requestPolicy")
    return sorted(dropped)


def _generation(obj: Mapping[str, Any]) -> int:
    try:
        return int(((obj.get("spec") or {}).get("pool") or {}).get("generation") or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class PublishResult:
    """What one reconcile did."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    generation: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class DeviceTaintsDisabled(Exception):
    """The API server dropped device taints; the publisher leaves tainted devices out instead."""


class ConsumableCapacityDisabled(Exception):
    """The API server dropped the sharing fields; the publisher switches to whole devices."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(", ".join(fields))


# --- I/O: publishing -----------------------------------------------------------------------------


class SlicePublisher:
    """Keeps this node's pool in the API server equal to the discovered devices."""

    def __init__(
        self,
        client: KubeClient,
        names: VendorNames,
        node_name: str,
        devices: Sequence[DeviceInfo],
        split_count: int,
        metrics: DriverMetrics,
        *,
        resync_seconds: float = 60.0,
        probe_seconds: float = 600.0,
        device_taints: Callable[[], DeviceTaints] | None = None,
        events: EventRecorder | None = None,
        attributes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._client = client
        self._names = names
        self._node = node_name
        self._devices = list(devices)
        self._split = split_count
        self._metrics = metrics
        self._resync = resync_seconds
        self.probe_interval = probe_seconds
        """Seconds between re-checks of a gate found off (the API server may be reconfigured)."""
        self._node_uid: str | None = None
        self._generation = 0
        self.shareable: bool | None = None
        """``None`` until probed; ``False`` when the API server dropped the sharing fields."""
        self._last_probe = 0.0
        self._device_taints = device_taints
        self.taints_supported: bool | None = None
        """``None`` until a taint was written; ``False`` when the API server dropped it (gate
        ``DRADeviceTaints`` off): tainted devices are then left out of the pool."""
        self._last_taint_probe = 0.0
        self.events = events or EventRecorder(client, node_name)
        self._wake = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.condition = NodeConditionWriter(client, names, node_name)
        """The Node condition that says whether the published devices are shares."""
        self.published = asyncio.Event()
        """Set once the pool has been published at least once."""
        self.last_slices: list[Obj] = []
        self._attributes: dict[str, Mapping[str, Any]] = dict(attributes or {})
        """Extra attributes per device name (the occupancy), from the first write on when given."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="slices-reconcile"),
            asyncio.create_task(self._watch_loop(), name="slices-watch"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def trigger(self, reason: str) -> None:
        """Ask for a reconcile soon (a slice changed, kubelet registered us, ...)."""
        log.debug("slice reconcile requested", extra={"node": self._node, "reason": reason})
        self._wake.set()

    async def set_attributes(self, attributes: Mapping[str, Mapping[str, Any]]) -> None:
        """Publish these extra attributes per device name (the occupancy): reconcile now and return once
        the slices hold them (the caller paces the writes). On failure the reconcile loop retries."""
        self._attributes = dict(attributes)
        try:
            await self.reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info(
                "cannot publish device attributes now; the reconcile loop retries",
                extra={"node": self._node, "error": str(exc)},
            )
            self.trigger("device attributes changed")

    # -- loops ----------------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        backoff = 0.5
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
                backoff = 0.5
                timeout = self._resync
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.slice_publish.labels(result="error").inc()
                log.warning(
                    "cannot publish ResourceSlices; retrying",
                    extra={"node": self._node, "error": str(exc), "retry_in_s": backoff},
                )
                timeout = backoff
                backoff = min(backoff * 2, 30.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _watch_loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                async for event in self._client.watch(
                    SLICES_PATH, timeout_seconds=300, fieldSelector=self._field_selector()
                ):
                    backoff = 0.5
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if (obj.get("spec") or {}).get("driver") == self._names.driver:
                        self.trigger(f"watch {kind} {(obj.get('metadata') or {}).get('name')}")
                # Stream ended (server timeout): reconcile in case an event was missed, then rewatch.
                self.trigger("watch restarted")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info(
                    "ResourceSlice watch interrupted; restarting",
                    extra={"node": self._node, "error": str(exc), "retry_in_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self.trigger("watch reconnected")

    def _field_selector(self) -> str:
        return f"spec.nodeName={self._node},spec.driver={self._names.driver}"

    # -- one reconcile --------------------------------------------------------------------------

    async def node_uid(self, *, refresh: bool = False) -> str:
        """The Node's UID for the owner reference (looked up again with ``refresh``: a Node deleted and
        re-created under the same name has a new UID, and slices owned by the old one are collected)."""
        if self._node_uid is None or refresh:
            try:
                node = await self._client.get(f"/api/v1/nodes/{self._node}")
            except KubeError as exc:
                if exc.not_found:
                    raise RuntimeError(
                        f"Node {self._node} does not exist; check --node-name (the DaemonSet sets it from "
                        "spec.nodeName)"
                    ) from exc
                raise
            self._node_uid = str((node.get("metadata") or {}).get("uid") or "")
            if not self._node_uid:
                raise RuntimeError(f"Node {self._node} has no metadata.uid")
        return self._node_uid

    def desired_specs(self) -> list[dict[str, Any]]:
        return build_slice_specs(
            self._devices,
            self._names,
            self._node,
            self._split,
            shareable=bool(self.shareable),
            taints=self._device_taints() if self._device_taints else None,
            without_tainted=self.taints_supported is False,
            attributes=self._attributes,
        )

    async def reconcile(self) -> PublishResult:
        """Make the API server's slices of this pool equal to the desired ones; return what changed.
        Calls are serialised (the loop, a registration and a caller may ask at the same time)."""
        async with self._reconcile_lock:
            return await self._reconcile()

    async def _reconcile(self) -> PublishResult:
        started = time.perf_counter()
        uid = await self.node_uid()
        if self.shareable is None or (
            self.shareable is False and time.monotonic() - self._last_probe >= self.probe_interval
        ):
            await self._probe(uid)
        if self.taints_supported is False and time.monotonic() - self._last_taint_probe >= self.probe_interval:
            self.taints_supported = None  # try taints again: the API server may have been reconfigured
        result = None
        for _ in range(3):
            try:
                result = await self._apply(uid)
                break
            except ConsumableCapacityDisabled as exc:
                await self._set_shareable(False, exc.fields)
            except DeviceTaintsDisabled:
                await self._set_taints_supported(False)
        if result is None:
            result = await self._apply(uid)
        elapsed = time.perf_counter() - started
        if result.changed:
            self._metrics.slice_publish.labels(result="changed").inc()
            self._metrics.slice_publish_seconds.observe(elapsed)
            log.info(
                "published ResourceSlices",
                extra={
                    "node": self._node,
                    "generation": result.generation,
                    "slices_created": result.created,
                    "slices_updated": result.updated,
                    "slices_deleted": result.deleted,
                    "devices": len(self._devices),
                    "shareable": self.shareable,
                    "ms": round(elapsed * 1000, 1),
                },
            )
        else:
            self._metrics.slice_publish.labels(result="unchanged").inc()
        # What was published is now known: the Node condition follows it (written only on a change).
        await self.condition.ensure(bool(self.shareable), self._node_uid)
        self.published.set()
        return result

    async def _probe(self, uid: str) -> None:
        """Dry-run a shareable slice to learn whether the API server keeps the sharing fields."""
        self._last_probe = time.monotonic()
        spec = build_slice_specs(self._devices, self._names, self._node, self._split, shareable=True)[0]
        body = slice_object(spec, 1, node_name=self._node, node_uid=uid, driver=self._names.driver)
        try:
            stored = await self._client.create(SLICES_PATH, body, dry_run=True)
        except KubeError as exc:
            if exc.status in (0, 500, 502, 503, 504):
                raise
            # Dry run refused for another reason (RBAC, admission): decide from the real write instead.
            log.info("dry-run probe refused; checking the real write", extra={"node": self._node, "error": str(exc)})
            if self.shareable is None:
                self.shareable = True
                self._metrics.sharing_enabled.set(1)
            return
        dropped = dropped_fields(spec, stored.get("spec") or {})
        await self._set_shareable(not dropped, dropped)

    async def _set_shareable(self, shareable: bool, fields: list[str]) -> None:
        previous = self.shareable
        self.shareable = shareable
        self._metrics.sharing_enabled.set(1 if shareable else 0)
        if shareable and previous is False:
            message = (
                f"the API server keeps consumable capacity again; devices of {self._names.driver} "
                "are published as shareable"
            )
            log.warning(message, extra={"node": self._node})
            await self._event("Normal", "DRAConsumableCapacityEnabled", message)
        elif not shareable and previous is not False:
            self._metrics.fields_dropped.inc()
            message = (
                f"the API server dropped {', '.join(fields)} from ResourceSlices of {self._names.driver}: "
                "the DRAConsumableCapacity feature gate is off. Devices are published whole (one pod per "
                "device, no memory or core shares). Enable DRAConsumableCapacity on kube-apiserver, "
                "kube-scheduler and kubelet to share devices"
            )
            log.warning(message, extra={"node": self._node, "dropped": fields})
            await self._event("Warning", "DRAConsumableCapacityDisabled", message)

    async def _set_taints_supported(self, supported: bool) -> None:
        previous = self.taints_supported
        self.taints_supported = supported
        self._last_taint_probe = time.monotonic()
        if not supported and previous is not False:
            message = (
                f"the API server dropped the device taints from ResourceSlices of {self._names.driver}: the "
                "DRADeviceTaints feature gate is off. Unhealthy devices are left out of the ResourceSlice "
                "instead (nothing new is allocated on them; pods holding them are not evicted). Enable "
                "DRADeviceTaints on kube-apiserver, kube-scheduler and kube-controller-manager to taint them"
            )
            log.warning(message, extra={"node": self._node})
            await self._event("Warning", "DRADeviceTaintsDisabled", message)

    async def _event(self, kind: str, reason: str, message: str) -> None:
        await self.events.record(Target.node(self._node, self._node_uid or ""), kind, reason, message)

    async def _apply(self, uid: str) -> PublishResult:
        listed = await self._client.list(SLICES_PATH, fieldSelector=self._field_selector())
        ours: list[Obj] = []
        for item in listed.get("items") or []:
            spec = item.get("spec") or {}
            meta = item.get("metadata") or {}
            if spec.get("driver") != self._names.driver or spec.get("nodeName") != self._node:
                continue
            if meta.get("deletionTimestamp"):
                continue
            ours.append(item)
        desired = self.desired_specs()
        owner = owner_reference(self._node, uid)
        ours.sort(key=lambda o: (-_generation(o), str((o.get("metadata") or {}).get("name"))))
        result = PublishResult(generation=max([_generation(o) for o in ours] + [self._generation]))
        in_pool = [o for o in ours if ((o.get("spec") or {}).get("pool") or {}).get("name") == self._node]
        up_to_date = (
            len(ours) == len(desired)
            and len(in_pool) == len(ours)
            and len({_generation(o) for o in ours}) == 1
            and all(
                spec_matches(o.get("spec") or {}, d)
                and owner in ((o.get("metadata") or {}).get("ownerReferences") or [])
                for o, d in zip(ours, self._order_like(ours, desired), strict=True)
            )
        )
        if up_to_date:
            self._generation = result.generation
            self.last_slices = ours
            return result
        fresh = await self.node_uid(refresh=True)
        if fresh != uid:
            log.info("Node was re-created; owning the slices by its new UID", extra={"node": self._node})
            uid = fresh
        generation = result.generation + 1
        result.generation = generation
        self._generation = generation
        published: list[Obj] = []
        for index, spec in enumerate(desired):
            body = slice_object(spec, generation, node_name=self._node, node_uid=uid, driver=self._names.driver)
            if index < len(in_pool):
                current = in_pool[index]
                meta = dict(current.get("metadata") or {})
                meta["ownerReferences"] = body["metadata"]["ownerReferences"]
                meta.pop("generateName", None)
                body["metadata"] = meta
                stored = await self._client.replace(f"{SLICES_PATH}/{meta['name']}", body)
                result.updated += 1
            else:
                stored = await self._client.create(SLICES_PATH, body)
                result.created += 1
            dropped = dropped_fields(body["spec"], stored.get("spec") or {})
            if TAINTS_FIELD in dropped:
                raise DeviceTaintsDisabled()
            if dropped:
                raise ConsumableCapacityDisabled(dropped)
            if any(d.get("taints") for d in body["spec"].get("devices") or []):
                self.taints_supported = True
            published.append(stored)
        keep = {id(o) for o in in_pool[: len(desired)]}
        for obj in ours:
            if id(obj) in keep:
                continue
            name = (obj.get("metadata") or {}).get("name")
            try:
                await self._client.delete(f"{SLICES_PATH}/{name}")
                result.deleted += 1
            except KubeError as exc:
                if not exc.not_found:
                    raise
        self.last_slices = published
        return result

    @staticmethod
    def _order_like(existing: Sequence[Obj], desired: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pair each existing slice with the desired spec holding its first device (else in order)."""
        by_first = {((d.get("devices") or [{}])[0] or {}).get("name"): d for d in desired}
        out: list[dict[str, Any]] = []
        remaining = list(desired)
        for obj in existing:
            devices = (obj.get("spec") or {}).get("devices") or [{}]
            match = by_first.get((devices[0] or {}).get("name"))
            if match is not None and match in remaining:
                remaining.remove(match)
                out.append(match)
            else:
                out.append(remaining.pop(0) if remaining else {})
        return out
