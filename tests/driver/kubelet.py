"""A kubelet-like client for the driver tests: our generated stubs over real Unix sockets.

It finds the registration socket in the registry directory as the kubelet's plugin watcher does,
validates ``GetInfo`` the way the kubelet's DRA plugin manager does, picks the first advertised
service it knows, confirms with ``NotifyRegistrationStatus``, then calls prepare/unprepare on the
advertised endpoint.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import grpc

from dra_driver.proto import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from dra_driver.proto import pluginregistration_v1_pb2 as reg_pb2
from dra_driver.proto import pluginregistration_v1_pb2_grpc as reg_grpc

KUBELET_SERVICES = {
    "v1.DRAPlugin": (dra_v1_pb2, dra_v1_pb2_grpc),
    "v1beta1.DRAPlugin": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
}


@dataclass(frozen=True)
class Claim:
    namespace: str
    name: str
    uid: str


def _registration_sockets(registry_dir: str) -> list[str]:
    """Socket files the kubelet would consider (names starting with a dot are ignored)."""
    if not os.path.isdir(registry_dir):
        return []
    return [
        os.path.join(registry_dir, e)
        for e in sorted(os.listdir(registry_dir))
        if not e.startswith(".") and e.endswith(".sock")
    ]


async def find_registration_socket(registry_dir: str, timeout: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = _registration_sockets(registry_dir)
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no registration socket appeared in {registry_dir} within {timeout}s")
        await asyncio.sleep(0.02)


class Kubelet:
    def __init__(self, registry_dir: str, *, known: tuple[str, ...] = ("v1.DRAPlugin", "v1beta1.DRAPlugin")) -> None:
        self.registry_dir = registry_dir
        self.known = known
        self.info: Any = None
        self.service = ""
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._pb: Any = None

    async def register(self, timeout: float = 10.0) -> Kubelet:
        """Register the plugin; a socket that does not answer (a dead plugin's leftover) is retried
        every 100 ms, as the kubelet's plugin manager retries failed registrations."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                return await self._register_once(await find_registration_socket(self.registry_dir, timeout))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _register_once(self, sock: str) -> Kubelet:
        async with grpc.aio.insecure_channel(f"unix://{sock}") as channel:
            stub = reg_grpc.RegistrationStub(channel)
            info = await stub.GetInfo(reg_pb2.InfoRequest(), timeout=1.0)
            error = ""
            if info.type != "DRAPlugin":
                error = f"unknown plugin type {info.type!r}"
            elif not os.path.isabs(info.endpoint):
                error = f"endpoint {info.endpoint!r} is not absolute"
            else:
                chosen = [v for v in info.supported_versions if v in self.known]
                if not chosen:
                    error = f"none of {list(info.supported_versions)} is supported"
                else:
                    self.service = chosen[0]
            await stub.NotifyRegistrationStatus(
                reg_pb2.RegistrationStatus(plugin_registered=not error, error=error), timeout=1.0
            )
            if error:
                raise AssertionError(f"registration refused: {error}")
        self.info = info
        self._pb, grpc_mod = KUBELET_SERVICES[self.service]
        self._channel = grpc.aio.insecure_channel(f"unix://{info.endpoint}")
        self._stub = grpc_mod.DRAPluginStub(self._channel)
        return self

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    def _claims(self, claims: tuple[Claim, ...]) -> list[Any]:
        return [self._pb.Claim(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]

    async def prepare(self, *claims: Claim, timeout: float = 45.0) -> Any:
        req = self._pb.NodePrepareResourcesRequest(claims=self._claims(claims))
        return await self._stub.NodePrepareResources(req, timeout=timeout)

    async def unprepare(self, *claims: Claim, timeout: float = 45.0) -> Any:
        req = self._pb.NodeUnprepareResourcesRequest(claims=self._claims(claims))
        return await self._stub.NodeUnprepareResources(req, timeout=timeout)
