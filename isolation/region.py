"""Reader of libvgpu's shared region, for the node metrics.

Each container has one region file (``CUDA_DEVICE_MEMORY_SHARED_CACHE``, in its claim directory)
that every CUDA process of the container maps. The layout is fixed by
``isolation/libvgpu/region.h`` (layout version 1); this module reads it without locking (every
field it reads is a naturally aligned word the library updates atomically) and refuses files that
are not libvgpu regions of this layout.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x52475654
LAYOUT_VERSION = 1
MAX_DEVICES = 16
MAX_SLOTS = 1024
DEVICE_OFFSET = 128
DEVICE_SIZE = 192
SLOT_OFFSET = DEVICE_OFFSET + MAX_DEVICES * DEVICE_SIZE
SLOT_SIZE = 256
REGION_SIZE = SLOT_OFFSET + MAX_SLOTS * SLOT_SIZE
POLICIES = ("default", "force", "disable")

_HEADER = struct.Struct("<IIIIIIiIQq")
_DEVICE = struct.Struct("<QIIQqQqIIq48s")
_SLOT = struct.Struct("<iiQ16Q")


class RegionError(Exception):
    """The file is not a readable libvgpu region (foreign, truncated, other layout)."""


@dataclass(frozen=True)
class DeviceUsage:
    """One device of a container, in the container's CUDA ordinal order."""

    index: int
    uuid: str
    memory_used: int
    """Bytes charged by the container's processes (allocations, pool reservations, arrays, VMM)."""
    memory_limit: int
    """Bytes; 0 means no limit."""
    sm_limit: int
    """Percent; 0 means no limit."""
    utilization: float
    """Container utilisation last measured by the library, 0.0..1.0."""
    last_kernel_unix: int | None
    """Seconds since the epoch of the container's last launch; None if none yet."""


@dataclass(frozen=True)
class ProcessSlot:
    pid: int
    """PID inside the container."""
    host_pid: int
    """PID as NVML reports it; 0 while unknown."""
    memory_used: tuple[int, ...]
    """Bytes per device."""


@dataclass(frozen=True)
class Region:
    path: str
    container_id: int
    priority: int
    policy: str
    created_unix: int
    devices: tuple[DeviceUsage, ...]
    processes: tuple[ProcessSlot, ...]


def parse_region(data: bytes, path: str = "<bytes>", *, processes: bool = True, file_size: int | None = None) -> Region:
    """Decode a region image; RegionError if it is not one of ours. Without ``processes`` only the
    header and the devices are needed (``data`` may stop at the process slots; none are decoded) and
    ``file_size`` is the file's full size (a truncated file is refused all the same)."""
    if len(data) < _HEADER.size:
        raise RegionError(f"{path}: truncated ({len(data)} bytes)")
    (magic, version, size, max_dev, max_slots, dev_count, priority, policy, cid, created) = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise RegionError(f"{path}: not a libvgpu region (magic {magic:#x})")
    if version != LAYOUT_VERSION or size != REGION_SIZE or max_dev != MAX_DEVICES or max_slots != MAX_SLOTS:
        raise RegionError(f"{path}: layout version {version}, size {size}: this reader knows {LAYOUT_VERSION}")
    total = len(data) if file_size is None else file_size
    if total < REGION_SIZE or len(data) < (REGION_SIZE if processes else SLOT_OFFSET):
        raise RegionError(f"{path}: truncated ({min(total, len(data))} of {REGION_SIZE} bytes)")
    devices = []
    for i in range(MAX_DEVICES):
        (limit, sm_limit, _sms, used, _tat, _scale, _tick, _waited, util, last, uuid) = _DEVICE.unpack_from(
            data, DEVICE_OFFSET + i * DEVICE_SIZE
        )
        if i >= dev_count and not limit and not used:
            continue
        devices.append(
            DeviceUsage(
                index=i,
                uuid=uuid.split(b"\0", 1)[0].decode("ascii", "replace"),
                memory_used=used,
                memory_limit=limit,
                sm_limit=sm_limit,
                utilization=min(util, 1000) / 1000.0,
                last_kernel_unix=last or None,
            )
        )
    procs = []
    # The pid of every slot in one strided read; only the used slots are decoded (most of the 1024
    # slots are empty).
    pids = memoryview(data)[SLOT_OFFSET:REGION_SIZE].cast("i")[:: SLOT_SIZE // 4] if processes else []
    for s, slot_pid in enumerate(pids):
        if slot_pid:
            pid, host_pid, _start, *used = _SLOT.unpack_from(data, SLOT_OFFSET + s * SLOT_SIZE)
            procs.append(ProcessSlot(pid=pid, host_pid=host_pid, memory_used=tuple(used)))
    return Region(
        path=path,
        container_id=cid,
        priority=priority,
        policy=POLICIES[policy] if policy < len(POLICIES) else f"unknown({policy})",
        created_unix=created,
        devices=tuple(devices),
        processes=tuple(procs),
    )


def read_region(path: str | Path, *, processes: bool = True) -> Region:
    """Read one region file; RegionError if it is missing, foreign, truncated or of another layout.

    Without ``processes`` (what a metrics scrape needs: the per-device figures) only the header and
    the device records are read, 3 KiB of the 263 KiB; the file must still have its full size."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            file_size = None if processes else os.fstat(f.fileno()).st_size
            data = f.read(REGION_SIZE if processes else SLOT_OFFSET)
    except OSError as e:
        raise RegionError(f"{p}: {e.strerror}") from e
    return parse_region(data, str(p), processes=processes, file_size=file_size)


def scan_regions(root: str | Path, pattern: str = "*/*.cache") -> Iterator[Region | RegionError]:
    """Every region under a host library's claims directory (``<claims>/<claim uid>/<name>.cache``).

    Unreadable files are yielded as their RegionError so that the exporter can count them."""
    for path in sorted(Path(root).glob(pattern)):
        try:
            yield read_region(path)
        except RegionError as e:
            yield e
