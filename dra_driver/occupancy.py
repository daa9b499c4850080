"""Occupancy of this node's devices, from the ResourceClaims allocated from the driver's pools.

The pure half turns allocation results into three attributes per device, all percent in steps of
:data:`OCCUPANCY_STEP`:

* :data:`ATTR_OCCUPANCY`: the device's load, the largest of its consumed fractions (memory, cores,
  shares), rounded up so that any allocation shows; an exclusive allocation (no
  ``consumedCapacity``) is a full device; admin-access results hold nothing;
* :data:`ATTR_NODE_OCCUPANCY`: the node's load (mean over its devices), rounded up the same way;
* :data:`ATTR_DEVICE_RANK`: the percent of the node's devices whose load is lower than this one's,
  rounded down (0: the device is among the node's least occupied);
* :data:`ATTR_NODE_RANK`: the same among the driver's nodes, by node load, equal loads by their least
  loaded device (0: the node is among the least occupied). Ranks make "spread" relative: whatever
  the cluster's load, the least occupied nodes and devices can be asked for first.

:class:`OccupancyTracker` is the I/O half: it lists and watches every ResourceClaim (there is no field
selector for "allocated from this driver") and the driver's ResourceSlices on every node (the other
nodes' devices, for the rank), and hands the attributes of this node's devices to the slice publisher
when one changes, at most once per ``interval`` (:class:`Throttle`: the first change after a quiet
interval goes out at once, later ones are coalesced to the end of the interval). An allocation is
seen as soon as the scheduler writes it, before the kubelet prepares anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from kubeapi import RESOURCE_V1, KubeClient, KubeError
from kubeapi.informer import Informer, Key, key_of
from tessera_common.quantity import QuantityError, parse_quantity
from tessera_common.tasks import cancel_and_wait
from vendors.base import (
    ATTR_DEVICE_RANK,
    ATTR_NODE_OCCUPANCY,
    ATTR_NODE_RANK,
    ATTR_OCCUPANCY,
    CAPACITY_CORES,
    CAPACITY_MEMORY,
    CAPACITY_SHARES,
    OCCUPANCY_STEP,
    DeviceInfo,
    VendorNames,
)

from .slices import SLICES_PATH, memory_capacity_bytes

log = logging.getLogger("dra_driver.occupancy")

CLAIMS_PATH = f"{RESOURCE_V1}/resourceclaims"
DEFAULT_INTERVAL = 1.0
"""Seconds between two occupancy updates of the node's ResourceSlices (at most one write per interval)."""

Attributes = dict[str, dict[str, dict[str, int]]]
"""Device name -> attribute name -> typed value (``{"int": n}``), as ``spec.devices[].attributes`` holds them."""


# --- pure ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """What one device offers, in the units of ``consumedCapacity``."""

    memory_bytes: int
    cores: int | None
    shares: int


def device_totals(devices: Sequence[DeviceInfo], names: VendorNames, split_count: int) -> dict[str, Totals]:
    """Published totals per device name (memory as the slice publishes it, cores 100, shares the split count)."""
    return {
        names.device_name(d.index): Totals(memory_capacity_bytes(d), 100 if d.cores_shareable else None, split_count)
        for d in devices
    }


def _int(value: Any) -> int:
    try:
        return int(parse_quantity(str(value)))
    except (QuantityError, ValueError, TypeError):
        return 0


def slice_totals(spec: Mapping[str, Any]) -> dict[str, Totals]:
    """Totals per device of a ResourceSlice's ``spec`` (another node's, for the rank)."""
    out: dict[str, Totals] = {}
    for device in spec.get("devices") or []:
        capacity = device.get("capacity") or {}

        def value(name: str, cap: Mapping[str, Any] = capacity) -> Any:
            return (cap.get(name) or {}).get("value")

        out[str(device.get("name"))] = Totals(
            _int(value(CAPACITY_MEMORY)),
            _int(value(CAPACITY_CORES)) if value(CAPACITY_CORES) is not None else None,
            _int(value(CAPACITY_SHARES)),
        )
    return out


