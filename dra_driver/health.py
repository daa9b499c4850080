"""Health: the DaemonSet's liveness probe and the kubelet's device-health stream.

* ``grpc.health.v1.Health`` on TCP ``--healthz-port`` (services ``""`` and ``liveness``): ``Check``
  really calls our own registration socket (``GetInfo``) and DRA socket (an empty
  ``NodePrepareResources``), so a wedged server fails the probe; and it runs the ``checks`` it was
  given (the preparer's: a trivial task must get through the prepare workers), so a driver whose
  prepares cannot make progress fails it too and is restarted.
* ``v1alpha1.DRAResourceHealth`` on the DRA socket: a stream of the complete device list, every
  ``interval`` seconds and at once on a change; the kubelet writes it into the status of the pods
  that use a device (``allocatedResourcesStatus``). A device is unhealthy while it has a fault
  (:mod:`faults`): gone from discovery (lost), an XID or ECC error pushed by the backend (kept until the
  driver restarts), the vendor tool's health, a fault injected into the mock backend; unknown when
  discovery itself fails; healthy otherwise. The monitor also says which taints the ResourceSlice
  carries (:meth:`DeviceHealthMonitor.taints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vendors.base import DeviceInfo, HealthReportingVendor, VendorNames

from . import faults
from .faults import Fault
from .proto import dra_v1_pb2, dra_v1_pb2_grpc, drahealth_v1alpha1_pb2, drahealth_v1alpha1_pb2_grpc
from .proto import pluginregistration_v1_pb2 as reg_pb2
from .proto import pluginregistration_v1_pb2_grpc as reg_grpc

log = logging.getLogger("dra_driver.health")

HEALTH_SERVICE = "v1alpha1.DRAResourceHealth"
LIVENESS_SERVICES = ("", "liveness")


class Liveness(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """``Check`` succeeds only when both of our sockets answer."""

    def __init__(
        self,
        registration_socket: str,
        dra_socket: str,
        *,
        timeout: float = 5.0,
        checks: Sequence[Callable[[float], Awaitable[str]]] = (),
    ) -> None:
        self._reg_target = f"unix:{registration_socket}"
        self._dra_target = f"unix:{dra_socket}"
        self._timeout = timeout
        self._checks = list(checks)

    async def probe(self) -> str:
        """``""`` when both sockets answer, else what failed."""
        try:
            async with grpc.aio.insecure_channel(self._reg_target) as channel:
                await reg_grpc.RegistrationStub(channel).GetInfo(reg_pb2.InfoRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            return f"registration socket: {exc.code().name} {exc.details()}"
        try:
            async with grpc.aio.insecure_channel(self._dra_target) as channel:
                await dra_v1_pb2_grpc.DRAPluginStub(channel).NodePrepareResources(
                    dra_v1_pb2.NodePrepareResourcesRequest(), timeout=self._timeout
                )
        except grpc.aio.AioRpcError as exc:
            return f"DRA socket: {exc.code().name} {exc.details()}"
        for check in self._checks:
            problem = await check(self._timeout)
            if problem:
                return problem
        return ""

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.service not in LIVENESS_SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        problem = await self.probe()
        if problem:
            log.warning("liveness check failed", extra={"error": problem})
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "use Check")


async def serve_liveness(liveness: Liveness, host: str, port: int) -> grpc.aio.Server:
    # No SO_REUSEPORT (gRPC's default): a port another process holds must fail here, not be shared.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(liveness, server)
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc.aio raises where the sync server returns 0
        raise OSError(f"gRPC could not bind it: {exc}") from exc
    await server.start()
    log.info("liveness server listening", extra={"address": f"{host}:{port}"})
    return server


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    health: int
    message: str
    updated: int
    uuid: str = ""
    faults: tuple[Fault, ...] = ()


class HealthSource:
    """Where faults come from, besides discovery. ``poll`` answers the faults present now (called every
    interval, off the event loop's way: implementations run blocking work in a thread); ``start`` may
    begin pushing faults that stay until the driver restarts (NVML's XID events) through ``report``."""

    name = "source"

    def start(self, report: Callable[[str, Fault], None]) -> None:
        """Begin pushing faults (``report(uuid, fault)``, callable from any thread)."""

    async def poll(self) -> Mapping[str, Sequence[Fault]]:
        """Device UUID -> faults present now; raising means "no answer this time"."""
        return {}

    async def stop(self) -> None:
        """Stop pushing; release what ``start`` took."""


HealthChange = Callable[[list[tuple[DeviceStatus, DeviceStatus]]], Awaitable[None]]
"""Called with (before, after) of every device whose health or faults changed."""


class DeviceHealthMonitor:
    """The health of each published device: discovery (a device gone is lost), the backend's health
    sources (XID events, the vendor tool, the mock control file), and the taints that follow."""

    def __init__(
        self,
        names: VendorNames,
        pool: str,
        devices: Sequence[DeviceInfo],
        discover: Callable[[], Awaitable[list[DeviceInfo]]],
        *,
        interval: float = 30.0,
        sources: Sequence[HealthSource] = (),
        unhealthy_effect: str = faults.NO_SCHEDULE,
        lost_effect: str = faults.NO_EXECUTE,
        on_change: HealthChange | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._names = names
        self.pool = pool
        self._devices = list(devices)
        self._discover = discover
        self.interval = interval
        self.sources = list(sources)
        self.unhealthy_effect = unhealthy_effect
        self.lost_effect = lost_effect
        self.on_change = on_change
        self._clock = clock
        self._sticky: dict[str, dict[tuple[str, str, str], Fault]] = {}
        """Pushed faults (XID events), per device UUID; they stay until the driver restarts."""
        self._polled: dict[str, list[Fault]] = {}
        self._seen_since: dict[tuple[str, str, str, str], float] = {}
        self._discovery_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        now = int(clock())
        self.statuses = [
            DeviceStatus(names.device_name(d.index), drahealth_v1alpha1_pb2.HEALTHY, "", now, d.uuid)
            for d in self._devices
        ]
        self._changed = asyncio.Condition()
        self.version = 0
        """Bumped whenever a device's health changes."""

    # -- sources --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pushing sources (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        for source in self.sources:
            source.start(self.report)

    async def stop(self) -> None:
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.stop()

    def report(self, uuid: str, fault: Fault) -> None:
        """A pushed fault (any thread): it stays; the health is re-evaluated at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._add_sticky, uuid, fault)

    def _add_sticky(self, uuid: str, fault: Fault) -> None:
        key = (fault.kind, fault.label, fault.message)
        held = self._sticky.setdefault(uuid, {})
        if key in held:
            return
        if not fault.since:
            fault = dataclasses.replace(fault, since=self._clock())
        held[key] = fault
        log.warning("device fault", extra={"uuid": uuid, "fault": fault.label, "reason": fault.message})
        task = asyncio.get_running_loop().create_task(self._publish_locked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_locked(self) -> None:
        async with self._check_lock:
            await self._publish(int(self._clock()))

    # -- evaluation -----------------------------------------------------------------------------

    def faults_of(self, uuid: str) -> list[Fault]:
        return [*self._sticky.get(uuid, {}).values(), *self._polled.get(uuid, [])]

    async def check(self) -> list[DeviceStatus]:
        """Re-run discovery and poll every source; publish what changed."""
        async with self._check_lock:
            now = self._clock()
            polled: dict[str, list[Fault]] = {}
            try:
                seen = {d.uuid for d in await self._discover()}
            except Exception as exc:
                self._discovery_error = f"discovery failed: {exc}"
            else:
                self._discovery_error = ""
                for d in self._devices:
                    if d.uuid not in seen:
                        polled.setdefault(d.uuid, []).append(
                            faults.Fault(faults.LOST, f"device {d.uuid} is no longer reported by the node")
                        )
            for source in self.sources:
                try:
                    found = await source.poll()
                except Exception as exc:
                    log.warning("device health source failed", extra={"source": source.name, "error": str(exc)})
                    found = {}
                for uuid, items in found.items():
                    polled.setdefault(uuid, []).extend(items)
            self._polled = {uuid: [self._stamp(uuid, f, now) for f in items] for uuid, items in polled.items()}
            current = {(u, f.kind, f.label, f.message) for u, items in self._polled.items() for f in items}
            self._seen_since = {k: v for k, v in self._seen_since.items() if k in current}
            return await self._publish(int(now))

    def _stamp(self, uuid: str, fault: Fault, now: float) -> Fault:
        """A polled fault keeps the time it was first seen (the taint's ``timeAdded`` stays put)."""
        key = (uuid, fault.kind, fault.label, fault.message)
        since = self._seen_since.setdefault(key, fault.since or now)
        return dataclasses.replace(fault, since=since)

    async def _publish(self, now: int) -> list[DeviceStatus]:
        statuses = []
        for d in self._devices:
            found = tuple(self.faults_of(d.uuid))
            name = self._names.device_name(d.index)
            if found:
                message = "; ".join(f.message for f in found)
                statuses.append(DeviceStatus(name, drahealth_v1alpha1_pb2.UNHEALTHY, message, now, d.uuid, found))
            elif self._discovery_error:
                statuses.append(DeviceStatus(name, drahealth_v1alpha1_pb2.UNKNOWN, self._discovery_error, now, d.uuid))
            else:
                statuses.append(DeviceStatus(name, drahealth_v1alpha1_pb2.HEALTHY, "", now, d.uuid))
        before = self.statuses
        self.statuses = statuses
        changed = [
            (old, new)
            for old, new in zip(before, statuses, strict=True)
            if old.health != new.health or old.faults != new.faults
        ]
        if changed:
            for _, s in changed:
                if s.health != drahealth_v1alpha1_pb2.HEALTHY:
                    log.warning("device not healthy", extra={"device": s.device, "uuid": s.uuid, "reason": s.message})
                else:
                    log.info("device healthy again", extra={"device": s.device, "uuid": s.uuid})
            async with self._changed:
                self.version += 1
                self._changed.notify_all()
            if self.on_change is not None:
                try:
                    await self.on_change(changed)
                except Exception:
                    log.exception("device health follow-up failed")
        return statuses

    def taints(self) -> dict[str, list[dict[str, Any]]]:
        """Device name -> the taints its faults call for (:func:`faults.device_taints`)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for s in self.statuses:
            taints = faults.device_taints(s.faults, self._names, unhealthy=self.unhealthy_effect, lost=self.lost_effect)
            if taints:
                out[s.device] = taints
        return out

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def wait_change(self, seen: int, timeout: float) -> None:
        """Return when :attr:`version` differs from ``seen`` or after ``timeout`` seconds."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: self.version != seen)

    def response(self) -> Any:
        pb = drahealth_v1alpha1_pb2
        return pb.NodeWatchResourcesResponse(
            devices=[
                pb.DeviceHealth(
                    device=pb.DeviceIdentifier(pool_name=self.pool, device_name=s.device),
                    health=pb.HealthStatus.Name(s.health),
                    last_updated_time=s.updated,
                    health_check_timeout_seconds=int(self.interval * 3),
                    message=s.message[: faults.MAX_MESSAGE],
                )
                for s in self.statuses
            ]
        )


class MockFaultSource(HealthSource):
    """Faults injected into the mock backend through a control file (:func:`faults.parse_mock_faults`):
    present while the file names them. A file that cannot be read is reported and changes nothing."""

    name = "mock-faults"

    def __init__(self, path: str, devices: Sequence[DeviceInfo], names: VendorNames) -> None:
        self.path = path
        self._devices = list(devices)
        self._names = names
        self._stamp: tuple[int, int] | None = None
        self._faults: dict[str, list[Fault]] = {}

    async def poll(self) -> Mapping[str, Sequence[Fault]]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> dict[str, list[Fault]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._faults = None, {}
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return self._faults
        self._stamp = stamp
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read(1 << 20)
            self._faults = faults.parse_mock_faults(text, self._devices, self._names)
        except (OSError, UnicodeDecodeError, faults.FaultSpecError) as exc:
            log.warning(
                "mock fault file ignored; fix it to inject faults", extra={"path": self.path, "error": str(exc)}
            )
        return self._faults


class VendorToolHealthSource(HealthSource):
    """The vendor tool's health of each device (``npu-smi``'s Health, ``cnmon``'s Ecc-Error), polled."""

    name = "vendor-tool"

    def __init__(self, vendor: HealthReportingVendor) -> None:
        self._vendor = vendor

    async def poll(self) -> Mapping[str, Sequence[Fault]]:
        found = await asyncio.to_thread(self._vendor.device_health)
        return {uuid: [Fault(faults.TOOL, problem)] for uuid, problem in found.items() if problem}


class ResourceHealth(drahealth_v1alpha1_pb2_grpc.DRAResourceHealthServicer):  # type: ignore[misc]
    def __init__(self, monitor: DeviceHealthMonitor) -> None:
        self._monitor = monitor

    async def NodeWatchResources(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        while True:
            seen = self._monitor.version
            yield self._monitor.response()
            await self._monitor.wait_change(seen, self._monitor.interval)


def add_to_server(server: grpc.aio.Server, monitor: DeviceHealthMonitor) -> None:
    drahealth_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(ResourceHealth(monitor), server)
