"""What survives a restart: the prepared claims, in ``<plugin-dir>/checkpoint.json``.

Two-phase per claim: an entry is written ``PrepareStarted`` (fsynced) before any file of the claim
is created and turned ``PrepareCompleted`` once everything is in place. A restarted driver rolls a
started entry back and redoes it; a completed one is answered from the entry (the claim may be gone
from the API server by then). Unprepare needs nothing else. Writes are atomic (temp file, fsync,
rename, fsync dir) and grouped: concurrent commits share one write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import fsutil

log = logging.getLogger("dra_driver.checkpoint")

API_VERSION = "tessera.dev/v1alpha1"
KIND = "DRADriverCheckpoint"
STARTED = "PrepareStarted"
COMPLETED = "PrepareCompleted"


class CheckpointError(RuntimeError):
    """The checkpoint cannot be read; the message says how to recover."""


@dataclass(frozen=True)
class PreparedDevice:
    """One device of a prepare answer (the kubelet's ``Device`` message)."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requestNames": list(self.request_names),
            "poolName": self.pool_name,
            "deviceName": self.device_name,
            "cdiDeviceIDs": list(self.cdi_device_ids),
        }
        if self.share_id:
            out["shareID"] = self.share_id
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparedDevice:
        return cls(
            request_names=tuple(data.get("requestNames") or ()),
            pool_name=str(data["poolName"]),
            device_name=str(data["deviceName"]),
            cdi_device_ids=tuple(data.get("cdiDeviceIDs") or ()),
            share_id=data.get("shareID") or None,
        )


@dataclass(frozen=True)
class DeviceHold:
    """What a prepared claim holds of one device (for the overlap check and metrics)."""

    device: str
    share_id: str | None
    memory_bytes: int | None
    cores: int | None
    admin_access: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "shareID": self.share_id,
            "memoryBytes": self.memory_bytes,
            "cores": self.cores,
            "adminAccess": self.admin_access,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceHold:
        return cls(
            device=str(data["device"]),
            share_id=data.get("shareID") or None,
            memory_bytes=data.get("memoryBytes"),
            cores=data.get("cores"),
            admin_access=bool(data.get("adminAccess")),
        )


@dataclass(frozen=True)
class ClaimEntry:
    state: str
    namespace: str
    name: str
    cdi_spec_path: str
    claim_dir: str
    devices: tuple[PreparedDevice, ...] = ()
    holds: tuple[DeviceHold, ...] = ()
    cdi_spec: Mapping[str, Any] = field(default_factory=dict)
    """The spec's content, so that a spec lost with ``/var/run`` (reboot) can be restored."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Vendor files written into the claim directory (host path -> content), restored with the spec."""

    @property
    def completed(self) -> bool:
        return self.state == COMPLETED

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "namespace": self.namespace,
            "name": self.name,
            "cdiSpecPath": self.cdi_spec_path,
            "claimDir": self.claim_dir,
            "devices": [d.to_json() for d in self.devices],
            "holds": [h.to_json() for h in self.holds],
            "cdiSpec": dict(self.cdi_spec),
            "files": dict(self.files),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClaimEntry:
        state = data.get("state")
        if state not in (STARTED, COMPLETED):
            raise ValueError(f"unknown state {state!r}")
        return cls(
            state=str(state),
            namespace=str(data.get("namespace", "")),
            name=str(data.get("name", "")),
            cdi_spec_path=str(data["cdiSpecPath"]),
            claim_dir=str(data["claimDir"]),
            devices=tuple(PreparedDevice.from_json(d) for d in data.get("devices") or []),
            holds=tuple(DeviceHold.from_json(h) for h in data.get("holds") or []),
            cdi_spec=dict(data.get("cdiSpec") or {}),
            files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
        )


def read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


class Checkpoint:
    """The prepared claims of this driver on this node, kept in memory and on disk."""

    def __init__(self, path: str, driver: str, *, boot_id: str = "") -> None:
        self.path = path
        self.driver = driver
        self.boot_id = boot_id
        self.previous_boot_id = boot_id
        self._claims: dict[str, ClaimEntry] = {}
        self._lock = asyncio.Lock()
        self._version = 0
        self._written = 0

    @classmethod
    def load(cls, path: str, driver: str) -> Checkpoint:
        """Read the checkpoint (a missing file is an empty one). Blocking; call at start-up."""
        cp = cls(path, driver, boot_id=read_boot_id())
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return cp
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot read checkpoint {path}: {exc}. It records which claims are prepared; if it is damaged, "
                "move it away and restart, then delete the pods using this node's devices so that kubelet "
                "prepares their claims again"
            ) from exc
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise CheckpointError(f"{path} is not a {KIND}; move it away or fix --plugin-dir")
        if data.get("driver") not in (None, driver):
            raise CheckpointError(f"{path} belongs to driver {data.get('driver')!r}, not {driver!r}; fix --plugin-dir")
        try:
            for uid, entry in (data.get("claims") or {}).items():
                cp._claims[str(uid)] = ClaimEntry.from_json(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} has a malformed claim entry ({exc}); move it away") from exc
        cp.previous_boot_id = str(data.get("nodeBootID") or "")
        return cp

    # -- in memory ------------------------------------------------------------------------------

    def get(self, uid: str) -> ClaimEntry | None:
        return self._claims.get(uid)

    def items(self) -> Iterator[tuple[str, ClaimEntry]]:
        return iter(list(self._claims.items()))

    def __len__(self) -> int:
        return len(self._claims)

    def put(self, uid: str, entry: ClaimEntry) -> None:
        self._claims[uid] = entry
        self._version += 1

    def delete(self, uid: str) -> None:
        if self._claims.pop(uid, None) is not None:
            self._version += 1

    # -- on disk --------------------------------------------------------------------------------

    def encode(self) -> bytes:
        data = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "driver": self.driver,
            "nodeBootID": self.boot_id,
            "claims": {uid: e.to_json() for uid, e in sorted(self._claims.items())},
        }
        return json.dumps(data, separators=(",", ":")).encode()

    async def commit(self) -> None:
        """Make every change made so far durable. Concurrent callers share one write."""
        wanted = self._version
        if self._written >= wanted:
            return
        async with self._lock:
            if self._written >= wanted:
                return
            version = self._version
            data = self.encode()
            await asyncio.to_thread(self._write, data)
            self._written = version

    def _write(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fsutil.write_atomic(self.path, data, mode=0o600)