def driver_results(claim: Mapping[str, Any], driver: str) -> tuple[Mapping[str, Any], ...]:
    """The allocation results of ``claim`` that name ``driver`` (none when unallocated)."""
    allocation = (claim.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    return tuple(r for r in results if isinstance(r, Mapping) and r.get("driver") == driver)


def pool_results(claim: Mapping[str, Any], driver: str, pool: str) -> tuple[Mapping[str, Any], ...]:
    """The allocation results of ``claim`` that name ``driver`` and ``pool``."""
    return tuple(r for r in driver_results(claim, driver) if r.get("pool") == pool)


def _amount(value: Any) -> Fraction:
    try:
        return Fraction(parse_quantity(str(value)))
    except (QuantityError, ValueError, TypeError):
        return Fraction(0)


@dataclass
class Held:
    """What allocation results hold on one device: the consumed amounts per capacity (memory, cores,
    shares, in the units of ``consumedCapacity``) and the number of exclusive allocations."""

    amounts: dict[str, Fraction] = field(default_factory=dict)
    exclusive: int = 0

    def add(self, other: Held, sign: int = 1) -> None:
        self.exclusive += sign * other.exclusive
        for capacity, amount in other.amounts.items():
            total = self.amounts.get(capacity, Fraction(0)) + sign * amount
            if total:
                self.amounts[capacity] = total
            else:
                self.amounts.pop(capacity, None)

    def empty(self) -> bool:
        return not self.exclusive and not self.amounts


HeldKey = tuple[str, str]
"""(pool, device)"""


def holdings(results: Iterable[Mapping[str, Any]]) -> dict[HeldKey, Held]:
    """What the results hold, per (pool, device); admin-access results hold nothing. Each quantity is
    parsed once here, so a tracker keeps these per claim and sums them as claims change."""
    out: dict[HeldKey, Held] = {}
    for result in results:
        if result.get("adminAccess"):
            continue
        held = out.setdefault((str(result.get("pool")), str(result.get("device"))), Held())
        consumed = result.get("consumedCapacity")
        if not isinstance(consumed, Mapping) or not consumed:
            held.exclusive += 1  # an exclusive allocation takes the whole device
            continue
        for key, value in consumed.items():
            capacity = str(key).rpartition("/")[2]
            if capacity in (CAPACITY_MEMORY, CAPACITY_CORES, CAPACITY_SHARES):
                held.amounts[capacity] = held.amounts.get(capacity, Fraction(0)) + _amount(value)
    return out


def load(held: Held | None, total: Totals) -> Fraction:
    """A device's load (0..1): the largest of its consumed fractions; 1 when held exclusively."""
    if held is None:
        return Fraction(0)
    if held.exclusive:
        return Fraction(1)
    whole = {CAPACITY_MEMORY: total.memory_bytes, CAPACITY_CORES: total.cores, CAPACITY_SHARES: total.shares}
    parts = []
    for capacity, amount in held.amounts.items():
        if whole[capacity] is None:
            continue  # cores that are not shared are not consumed
        denominator = whole[capacity] or 0
        parts.append(amount / denominator if denominator > 0 else Fraction(0))
    return min(Fraction(1), max(parts, default=Fraction(0)))


def loads_by_pool(
    held: Mapping[HeldKey, Held], totals: Mapping[str, Mapping[str, Totals]]
) -> dict[str, dict[str, Fraction]]:
    """Device loads of every pool in ``totals``; what is held on devices they do not list is ignored."""
    return {
        pool: {name: load(held.get((pool, name)), total) for name, total in devices.items()}
        for pool, devices in totals.items()
    }


def device_loads(results: Iterable[Mapping[str, Any]], totals: Mapping[str, Totals]) -> dict[str, Fraction]:
    """Load of every device in ``totals`` (0..1) from results of one pool: per capacity, what the results
    consumed over the total; the device's load is the largest of them. Results for unknown devices are ignored."""
    by_device: dict[str, Held] = {}
    for (_, device), held in holdings(results).items():
        by_device.setdefault(device, Held()).add(held)
    return {name: load(by_device.get(name), total) for name, total in totals.items()}


def mean_load(loads: Mapping[str, Fraction]) -> Fraction:
    return sum(loads.values(), Fraction(0)) / len(loads) if loads else Fraction(0)


def bucket(load: Fraction) -> int:
    """A load as a percent, rounded up to a multiple of :data:`OCCUPANCY_STEP` (0 only when nothing is held)."""
    if load <= 0:
        return 0
    return min(100, math.ceil(load * 100 / OCCUPANCY_STEP) * OCCUPANCY_STEP)


def rank(own: Any, loads: Iterable[Any]) -> int:
    """Percent of ``loads`` (``own`` among them) lower than ``own``, rounded down (0: none is lower);
    loads are fractions, or tuples of them compared in order."""
    values = list(loads)
    if not values:
        return 0
    return 100 * sum(1 for load in values if load < own) // len(values)


def occupancy_attributes(loads: Mapping[str, Fraction], node_rank: int = 0) -> Attributes:
    """The occupancy attributes of every device of one node: its bucket and rank, the node's bucket and rank."""
    node = bucket(mean_load(loads))
    return {
        name: {
            ATTR_OCCUPANCY: {"int": bucket(load)},
            ATTR_DEVICE_RANK: {"int": rank(load, loads.values())},
            ATTR_NODE_OCCUPANCY: {"int": node},
            ATTR_NODE_RANK: {"int": node_rank},
        }
        for name, load in loads.items()
    }


def pool_loads(
    results: Iterable[Mapping[str, Any]], totals: Mapping[str, Mapping[str, Totals]]
) -> dict[str, dict[str, Fraction]]:
    """Device loads of every pool in ``totals``, from every allocation result of the driver."""
    return loads_by_pool(holdings(results), totals)


def node_order(loads: Mapping[str, Fraction]) -> tuple[Fraction, Fraction]:
    """How a node ranks among the driver's nodes: by its load, then by its least loaded device (of two
    nodes equally loaded, the one with the emptier device is the less occupied: what it can offer the
    next pod is less used)."""
    return mean_load(loads), min(loads.values(), default=Fraction(0))


def attributes_by_pool(loads: Mapping[str, Mapping[str, Fraction]]) -> dict[str, Attributes]:
    """Every pool's attributes (each node's rank among all of them, by :func:`node_order`)."""
    keys = {name: node_order(devices) for name, devices in loads.items()}
    return {name: occupancy_attributes(devices, rank(keys[name], keys.values())) for name, devices in loads.items()}


def pool_attributes(loads: Mapping[str, Mapping[str, Fraction]], pool: str) -> Attributes:
    """``pool``'s attributes among every pool's loads (the others only for its node rank)."""
    if pool not in loads:
        return {}
    own = node_order(loads[pool])
    return occupancy_attributes(loads[pool], rank(own, (node_order(devices) for devices in loads.values())))


def cluster_attributes(
    results: Iterable[Mapping[str, Any]], totals: Mapping[str, Mapping[str, Totals]], pool: str
) -> Attributes:
    """``pool``'s attributes given every result of the driver and every pool's totals (``pool`` included)."""
    return pool_attributes(pool_loads(results, totals), pool)


class Throttle:
    """At most one update per ``interval``: the first after a quiet interval at once, the rest coalesced."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -math.inf

    def delay(self, now: float) -> float:
        """Seconds to wait before the next update may go out."""
        return max(0.0, self.last + self.interval - now)

    def sent(self, now: float) -> None:
        self.last = now


# --- I/O -----------------------------------------------------------------------------------------


def _claim_view(driver: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What the tracker keeps of a ResourceClaim: its identity and the allocation results of ``driver``."""

    def view(claim: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": _identity(claim), "results": driver_results(claim, driver)}

    return view


def _slice_view(slice_: dict[str, Any]) -> dict[str, Any]:
    """What the tracker keeps of a ResourceSlice: its identity, driver, pool and device totals."""
    spec = slice_.get("spec") or {}
    pool = spec.get("pool") or {}
    return {
        "metadata": _identity(slice_),
        "driver": spec.get("driver"),
        "pool": (str(pool.get("name")), int(pool.get("generation") or 0)),
        "totals": slice_totals(spec),
    }


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in ("namespace", "name", "resourceVersion") if k in meta}


class OccupancyTracker:
    """Watches the cluster's ResourceClaims and the driver's slices; pushes this node's occupancy
    attributes to ``publish`` (the slice publisher's ``set_attributes``)."""

    def __init__(
        self,
        client: KubeClient,
        names: VendorNames,
        node_name: str,
        devices: Sequence[DeviceInfo],
        split_count: int,
        publish: Callable[[Attributes], Awaitable[None]],
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._driver = names.driver
        self._node = node_name
        self._own = device_totals(devices, names, split_count)
        self._publish = publish
        self._clock = clock
        self.throttle = Throttle(interval)
        self._results: dict[Key, tuple[Mapping[str, Any], ...]] = {}
        self._claim_held: dict[Key, dict[HeldKey, Held]] = {}
        self._held: dict[HeldKey, Held] = {}
        """What every allocated claim holds, summed per (pool, device): kept up to date claim by claim,
        so that computing the attributes costs the number of devices, not of claims."""
        self._slices: dict[Key, tuple[str, int, dict[str, Totals]]] = {}  # -> (pool, generation, totals)
        self._dirty = asyncio.Event()
        self._claims_seen = False
        self._slices_seen = False
        self._synced = asyncio.Event()
        """Set once the claims and the slices have both been listed (or the claims are forbidden)."""
        self._tasks: list[asyncio.Task[None]] = []
        self.published: Attributes | None = None
        """The attributes last handed to the publisher (``None`` before the first push)."""
        self.pushes = 0
        self.push_times: list[float] = []
        """When each push was done (the slice written), by ``clock``; the last 1000."""

    def start(self) -> None:
        # Informers: a list, then a watch from its resourceVersion; a list again after 410 Gone or an
        # error, whose differences arrive as events. Only what the tracker reads is cached.
        claims = Informer(
            self._client,
            CLAIMS_PATH,
            name="occupancy-claims",
            handler=self._claim_event,
            transform=_claim_view(self._driver),
            on_listed=self._claims_listed,
            on_failure=self._claims_failed,
        )
        # Without the other nodes' slices the rank is computed from this node alone (0): no harm done.
        slices = Informer(
            self._client,
            SLICES_PATH,
            name="occupancy-slices",
            handler=self._slice_event,
            transform=_slice_view,
            on_listed=self._slices_listed,
            fieldSelector=f"spec.driver={self._driver}",
        )
        self._tasks = [
            asyncio.create_task(claims.run(), name="occupancy-claims"),
            asyncio.create_task(slices.run(), name="occupancy-slices"),
            asyncio.create_task(self._push_loop(), name="occupancy-push"),
        ]

    async def initial(self, timeout: float) -> Attributes:
        """The attributes of the first lists of claims and slices (waiting at most ``timeout`` for
        them), recorded as published: the slice publisher's first write carries them, instead of a
        write without them followed by one with them at every start."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        self.published = self.current() if self._claims_seen else {}
        return self.published

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def pool_totals(self) -> dict[str, dict[str, Totals]]:
        """Totals of every pool of the driver (the newest generation of each), this node's from discovery."""
        newest: dict[str, int] = {}
        for pool, generation, _ in self._slices.values():
            newest[pool] = max(newest.get(pool, generation), generation)
        out: dict[str, dict[str, Totals]] = {}
        for pool, generation, totals in self._slices.values():
            if pool != self._node and generation == newest[pool]:
                out.setdefault(pool, {}).update(totals)
        out[self._node] = self._own
        return out

    def current(self) -> Attributes:
        """The attributes the claims and slices seen so far imply for this node's devices."""
        return pool_attributes(loads_by_pool(self._held, self.pool_totals()), self._node)

    # -- watch callbacks ------------------------------------------------------------------------

    def _claims_listed(self) -> None:
        self._claims_seen = True
        if self._slices_seen:
            self._synced.set()
        self._dirty.set()

    def _claim_event(self, kind: str, claim: dict[str, Any], _old: dict[str, Any] | None = None) -> None:
        key = key_of(claim)
        results: tuple[Mapping[str, Any], ...] = () if kind == "DELETED" else tuple(claim.get("results") or ())
        if results:
            if self._results.get(key) != results:
                self._results[key] = results
                self._hold(key, holdings(results))
                self._dirty.set()
        elif self._results.pop(key, None) is not None:
            self._hold(key, {})
            self._dirty.set()

    def _hold(self, key: Key, new: dict[HeldKey, Held]) -> None:
        """Replace what claim ``key`` holds in the sums by ``new``."""
        for device, held in self._claim_held.pop(key, {}).items():
            total = self._held[device]
            total.add(held, -1)
            if total.empty():
                del self._held[device]
        for device, held in new.items():
            self._held.setdefault(device, Held()).add(held)
        if new:
            self._claim_held[key] = new

    def _slices_listed(self) -> None:
        self._slices_seen = True
        if self._claims_seen:
            self._synced.set()
        self._dirty.set()

    def _slice_event(self, kind: str, view: dict[str, Any], _old: dict[str, Any] | None = None) -> None:
        key = key_of(view)
        if kind == "DELETED" or view.get("driver") != self._driver:
            if self._slices.pop(key, None) is not None:
                self._dirty.set()
            return
        pool, generation = view["pool"]
        entry = (pool, generation, view["totals"])
        if self._slices.get(key) != entry:
            self._slices[key] = entry
            self._dirty.set()

    def _claims_failed(self, exc: Exception) -> None:
        if not (isinstance(exc, KubeError) and exc.status in (401, 403)):
            return
        log.warning(
            "cannot list or watch resourceclaims for device occupancy: withdrawing the occupancy attributes "
            "until it can; grant the driver list and watch on resourceclaims",
            extra={"node": self._node, "error": str(exc)},
        )
        # Unknown occupancy must not steer placement: drop the attributes until the watches work.
        self._claims_seen = False
        self._synced.set()
        if self.published:
            self.published = None
            self._dirty.set()

    # -- pushing --------------------------------------------------------------------------------

    async def _push_loop(self) -> None:
        while True:
            await self._dirty.wait()
            delay = self.throttle.delay(self._clock())
            if delay > 0:
                await asyncio.sleep(delay)
            self._dirty.clear()
            attributes = self.current() if self._claims_seen else {}
            if attributes == self.published:
                continue
            self.published = attributes
            self.pushes += 1
            log.debug(
                "device occupancy changed",
                extra={
                    "node": self._node,
                    "occupancy": {n: a[ATTR_OCCUPANCY]["int"] for n, a in sorted(attributes.items())},
                    "node_rank": next(iter(attributes.values()), {}).get(ATTR_NODE_RANK),
                },
            )
            # The interval runs from the end of the write: two writes never start less than
            # ``interval`` apart, however long one takes.
            await self._publish(attributes)
            self.throttle.sent(self._clock())
            self.push_times = [*self.push_times[-999:], self._clock()]
