"""DRA plugin registration and calls, as the kubelet's plugin watcher and DRA manager make them.

The registry directory is scanned for sockets (names starting with ``.`` are ignored); each new or
replaced socket is asked ``GetInfo``; a ``DRAPlugin`` advertising a service we speak
(``v1.DRAPlugin`` preferred, else ``v1beta1.DRAPlugin``) is registered under its name and told so
with ``NotifyRegistrationStatus``; anything else is told why not. A socket that goes away
unregisters its plugin. Prepare and unprepare go to the advertised endpoint over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from dra_driver.proto import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    drahealth_v1alpha1_pb2,
    drahealth_v1alpha1_pb2_grpc,
)
from dra_driver.proto import pluginregistration_v1_pb2 as reg_pb2
from dra_driver.proto import pluginregistration_v1_pb2_grpc as reg_grpc
from kubeapi import ObjectRef

log = logging.getLogger("e2e.kubelet.plugins")

SERVICES: dict[str, tuple[Any, Any]] = {
    "v1.DRAPlugin": (dra_v1_pb2, dra_v1_pb2_grpc),
    "v1beta1.DRAPlugin": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
}


class PluginError(Exception):
    """A plugin cannot be reached or answered with an error."""


ClaimRef = ObjectRef


@dataclass
class PreparedDevice:
    request_names: list[str]
    pool: str
    device: str
    cdi_ids: list[str]
    share_id: str | None
    driver: str = ""


@dataclass(frozen=True)
class DeviceHealthReport:
    """One entry of a ``NodeWatchResources`` answer."""

    pool: str
    device: str
    health: str
    """``Healthy``, ``Unhealthy`` or ``Unknown`` (the kubelet's words)."""
    last_updated: float
    timeout: float
    """``health_check_timeout_seconds``; 0 when the plugin sent none."""


_HEALTH_WORDS = {
    drahealth_v1alpha1_pb2.HEALTHY: "Healthy",
    drahealth_v1alpha1_pb2.UNHEALTHY: "Unhealthy",
}


class Plugin:
    def __init__(self, name: str, endpoint: str, service: str, registration_socket: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.service = service
        self.registration_socket = registration_socket
        self._channel = grpc.aio.insecure_channel(f"unix://{endpoint}")
        pb, pb_grpc = SERVICES[service]
        self._pb = pb
        self._stub = pb_grpc.DRAPluginStub(self._channel)
        self._health = drahealth_v1alpha1_pb2_grpc.DRAResourceHealthStub(self._channel)

    async def watch_health(self) -> Any:
        """``NodeWatchResources``: each answer as a list of :class:`DeviceHealthReport`, until the stream
        ends. :class:`PluginError` when the plugin does not serve it or the stream breaks."""
        stream = self._health.NodeWatchResources(drahealth_v1alpha1_pb2.NodeWatchResourcesRequest())
        try:
            async for answer in stream:
                yield [
                    DeviceHealthReport(
                        d.device.pool_name,
                        d.device.device_name,
                        _HEALTH_WORDS.get(d.health, "Unknown"),
                        float(d.last_updated_time),
                        float(d.health_check_timeout_seconds),
                    )
                    for d in answer.devices
                ]
        except grpc.aio.AioRpcError as exc:
            raise PluginError(f"NodeWatchResources on {self.name}: {exc.code().name}: {exc.details()}") from exc
        finally:
            stream.cancel()

    async def close(self) -> None:
        await self._channel.close(None)

    def _claims(self, claims: Sequence[ClaimRef]) -> list[Any]:
        return [self._pb.Claim(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]

    async def prepare(self, claims: Sequence[ClaimRef], timeout: float = 30.0) -> dict[str, list[PreparedDevice]]:
        """Devices per claim uid; :class:`PluginError` carries the first claim error or the RPC failure."""
        try:
            answer = await self._stub.NodePrepareResources(
                self._pb.NodePrepareResourcesRequest(claims=self._claims(claims)), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise PluginError(f"NodePrepareResources on {self.name}: {exc.code().name}: {exc.details()}") from exc
        out: dict[str, list[PreparedDevice]] = {}
        for claim in claims:
            result = answer.claims.get(claim.uid)
            if result is None:
                raise PluginError(
                    f"NodePrepareResources on {self.name}: no answer for claim {claim.namespace}/{claim.name}"
                )
            if result.error:
                raise PluginError(
                    f"NodePrepareResources on {self.name}, claim {claim.namespace}/{claim.name}: {result.error}"
                )
            out[claim.uid] = [
                PreparedDevice(
                    list(d.request_names),
                    d.pool_name,
                    d.device_name,
                    list(d.cdi_device_ids),
                    d.share_id if d.HasField("share_id") else None,
                    self.name,
                )
                for d in result.devices
            ]
        return out

    async def unprepare(self, claims: Sequence[ClaimRef], timeout: float = 30.0) -> None:
        try:
            answer = await self._stub.NodeUnprepareResources(
                self._pb.NodeUnprepareResourcesRequest(claims=self._claims(claims)), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise PluginError(f"NodeUnprepareResources on {self.name}: {exc.code().name}: {exc.details()}") from exc
        for claim in claims:
            result = answer.claims.get(claim.uid)
            if result is not None and result.error:
                raise PluginError(
                    f"NodeUnprepareResources on {self.name}, claim {claim.namespace}/{claim.name}: {result.error}"
                )


class PluginWatcher:
    """Keeps :attr:`plugins` (driver name -> Plugin) in step with the registry directory."""

    def __init__(self, registry_dir: str, *, interval: float = 0.1) -> None:
        self.registry_dir = registry_dir
        self.interval = interval
        self.plugins: dict[str, Plugin] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # socket path -> (inode, mtime_ns)
        self._failed: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.scan()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        for plugin in self.plugins.values():
            await plugin.close()
        self.plugins.clear()

    async def scan(self) -> None:
        present = _sockets(self.registry_dir)
        for path in list(self._seen):
            if path not in present:
                await self._forget(path, "its registration socket was removed")
        loop = asyncio.get_running_loop()
        for path, ident in present.items():
            if self._seen.get(path) == ident:
                continue
            if path in self._failed and loop.time() < self._failed[path]:
                continue
            if path in self._seen:
                await self._forget(path, "its registration socket was replaced")
            if await self._register(path):
                self._seen[path] = ident
                self._failed.pop(path, None)
            else:
                self._failed[path] = loop.time() + 0.5

    async def _forget(self, path: str, why: str) -> None:
        self._seen.pop(path, None)
        for name, plugin in list(self.plugins.items()):
            if plugin.registration_socket == path:
                del self.plugins[name]
                await plugin.close()
                log.info("plugin %s unregistered: %s", name, why)
                self.changed.set()

    async def _register(self, path: str) -> bool:
        try:
            async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
                stub = reg_grpc.RegistrationStub(channel)
                info = await stub.GetInfo(reg_pb2.InfoRequest(), timeout=5)
                error = ""
                service = next((s for s in ("v1.DRAPlugin", "v1beta1.DRAPlugin") if s in info.supported_versions), None)
                if info.type != "DRAPlugin":
                    error = f"plugin type {info.type!r} is not handled (only DRAPlugin)"
                elif service is None:
                    error = (
                        f"none of the supported versions {list(info.supported_versions)} is known "
                        f"(want v1.DRAPlugin or v1beta1.DRAPlugin)"
                    )
                elif not info.endpoint or not _exists(info.endpoint):
                    error = f"endpoint {info.endpoint!r} does not exist"
                await stub.NotifyRegistrationStatus(
                    reg_pb2.RegistrationStatus(plugin_registered=not error, error=error), timeout=5
                )
        except grpc.aio.AioRpcError as exc:
            log.debug("registration socket %s not answering: %s", path, exc.details())
            return False
        if error:
            log.warning("plugin at %s refused: %s", path, error)
            return True
        assert service is not None
        old = self.plugins.pop(info.name, None)
        if old is not None:
            await old.close()
        self.plugins[info.name] = Plugin(info.name, info.endpoint, service, path)
        log.info("plugin %s registered (%s at %s)", info.name, service, info.endpoint)
        self.changed.set()
        return True

    def registration(self, driver: str) -> tuple[str, tuple[int, int]] | None:
        """The registration socket ``driver`` is registered from and its (inode, mtime) then: a
        restarted driver's registration has a new one."""
        plugin = self.plugins.get(driver)
        if plugin is None or plugin.registration_socket not in self._seen:
            return None
        return plugin.registration_socket, self._seen[plugin.registration_socket]

    async def wait_for(self, driver: str, timeout: float) -> Plugin:
        deadline = asyncio.get_running_loop().time() + timeout
        while driver not in self.plugins:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise PluginError(f"DRA driver {driver} is not registered with this kubelet")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self.changed.wait()
        return self.plugins[driver]


def _sockets(registry_dir: str) -> dict[str, tuple[int, int]]:
    """Registration sockets (dot files ignored, as the kubelet does) -> (inode, mtime)."""
    present: dict[str, tuple[int, int]] = {}
    if os.path.isdir(registry_dir):
        for entry in sorted(os.listdir(registry_dir)):
            if entry.startswith("."):
                continue
            path = os.path.join(registry_dir, entry)
            with contextlib.suppress(OSError):
                st = os.stat(path)
                present[path] = (st.st_ino, st.st_mtime_ns)
    return present


def _exists(path: str) -> bool:
    return os.path.exists(path)
