"""NVML on NVIDIA nodes, beyond discovery: device health for the monitor and figures for ``/metrics``.

:class:`NvmlHealthSource` registers every published GPU for XID critical errors and double-bit ECC
errors (``nvmlEventSetCreate``, ``nvmlDeviceRegisterEvents`` with the event types the device
supports) and waits for them in a thread of its own (``nvmlEventSetWait``, one second at a time, so
it stops promptly). An XID of a fatal class (:func:`faults.xid_fault`: not one of the application
errors 13, 31, 43, 45, 68, nor an ``--ignored-xids`` one) or an ECC event is pushed to the monitor and
stays until the driver restarts (reset or replace the GPU, then restart the driver pod); XID 79 means
the GPU fell off the bus. A failing wait marks every GPU unhealthy, as NVIDIA's device plugin does:
the events can no longer be trusted. Every health interval it also asks each GPU something cheap
(``nvmlDeviceGetMemoryInfo``): ``NVML_ERROR_GPU_IS_LOST`` means the device is lost.

:class:`NvmlTelemetry` reads memory, utilisation, temperature and power at scrape time.

``nvml`` is the ``pynvml`` module (injectable for tests).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vendors.base import DeviceInfo

from .. import faults
from ..faults import Fault
from ..health import HealthSource
from ..telemetry import DeviceFigures

log = logging.getLogger("dra_driver.nvml")

WAIT_MS = 1000
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
NVML_TEMPERATURE_GPU = 0


def _load(nvml: Any | None) -> Any:
    if nvml is not None:
        return nvml
    import pynvml

    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


class NvmlHealthSource(HealthSource):
    name = "nvml"

    def __init__(
        self, devices: Sequence[DeviceInfo], *, ignored_xids: frozenset[int] = frozenset(), nvml: Any | None = None
    ) -> None:
        self._devices = list(devices)
        self._ignored = ignored_xids
        self._nvml = nvml
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.registered: list[str] = []
        """UUIDs registered for events (for tests and logs)."""
        self.ready = threading.Event()
        """Set once the registration is done and the wait loop runs."""

    def start(self, report: Callable[[str, Fault], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(report,), name="nvml-health", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, WAIT_MS / 1000 * 3)

    # -- the event thread -----------------------------------------------------------------------

    def _run(self, report: Callable[[str, Fault], None]) -> None:
        try:
            nvml = _load(self._nvml)
            nvml.nvmlInit()
        except Exception as exc:
            log.warning("NVML health events unavailable; XID errors are not watched", extra={"error": str(exc)})
            self.ready.set()
            return
        event_set = None
        try:
            event_set = nvml.nvmlEventSetCreate()
            for d in self._devices:
                self._register(nvml, event_set, d, report)
            self.ready.set()
            log.info("watching NVML health events", extra={"devices": len(self.registered)})
            while not self._stop.is_set():
                self._wait_once(nvml, event_set, report)
        except Exception as exc:
            log.warning("NVML health event loop failed", extra={"error": str(exc)})
            self._all(report, f"NVML health events failed ({exc}); the devices' health is unknown")
        finally:
            self.ready.set()
            if event_set is not None:
                try:
                    nvml.nvmlEventSetFree(event_set)
                except Exception as exc:
                    log.debug("nvmlEventSetFree failed", extra={"error": str(exc)})
            try:
                nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown failed", extra={"error": str(exc)})

    def _register(self, nvml: Any, event_set: Any, device: DeviceInfo, report: Callable[[str, Fault], None]) -> None:
        where = f"GPU {device.index} ({device.uuid})"
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(device.uuid)
            supported = int(nvml.nvmlDeviceGetSupportedEventTypes(handle))
            mask = (EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC) & supported
            if mask:
                nvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                self.registered.append(device.uuid)
            else:
                log.warning("GPU reports no health events; XID errors are not watched", extra={"uuid": device.uuid})
        except Exception as exc:
            code = _code(exc)
            if code == NVML_ERROR_NOT_SUPPORTED:
                log.warning("GPU too old for health events", extra={"uuid": device.uuid})
            elif code == NVML_ERROR_GPU_IS_LOST:
                report(device.uuid, Fault(faults.LOST, f"{where}: NVML says the GPU is lost"))
            else:
                report(device.uuid, Fault(faults.XID, f"{where}: cannot register for NVML health events: {exc}"))

    def _wait_once(self, nvml: Any, event_set: Any, report: Callable[[str, Fault], None]) -> None:
        try:
            data = nvml.nvmlEventSetWait(event_set, WAIT_MS)
        except Exception as exc:
            if _code(exc) == NVML_ERROR_TIMEOUT:
                return
            self._all(report, f"waiting for NVML health events failed: {exc}")
            self._stop.wait(WAIT_MS / 1000)
            return
        event_type = int(data.eventType)
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
        except Exception as exc:
            self._all(report, f"NVML event {event_type:#x} for a device NVML cannot name ({exc})")
            return
        device = next((d for d in self._devices if d.uuid == uuid), None)
        if device is None:
            log.info("NVML event for a device this driver does not publish", extra={"uuid": uuid})
            return
        where = f"GPU {device.index} ({uuid})"
        if event_type & EVENT_XID_CRITICAL:
            xid = int(data.eventData)
            fault = faults.xid_fault(xid, where, ignored=self._ignored)
            if fault is None:
                log.info("application XID; device stays healthy", extra={"uuid": uuid, "xid": xid})
                return
            report(uuid, fault)
        elif event_type & EVENT_DOUBLE_BIT_ECC:
            report(uuid, Fault(faults.ECC, f"{where}: uncorrectable (double-bit) ECC error"))

    def _all(self, report: Callable[[str, Fault], None], message: str) -> None:
        for d in self._devices:
            report(d.uuid, Fault(faults.XID, message))

    # -- polled: lost GPUs ----------------------------------------------------------------------

    async def poll(self) -> Mapping[str, Sequence[Fault]]:
        return await asyncio.to_thread(self._lost)

    def _lost(self) -> dict[str, list[Fault]]:
        nvml = _load(self._nvml)
        nvml.nvmlInit()
        out: dict[str, list[Fault]] = {}
        try:
            for d in self._devices:
                try:
                    nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByUUID(d.uuid))
                except Exception as exc:
                    if _code(exc) == NVML_ERROR_GPU_IS_LOST:
                        message = f"GPU {d.index} ({d.uuid}): NVML says the GPU is lost (fallen off the bus)"
                        out[d.uuid] = [Fault(faults.LOST, message)]
        finally:
            nvml.nvmlShutdown()
        return out


class NvmlTelemetry:
    """Memory, utilisation, temperature and power of each GPU, read when ``/metrics`` is scraped."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()
        self._initialised = False

    def __call__(self, devices: Sequence[DeviceInfo]) -> dict[str, DeviceFigures]:
        try:
            nvml = _load(self._nvml)
            with self._lock:
                if not self._initialised:
                    nvml.nvmlInit()
                    self._initialised = True
        except Exception as exc:
            log.debug("NVML unavailable for device figures", extra={"error": str(exc)})
            return {}
        return {d.uuid: self._read(nvml, d) for d in devices}

    @staticmethod
    def _read(nvml: Any, device: DeviceInfo) -> DeviceFigures:
        def attempt(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except Exception:  # a reading the GPU does not offer is left out
                return None

        handle = attempt(lambda: nvml.nvmlDeviceGetHandleByUUID(device.uuid))
        if handle is None:
            return DeviceFigures()
        memory = attempt(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        rates = attempt(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        temperature = attempt(lambda: nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU))
        milliwatts = attempt(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        return DeviceFigures(
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            utilization=float(rates.gpu) / 100.0 if rates is not None else None,
            temperature_celsius=float(temperature) if temperature is not None else None,
            power_watts=float(milliwatts) / 1000.0 if milliwatts is not None else None,
        )

    def close(self) -> None:
        with self._lock:
            if self._initialised:
                try:
                    _load(self._nvml).nvmlShutdown()
                except Exception as exc:
                    log.debug("nvmlShutdown failed", extra={"error": str(exc)})
                self._initialised = False
