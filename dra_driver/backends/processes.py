"""Per-process device memory, as the device driver itself counts it: the watchdog's input.

NVIDIA: NVML's ``nvmlDeviceGetComputeRunningProcesses`` and ``...GraphicsRunningProcesses`` (the
``_v3`` entry points and struct, falling back to ``_v2``) for every device, through pynvml's loader
and structs. The figures are the driver's own accounting, so they include whatever a process
allocated past the in-process hook (a second driver copy loaded with ``dlmopen``, a static binary,
a nested container runtime). PIDs are those of the PID namespace NVML runs in: the watchdog needs
the host's (``hostPID`` in the chart).

The mock backend reads the same way from the fake ``libnvidia-ml.so.1`` the tests build
(``--watchdog-nvml-library``), which reports what the fake CUDA driver granted each process, so CI
runs the whole path. Blocking calls: run them in a worker thread.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class ProcessReaderError(RuntimeError):
    """The per-process figures cannot be read; the message says what to check."""


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    used_bytes: int


class ProcessReader(Protocol):
    def read(self) -> Mapping[str, list[ProcessMemory]]:
        """Device UUID -> the processes holding memory on it. Blocking."""
        ...

    def close(self) -> None: ...


_QUERIES = (
    ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"),
    ("nvmlDeviceGetGraphicsRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses_v2"),
)
_INITIAL_SLOTS = 128


class NvmlProcessReader:
    """Reads every device's processes through NVML; one instance per process (NVML is global)."""

    _lock = threading.Lock()

    def __init__(self, library: str | None = None) -> None:
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ProcessReaderError("nvidia-ml-py is not installed") from exc
        self._nvml: Any = pynvml
        with self._lock:
            if library:
                if pynvml.nvmlLib is not None and getattr(pynvml.nvmlLib, "_name", None) != library:
                    raise ProcessReaderError(f"NVML is already loaded from {pynvml.nvmlLib._name}, not {library}")
                try:
                    pynvml.nvmlLib = ctypes.CDLL(library)
                except OSError as exc:
                    raise ProcessReaderError(f"cannot load NVML from {library}: {exc}") from exc
            try:
                pynvml.nvmlInit()
                handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
                self._devices = [(_text(pynvml.nvmlDeviceGetUUID(h)), h) for h in handles]
            except pynvml.NVMLError as exc:
                raise ProcessReaderError(
                    f"cannot initialise NVML ({exc}); is libnvidia-ml.so.1 visible to the driver container?"
                ) from exc
        self._queries = [self._resolve(names) for names in _QUERIES]
        self._slots = _INITIAL_SLOTS
        self._array = (pynvml.c_nvmlProcessInfo_v3_t * self._slots)()

    def _resolve(self, names: tuple[str, ...]) -> Any:
        for name in names:
            try:
                return self._nvml._nvmlGetFunctionPointer(name)
            except self._nvml.NVMLError:
                continue
        raise ProcessReaderError(f"this NVML has none of {', '.join(names)}; the watchdog needs driver 470 or later")

    def read(self) -> dict[str, list[ProcessMemory]]:
        out: dict[str, list[ProcessMemory]] = {}
        for uuid, handle in self._devices:
            procs: dict[int, int] = {}
            for query in self._queries:
                for pid, used in self._query(query, handle):
                    procs[pid] = procs.get(pid, 0) + used
            out[uuid] = [ProcessMemory(pid, used) for pid, used in procs.items()]
        return out

    def _query(self, query: Any, handle: Any) -> list[tuple[int, int]]:
        nvml = self._nvml
        for _ in range(4):
            count = ctypes.c_uint(self._slots)
            ret = query(handle, ctypes.byref(count), self._array)
            if ret == nvml.NVML_ERROR_INSUFFICIENT_SIZE:
                self._slots = max(self._slots * 2, count.value * 2 + 16)
                self._array = (nvml.c_nvmlProcessInfo_v3_t * self._slots)()
                continue
            if ret != nvml.NVML_SUCCESS:
                raise ProcessReaderError(f"NVML process query failed: {nvml.NVMLError(ret)}")
            unknown = nvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
            entries = self._array[: count.value]
            return [(e.pid, e.usedGpuMemory) for e in entries if e.usedGpuMemory != unknown]
        raise ProcessReaderError("NVML kept reporting more processes than it returned")

    def close(self) -> None:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
