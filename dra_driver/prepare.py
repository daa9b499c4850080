"""NodePrepareResources and NodeUnprepareResources: the orchestration (DESIGN §2 steps 4 and 7).

Per claim: answer from the checkpoint if it is already prepared; else GET the claim, plan it
(:mod:`claims`), refuse devices prepared for another claim unless both allocations are shares,
record ``PrepareStarted``, create the claim directory, write the CDI spec, record
``PrepareCompleted``. Unprepare works from the checkpoint alone. Claims are independent: each has
its own lock, and a failure is reported for that claim only.

``TESSERA_FAILPOINT=<step>`` (test only) makes the process kill itself with SIGKILL right after the
named step, to prove that a restart recovers: ``after-started``, ``after-claim-dir``, ``after-cdi``,
``after-completed``, ``unprepare-after-cdi``, ``unprepare-after-claim-dir``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from kubeapi import KubeClient, KubeError, namespaced_path
from tessera_common import files as fsutil
from vendors.base import DeviceInfo, NodeLayout, NodeVendor, node_dir

from . import cdi
from .checkpoint import COMPLETED, STARTED, Checkpoint, ClaimEntry, DeviceHold, PreparedDevice
from .claims import ClaimError, ClaimPlan, ClaimRef, plan_claim, reserved_pods
from .container_metrics import RegionSource, region_sources
from .metrics import DeviceUsage, DriverMetrics

log = logging.getLogger("dra_driver.prepare")

FAILPOINTS = (
    "after-started",
    "after-claim-dir",
    "after-cdi",
    "after-completed",
    "unprepare-after-cdi",
    "unprepare-after-claim-dir",
)


@dataclasses.dataclass(frozen=True)
class PrepareResult:
    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Preparer:
    """Prepares and unprepares claims of one driver on one node."""

    def __init__(
        self,
        *,
        vendor: NodeVendor,
        node_name: str,
        devices: Sequence[DeviceInfo],
        client: KubeClient | None,
        checkpoint: Checkpoint,
        cdi_dir: str,
        host_lib_dir: str,
        metrics: DriverMetrics,
        api_timeout: float = 10.0,
        failpoint: str | None = None,
    ) -> None:
        self.vendor = vendor
        self.names = vendor.names
        self.node = node_name
        self.devices = {vendor.names.device_name(d.index): d for d in devices}
        self.client = client
        self.checkpoint = checkpoint
        self.cdi_dir = cdi_dir
        self.host_lib_dir = host_lib_dir
        self.metrics = metrics
        self.api_timeout = api_timeout
        self.failpoint = failpoint
        self._locks = _KeyedLocks()
        metrics.usage_provider = self.usage
        metrics.region_provider = self.region_sources
        metrics.prepared_claims.set(len(checkpoint))

    # -- public ---------------------------------------------------------------------------------

    async def prepare(self, claims: Sequence[ClaimRef]) -> dict[str, PrepareResult]:
        """Prepare every claim concurrently; an entry per claim UID, errors per claim."""
        results = await asyncio.gather(*(self._prepare_timed(c) for c in claims))
        return {c.uid: r for c, r in zip(claims, results, strict=True)}

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str]:
        """Unprepare every claim; claim UID -> error ("" on success). Unknown claims succeed."""
        results = await asyncio.gather(*(self._unprepare_one(c) for c in claims))
        return {c.uid: r for c, r in zip(claims, results, strict=True)}

    def usage(self) -> dict[str, DeviceUsage]:
        """Per device: memory, cores and shares held by prepared claims (for metrics)."""
        out: dict[str, DeviceUsage] = {}
        for _, entry in self.checkpoint.items():
            for hold in entry.holds:
                info = self.devices.get(hold.device)
                prev = out.get(hold.device, DeviceUsage())
                memory = hold.memory_bytes if hold.memory_bytes is not None else (info.memory_bytes if info else 0)
                cores = hold.cores if hold.cores is not None else (0 if hold.share_id else 100)
                out[hold.device] = DeviceUsage(
                    memory_bytes=prev.memory_bytes + memory, cores=prev.cores + cores, shares=prev.shares + 1
                )
        return out

    def region_sources(self) -> list[RegionSource]:
        """The shared-region files of the prepared containers (for the per-container metrics)."""
        return [source for uid, entry in self.checkpoint.items() for source in region_sources(uid, entry)]

    async def restore(self) -> None:
        """At start-up: put back CDI specs, claim directories and vendor files of completed claims that
        went missing or were damaged (``/var/run/cdi`` is emptied by a reboot; a power cut may truncate a
        file) so that running and restarting containers still start."""
        for path in await asyncio.to_thread(self.sweep_orphan_specs):
            log.warning("removed a CDI spec no prepared claim owns", extra={"path": path})
        for uid, entry in self.checkpoint.items():
            if entry.completed and not await asyncio.to_thread(self._files_present, entry):
                await self._restore_files(entry)
                log.info("restored files of prepared claim", extra=self._ctx(entry.namespace, entry.name, uid))

    # -- prepare --------------------------------------------------------------------------------

    async def _prepare_timed(self, ref: ClaimRef) -> PrepareResult:
        started = time.perf_counter()
        try:
            devices = await self._prepare_one(ref)
        except ClaimError as exc:
            self.metrics.prepares.labels(result="error").inc()
            self.metrics.prepare_errors.labels(reason=exc.reason).inc()
            log.warning("prepare failed", extra={**self._ctx(ref.namespace, ref.name, ref.uid), "error": str(exc)})
            return PrepareResult(error=str(exc))
        except Exception as exc:
            self.metrics.prepares.labels(result="error").inc()
            self.metrics.prepare_errors.labels(reason="io").inc()
            log.exception("prepare failed", extra=self._ctx(ref.namespace, ref.name, ref.uid))
            return PrepareResult(error=f"preparing ResourceClaim {ref} failed: {exc}; kubelet will retry")
        elapsed = time.perf_counter() - started
        self.metrics.prepares.labels(result="ok").inc()
        self.metrics.prepare_seconds.observe(elapsed)
        log.info(
            "prepared",
            extra={
                **self._ctx(ref.namespace, ref.name, ref.uid),
                "devices": [d.device_name for d in devices],
                "ms": round(elapsed * 1000, 2),
            },
        )
        return PrepareResult(devices=devices)

    async def _prepare_one(self, ref: ClaimRef) -> tuple[PreparedDevice, ...]:
        async with self._locks.hold(ref.uid):
            entry = self.checkpoint.get(ref.uid)
            if entry is not None and entry.completed:
                if not await asyncio.to_thread(self._files_present, entry):
                    await self._restore_files(entry)
                return entry.devices
            claim = await self.read_claim(ref)
            return await self.prepare_claim(claim, ref)

    async def read_claim(self, ref: ClaimRef) -> Mapping[str, object]:
        if self.client is None:
            raise ClaimError("api", f"cannot read ResourceClaim {ref}: no API client configured")
        path = namespaced_path("resource.k8s.io/v1", "resourceclaims", ref.namespace, ref.name)
        try:
            return await asyncio.wait_for(self.client.get(path), timeout=self.api_timeout + 1)
        except KubeError as exc:
            if exc.not_found:
                raise ClaimError(
                    "api", f"cannot read ResourceClaim {ref}: it does not exist (HTTP 404); kubelet will retry"
                ) from exc
            raise ClaimError("api", f"cannot read ResourceClaim {ref}: {exc.reason}; kubelet will retry") from exc
        except TimeoutError as exc:
            raise ClaimError(
                "api", f"cannot read ResourceClaim {ref}: no answer within {self.api_timeout:g}s; kubelet will retry"
            ) from exc

    async def prepare_claim(self, claim: Mapping[str, object], ref: ClaimRef) -> tuple[PreparedDevice, ...]:
        """Prepare a claim already read from the API server (the caller holds the claim's lock)."""
        plan = plan_claim(claim, ref, self.names, self.node, self.devices)
        entry = self.checkpoint.get(ref.uid)
        if entry is not None:
            # A previous attempt died half-way (or its files went missing): undo, then redo.
            log.info("rolling back an unfinished prepare", extra=self._ctx(ref.namespace, ref.name, ref.uid))
            await self._remove_files(entry)
        self._check_overlap(plan)
        claim_dir = os.path.join(self.host_lib_dir, "claims", ref.uid)
        spec, devices, files, writable = self._build(plan, claim_dir)
        holds = tuple(DeviceHold(r.device, r.share_id, r.memory_bytes, r.cores, r.admin_access) for r in plan.results)
        started = ClaimEntry(
            state=STARTED,
            namespace=ref.namespace,
            name=ref.name,
            cdi_spec_path=cdi.spec_path(self.cdi_dir, self.names, ref.uid),
            claim_dir=claim_dir,
            devices=devices,
            holds=holds,
            cdi_spec=spec,
            files=files,
            writable_files=writable,
            pods=reserved_pods(claim),
        )
        completed = dataclasses.replace(started, state=COMPLETED)
        self.checkpoint.put(ref.uid, started)
        try:
            await asyncio.to_thread(self._materialise, ref.uid, started, completed)
        except OSError as exc:
            await self._abandon(ref, started)
            raise ClaimError("io", f"cannot prepare ResourceClaim {ref}: {exc}; kubelet will retry") from exc
        self.checkpoint.put(ref.uid, completed)
        self.metrics.prepared_claims.set(len(self.checkpoint))
        return devices

    def _materialise(self, uid: str, started: ClaimEntry, completed: ClaimEntry) -> None:
        """The file work of one prepare, in order, in one worker thread. Blocking.

        The ``PrepareStarted`` record exists before any file of the claim, so a killed process is
        always rolled back on the next prepare (the page cache survives a process). The
        ``PrepareCompleted`` record is fsynced (file and rename) before the kubelet is answered, so
        what the kubelet was told survives a power cut too. A power cut before that point may lose
        the started record and leave files behind: the kubelet has no answer and prepares again
        (same names, overwritten) or unprepares (files found by the claim UID), and orphaned CDI
        specs are swept at start-up.
        """
        self.checkpoint.write_record(uid, started, durable=False)
        self._fail("after-started")
        if started.cdi_spec.get("devices"):
            fsutil.make_shared_dir(started.claim_dir, 0o755)  # containers get single files, never the directory
            _write_files(started.files, started.writable_files)
            self._fail("after-claim-dir")
            cdi.write_spec(started.cdi_spec_path, started.cdi_spec)
            self._fail("after-cdi")
        self.checkpoint.write_record(uid, completed, durable=True)
        self._fail("after-completed")

    async def _abandon(self, ref: ClaimRef, entry: ClaimEntry) -> None:
        """Best-effort undo of a prepare that failed on I/O; what remains is rolled back on retry."""
        try:
            await self._remove_files(entry)
            self.checkpoint.delete(ref.uid)
            await self.checkpoint.flush(ref.uid)
        except OSError as exc:
            log.warning(
                "cannot undo a failed prepare; the next prepare retries",
                extra={**self._ctx(ref.namespace, ref.name, ref.uid), "error": str(exc)},
            )

    def _check_overlap(self, plan: ClaimPlan) -> None:
        """A device already prepared for another claim may only be shared by two share allocations."""
        for res in plan.results:
            for uid, entry in self.checkpoint.holders(res.device):
                if uid == plan.ref.uid:
                    continue
                for hold in entry.holds:
                    if hold.device != res.device or res.admin_access or hold.admin_access:
                        continue
                    if res.share_id and hold.share_id:
                        continue
                    raise ClaimError(
                        "conflict",
                        f"ResourceClaim {plan.ref}: device {res.device} is already prepared for ResourceClaim "
                        f"{entry.namespace}/{entry.name} (uid {uid}) and one of the two allocations is not a share; "
                        "the allocations overlap. Check that the DRAConsumableCapacity gate is the same on "
                        "kube-scheduler and kube-apiserver; kubelet will retry",
                    )

    def _build(
        self, plan: ClaimPlan, claim_dir: str
    ) -> tuple[dict[str, object], tuple[PreparedDevice, ...], dict[str, str], tuple[str, ...]]:
        # The other claims' vendor files come from the checkpoint held in memory, which a concurrent
        # prepare has already updated before its first await: no two claims get the same partition.
        peer_files = {
            path: content
            for uid, entry in self.checkpoint.items()
            if uid != plan.ref.uid
            for path, content in entry.files.items()
        }
        layout = NodeLayout(host_lib_dir=self.host_lib_dir, claim_dir=claim_dir, peer_files=peer_files)
        cdi_devices: list[tuple[str, Mapping[str, object]]] = []
        prepared: list[PreparedDevice] = []
        files: dict[str, str] = {}
        writable: list[str] = []
        for request in plan.requests:
            vendor_edits = self.vendor.container_edits(request.shares, request.config, layout)
            for path in (*vendor_edits.files, *vendor_edits.writable_files):
                if not _file_place(path, claim_dir, layout.node_dir, plan.ref.uid):
                    raise ClaimError(
                        "io",
                        f"ResourceClaim {plan.ref}: vendor file {path} lies outside the claim directory {claim_dir} "
                        f"and is not one of the claim's files in {layout.node_dir}",
                    )
            files.update(vendor_edits.files)
            writable.extend(p for p in vendor_edits.writable_files if p not in writable)
            edits = vendor_edits.to_cdi()
            for res in request.results:
                name = cdi.device_name(plan.ref.uid, res.device, res.share_id)
                cdi_devices.append((name, edits))
                prepared.append(
                    PreparedDevice(
                        request_names=(request.name,),
                        pool_name=res.pool,
                        device_name=res.device,
                        cdi_device_ids=(cdi.qualified_id(self.names, name),),
                        share_id=res.share_id,
                    )
                )
        return cdi.build_spec(self.names, cdi_devices), tuple(prepared), files, tuple(writable)

    # -- unprepare ------------------------------------------------------------------------------

    async def _unprepare_one(self, ref: ClaimRef) -> str:
        async with self._locks.hold(ref.uid):
            entry = self.checkpoint.get(ref.uid)
            if entry is None:
                # Nothing recorded. Files a power cut may have orphaned (their record lost) carry the
                # claim UID in their names, so they are removed all the same.
                orphan = self._default_entry(ref)
                try:
                    await self._remove_files(orphan)
                except OSError as exc:
                    log.warning(
                        "cannot remove files of an unknown claim",
                        extra={**self._ctx(ref.namespace, ref.name, ref.uid), "error": str(exc)},
                    )
                self.metrics.unprepares.labels(result="ok").inc()
                log.info("unprepare of an unknown claim", extra=self._ctx(ref.namespace, ref.name, ref.uid))
                return ""
            try:
                await self._remove_files(entry, failpoints=True)
            except OSError as exc:
                self.metrics.unprepares.labels(result="error").inc()
                message = f"cannot unprepare ResourceClaim {ref}: {exc}; kubelet will retry"
                log.warning("unprepare failed", extra={**self._ctx(ref.namespace, ref.name, ref.uid), "error": message})
                return message
            self.checkpoint.delete(ref.uid)
            await self.checkpoint.flush(ref.uid)
            self.metrics.prepared_claims.set(len(self.checkpoint))
            self.metrics.unprepares.labels(result="ok").inc()
            log.info("unprepared", extra=self._ctx(ref.namespace, ref.name, ref.uid))
            return ""

    def _default_entry(self, ref: ClaimRef) -> ClaimEntry:
        """Where the files of a claim go when nothing else is known about it."""
        return ClaimEntry(
            state=STARTED,
            namespace=ref.namespace,
            name=ref.name,
            cdi_spec_path=cdi.spec_path(self.cdi_dir, self.names, ref.uid),
            claim_dir=os.path.join(self.host_lib_dir, "claims", ref.uid),
        )

    def sweep_orphan_specs(self) -> list[str]:
        """At start-up: remove this driver's CDI specs that no checkpoint record owns (their record was
        lost to a power cut). Other drivers' specs in the shared CDI directory are never touched. Blocking."""
        known = {entry.cdi_spec_path for _, entry in self.checkpoint.items()}
        prefix = os.path.basename(cdi.spec_path(self.cdi_dir, self.names, ""))
        removed = []
        for name in sorted(os.listdir(self.cdi_dir)) if os.path.isdir(self.cdi_dir) else []:
            path = os.path.join(self.cdi_dir, name)
            if name.startswith(prefix[: -len(".json")]) and name.endswith(".json") and path not in known:
                cdi.remove_spec(path)
                removed.append(path)
        return removed

    # -- files ----------------------------------------------------------------------------------

    @staticmethod
    def _files_present(entry: ClaimEntry) -> bool:
        """The claim's CDI spec and vendor files hold what the record says, and its directory exists."""
        if not entry.cdi_spec.get("devices"):
            return True
        if not os.path.isdir(entry.claim_dir):
            return False
        if not all(os.path.isfile(path) and not os.path.islink(path) for path in entry.writable_files):
            return False
        expected = {entry.cdi_spec_path: cdi.encode(entry.cdi_spec)}
        expected.update({path: content.encode() for path, content in entry.files.items()})
        for path, data in expected.items():
            try:
                with open(path, "rb") as f:
                    if f.read() != data:
                        return False
            except OSError:
                return False
        return True

    async def _restore_files(self, entry: ClaimEntry) -> None:
        try:
            await asyncio.to_thread(fsutil.make_shared_dir, entry.claim_dir, 0o755)
            await asyncio.to_thread(_write_files, entry.files, entry.writable_files)
            await asyncio.to_thread(cdi.write_spec, entry.cdi_spec_path, entry.cdi_spec)
        except OSError as exc:
            raise ClaimError(
                "io", f"cannot restore the files of ResourceClaim {entry.namespace}/{entry.name}: {exc}"
            ) from exc

    async def _remove_files(self, entry: ClaimEntry, *, failpoints: bool = False) -> None:
        await asyncio.to_thread(cdi.remove_spec, entry.cdi_spec_path)
        if failpoints:
            self._fail("unprepare-after-cdi")
        await asyncio.to_thread(_remove_node_files, node_dir(self.host_lib_dir), os.path.basename(entry.claim_dir))
        await asyncio.to_thread(fsutil.remove_tree, entry.claim_dir)
        if failpoints:
            self._fail("unprepare-after-claim-dir")

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, step: str) -> None:
        if self.failpoint == step:
            log.warning("failpoint reached: killing the process", extra={"failpoint": step})
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    @staticmethod
    def _ctx(namespace: str, name: str, uid: str) -> dict[str, str]:
        return {"claim": f"{namespace}/{name}", "uid": uid}


