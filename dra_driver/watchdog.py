"""The second line of defence: a node-side check of every container's real device memory.

``libvgpu`` enforces limits inside the container, and anything that never calls the hooked driver
escapes it: a second copy of the driver loaded with ``dlmopen(LM_ID_NEWLM, "libcuda.so.1")``, a
static binary, a container runtime nested in the container. The device driver still counts what
each process holds. Every ``--watchdog-period`` seconds the watchdog

1. reads each device's processes and their memory from the device driver
   (:mod:`backends.processes`: NVML, compute and graphics processes);
2. finds each process's pod and container from its cgroup (:mod:`podmap`);
3. groups them by budget (:func:`budgets`): the limit the driver applied at prepare, from the
   checkpoint, for the pods each claim was reserved for. Pods sharing a claim, and claims shared by
   pods, on one device form one budget (the sum of the claims' limits) and one usage;
4. where a budget's usage exceeds its limit by more than the tolerance (:func:`evaluate`), kills the
   largest processes of that budget on that device until it is back within its limit (``kill``), or
   only reports (``report``); either way it records a ``Warning`` Event
   ``TesseraMemoryLimitExceeded`` on each pod concerned, naming the pod, container, device, limit and
   usage, and counts it in ``tessera_watchdog_violations_total``.

A budget whose claims have no memory limit (a whole device) is never checked; processes outside any
pod prepared here are counted as unattributed and left alone. The device query and the ``/proc``
reads run in one thread of the watchdog's own; a scan touches ``/proc`` only for processes it has
not seen before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from kubeapi import ObjectRef
from tessera_common.quantity import QuantityError, quantity_bytes
from vendors.base import MIB, DeviceInfo, VendorNames

from .backends.processes import ProcessMemory, ProcessReader
from .checkpoint import ClaimEntry
from .events import WARNING, EventRecorder, Target
from .metrics import LATENCY_BUCKETS, DriverMetrics
from .podmap import Owner, OwnerCache

log = logging.getLogger("dra_driver.watchdog")

ACTIONS = ("kill", "report", "off")
EVENT_REASON = "TesseraMemoryLimitExceeded"


class WatchdogConfigError(ValueError):
    """A watchdog setting cannot be used; the message says how to write it."""


@dataclass(frozen=True)
class Tolerance:
    """How far over its limit a budget may go: bytes, or a percentage of the limit."""

    bytes: int = 0
    percent: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``512Mi``, ``1G``, ``0`` or ``10%``."""
        value = text.strip()
        try:
            if value.endswith("%"):
                percent = float(value[:-1])
                if not 0 <= percent <= 1000:
                    raise ValueError
                return cls(percent=percent)
            return cls(bytes=quantity_bytes(value))
        except (QuantityError, ValueError):
            raise WatchdogConfigError(
                f"--watchdog-tolerance {text!r}: write a quantity (512Mi, 1Gi, 0) or a percentage of the limit (10%)"
            ) from None

    def allowed(self, limit: int) -> int:
        return limit + self.bytes + int(limit * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent else f"{self.bytes // MIB} MiB"


PodRef = ObjectRef


@dataclass(frozen=True)
class Budget:
    """What a set of pods may hold on one device: the sum of the limits of their claims there."""

    device: str
    uuid: str
    limit: int
    claims: tuple[str, ...]
    """``namespace/name`` of each claim."""
    pods: Mapping[str, PodRef]
    """Pod UID -> pod."""


@dataclass(frozen=True)
class Usage:
    pid: int
    owner: Owner
    used_bytes: int


@dataclass(frozen=True)
class Violation:
    budget: Budget
    usage: int
    allowed: int
    processes: tuple[Usage, ...]
    """Every process of the budget on the device, largest first."""
    victims: tuple[Usage, ...]
    """The largest processes whose end brings the budget back within its limit."""


@dataclass
class ScanResult:
    violations: list[Violation] = field(default_factory=list)
    killed: dict[int, bool] = field(default_factory=dict)
    """PID -> whether the signal reached it."""
    attributed: dict[str, int] = field(default_factory=dict)
    unattributed: dict[str, int] = field(default_factory=dict)


# -- pure -----------------------------------------------------------------------------------------


def budgets(entries: Iterable[tuple[str, ClaimEntry]], devices: Mapping[str, DeviceInfo]) -> dict[str, list[Budget]]:
    """Device UUID -> the budgets on it, from the prepared claims (``devices``: name -> info). Pure.

    Claims and the pods they are reserved for are joined into one budget per device when they
    overlap (a pod with two claims there, a claim shared by two pods), so that nothing is counted
    twice and nobody is judged against only part of what they were given. A claim without a memory
    limit on the device (a whole device) exempts its whole group."""
    per_device: dict[str, list[tuple[str, ClaimEntry, int | None]]] = {}
    for _, entry in entries:
        if not entry.completed:
            continue
        held: dict[str, int | None] = {}
        for hold in entry.holds:
            if hold.device not in devices:
                continue
            if hold.memory_bytes is None or (hold.device in held and held[hold.device] is None):
                held[hold.device] = None
            else:
                held[hold.device] = (held.get(hold.device) or 0) + hold.memory_bytes
        for device, limit in held.items():
            per_device.setdefault(device, []).append((f"{entry.namespace}/{entry.name}", entry, limit))
    out: dict[str, list[Budget]] = {}
    for device, claims in sorted(per_device.items()):
        info = devices[device]
        groups: list[tuple[set[str], list[tuple[str, ClaimEntry, int | None]]]] = []
        for claim in claims:
            pods = set(claim[1].pod_uids)
            joined = [g for g in groups if g[0] & pods]
            merged_pods, merged_claims = set(pods), [claim]
            for g in joined:
                groups.remove(g)
                merged_pods |= g[0]
                merged_claims += g[1]
            groups.append((merged_pods, merged_claims))
        for pods, members in groups:
            if not pods or any(limit is None for _, _, limit in members):
                continue
            refs = {
                uid: PodRef(entry.namespace, name, uid)
                for _, entry, _ in members
                for uid, name in entry.pod_uids.items()
            }
            out.setdefault(info.uuid, []).append(
                Budget(
                    device=device,
                    uuid=info.uuid,
                    limit=sum(limit or 0 for _, _, limit in members),
                    claims=tuple(sorted(name for name, _, _ in members)),
                    pods=refs,
                )
            )
    return out


def evaluate(
    usage: Mapping[str, Sequence[ProcessMemory]],
    owners: Mapping[int, Owner | None],
    device_budgets: Mapping[str, Sequence[Budget]],
    tolerance: Tolerance,
) -> list[Violation]:
    """The budgets over their limit by more than the tolerance, and which processes to end. Pure."""
    out: list[Violation] = []
    for uuid, budgets_here in device_budgets.items():
        by_pod: dict[str, list[Usage]] = {}
        for proc in usage.get(uuid, ()):
            owner = owners.get(proc.pid)
            if owner is not None:
                by_pod.setdefault(owner.pod_uid, []).append(Usage(proc.pid, owner, proc.used_bytes))
        for budget in budgets_here:
            procs = sorted(
                (u for pod in budget.pods for u in by_pod.get(pod, ())), key=lambda u: (-u.used_bytes, u.pid)
            )
            used = sum(u.used_bytes for u in procs)
            allowed = tolerance.allowed(budget.limit)
            if used <= allowed:
                continue
            victims: list[Usage] = []
            left = used
            for u in procs:
                if left <= budget.limit:
                    break
                victims.append(u)
                left -= u.used_bytes
            out.append(Violation(budget, used, allowed, tuple(procs), tuple(victims)))
    return out


def event_message(v: Violation, pod: PodRef, tolerance: Tolerance, action: str, killed: Mapping[int, bool]) -> str:
    """The Event text for one pod of a violation. Pure."""
    mine = [u for u in v.processes if u.owner.pod_uid == pod.uid]
    containers = ", ".join(sorted({u.owner.container for u in mine})) or "none"
    claims = ", ".join(v.budget.claims)
    head = (
        f"pod {pod} (container {containers}) and the claims it shares ({claims}) use {_mib(v.usage)} of device "
        f"memory on {v.budget.device} ({v.budget.uuid}), over their limit of {_mib(v.budget.limit)} "
        f"(tolerance {tolerance}); the device driver counts memory the in-process limit did not see "
        "(a second driver copy, a static binary or a nested runtime)."
    )
    if action != "kill":
        return head + " Not killed: the watchdog only reports (--watchdog report)."
    ended = [u for u in v.victims if u.owner.pod_uid == pod.uid and killed.get(u.pid)]
    if not ended:
        return head + " Processes of another pod of the same claim were killed."
    detail = ", ".join(f"{u.pid} in container {u.owner.container} ({_mib(u.used_bytes)})" for u in ended)
    return head + f" Killed process(es) {detail}."


def _mib(value: int) -> str:
    return f"{value / MIB:.0f} MiB"


# -- the loop -------------------------------------------------------------------------------------


class WatchdogMetrics:
    def __init__(self, metrics: DriverMetrics) -> None:
        r = metrics.standard
        self.scans = Counter("tessera_watchdog_scans", "Watchdog scans, by result (ok, error).", ["result"], registry=r)
        self.scan_seconds = Histogram(
            "tessera_watchdog_scan_duration_seconds",
            "Time of one watchdog scan (device query, process lookup, evaluation).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.violations = Counter(
            "tessera_watchdog_violations",
            "Budgets found over their device memory limit (plus tolerance), by device and action (kill, report).",
            ["device", "action"],
            registry=r,
        )
        self.killed = Counter(
            "tessera_watchdog_killed_processes", "Processes the watchdog killed, by device.", ["device"], registry=r
        )
        self.processes = Gauge(
            "tessera_watchdog_processes",
            "Processes holding device memory at the last scan, by device and whether a prepared pod owns them "
            "(attributed) or not (unattributed: outside any pod prepared here).",
            ["device", "owner"],
            registry=r,
        )
        self.enabled = Gauge(
            "tessera_watchdog_enabled", "1 when the watchdog runs (kill or report), else 0.", registry=r
        )


class Watchdog:
    """Scans every ``period`` seconds; :meth:`scan` once (tests, benchmarks)."""

    def __init__(
        self,
        reader: ProcessReader,
        entries: Callable[[], Iterable[tuple[str, ClaimEntry]]],
        devices: Sequence[DeviceInfo],
        names: VendorNames,
        metrics: DriverMetrics,
        *,
        node: str,
        events: EventRecorder | None,
        action: str = "kill",
        period: float = 5.0,
        tolerance: Tolerance = Tolerance(),
        owners: OwnerCache | None = None,
    ) -> None:
        if action not in ("kill", "report"):
            raise WatchdogConfigError(f"watchdog action {action!r}: choose kill or report")
        self.reader = reader
        self.entries = entries
        self.devices = {names.device_name(d.index): d for d in devices}
        self.node = node
        self.events = events
        self.action = action
        self.period = period
        self.tolerance = tolerance
        self.owners = owners if owners is not None else OwnerCache()
        self.metrics = WatchdogMetrics(metrics)
        self.metrics.enabled.set(1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchdog")
        self._reported: set[tuple[str, tuple[str, ...]]] = set()
        _raise_fd_limit()

    async def run(self) -> None:
        log.info(
            "watchdog running",
            extra={"action": self.action, "period_s": self.period, "tolerance": str(self.tolerance)},
        )
        while True:
            try:
                await self.scan()
            except Exception as exc:  # a failed scan is retried next period; the driver goes on
                self.metrics.scans.labels(result="error").inc()
                log.warning("watchdog scan failed", extra={"error": str(exc)})
            await asyncio.sleep(self.period)

    async def scan(self) -> ScanResult:
        """One scan: read, attribute, evaluate, act (in the watchdog's thread), then record Events."""
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self.scan_blocking)
        self.metrics.scans.labels(result="ok").inc()
        for uuid in self._uuids():
            device = self._device_name(uuid)
            self.metrics.processes.labels(device=device, owner="attributed").set(result.attributed.get(uuid, 0))
            self.metrics.processes.labels(device=device, owner="unattributed").set(result.unattributed.get(uuid, 0))
        current = set()
        for v in result.violations:
            key = (v.budget.uuid, v.budget.claims)
            current.add(key)
            if self.action == "report" and key in self._reported:
                continue  # reported once while it lasts
            self.metrics.violations.labels(device=v.budget.device, action=self.action).inc()
            await self._record(v, result.killed)
        self._reported = current
        return result

    def scan_blocking(self) -> ScanResult:
        started = time.perf_counter()
        usage = self.reader.read()
        pids = sorted({p.pid for procs in usage.values() for p in procs})
        owners = self.owners.owners(pids)
        device_budgets = budgets(self.entries(), self.devices)
        result = ScanResult(violations=evaluate(usage, owners, device_budgets, self.tolerance))
        prepared_pods = {pod for bs in device_budgets.values() for b in bs for pod in b.pods}
        for uuid, procs in usage.items():
            mine = sum(1 for p in procs if (o := owners.get(p.pid)) is not None and o.pod_uid in prepared_pods)
            result.attributed[uuid] = mine
            result.unattributed[uuid] = len(procs) - mine
        if self.action == "kill":
            for v in result.violations:
                for victim in v.victims:
                    result.killed[victim.pid] = self.owners.signal(victim.pid)
                    if result.killed[victim.pid]:
                        self.metrics.killed.labels(device=v.budget.device).inc()
        self.metrics.scan_seconds.observe(time.perf_counter() - started)
        return result

    async def _record(self, v: Violation, killed: Mapping[int, bool]) -> None:
        pods = [v.budget.pods[uid] for uid in sorted({u.owner.pod_uid for u in v.processes}) if uid in v.budget.pods]
        for pod in pods:
            message = event_message(v, pod, self.tolerance, self.action, killed)
            log.warning(
                "device memory over the limit",
                extra={
                    "pod": str(pod),
                    "claim": ",".join(v.budget.claims),
                    "device": v.budget.device,
                    "uuid": v.budget.uuid,
                    "limit_bytes": v.budget.limit,
                    "used_bytes": v.usage,
                    "action": self.action,
                    "killed": [u.pid for u in v.victims if killed.get(u.pid)],
                },
            )
            if self.events is not None:
                await self.events.record(Target.pod(pod.namespace, pod.name, pod.uid), WARNING, EVENT_REASON, message)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.reader.close()
        self.owners.close()

    def _uuids(self) -> list[str]:
        return [d.uuid for d in self.devices.values()]

    def _device_name(self, uuid: str) -> str:
        return next((name for name, d in self.devices.items() if d.uuid == uuid), uuid)


def _raise_fd_limit() -> None:
    """Each process the watchdog knows is pinned by a pidfd: allow as many descriptors as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
