"""Reader of libvgpu's usage region, for the node metrics.

Each container has one region file (``claims/<uid>/<request>.cache``, named in its limits file) that
every CUDA process of the container maps; the container can write every byte of it. The layout is
fixed by ``isolation/libvgpu/region.h`` (layout version 2); this module reads it without locking and
refuses files that are not libvgpu regions of this layout, and regions whose device totals fail their
check values (written over by the container, or read half-way through an update: read again).

The region holds usage only. The limits are the driver's (:mod:`isolation.limits`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x52475654
LAYOUT_VERSION = 2
MAX_DEVICES = 16
MAX_SLOTS = 1024
DEVICE_OFFSET = 128
DEVICE_SIZE = 192
SLOT_OFFSET = DEVICE_OFFSET + MAX_DEVICES * DEVICE_SIZE
SLOT_SIZE = 256
REGION_SIZE = SLOT_OFFSET + MAX_SLOTS * SLOT_SIZE
USED_INVALID = 1 << 62
"""What a live slot that fails its check contributes to every device's total (more than any limit)."""

_HEADER = struct.Struct("<IIIIIIQq")
_DEVICE = struct.Struct("<QQIIqQqIIq48s")
_SLOT = struct.Struct("<iiQ16Q")
_M64 = (1 << 64) - 1


class RegionError(Exception):
    """The file is not a readable libvgpu region (foreign, truncated, other layout, inconsistent)."""


class RegionInconsistent(RegionError):
    """A device total fails its check value: written over, or read half-way through an update."""


def _mix(h: int, w: int) -> int:
    h = ((h ^ w) * 0x9E3779B97F4A7C15) & _M64
    return h ^ (h >> 29)


def check(salt: int, tag: int, words: Sequence[int]) -> int:
    """``vgpu_check`` of region.c: a keyed mix of the words, never 0."""
    h = _mix(salt ^ 0x7465737365726121, tag)
    for w in words:
        h = _mix(h, w)
    return h or 1


def total_check(salt: int, device: int, used: int) -> int:
    """A keyed hash of the device plus the weighted bytes (region.c updates it with one multiply)."""
    return ((check(salt, (1 << 32) | device, []) + used * 0x9FB21C651E98DF25) & _M64) or 1


def slot_check(salt: int, index: int, pid: int, host_pid: int, used: Sequence[int]) -> int:
    ident = (pid & 0xFFFFFFFF) | ((host_pid & 0xFFFFFFFF) << 32)
    c = check(salt, (2 << 32) | index, [ident])
    for d, u in enumerate(used):
        c = (c + u * ((((2 * d + 1) * 0xD6E8FEB86659FD93) & _M64) | 1)) & _M64
    return c or 1


@dataclass(frozen=True)
class DeviceUsage:
    """One device of a container, in the order of its limits file."""

    index: int
    uuid: str
    """As the container's processes recorded it (informational: the limits file says which device it is)."""
    memory_used: int
    """Bytes charged by the container's processes (allocations, pool reservations, arrays, VMM);
    :data:`USED_INVALID` or more while a live process's slot is damaged."""
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
    valid: bool
    """Its check value holds (False: written over; libvgpu counts it at the maximum while it lives)."""


@dataclass(frozen=True)
class Region:
    path: str
    created_unix: int
    devices: tuple[DeviceUsage, ...]
    processes: tuple[ProcessSlot, ...]


def parse_region(data: bytes, path: str = "<bytes>", *, processes: bool = True, file_size: int | None = None) -> Region:
    """Decode a region image; RegionError if it is not one of ours or its totals fail their checks.
    Without ``processes`` only the header and the devices are needed (``data`` may stop at the process
    slots; none are decoded) and ``file_size`` is the file's full size (a truncated file is refused
    all the same)."""
    if len(data) < _HEADER.size:
        raise RegionError(f"{path}: truncated ({len(data)} bytes)")
    magic, version, size, max_dev, max_slots, dev_count, salt, created = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise RegionError(f"{path}: not a libvgpu region (magic {magic:#x})")
    if version != LAYOUT_VERSION or size != REGION_SIZE or max_dev != MAX_DEVICES or max_slots != MAX_SLOTS:
        raise RegionError(f"{path}: layout version {version}, size {size}: this reader knows {LAYOUT_VERSION}")
    total = len(data) if file_size is None else file_size
    if total < REGION_SIZE or len(data) < (REGION_SIZE if processes else SLOT_OFFSET):
        raise RegionError(f"{path}: truncated ({min(total, len(data))} of {REGION_SIZE} bytes)")
    devices = []
    for i in range(MAX_DEVICES):
        (used, used_check, _sms, _pad, _tat, _scale, _tick, _waited, util, last, uuid) = _DEVICE.unpack_from(
            data, DEVICE_OFFSET + i * DEVICE_SIZE
        )
        if used_check != total_check(salt, i, used):
            raise RegionInconsistent(f"{path}: device {i}: the total fails its check (written over, or mid-update)")
        if i >= dev_count and not used:
            continue
        devices.append(
            DeviceUsage(
                index=i,
                uuid=uuid.split(b"\0", 1)[0].decode("ascii", "replace"),
                memory_used=used,
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
            pid, host_pid, stored, *used = _SLOT.unpack_from(data, SLOT_OFFSET + s * SLOT_SIZE)
            valid = stored == slot_check(salt, s, pid, host_pid, used)
            procs.append(ProcessSlot(pid=pid, host_pid=host_pid, memory_used=tuple(used), valid=valid))
    return Region(path=path, created_unix=created, devices=tuple(devices), processes=tuple(procs))


def read_region(path: str | Path, *, processes: bool = True, attempts: int = 3) -> Region:
    """Read one region file; RegionError if it is missing, foreign, truncated, of another layout, or
    inconsistent on every attempt (a read can catch a total half-way through its update).

    Without ``processes`` (what a metrics scrape needs: the per-device figures) only the header and
    the device records are read, 3 KiB of the 263 KiB; the file must still have its full size."""
    p = Path(path)
    for attempt in range(max(1, attempts)):
        try:
            with p.open("rb") as f:
                file_size = None if processes else os.fstat(f.fileno()).st_size
                data = f.read(REGION_SIZE if processes else SLOT_OFFSET)
        except OSError as e:
            raise RegionError(f"{p}: {e.strerror}") from e
        try:
            return parse_region(data, str(p), processes=processes, file_size=file_size)
        except RegionInconsistent:
            if attempt == attempts - 1:
                raise
    raise RegionError(f"{p}: not read")


def scan_regions(root: str | Path, pattern: str = "*/*.cache") -> Iterator[Region | RegionError]:
    """Every region under a host library's claims directory (``<claims>/<claim uid>/<name>.cache``).

    Unreadable files are yielded as their RegionError so that the exporter can count them."""
    for path in sorted(Path(root).glob(pattern)):
        try:
            yield read_region(path)
        except RegionError as e:
            yield e
