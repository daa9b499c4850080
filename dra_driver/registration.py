"""The registration socket (``pluginregistration.Registration``) the kubelet finds in plugins_registry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from .proto import pluginregistration_v1_pb2 as reg_pb2
from .proto import pluginregistration_v1_pb2_grpc as reg_grpc

log = logging.getLogger("dra_driver.registration")

PLUGIN_TYPE = "DRAPlugin"


class Registration(reg_grpc.RegistrationServicer):  # type: ignore[misc]
    """Answers ``GetInfo`` with the driver name, the DRA socket and the served services."""

    def __init__(
        self,
        driver: str,
        endpoint: str,
        versions: Sequence[str],
        on_registered: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.versions = list(versions)
        self._on_registered = on_registered
        self.registered = False

    async def GetInfo(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return reg_pb2.PluginInfo(
            type=PLUGIN_TYPE, name=self.driver, endpoint=self.endpoint, supported_versions=self.versions
        )

    async def NotifyRegistrationStatus(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.registered = bool(request.plugin_registered)
        if self.registered:
            log.info("kubelet registered the plugin", extra={"driver": self.driver, "endpoint": self.endpoint})
        else:
            log.error(
                "kubelet refused the plugin registration",
                extra={"driver": self.driver, "error": request.error or "(no reason given)"},
            )
        if self._on_registered is not None:
            self._on_registered(self.registered, request.error)
        return reg_pb2.RegistrationStatusResponse()


def add_to_server(server: grpc.aio.Server, registration: Registration) -> None:
    reg_grpc.add_RegistrationServicer_to_server(registration, server)
