"""The DRA socket: ``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`` and ``...v1beta1.DRAPlugin`` with one
handler (the messages are the same; v1 also carries ``share_id``), plus ``v1alpha1.DRAResourceHealth``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc

from .checkpoint import PreparedDevice
from .claims import ClaimRef
from .prepare import Preparer
from .proto import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc

log = logging.getLogger("dra_driver.plugin")

SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
"""What the registration socket advertises, in order of preference (kubelet picks the first it knows)."""


def _refs(claims: Iterable[Any]) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]


class DRAHandler:
    """Turns gRPC messages of either version into calls on the :class:`Preparer` and back."""

    def __init__(self, preparer: Preparer) -> None:
        self.preparer = preparer

    async def prepare(self, request: Any, pb: Any, *, with_share_id: bool) -> Any:
        refs = _refs(request.claims)
        if not refs:
            return pb.NodePrepareResourcesResponse()
        results = await self.preparer.prepare(refs)
        response = pb.NodePrepareResourcesResponse()
        for uid, result in results.items():
            entry = response.claims[uid]
            if result.error:
                entry.error = result.error
                continue
            for device in result.devices:
                entry.devices.append(self._device(pb, device, with_share_id=with_share_id))
        return response

    async def unprepare(self, request: Any, pb: Any) -> Any:
        refs = _refs(request.claims)
        response = pb.NodeUnprepareResourcesResponse()
        if not refs:
            return response
        for uid, error in (await self.preparer.unprepare(refs)).items():
            entry = response.claims[uid]
            if error:
                entry.error = error
        return response

    @staticmethod
    def _device(pb: Any, device: PreparedDevice, *, with_share_id: bool) -> Any:
        msg = pb.Device(
            request_names=list(device.request_names),
            pool_name=device.pool_name,
            device_name=device.device_name,
            cdi_device_ids=list(device.cdi_device_ids),
        )
        if with_share_id and device.share_id:
            msg.share_id = device.share_id
        return msg


class DRAPluginV1(dra_v1_pb2_grpc.DRAPluginServicer):  # type: ignore[misc]
    def __init__(self, handler: DRAHandler) -> None:
        self._handler = handler

    async def NodePrepareResources(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._handler.prepare(request, dra_v1_pb2, with_share_id=True)

    async def NodeUnprepareResources(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._handler.unprepare(request, dra_v1_pb2)


class DRAPluginV1beta1(dra_v1beta1_pb2_grpc.DRAPluginServicer):  # type: ignore[misc]
    def __init__(self, handler: DRAHandler) -> None:
        self._handler = handler

    async def NodePrepareResources(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._handler.prepare(request, dra_v1beta1_pb2, with_share_id=False)

    async def NodeUnprepareResources(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._handler.unprepare(request, dra_v1beta1_pb2)


def add_to_server(server: grpc.aio.Server, preparer: Preparer) -> None:
    handler = DRAHandler(preparer)
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(DRAPluginV1(handler), server)
    dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(DRAPluginV1beta1(handler), server)
