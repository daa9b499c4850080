"""Health: the DaemonSet's liveness probe and the kubelet's device-health stream.

* ``grpc.health.v1.Health`` on TCP ``--healthz-port`` (services ``""`` and ``liveness``): ``Check``
  really calls our own registration socket (``GetInfo``) and DRA socket (an empty
  ``NodePrepareResources``), so a wedged server fails the probe; and it runs the ``checks`` it was
  given (the preparer's: a trivial task must get through the prepare workers), so a driver whose
  prepares cannot make progress fails it too and is restarted.
* ``v1alpha1.DRAResourceHealth`` on the DRA socket: a stream of the complete device list, every
  ``interval`` seconds. A device is healthy while the backend still reports it (same UUID); it
  becomes unhealthy when it disappears, unknown when discovery itself fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vendors.base import DeviceInfo, VendorNames

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
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(liveness, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port} for the health server")
    await server.start()
    log.info("liveness server listening", extra={"address": f"{host}:{port}"})
    return server


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    health: int
    message: str
    updated: int


class DeviceHealthMonitor:
    """Re-runs discovery to tell whether each published device is still there."""

    def __init__(
        self,
        names: VendorNames,
        pool: str,
        devices: Sequence[DeviceInfo],
        discover: Callable[[], Awaitable[list[DeviceInfo]]],
        *,
        interval: float = 30.0,
    ) -> None:
        self._names = names
        self.pool = pool
        self._devices = list(devices)
        self._discover = discover
        self.interval = interval
        now = int(time.time())
        self.statuses = [
            DeviceStatus(names.device_name(d.index), drahealth_v1alpha1_pb2.HEALTHY, "", now) for d in self._devices
        ]
        self._changed = asyncio.Condition()
        self.version = 0
        """Bumped whenever a device's health changes."""

    async def check(self) -> list[DeviceStatus]:
        now = int(time.time())
        try:
            seen = {d.uuid for d in await self._discover()}
        except Exception as exc:
            statuses = [
                DeviceStatus(
                    self._names.device_name(d.index), drahealth_v1alpha1_pb2.UNKNOWN, f"discovery failed: {exc}", now
                )
                for d in self._devices
            ]
        else:
            statuses = [
                DeviceStatus(self._names.device_name(d.index), drahealth_v1alpha1_pb2.HEALTHY, "", now)
                if d.uuid in seen
                else DeviceStatus(
                    self._names.device_name(d.index),
                    drahealth_v1alpha1_pb2.UNHEALTHY,
                    f"device {d.uuid} is no longer reported by the node",
                    now,
                )
                for d in self._devices
            ]
        changed = [s.health for s in statuses] != [s.health for s in self.statuses]
        self.statuses = statuses
        if changed:
            for s in statuses:
                if s.health != drahealth_v1alpha1_pb2.HEALTHY:
                    log.warning("device not healthy", extra={"device": s.device, "reason": s.message})
            async with self._changed:
                self.version += 1
                self._changed.notify_all()
        return statuses

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
                    message=s.message[:1024],
                )
                for s in self.statuses
            ]
        )


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
