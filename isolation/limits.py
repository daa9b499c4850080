"""The limits file: a container's limits from a source the container cannot write.

The DRA driver writes one per request (container) at prepare, and the container gets it as a
read-only bind mount at :data:`CONTAINER_PATH`. ``libvgpu.so`` takes its limits from that file
whenever it exists and then ignores the isolation env (``isolation/libvgpu/limits.c``), so a tenant
that clears or changes its environment changes nothing. The env contract (:mod:`isolation.env`)
stays as the fallback for running libvgpu by hand, outside a Tessera container.

Next to it, in the node directory, each container has a *meta* file (the driver's: priority and
device UUIDs, read by the other containers' libvgpu) and a *record* (the container's own, holding
until when it is active per device): see ``isolation/libvgpu/priority.c``.

Formats (text, one ``key value`` per line, the first line a versioned header)::

    tessera-limits 1
    region /usr/local/tessera/claims/<uid>/<request>.cache
    node-dir /usr/local/tessera/node
    node-record <uid>.<request>
    priority 1
    core-policy default
    oversubscribe false
    device GPU-... memory=10737418240 sm=30

    tessera-node-meta 1
    priority 1
    device GPU-...
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

CONTAINER_PATH = "/run/tessera/limits"
"""Where libvgpu looks for the file inside a container (its one trusted place). Where nothing is there
(the local harness, runs by hand), ``TESSERA_LIMITS_FILE`` (:data:`isolation.env.LIMITS_FILE`) names it."""

LIMITS_HEADER = "tessera-limits 1"
META_HEADER = "tessera-node-meta 1"
POLICIES = ("default", "force", "disable")
MAX_DEVICES = 16
MAX_BYTES = 8192

RECORD_MAGIC = 0x43524E54
RECORD_VERSION = 1
RECORD = struct.Struct("<IIII16q")
"""A node record: magic, version, device count, pad, then per device until when (CLOCK_MONOTONIC ns) the
container counts as active."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_TOKEN_RE = re.compile(r"^[!-~]+$")


class LimitsError(ValueError):
    """Text that libvgpu would refuse."""


@dataclass(frozen=True)
class DeviceLimits:
    uuid: str
    memory_bytes: int
    """0: no memory limit."""
    sm_percent: int
    """0 (or 100): no SM limit."""


@dataclass(frozen=True)
class Limits:
    """One container's limits, its usage region and its node record."""

    region: str
    """Path of the usage region (the same on the host and in the container)."""
    devices: tuple[DeviceLimits, ...]
    """In the container's device index order (ascending host index)."""
    priority: int = 1
    core_policy: str = "default"
    oversubscribe: bool = False
    node_dir: str | None = None
    node_record: str | None = None
    """The container's record is ``<node_dir>/<node_record>.rec``, its meta ``<node_record>.meta``."""

    def render(self) -> str:
        """The file's text; :class:`LimitsError` if libvgpu would refuse it."""
        lines = [
            LIMITS_HEADER,
            "# written by the Tessera DRA driver at prepare; read-only in the container",
            f"region {self.region}",
        ]
        if self.node_dir is not None and self.node_record is not None:
            lines += [f"node-dir {self.node_dir}", f"node-record {self.node_record}"]
        lines += [
            f"priority {self.priority}",
            f"core-policy {self.core_policy}",
            f"oversubscribe {'true' if self.oversubscribe else 'false'}",
        ]
        lines += [f"device {d.uuid} memory={d.memory_bytes} sm={d.sm_percent}" for d in self.devices]
        text = "\n".join(lines) + "\n"
        parse(text)  # the writer never produces what the reader refuses
        return text

    def render_meta(self) -> str:
        """The node meta file: what other containers may know (priority, devices), nothing else."""
        return "\n".join([META_HEADER, f"priority {self.priority}", *(f"device {d.uuid}" for d in self.devices)]) + "\n"


def _uint(value: str, what: str, maximum: int) -> int:
    if not value.isdigit() or not value.isascii() or int(value) > maximum:
        raise LimitsError(f"{what} must be an integer 0..{maximum}, got {value!r}")
    return int(value)


