"""NodePrepareResources and NodeUnprepareResources: the orchestration (steps 6 and 10 of the path
of one pod, docs/architecture.md).

Per claim: answer from the checkpoint if it is already prepared; else GET the claim, plan it
(:mod:`claims`), refuse devices prepared for another claim unless both allocations are shares,
record ``PrepareStarted``, create the claim directory, write the CDI spec, record
``PrepareCompleted``. Unprepare works from the checkpoint alone. Claims are independent: each has
its own lock, and a failure is reported for that claim only.

The namespace, name and UID the kubelet sends are checked before they touch a path
(:mod:`identifiers`). Every file operation runs in the preparer's own worker threads (never shared
with a metrics scrape or the watchdog), and everything under a claim directory, which the claim's
containers can write, goes through :mod:`tessera_common.safefs` (no link followed, no FIFO waited
on, any mode or depth removed). :meth:`Preparer.check_progress` tells the liveness probe whether
those workers still make progress.

``TESSERA_FAILPOINT=<step>`` (test only) makes the process kill itself with SIGKILL right after the
named step, to prove that a restart recovers: ``after-started``, ``after-claim-dir``, ``after-cdi``,
``after-completed``, ``unprepare-after-cdi``, ``unprepare-after-claim-dir``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import logging
import os
import secrets
import signal
import stat
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

from kubeapi import KubeClient, KubeError, namespaced_path
from tessera_common import safefs
from vendors.base import DeviceInfo, NodeLayout, NodeVendor, SharingPolicy, node_dir

from . import cdi, claimstatus
from .checkpoint import COMPLETED, STARTED, Checkpoint, ClaimEntry, DeviceHold, PreparedDevice
from .claims import ClaimError, ClaimPlan, ClaimRef, plan_claim, pod_refs, reserved_pod_uids, reserved_pods
from .container_metrics import RegionSource, region_sources
from .events import WARNING, EventRecorder
from .identifiers import claim_ref_problem, label_problem, uid_problem
from .metrics import DeviceUsage, DriverMetrics

log = logging.getLogger("dra_driver.prepare")

P = ParamSpec("P")
T = TypeVar("T")

PREPARE_WORKERS = 8
"""Threads doing the file work of prepares and unprepares (their own; nothing else queues there)."""
REMOVED_PREFIX = ".tessera-removed-"
"""Claim directories that held something the driver may not delete (a directory of another user
without write permission; the driver has no CAP_FOWNER) are renamed to this prefix + UID, out of
every container's view, and removal is retried at every start."""

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
        status_writer: claimstatus.ClaimStatusWriter | None = None,
        events: EventRecorder | None = None,
        known_vendors: Sequence[str] = (),
        policy: SharingPolicy | None = None,
    ) -> None:
        """``status_writer``: writes ``status.devices`` of each claim prepared (or failed); ``events``:
        Events on the pods of a claim whose prepare failed; ``known_vendors``: vendor short names, to
        tell a ``<container>-<vendor>`` request from a container of that name."""
        self.vendor = vendor
        self.policy = policy or SharingPolicy()
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
        self.status_writer = status_writer
        self.events = events
        self.known_vendors = tuple(known_vendors) or (vendor.names.vendor,)
        self.claims_dir = os.path.join(host_lib_dir, "claims")
        self._locks = _KeyedLocks()
        self._executor = ThreadPoolExecutor(max_workers=PREPARE_WORKERS, thread_name_prefix="prepare")
        self.kept_damaged: set[str] = set()
        """UIDs whose checkpoint record was damaged but whose CDI spec was intact: their files stay."""
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
        return [source for uid, entry in self.checkpoint.items() for source in region_sources(uid, entry, self.devices)]

    def close(self) -> None:
        """Stop the worker threads (at shutdown, after the sockets are closed)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking file work in the preparer's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def check_progress(self, timeout: float) -> str:
        """For the liveness probe: ``""`` when a trivial task gets through the prepare workers within
        ``timeout`` seconds, else why not (every worker is stuck: prepares cannot make progress)."""
        try:
            await asyncio.wait_for(self._io(os.stat, self.checkpoint.directory), timeout=timeout)
        except TimeoutError:
            return (
                f"prepare workers made no progress for {timeout:g}s (all {PREPARE_WORKERS} are busy): "
                "prepares cannot complete; restarting the driver"
            )
        except OSError as exc:
            return f"checkpoint directory {self.checkpoint.directory}: {exc.strerror}"
        return ""

    async def restore(self) -> None:
        """At start-up: settle claims whose checkpoint record was damaged, put back CDI specs, claim
        directories and vendor files of completed claims that went missing or were damaged
        (``/var/run/cdi`` is emptied by a reboot; a power cut may truncate a file) so that running and
        restarting containers still start, and retry removing set-aside claim directories."""
        for uid in sorted(self.checkpoint.damaged):
            await self._settle_damaged(uid)
        for path in await self._io(self.sweep_orphan_specs):
            log.warning("removed a CDI spec no prepared claim owns", extra={"path": path})
        for uid, entry in self.checkpoint.items():
            if entry.completed and not await self._io(self._files_present, entry):
                await self._restore_files(entry)
                log.info("restored files of prepared claim", extra=self._ctx(entry.namespace, entry.name, uid))
        for name in await self._io(self._sweep_removed):
            log.info("removed a set-aside claim directory", extra={"path": os.path.join(self.claims_dir, name)})

    async def _settle_damaged(self, uid: str) -> None:
        """A claim whose record was damaged (moved aside by :meth:`Checkpoint.load`): roll forward
        when its CDI spec is intact (the files stay; running containers keep restarting; the kubelet's
        next prepare rewrites the record from the API server, its unprepare removes the files by UID),
        else roll back (its files are removed; the kubelet, which got no answer, prepares again)."""
        entry = self._default_entry(ClaimRef("", "", uid))
        ctx = {"uid": uid, "claim": "unknown (checkpoint record damaged)"}
        if await self._io(self._spec_intact, entry.cdi_spec_path, uid):
            self.kept_damaged.add(uid)
            log.warning("checkpoint record damaged; the claim's CDI spec is intact and kept", extra=ctx)
            return
        try:
            await self._remove_files(entry)
        except OSError as exc:
            log.warning("checkpoint record damaged; cannot roll its files back", extra={**ctx, "error": str(exc)})
            return
        log.warning("checkpoint record damaged; the unfinished prepare was rolled back", extra=ctx)

    def _spec_intact(self, path: str, uid: str) -> bool:
        """The CDI spec at ``path`` is a complete spec of ours for claim ``uid``. Blocking."""
        try:
            data = safefs.read_beneath(os.path.dirname(path), os.path.basename(path), max_bytes=1 << 24)
            spec = json.loads(data)
        except (OSError, ValueError):
            return False
        devices = spec.get("devices") if isinstance(spec, dict) else None
        return (
            isinstance(spec, dict)
            and spec.get("kind") == self.names.cdi_kind
            and isinstance(devices, list)
            and bool(devices)
            and all(isinstance(d, dict) and str(d.get("name", "")).startswith(f"{uid}-") for d in devices)
        )

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
        problem = claim_ref_problem(ref.namespace, ref.name, ref.uid)
        if problem:
            raise ClaimError("claim", f"refusing to prepare ResourceClaim {ref}: {problem}")
        async with self._locks.hold(ref.uid):
            entry = self.checkpoint.get(ref.uid)
            if entry is not None and entry.completed:
                if not await self._io(self._files_present, entry):
                    await self._restore_files(entry)
                return entry.devices
            claim = await self.read_claim(ref)
            try:
                devices = await self.prepare_claim(claim, ref)
            except ClaimError as exc:
                await self._report_failure(claim, ref, exc)
                raise
            self._report_ready(claim, ref)
            return devices

    def _report_ready(self, claim: Mapping[str, object], ref: ClaimRef) -> None:
        """Write ``status.devices`` (Ready, the limits applied) in the background."""
        entry = self.checkpoint.get(ref.uid)
        if self.status_writer is None or entry is None:
            return
        plan = plan_claim(claim, ref, self.names, self.node, self.devices, self.policy)
        ours = claimstatus.ready_statuses(plan, self.names, entry.cdi_spec, entry.containers, time.time())
        self.status_writer.schedule(ref, ours, claim)

    async def _report_failure(self, claim: Mapping[str, object], ref: ClaimRef, exc: ClaimError) -> None:
        """A prepare that failed after the claim was read: ``Ready=False`` with the reason on each of our
        devices of the claim, and a Warning Event on the pods it is reserved for."""
        if self.status_writer is not None:
            ours = claimstatus.failed_statuses(claim, self.names, self.node, exc.reason, str(exc), time.time())
            if ours:
                self.status_writer.schedule(ref, ours, claim)
        if self.events is not None:
            pods = pod_refs(ref.namespace, reserved_pods(claim), reserved_pod_uids(claim))
            message = f"{self.names.driver} on node {self.node} cannot prepare ResourceClaim {ref}: {exc}"
            await self.events.pods(pods, WARNING, "PrepareFailed", message)

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
        plan = plan_claim(claim, ref, self.names, self.node, self.devices, self.policy)
        for request in plan.requests:
            problem = label_problem("request", request.name)
            if problem:
                raise ClaimError("claim", f"ResourceClaim {ref}: {problem}")
        entry = self.checkpoint.get(ref.uid)
        if entry is not None:
            # A previous attempt died half-way (or its files went missing): undo, then redo.
            log.info("rolling back an unfinished prepare", extra=self._ctx(ref.namespace, ref.name, ref.uid))
            await self._remove_files(entry)
        self._check_overlap(plan)
        claim_dir = os.path.join(self.claims_dir, ref.uid)
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
            containers=claimstatus.container_names(claim, self.names, self.known_vendors),
            pod_uids=reserved_pod_uids(claim),
        )
        completed = dataclasses.replace(started, state=COMPLETED)
        self.checkpoint.put(ref.uid, started)
        try:
            await self._io(self._materialise, ref.uid, started, completed)
        except OSError as exc:
            await self._abandon(ref, started)
            raise ClaimError("io", f"cannot prepare ResourceClaim {ref}: {exc}; kubelet will retry") from exc
        self.checkpoint.put(ref.uid, completed)
        self.metrics.prepared_claims.set(len(self.checkpoint))
        return devices

    def _materialise(self, uid: str, started: ClaimEntry, completed: ClaimEntry) -> None:
        """The file work of one prepare, in order, in one worker thread. Blocking.

        Both records are fsynced (file and directory) before the step they guard: the
        ``PrepareStarted`` record before any file of the claim exists, so that even after a power cut
        the next prepare or start-up finds it and rolls the claim back; the ``PrepareCompleted``
        record before the kubelet is answered, so that what the kubelet was told survives too.
        """
        self.checkpoint.write_record(uid, started, durable=True)
        self._fail("after-started")
        if started.cdi_spec.get("devices"):
            self._write_vendor_files(started)
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
            await self._io(self.checkpoint.sync, ref.uid)
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
        problem = uid_problem(ref.uid)
        if problem:
            # The UID names files and the claim directory: never let it near a path.
            self.metrics.unprepares.labels(result="error").inc()
            message = f"refusing to unprepare ResourceClaim {ref}: {problem}"
            log.warning("unprepare refused", extra={"claim": str(ref), "uid": repr(ref.uid), "error": message})
            return message
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
            await self._io(self.checkpoint.sync, ref.uid)
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
            claim_dir=os.path.join(self.claims_dir, ref.uid),
        )

    def sweep_orphan_specs(self) -> list[str]:
        """At start-up: remove this driver's CDI specs that no checkpoint record owns (their record was
        lost to a power cut). Other drivers' specs in the shared CDI directory are never touched. Blocking."""
        known = {entry.cdi_spec_path for _, entry in self.checkpoint.items()}
        known |= {cdi.spec_path(self.cdi_dir, self.names, uid) for uid in self.kept_damaged}
        prefix = os.path.basename(cdi.spec_path(self.cdi_dir, self.names, ""))
        removed = []
        for name in sorted(os.listdir(self.cdi_dir)) if os.path.isdir(self.cdi_dir) else []:
            path = os.path.join(self.cdi_dir, name)
            if name.startswith(prefix[: -len(".json")]) and name.endswith(".json") and path not in known:
                cdi.remove_spec(path)
                removed.append(path)
        return removed

    # -- files ----------------------------------------------------------------------------------

    def _files_present(self, entry: ClaimEntry) -> bool:
        """The claim's CDI spec and vendor files hold what the record says, and the files the containers
        write are there (regular files; their content is the containers'). Files are read the safe way.
        Blocking."""
        if not entry.cdi_spec.get("devices"):
            return True
        owner = os.geteuid()
        try:
            spec = safefs.read_beneath(
                os.path.dirname(entry.cdi_spec_path),
                os.path.basename(entry.cdi_spec_path),
                max_bytes=len(cdi.encode(entry.cdi_spec)),
                owner=owner,
            )
            if spec != cdi.encode(entry.cdi_spec):
                return False
            for path, content in entry.files.items():
                data = content.encode()
                root, relative = self._file_root(entry, path)
                if safefs.read_beneath(root, relative, max_bytes=len(data), owner=owner) != data:
                    return False
            for path in entry.writable_files:
                root, relative = self._file_root(entry, path)
                if not _is_regular_beneath(root, relative):
                    return False
        except (OSError, ValueError):
            return False
        return True

    async def _restore_files(self, entry: ClaimEntry) -> None:
        try:
            await self._io(self._write_claim_files, entry)
        except (OSError, ValueError) as exc:
            raise ClaimError(
                "io", f"cannot restore the files of ResourceClaim {entry.namespace}/{entry.name}: {exc}"
            ) from exc

    def _write_claim_files(self, entry: ClaimEntry) -> None:
        self._write_vendor_files(entry)
        cdi.write_spec(entry.cdi_spec_path, entry.cdi_spec)

    def _write_vendor_files(self, entry: ClaimEntry) -> None:
        """The claim directory (mode 0755: no container gets it, only single files of it) and the
        vendor's files, in it or in the node directory; the files the containers write are created
        empty where missing and never rewritten. Blocking."""
        with safefs.opened_dir(self.claims_dir) as claims:
            safefs.make_dir_at(claims, os.path.basename(self._claim_dir(entry)), 0o755)
        os.makedirs(node_dir(self.host_lib_dir), mode=0o755, exist_ok=True)
        for path, content in entry.files.items():
            root, relative = self._file_root(entry, path)
            safefs.write_beneath(root, relative, content.encode(), mode=0o644)
        for path in entry.writable_files:
            root, relative = self._file_root(entry, path)
            _create_writable_beneath(root, relative)

    def _file_root(self, entry: ClaimEntry, path: str) -> tuple[str, str]:
        """Where a vendor file of the entry lies: (trusted root, path beneath it); the claim directory or,
        for ``<claim uid>.*`` names, the node directory. Anything else raises (never written or read)."""
        claim_dir = self._claim_dir(entry)
        node = node_dir(self.host_lib_dir)
        if not _file_place(path, claim_dir, node, os.path.basename(claim_dir)):
            raise OSError(errno.EINVAL, f"{path} lies neither in {claim_dir} nor among the claim's files in {node}")
        norm = os.path.normpath(path)
        if norm.startswith(os.path.normpath(claim_dir) + os.sep):
            return claim_dir, os.path.relpath(norm, claim_dir)
        return node, os.path.basename(norm)

    async def _remove_files(self, entry: ClaimEntry, *, failpoints: bool = False) -> None:
        await self._io(cdi.remove_spec, entry.cdi_spec_path)
        if failpoints:
            self._fail("unprepare-after-cdi")
        await self._io(self._remove_node_files, entry)
        set_aside = await self._io(self._remove_claim_dir, entry)
        if set_aside:
            log.warning(
                "the claim directory holds files the driver may not delete; it was set aside and is retried at "
                "every start (grant the driver CAP_FOWNER, or remove it by hand)",
                extra={**self._ctx(entry.namespace, entry.name, os.path.basename(entry.claim_dir)), **set_aside},
            )
        if failpoints:
            self._fail("unprepare-after-claim-dir")

    def _claim_dir(self, entry: ClaimEntry) -> str:
        """The entry's claim directory, checked to be ``<claims dir>/<a claim UID>`` (a record is ours,
        but nothing outside the claims directory is ever written or removed on its word)."""
        parent, name = os.path.split(os.path.normpath(entry.claim_dir))
        if parent != os.path.normpath(self.claims_dir) or uid_problem(name):
            raise OSError(errno.EINVAL, f"{entry.claim_dir} is not a claim directory under {self.claims_dir}")
        return entry.claim_dir

    def _remove_node_files(self, entry: ClaimEntry) -> None:
        """Remove the claim's files in the node directory (``<claim uid>.*``: its containers' records
        and meta files), found by the UID alone (an orphan's too). Blocking."""
        uid = os.path.basename(self._claim_dir(entry))
        try:
            with safefs.opened_dir(node_dir(self.host_lib_dir)) as node:
                for name in os.listdir(node):
                    if name.startswith(uid + "."):
                        safefs.remove_at(node, name)
        except FileNotFoundError:
            return

    def _remove_claim_dir(self, entry: ClaimEntry) -> dict[str, str]:
        """Remove the claim directory whatever the containers left in it. When a directory of another
        user denies us (no CAP_FOWNER), rename the claim directory out of the way instead, so that the
        unprepare still completes; ``{}`` or what was set aside. Blocking."""
        name = os.path.basename(self._claim_dir(entry))
        try:
            with safefs.opened_dir(self.claims_dir) as claims:
                try:
                    safefs.remove_at(claims, name)
                    return {}
                except PermissionError as exc:
                    aside = f"{REMOVED_PREFIX}{name}-{secrets.token_hex(4)}"
                    os.rename(name, aside, src_dir_fd=claims, dst_dir_fd=claims)
                    return {"path": os.path.join(self.claims_dir, aside), "error": str(exc)}
        except FileNotFoundError:
            return {}

    def _sweep_removed(self) -> list[str]:
        """Retry removing set-aside claim directories; the names removed. Blocking."""
        removed = []
        try:
            names = [n for n in os.listdir(self.claims_dir) if n.startswith(REMOVED_PREFIX)]
            with safefs.opened_dir(self.claims_dir) as claims:
                for name in names:
                    try:
                        safefs.remove_at(claims, name)
                        removed.append(name)
                    except PermissionError:
                        continue
        except FileNotFoundError:
            pass
        return removed

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


def _beneath(root: str, relative: str) -> tuple[int, str]:
    """A descriptor of the directory holding ``root/relative`` (opened without following links) and the
    leaf name; the caller closes it."""
    parent, _, leaf = relative.rpartition("/")
    safefs.components(relative)
    with safefs.opened_dir(root) as rfd:
        return (safefs.open_dir_at(rfd, parent) if parent else os.dup(rfd)), leaf


def _is_regular_beneath(root: str, relative: str) -> bool:
    dfd, leaf = _beneath(root, relative)
    try:
        return stat.S_ISREG(os.stat(leaf, dir_fd=dfd, follow_symlinks=False).st_mode)
    finally:
        os.close(dfd)


def _create_writable_beneath(root: str, relative: str) -> None:
    """Create an empty file every user of a container may write (its content is the container's) where
    none is; a regular file already there is kept, anything else in its place is replaced. Blocking."""
    dfd, leaf = _beneath(root, relative)
    try:
        try:
            if stat.S_ISREG(os.stat(leaf, dir_fd=dfd, follow_symlinks=False).st_mode):
                return
            safefs.remove_at(dfd, leaf)
        except FileNotFoundError:
            pass
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dfd)
        try:
            os.fchmod(fd, 0o666)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