def _file_place(path: str, claim_dir: str, node: str, uid: str) -> bool:
    """A vendor file lies in the claim directory, or in the node directory under a name starting with
    ``<claim uid>.`` (so unprepare finds it from the UID alone). Pure."""
    norm = os.path.normpath(path)
    if not os.path.isabs(path) or norm != path.rstrip("/"):
        return False
    if norm.startswith(os.path.normpath(claim_dir) + os.sep):
        return True
    return os.path.dirname(norm) == os.path.normpath(node) and os.path.basename(norm).startswith(uid + ".")


def _write_files(files: Mapping[str, str], writable: Sequence[str] = ()) -> None:
    """Write the vendor's files atomically; like the CDI spec they are rebuilt from the checkpoint
    record if a power cut damages them. Create the files the containers write, empty and writable by
    any user of the container, where they are missing; never touch one that exists (a container
    has it mounted, and its content is the container's). Blocking."""
    for path, content in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fsutil.write_atomic(path, content.encode(), mode=0o644, durable=False)
    for path in writable:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, 0o666)
        finally:
            os.close(fd)


def _remove_node_files(node: str, uid: str) -> None:
    """Remove a claim's files in the node directory (``<claim uid>.*``): its containers' records and
    meta files. Blocking."""
    if not uid or "/" in uid or uid.startswith("."):
        return
    try:
        names = os.listdir(node)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(uid + "."):
            fsutil.remove_file(os.path.join(node, name), durable=False)
