"""Device discovery backends: the vendor's real one (NVML for NVIDIA) or the mock.

Both return :class:`vendors.base.DeviceInfo` sorted by index; the rest of the driver cannot tell
them apart. :func:`process_reader` is the watchdog's hook: who holds how much memory on each device,
from the device driver (NVML), on the real backend and, given the fake NVML library, on the mock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from vendors.base import DeviceInfo, DiscoveryError, HealthReportingVendor, NodeVendor

from ..health import HealthSource, MockFaultSource, VendorToolHealthSource
from ..telemetry import Telemetry
from . import mock
from .processes import NvmlProcessReader, ProcessReader, ProcessReaderError

MOCK = "mock"
NVML = "nvml"


class BackendError(RuntimeError):
    """The configured backend cannot produce devices; the message says what to change."""


def backend_names(vendor: NodeVendor) -> list[str]:
    return [vendor.real_backend, MOCK]


async def discover(vendor: NodeVendor, backend: str, *, node_name: str, mock_devices: str | None) -> list[DeviceInfo]:
    """Enumerate the node's devices with ``backend`` (``mock`` or the vendor's real backend)."""
    if backend == MOCK:
        if not mock_devices:
            raise BackendError("--backend mock needs --mock-devices, e.g. --mock-devices 4xH200")
        try:
            devices = mock.discover(mock_devices, vendor.names, vendor.mock_models, node_name)
        except mock.MockSpecError as exc:
            raise BackendError(str(exc)) from exc
    elif backend == vendor.real_backend:
        try:
            devices = await asyncio.to_thread(vendor.discover)
        except DiscoveryError as exc:
            raise BackendError(str(exc)) from exc
    else:
        raise BackendError(
            f"unknown backend {backend!r} for vendor {vendor.names.vendor}; choose one of {backend_names(vendor)}"
        )
    devices = sorted(devices, key=lambda d: d.index)
    seen: set[str] = set()
    for d in devices:
        if d.uuid in seen:
            raise BackendError(f"two devices report the same UUID {d.uuid}; discovery output is unusable")
        seen.add(d.uuid)
    return devices


def health_sources(
    vendor: NodeVendor,
    backend: str,
    devices: Sequence[DeviceInfo],
    *,
    mock_faults: str,
    ignored_xids: frozenset[int] = frozenset(),
) -> list[HealthSource]:
    """What reports device faults besides discovery: the mock backend's control file, NVML's events,
    or the vendor tool's health where it has one."""
    if backend == MOCK:
        return [MockFaultSource(mock_faults, devices, vendor.names)]
    if backend == NVML:
        from .nvml import NvmlHealthSource

        return [NvmlHealthSource(devices, ignored_xids=ignored_xids)]
    if isinstance(vendor, HealthReportingVendor):
        return [VendorToolHealthSource(vendor)]
    return []


def telemetry(backend: str) -> Telemetry | None:
    """The backend's own device figures (NVML); ``None``: sum the containers' regions instead."""
    if backend == NVML:
        from .nvml import NvmlTelemetry

        return NvmlTelemetry()
    return None


def process_reader(vendor: NodeVendor, backend: str, library: str | None) -> tuple[ProcessReader | None, str]:
    """The watchdog's per-process reader for this vendor and backend, or ``None`` and why there is none.

    NVML (NVIDIA): the real backend reads the node's ``libnvidia-ml.so.1`` (or ``library``); the mock
    backend reads only the library it is given (the fake NVML of the tests). Other vendors' tools
    report no per-process memory the watchdog could use. :class:`BackendError` when NVML fails."""
    if vendor.real_backend != "nvml":
        return None, f"{vendor.names.vendor} devices report no per-process memory the watchdog can read"
    if backend == MOCK and not library:
        return None, "the mock backend has no NVML; give --watchdog-nvml-library (the fake libnvidia-ml.so.1)"
    try:
        return NvmlProcessReader(library), ""
    except ProcessReaderError as exc:
        raise BackendError(str(exc)) from exc
