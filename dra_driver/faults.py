"""Device faults: what makes a device unhealthy, how bad it is, and the taint it gets. Pure.

A :class:`Fault` is one reason a device must not take new work: an XID error of a fatal class, an
uncorrectable ECC error, the device lost (fallen off the bus, gone from discovery), or the vendor
tool reporting it unhealthy. XIDs that only say an application misbehaved (the same list NVIDIA's
device plugin skips: 13, 31, 43, 45, 68) leave the device healthy; ``--ignored-xids`` adds more.

An unhealthy device gets one taint in the ResourceSlice (``devices[].taints``):
``<driver>/unhealthy=<fault kind>`` with effect ``NoSchedule`` (no new allocation), or ``NoExecute``
for a lost device (pods using it are evicted where the cluster runs the device-taint eviction),
both configurable (``--unhealthy-taint``, ``--device-lost-taint``; ``off`` publishes no taint).

The mock backend reads injected faults from a control file (:func:`parse_mock_faults`), so the whole
path (taint, health stream, pod status) runs in CI.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from vendors.base import DeviceInfo, VendorNames

XID = "xid"
ECC = "ecc"
LOST = "device-lost"
TOOL = "vendor-tool"
KINDS = (XID, ECC, LOST, TOOL)

APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68})
"""XIDs caused by the application, not the device (graphics engine exception, GPU memory page fault,
GPU stopped processing, preemptive cleanup, video processor exception): the device stays healthy."""
DEVICE_LOST_XIDS = frozenset({79})
"""XID 79: the GPU has fallen off the bus."""
ECC_XIDS = frozenset({48, 63, 64, 94, 95})
"""XIDs reporting uncorrectable (double-bit) ECC errors, row remapping and contained/uncontained ECC."""

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
OFF = "off"
EFFECTS = (NO_SCHEDULE, NO_EXECUTE, OFF)
TAINT_NAME = "unhealthy"
"""The taint key is ``<driver>/unhealthy``; its value is the fault kind (``xid-79``, ``ecc``...)."""
MAX_MESSAGE = 1024


class FaultSpecError(ValueError):
    """The mock fault control file cannot be understood; the message says how to write it."""


@dataclass(frozen=True)
class Fault:
    """One reason a device is unhealthy."""

    kind: str
    """One of :data:`KINDS`."""
    message: str
    xid: int | None = None
    since: float = 0.0
    """Unix time the fault was first seen (the taint's ``timeAdded``)."""

    @property
    def lost(self) -> bool:
        return self.kind == LOST

    @property
    def label(self) -> str:
        """The taint value: ``xid-<n>`` for a fault an XID reported, else the kind."""
        return f"{XID}-{self.xid}" if self.xid is not None else self.kind


def parse_xids(text: str) -> frozenset[int]:
    """``--ignored-xids``: a comma list of XID numbers; ``ValueError`` names the bad entry."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"{part!r} is not an XID number; write e.g. 109,119")
        out.add(int(part))
    return frozenset(out)


def xid_fault(xid: int, device: str, *, ignored: Iterable[int] = (), now: float | None = None) -> Fault | None:
    """The fault an XID event means, or ``None`` for an application error (or an ignored XID)."""
    if xid in APPLICATION_XIDS or xid in set(ignored):
        return None
    since = time.time() if now is None else now
    if xid in DEVICE_LOST_XIDS:
        return Fault(LOST, f"XID {xid} on {device}: the GPU has fallen off the bus", xid, since)
    if xid in ECC_XIDS:
        return Fault(ECC, f"XID {xid} on {device}: uncorrectable memory (ECC) error", xid, since)
    return Fault(XID, f"XID {xid} on {device}: a fatal device error; reset or replace the device", xid, since)


def taint_key(names: VendorNames) -> str:
    return names.qualified(TAINT_NAME)


def taint_effect(fault: Fault, *, unhealthy: str = NO_SCHEDULE, lost: str = NO_EXECUTE) -> str:
    """The effect configured for a fault (``off``: no taint)."""
    return lost if fault.lost else unhealthy


def rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def device_taints(
    faults: Sequence[Fault], names: VendorNames, *, unhealthy: str = NO_SCHEDULE, lost: str = NO_EXECUTE
) -> list[dict[str, Any]]:
    """The taints of a device with ``faults``: one per effect (the worst fault of it names the value),
    at most two (a device lost and otherwise broken carries both effects)."""
    out: dict[str, dict[str, Any]] = {}
    for fault in sorted(faults, key=lambda f: (not f.lost, f.since, f.kind)):
        effect = taint_effect(fault, unhealthy=unhealthy, lost=lost)
        if effect == OFF or effect in out:
            continue
        out[effect] = {
            "key": taint_key(names),
            "value": fault.label,
            "effect": effect,
            "timeAdded": rfc3339(fault.since),
        }
    return [out[e] for e in (NO_EXECUTE, NO_SCHEDULE) if e in out]


# --- mock fault injection ------------------------------------------------------------------------

_MOCK_KINDS = {"xid": XID, "ecc": ECC, "lost": LOST, "device-lost": LOST, "unhealthy": TOOL, "vendor-tool": TOOL}
_LINE_RE = re.compile(r"^\s*(\S+)\s+(\S+)(?:\s+(\d+))?\s*$")


def parse_mock_faults(text: str, devices: Sequence[DeviceInfo], names: VendorNames) -> dict[str, list[Fault]]:
    """Faults injected through the mock backend's control file: device UUID -> faults.

    Lines ``<device> <fault> [<xid>]`` (``#`` starts a comment), or YAML/JSON: a list of
    ``{device, fault, xid, message}``. ``device``: ``gpu-1``, the index ``1`` or the UUID; ``fault``:
    ``xid`` (with its XID number), ``ecc``, ``lost``, ``unhealthy`` (what a vendor tool would say). An
    XID is classified as a real one is (:func:`xid_fault`), so ``xid 13`` injects nothing. ``since`` of
    the faults is 0: the monitor stamps the time it first sees each. :class:`FaultSpecError` says what
    is wrong.
    """
    entries = _mock_entries(text)
    by_key: dict[str, DeviceInfo] = {}
    for d in devices:
        by_key[d.uuid] = d
        by_key[str(d.index)] = d
        by_key[names.device_name(d.index)] = d
    out: dict[str, list[Fault]] = {}
    for n, entry in enumerate(entries, 1):
        unknown = sorted(set(entry) - {"device", "fault", "xid", "message"})
        if unknown:
            raise FaultSpecError(f"fault {n}: unknown fields {unknown}; known: device, fault, xid, message")
        device = by_key.get(str(entry.get("device", "")))
        if device is None:
            known = ", ".join(names.device_name(d.index) for d in devices)
            raise FaultSpecError(f"fault {n}: no device {entry.get('device')!r} on this node (devices: {known})")
        kind = _MOCK_KINDS.get(str(entry.get("fault", "")).lower())
        if kind is None:
            raise FaultSpecError(f"fault {n}: unknown fault {entry.get('fault')!r}; use xid, ecc, lost or unhealthy")
        where = f"{names.device_name(device.index)} ({device.uuid})"
        xid_value = entry.get("xid")
        if kind == XID:
            if isinstance(xid_value, bool) or not isinstance(xid_value, int | str) or not str(xid_value).isdigit():
                raise FaultSpecError(f"fault {n}: an xid fault needs an XID number, e.g. '{where} xid 79'")
            fault = xid_fault(int(xid_value), where, now=0.0)
            if fault is None:
                continue
        elif kind == ECC:
            fault = Fault(ECC, f"injected: uncorrectable ECC error on {where}")
        elif kind == LOST:
            fault = Fault(LOST, f"injected: {where} has fallen off the bus")
        else:
            fault = Fault(TOOL, str(entry.get("message") or f"injected: the vendor tool reports {where} unhealthy"))
        out.setdefault(device.uuid, []).append(fault)
    return out


def _mock_entries(text: str) -> list[Mapping[str, Any]]:
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith(("[", "{", "-")):
        try:
            data = json.loads(stripped) if stripped[0] in "[{" else yaml.safe_load(stripped)
        except (ValueError, yaml.YAMLError) as exc:
            raise FaultSpecError(f"not valid YAML/JSON: {exc}") from exc
        if isinstance(data, Mapping):
            data = data.get("faults")
        if not isinstance(data, list) or not all(isinstance(e, Mapping) for e in data):
            raise FaultSpecError("a YAML/JSON fault file holds a list of {device, fault, xid} or {faults: [...]}")
        return list(data)
    entries: list[Mapping[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0]
        if not line.strip():
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise FaultSpecError(
                f"line {number}: {raw.strip()!r}; write '<device> <fault> [<xid>]', e.g. 'gpu-1 xid 79'"
            )
        entry: dict[str, Any] = {"device": match.group(1), "fault": match.group(2)}
        if match.group(3):
            entry["xid"] = int(match.group(3))
        entries.append(entry)
    return entries
