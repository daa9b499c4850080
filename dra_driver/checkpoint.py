"""What survives a restart: the prepared claims, one record per claim in ``<plugin-dir>/checkpoint/``.

Two-phase per claim: a record is written ``PrepareStarted`` before any file of the claim is created
and turned ``PrepareCompleted`` once everything is in place, before the kubelet gets its answer;
both are fsynced (file and directory) before the step they guard. A restarted driver rolls a started
claim back and redoes it; a completed one is answered from its record (the claim may be gone from
the API server by then). Unprepare needs nothing else. Every write is atomic (temp file, rename).

A record that cannot be read at start-up (zero-length, truncated, garbage, the wrong claim) never
stops the driver: it is moved aside to ``<uid>.json.damaged`` and its UID listed in
:attr:`Checkpoint.damaged`, for the preparer to roll the claim forward or back from what is on disk.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera_common import files as fsutil
from tessera_common import safefs

from .identifiers import uid_problem

log = logging.getLogger("dra_driver.checkpoint")

API_VERSION = "tessera.dev/v1alpha1"
KIND = "DRAClaimCheckpoint"
STARTED = "PrepareStarted"
COMPLETED = "PrepareCompleted"
DAMAGED_SUFFIX = ".damaged"
"""Suffix of records moved aside at start-up because they could not be read."""
MAX_RECORD_BYTES = 16 << 20


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
    """Vendor files (host path -> content) in the claim or node directory, restored with the spec."""
    writable_files: tuple[str, ...] = ()
    """Files the containers write (created empty when missing, never rewritten), removed at unprepare."""
    pods: tuple[str, ...] = ()
    """Pods the claim was reserved for when it was prepared (``status.reservedFor``), for the metrics."""
    containers: Mapping[str, str] = field(default_factory=dict)
    """Request -> the container it belongs to (:func:`claimstatus.container_names`), for the metrics."""
    pod_uids: Mapping[str, str] = field(default_factory=dict)
    """The same pods by UID (UID -> name): the watchdog finds a process's pod by UID in its cgroup."""

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
            "writableFiles": list(self.writable_files),
            "pods": list(self.pods),
            "containers": dict(self.containers),
            "podUIDs": dict(self.pod_uids),
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
            writable_files=tuple(str(p) for p in data.get("writableFiles") or ()),
            pods=tuple(str(p) for p in data.get("pods") or ()),
            containers={str(k): str(v) for k, v in (data.get("containers") or {}).items()},
            pod_uids={str(k): str(v) for k, v in (data.get("podUIDs") or {}).items()},
        )


def read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