def _device(value: str, meta: bool) -> DeviceLimits:
    uuid, _, rest = value.partition(" ")
    if not _TOKEN_RE.match(uuid) or len(uuid) >= 48:
        raise LimitsError(f"bad device UUID {uuid!r}")
    if meta:
        if rest:
            raise LimitsError("a meta file's device line has only the UUID")
        return DeviceLimits(uuid, 0, 0)
    match = re.fullmatch(r"memory=(\d+) sm=(\d+)", rest)
    if not match:
        raise LimitsError(f"device {uuid}: expected memory=<bytes> sm=<percent>, got {rest!r}")
    return DeviceLimits(uuid, _uint(match[1], "memory", 2**64 - 1), _uint(match[2], "sm", 100))


def _lines(text: str, header: str) -> list[tuple[int, str, str]]:
    if len(text.encode()) > MAX_BYTES:
        raise LimitsError(f"larger than {MAX_BYTES} bytes")
    lines = text.split("\n")
    if lines[0] != header:
        raise LimitsError(f"line 1: expected {header!r}")
    out = []
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" ")
        if not sep:
            raise LimitsError(f"line {number}: expected '<key> <value>'")
        out.append((number, key, value))
    return out


def parse(text: str) -> Limits:
    """Parse a limits file as libvgpu does (strictly: unknown keys, repeats and bad values refused)."""
    seen: dict[str, str] = {}
    devices: list[DeviceLimits] = []
    for number, key, value in _lines(text, LIMITS_HEADER):
        try:
            if key == "device":
                devices.append(_device(value, meta=False))
                continue
            if key not in ("region", "node-dir", "node-record", "priority", "core-policy", "oversubscribe"):
                raise LimitsError(f"unknown key {key!r}")
            if key in seen:
                raise LimitsError(f"{key} repeated")
            seen[key] = value
        except LimitsError as exc:
            raise LimitsError(f"line {number}: {exc}") from None
    missing = [k for k in ("region", "priority", "core-policy", "oversubscribe") if k not in seen]
    if missing:
        raise LimitsError(f"missing {', '.join(missing)}")
    _check_devices(devices)
    region = seen["region"]
    if not region.startswith("/") or not _TOKEN_RE.match(region) or len(region) >= 512:
        raise LimitsError(f"region must be an absolute path without spaces, got {region!r}")
    node_dir, record = seen.get("node-dir"), seen.get("node-record")
    if (node_dir is None) != (record is None):
        raise LimitsError("node-dir and node-record go together")
    if node_dir is not None and (not node_dir.startswith("/") or not _TOKEN_RE.match(node_dir) or len(node_dir) >= 512):
        raise LimitsError(f"node-dir must be an absolute path without spaces, got {node_dir!r}")
    if record is not None and (not _NAME_RE.match(record) or len(record) >= 120):
        raise LimitsError(f"node-record must be a file name ([A-Za-z0-9._-], not starting with '.'), got {record!r}")
    policy = seen["core-policy"]
    if policy not in POLICIES:
        raise LimitsError(f"core-policy must be one of {list(POLICIES)}, got {policy!r}")
    if seen["oversubscribe"] not in ("true", "false"):
        raise LimitsError(f"oversubscribe must be true or false, got {seen['oversubscribe']!r}")
    return Limits(
        region=region,
        devices=tuple(devices),
        priority=_uint(seen["priority"], "priority", 1000),
        core_policy=policy,
        oversubscribe=seen["oversubscribe"] == "true",
        node_dir=node_dir,
        node_record=record,
    )


def parse_meta(text: str) -> tuple[int, tuple[str, ...]]:
    """A node meta file: (priority, device UUIDs)."""
    priority: int | None = None
    devices: list[DeviceLimits] = []
    for number, key, value in _lines(text, META_HEADER):
        if key == "device":
            devices.append(_device(value, meta=True))
        elif key == "priority" and priority is None:
            priority = _uint(value, "priority", 1000)
        else:
            raise LimitsError(f"line {number}: unknown or repeated key {key!r}")
    if priority is None:
        raise LimitsError("missing priority")
    _check_devices(devices)
    return priority, tuple(d.uuid for d in devices)


def _check_devices(devices: Sequence[DeviceLimits]) -> None:
    if not devices:
        raise LimitsError("no device")
    if len(devices) > MAX_DEVICES:
        raise LimitsError(f"more than {MAX_DEVICES} devices")
    if len({d.uuid for d in devices}) != len(devices):
        raise LimitsError("a device is listed twice")
