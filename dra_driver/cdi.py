"""CDI specs: one JSON file per prepared claim in ``--cdi-dir``, named and versioned by the CDI rules.

File ``<cdi-dir>/k8s.<driver>-claim_<claim uid>.json``, kind ``k8s.<driver>/claim``, one device per
allocated device share named ``<claim uid>-<device>[-<shareID>]`` (unique per share, so two claims
sharing a card never collide in the runtime's CDI cache). ``cdiVersion`` is the lowest version
whose features the spec uses, so that older runtimes accept it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tessera_common import files as fsutil
from vendors.base import VendorNames

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")


def spec_path(cdi_dir: str, names: VendorNames, claim_uid: str) -> str:
    vendor, cls = names.cdi_kind.split("/", 1)
    return os.path.join(cdi_dir, f"{vendor}-{cls}_{claim_uid}.json")


def device_name(claim_uid: str, device: str, share_id: str | None) -> str:
    """CDI device name of one allocated device (share)."""
    name = f"{claim_uid}-{device}-{share_id}" if share_id else f"{claim_uid}-{device}"
    if not _NAME_RE.match(name):
        raise ValueError(f"cannot form a valid CDI device name from claim {claim_uid!r}, device {device!r}")
    return name


def qualified_id(names: VendorNames, name: str) -> str:
    """The fully qualified CDI device ID kubelet passes to the runtime: ``vendor/class=name``."""
    return f"{names.cdi_kind}={name}"


def minimum_version(spec: Mapping[str, Any]) -> str:
    """The lowest CDI spec version that has every feature ``spec`` uses (0.3.0 ... 0.6.0)."""
    version = (0, 3, 0)

    def need(v: tuple[int, int, int]) -> None:
        nonlocal version
        version = max(version, v)

    edits: list[Mapping[str, Any]] = [spec.get("containerEdits") or {}]
    if spec.get("annotations"):
        need((0, 6, 0))
    kind = str(spec.get("kind", ""))
    if "/" in kind and "." in kind.split("/", 1)[1]:
        need((0, 6, 0))
    for device in spec.get("devices") or []:
        name = str(device.get("name", ""))
        if name and not name[0].isalpha():
            need((0, 5, 0))
        if device.get("annotations"):
            need((0, 6, 0))
        edits.append(device.get("containerEdits") or {})
    for e in edits:
        if any(m.get("type") for m in e.get("mounts") or []):
            need((0, 4, 0))
        if any(n.get("hostPath") for n in e.get("deviceNodes") or []):
            need((0, 5, 0))
        if e.get("intelRdt") or e.get("additionalGids"):
            need((0, 7, 0))
    return ".".join(str(p) for p in version)


def build_spec(names: VendorNames, devices: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """A CDI spec holding ``devices`` (name, containerEdits) under the driver's claim kind."""
    spec: dict[str, Any] = {
        "cdiVersion": "",
        "kind": names.cdi_kind,
        "devices": [{"name": name, "containerEdits": dict(edits)} for name, edits in devices],
    }
    spec["cdiVersion"] = minimum_version(spec)
    return spec


def encode(spec: Mapping[str, Any]) -> bytes:
    return json.dumps(spec, indent=2, sort_keys=False).encode() + b"\n"


def write_spec(path: str, spec: Mapping[str, Any]) -> None:
    """Write atomically (temp file in the same directory, rename), so that a runtime never reads a
    partial spec. Not fsynced: the spec is rebuilt from the driver's durable checkpoint record when a
    power cut (or a reboot emptying ``/var/run/cdi``) loses or damages it. Blocking."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fsutil.write_atomic(path, encode(spec), mode=0o644, durable=False)


def remove_spec(path: str) -> bool:
    """Remove a spec; ``False`` if it was already gone. Not flushed: a spec brought back by a power
    cut has no checkpoint record and is swept at start-up. Blocking."""
    return fsutil.remove_file(path, durable=False)