class Checkpoint:
    """The prepared claims of this driver on this node: one small JSON file per claim.

    ``<directory>/<claim uid>.json`` holds the claim's state; :meth:`put`/:meth:`delete` change the
    in-memory view at once (so that a concurrent prepare sees a device reserved before any await) and
    :meth:`sync` makes one claim's record durable. Per-claim files keep every write small and let
    claims commit concurrently; the caller serialises work on one claim.
    """

    def __init__(self, directory: str, driver: str, *, boot_id: str = "") -> None:
        self.directory = directory
        self.driver = driver
        self.boot_id = boot_id
        self.previous_boot_id = boot_id
        self._claims: dict[str, ClaimEntry] = {}
        self._holders: dict[str, set[str]] = {}
        """Device name -> UIDs of the claims holding it (the overlap check looks up, never scans)."""
        self.damaged: set[str] = set()
        """UIDs whose record could not be read at start-up (moved aside; see :meth:`load`)."""

    @classmethod
    def load(cls, directory: str, driver: str) -> Checkpoint:
        """Read every claim record (a missing directory is an empty checkpoint). Blocking; at start-up.

        A record that cannot be read is moved aside and its UID added to :attr:`damaged` (logged);
        only a record of another driver (two drivers on one plugin directory, a configuration error)
        stops the start with :class:`CheckpointError`."""
        cp = cls(directory, driver, boot_id=read_boot_id())
        os.makedirs(directory, exist_ok=True)
        fsutil.remove_temp_files(directory)
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(directory, name)
            uid = name[: -len(".json")]
            try:
                raw = safefs.read_beneath(directory, name, max_bytes=MAX_RECORD_BYTES)
                if not raw.strip():
                    raise ValueError(f"empty ({len(raw)} bytes)")
                try:
                    data = json.loads(raw)
                except ValueError as exc:
                    raise ValueError(f"truncated or not JSON ({len(raw)} bytes): {exc}") from None
                if not isinstance(data, dict) or data.get("kind") != KIND:
                    raise ValueError(f"not a {KIND}")
                if data.get("driver") not in (None, driver):
                    raise CheckpointError(
                        f"checkpoint record {path} belongs to driver {data.get('driver')!r}, not {driver!r}: two "
                        "drivers share one plugin directory; give each its own --plugin-dir"
                    )
                if uid_problem(uid) or str(data.get("uid")) != uid:
                    raise ValueError(f"holds claim {data.get('uid')!r}")
                cp.put(uid, ClaimEntry.from_json(data["claim"]))
            except (OSError, KeyError, TypeError, ValueError) as exc:
                cp._set_aside(path, uid, exc)
                continue
            cp.previous_boot_id = str(data.get("nodeBootID") or cp.previous_boot_id)
        if cp.damaged:
            fsutil.fsync_dir(directory)
        return cp

    def _set_aside(self, path: str, uid: str, exc: Exception) -> None:
        """Move a record that cannot be read out of the way (kept for inspection), never fatal."""
        try:
            os.replace(path, path + DAMAGED_SUFFIX)
        except OSError as move:
            log.error("cannot move a damaged checkpoint record aside", extra={"path": path, "error": str(move)})
        if not uid_problem(uid):
            self.damaged.add(uid)
        log.error(
            "checkpoint record damaged; moved aside, the claim is recovered from the files on disk",
            extra={"path": path, "moved_to": path + DAMAGED_SUFFIX, "uid": uid, "error": str(exc)},
        )

    def path(self, uid: str) -> str:
        return os.path.join(self.directory, f"{uid}.json")

    # -- in memory ------------------------------------------------------------------------------

    def get(self, uid: str) -> ClaimEntry | None:
        return self._claims.get(uid)

    def items(self) -> Iterator[tuple[str, ClaimEntry]]:
        return iter(list(self._claims.items()))

    def __len__(self) -> int:
        return len(self._claims)

    def holders(self, device: str) -> list[tuple[str, ClaimEntry]]:
        """The claims that hold ``device``."""
        return [(uid, self._claims[uid]) for uid in sorted(self._holders.get(device, ()))]

    def put(self, uid: str, entry: ClaimEntry) -> None:
        self.delete(uid)
        self._claims[uid] = entry
        for hold in entry.holds:
            self._holders.setdefault(hold.device, set()).add(uid)

    def delete(self, uid: str) -> None:
        old = self._claims.pop(uid, None)
        if old is None:
            return
        for hold in old.holds:
            uids = self._holders.get(hold.device)
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del self._holders[hold.device]

    # -- on disk --------------------------------------------------------------------------------

    def encode(self, uid: str, entry: ClaimEntry) -> bytes:
        data = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "driver": self.driver,
            "nodeBootID": self.boot_id,
            "uid": uid,
            "claim": entry.to_json(),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    def write_record(self, uid: str, entry: ClaimEntry, *, durable: bool = True) -> None:
        """Write one claim's record atomically; ``durable``: the file and its rename are fsynced. Blocking."""
        fsutil.write_atomic(self.path(uid), self.encode(uid, entry), mode=0o600, durable=durable)

    def sync(self, uid: str) -> None:
        """Make the in-memory state of one claim durable (write its record, or remove it). Blocking."""
        entry = self._claims.get(uid)
        if entry is None:
            fsutil.remove_file(self.path(uid))
        else:
            self.write_record(uid, entry)
