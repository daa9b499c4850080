"""Structured-parameters allocation for one node, following kube-scheduler's allocator (pure).

Claims are allocated one after the other, requests in order, each device by first fit over the
node's pools (see :mod:`.pools`) with backtracking: a device is a candidate for a request when it is
not in use (exclusive devices: by any allocated or in-flight claim; multi-allocatable ones stay
available while capacity lasts), its DeviceClass selectors and the request's selectors accept it,
its taints are tolerated, its capacity can serve the request (:mod:`.capacity`) and the claim's
``matchAttribute``/``distinctAttribute`` constraints still hold. Within one request each further
device is searched after the previous one (so ``count: 2`` never takes the same device twice).
``firstAvailable`` subrequests are tried in order, the first that works wins. ``allocationMode: All``
takes every matching device of the node, and fails when any of them cannot be taken or a pool is
being updated. Multi-allocatable devices get a fresh ``shareID`` and ``consumedCapacity`` listing every
capacity. CEL errors, unknown classes and impossible ``All`` requests are errors for the node.

Deliberate differences, none visible to our drivers: pools are tried in (driver, pool) order (1.34
iterates a map), a claim config listing several requests is recorded once, and devices with
binding conditions or counter consumption (gates off in 1.34) are never picked.
"""

from __future__ import annotations

import bisect
import copy
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import capacity as cap
from .cel import SelectorError, device_input, evaluate, read_values, reads
from .pools import Candidate, DeviceID, Pool, candidates, gather_pools
from .quantity import Quantity

Obj = dict[str, Any]
MAX_RESULTS = 32
MEMO_SIZE = 1 << 16
"""Selector verdicts and parsed device capacities kept across calls (0: none kept). A selector is a
pure function of what it reads of the device (:func:`.cel.reads`), so its verdict is keyed by those
values; capacities by the published capacity. The harness's stand-in for kube-scheduler's compiled,
cheap CEL: the Python CEL interpreter costs 0.1-0.3 ms per evaluation."""

_verdicts: dict[tuple[str, Any], bool] = {}
_capacities: dict[bytes, dict[str, cap.Capacity]] = {}


class AllocationError(Exception):
    """The claims cannot be allocated on this node for a reason that is not a lack of devices."""


# ---------------------------------------------------------------------------- allocated state
@dataclass
class AllocatedState:
    """What existing allocations hold: exclusive devices, and capacity consumed on shared ones."""

    exclusive: set[DeviceID] = field(default_factory=set)
    consumed: dict[DeviceID, dict[str, Quantity]] = field(default_factory=dict)

    @classmethod
    def from_claims(cls, claims: Iterable[Mapping[str, Any]]) -> AllocatedState:
        state = cls()
        for claim in claims:
            state.add(claim)
        return state

    def add(self, claim: Mapping[str, Any]) -> None:
        self._apply(claim, 1)

    def remove(self, claim: Mapping[str, Any]) -> None:
        """Release what ``claim``'s allocation holds (the claim was deallocated or deleted)."""
        self._apply(claim, -1)

    def copy(self) -> AllocatedState:
        return AllocatedState(set(self.exclusive), {k: dict(v) for k, v in self.consumed.items()})

    def _apply(self, claim: Mapping[str, Any], sign: int) -> None:
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for result in (allocation.get("devices") or {}).get("results") or []:
            device_id = (str(result["driver"]), str(result["pool"]), str(result["device"]))
            if result.get("adminAccess"):
                continue
            if result.get("shareID") or result.get("consumedCapacity"):
                amounts = {k: Quantity.parse(v) for k, v in (result.get("consumedCapacity") or {}).items()}
                used = self.consumed.setdefault(device_id, {})
                if sign > 0:
                    cap.add_into(used, amounts)
                else:
                    cap.subtract_from(used, {k: v for k, v in amounts.items() if k in used})
            elif sign > 0:
                self.exclusive.add(device_id)
            else:
                self.exclusive.discard(device_id)


# ---------------------------------------------------------------------------- requests
@dataclass
class Plan:
    """One request, or one subrequest of a ``firstAvailable`` request."""

    base: str
    sub: str | None
    spec: Obj
    device_class: Obj
    count: int
    all_devices: list[Candidate] | None = None
    key: tuple[int, int, int] = (0, 0, 0)
    """(claim, request, subrequest or -1) in the search."""
    exprs: list[str] = field(default_factory=list)
    class_exprs: list[str] = field(default_factory=list)
    capacity_key: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        self.exprs = self.selectors
        self.class_exprs = self.class_selectors
        self.capacity_key = tuple(sorted((str(k), str(v)) for k, v in (self.capacity_requests or {}).items()))

    @property
    def name(self) -> str:
        return f"{self.base}/{self.sub}" if self.sub else self.base

    @property
    def mode(self) -> str:
        return str(self.spec.get("allocationMode", "ExactCount"))

    @property
    def selectors(self) -> list[str]:
        return [str(s["cel"]["expression"]) for s in self.spec.get("selectors") or []]

    @property
    def class_selectors(self) -> list[str]:
        return [str(s["cel"]["expression"]) for s in (self.device_class.get("spec") or {}).get("selectors") or []]

    @property
    def capacity_requests(self) -> Mapping[str, Any] | None:
        return (self.spec.get("capacity") or {}).get("requests")

    @property
    def admin(self) -> bool:
        return bool(self.spec.get("adminAccess"))

    @property
    def tolerations(self) -> list[Obj]:
        return list(self.spec.get("tolerations") or [])


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def taint_blocks(device: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for taint in device.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return dict(taint)
    return None


# ---------------------------------------------------------------------------- constraints
def lookup_attribute(candidate: Candidate, name: str) -> tuple[str, Any] | None:
    attributes = candidate.device.get("attributes") or {}
    value = attributes.get(name)
    if value is None:
        domain, _, ident = name.partition("/")
        if domain != candidate.driver:
            return None
        value = attributes.get(ident)
    if not isinstance(value, Mapping):
        return None
    for kind in ("string", "int", "bool", "version"):
        if kind in value:
            return kind, value[kind]
    return None


class Constraint:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.requests = set(spec.get("requests") or [])
        self.match = spec.get("matchAttribute")
        self.distinct = spec.get("distinctAttribute")
        self.values: list[tuple[str, Any]] = []

    def applies(self, base: str, sub: str | None) -> bool:
        if not self.requests:
            return True
        return base in self.requests or (sub is not None and f"{base}/{sub}" in self.requests)

    def add(self, plan: Plan, candidate: Candidate) -> bool:
        if not self.applies(plan.base, plan.sub):
            return True
        attribute = lookup_attribute(candidate, str(self.match or self.distinct))
        if attribute is None:
            return False
        if self.match and self.values and attribute != self.values[0]:
            return False
        if self.distinct and attribute in self.values:
            return False
        self.values.append(attribute)
        return True

    def remove(self, plan: Plan, candidate: Candidate) -> None:
        if not self.applies(plan.base, plan.sub):
            return
        attribute = lookup_attribute(candidate, str(self.match or self.distinct))
        if attribute is not None and attribute in self.values:
            self.values.remove(attribute)

    def describe(self) -> str:
        if self.match:
            return f"matchAttribute {self.match}"
        return f"distinctAttribute {self.distinct}"


# ---------------------------------------------------------------------------- the search
@dataclass
class Picked:
    plan: Plan
    candidate: Candidate
    consumed: dict[str, Quantity] | None
    share_id: str | None


@dataclass
class NodeAllocation:
    """The outcome for one node: allocations per claim (same order), or why not."""

    node: str
    allocations: list[Obj] | None
    reason: str = ""
    score: int = 0
    evaluations: int = 0

    @property
    def ok(self) -> bool:
        return self.allocations is not None


class _Search:
    def __init__(
        self,
        node: Mapping[str, Any],
        claims: Sequence[Mapping[str, Any]],
        classes: Mapping[str, Mapping[str, Any]],
        pools: list[Pool],
        state: AllocatedState,
        new_share_id: Callable[[], str],
    ) -> None:
        self.node = node
        self.claims = claims
        self.classes = classes
        self.pools = pools
        self.devices = candidates(pools, node)
        self.state = state
        self.new_share_id = new_share_id
        self.plans: dict[tuple[int, int, int], Plan] = {}
        self.constraints: list[list[Constraint]] = []
        self.allocating: dict[DeviceID, set[int]] = {}
        self.allocating_capacity: dict[DeviceID, dict[str, Quantity]] = {}
        self.picked: list[list[Picked]] = [[] for _ in claims]
        self.selected_sub: dict[tuple[int, int], int] = {}
        self._plan_states: dict[tuple[int, int, int], list[bool | AllocationError]] = {}
        self._plan_indices: dict[tuple[int, int, int], list[int]] = {}
        self._inputs: dict[DeviceID, Any] = {}
        self._keys: dict[DeviceID, bytes] = {}
        self._capacity_keys: dict[DeviceID, bytes] = {}
        self._verdicts: dict[tuple[str, DeviceID], bool] = {}
        self._values: dict[tuple[Any, DeviceID], Any] = {}
        self._consumption: dict[tuple[Any, DeviceID], dict[str, Quantity] | str] = {}
        self._fits: dict[tuple[Any, DeviceID, int], str] = {}
        self._version = 0
        """Bumped whenever the search takes or gives back capacity (the ``_fits`` memo's generation)."""
        self.evaluations = 0
        """CEL evaluations this search ran (verdicts not found in the memo)."""

    # -------------------------------------------------------------- preparation
    def prepare(self) -> None:
        for ci, claim in enumerate(self.claims):
            devices = (claim.get("spec") or {}).get("devices") or {}
            minimum = 0
            for ri, request in enumerate(devices.get("requests") or []):
                if request.get("firstAvailable"):
                    counts = []
                    for si, sub in enumerate(request["firstAvailable"]):
                        plan = self._plan(claim, (ci, ri, si), str(request["name"]), str(sub["name"]), sub)
                        counts.append(plan.count)
                    minimum += min(counts)
                else:
                    plan = self._plan(claim, (ci, ri, -1), str(request["name"]), None, request.get("exactly") or {})
                    minimum += plan.count
            if minimum > MAX_RESULTS:
                raise AllocationError(
                    f"claim {_ref(claim)}: number of requested devices {minimum} exceeds the claim limit of "
                    f"{MAX_RESULTS}"
                )
            self.constraints.append([Constraint(c) for c in devices.get("constraints") or []])

    def _plan(
        self, claim: Mapping[str, Any], key: tuple[int, int, int], base: str, sub: str | None, spec: Mapping[str, Any]
    ) -> Plan:
        class_name = str(spec.get("deviceClassName", ""))
        device_class = self.classes.get(class_name)
        name = f"{base}/{sub}" if sub else base
        if device_class is None:
            raise AllocationError(
                f"claim {_ref(claim)}, request {name}: could not retrieve device class {class_name}: "
                f'deviceclass.resource.k8s.io "{class_name}" not found'
            )
        plan = Plan(base, sub, dict(spec), dict(device_class), int(spec.get("count", 1)), key=key)
        if plan.mode == "All":
            for pool in self.pools:
                if not pool.usable:
                    raise AllocationError(
                        f"claim {_ref(claim)}, request {name}: asks for all devices, but {pool.describe()}"
                    )
            plan.all_devices = [
                c for c in self.devices if self._selectable(key, plan, c) and self._capacity_ok(plan, c) is None
            ]
            plan.count = len(plan.all_devices)
        elif plan.mode != "ExactCount":
            raise AllocationError(f"claim {_ref(claim)}, request {name}: unsupported count mode {plan.mode}")
        self.plans[key] = plan
        return plan

    # -------------------------------------------------------------- checks
    def _input(self, candidate: Candidate) -> Any:
        if candidate.id not in self._inputs:
            self._inputs[candidate.id] = device_input(candidate.driver, candidate.device)
        return self._inputs[candidate.id]

    def _key(self, candidate: Candidate) -> bytes:
        key = self._keys.get(candidate.id)
        if key is None:
            key = self._keys[candidate.id] = (
                candidate.driver.encode() + b"\0" + orjson.dumps(candidate.device, option=orjson.OPT_SORT_KEYS)
            )
        return key

    def _verdict(self, expression: str, candidate: Candidate) -> bool:
        """``evaluate`` through the memos: this search's, then the one across calls, keyed by what the
        expression reads of the device (all of it when that cannot be told). Errors are not memoised:
        they raise every time."""
        local_key = (expression, candidate.id)
        verdict = self._verdicts.get(local_key)
        if verdict is not None:
            return verdict
        wanted = reads(expression)
        if wanted is None:
            values: Any = self._key(candidate)
        else:
            values_key = (wanted, candidate.id)
            values = self._values.get(values_key)
            if values is None:
                values = self._values[values_key] = read_values(candidate.device, candidate.driver, wanted)
        memo_key = (expression, values)
        verdict = _verdicts.get(memo_key) if MEMO_SIZE else None
        if verdict is None:
            self.evaluations += 1
            verdict = evaluate(expression, self._input(candidate))
            if len(_verdicts) >= MEMO_SIZE:
                _verdicts.clear()
            _verdicts[memo_key] = verdict
        self._verdicts[local_key] = verdict
        return verdict

    def _device_capacities(self, candidate: Candidate) -> dict[str, cap.Capacity]:
        key = self._capacity_keys.get(candidate.id)
        if key is None:
            key = self._capacity_keys[candidate.id] = orjson.dumps(
                candidate.device.get("capacity") or {}, option=orjson.OPT_SORT_KEYS
            )
        published = _capacities.get(key) if MEMO_SIZE else None
        if published is None:
            if len(_capacities) >= MEMO_SIZE:
                _capacities.clear()
            published = _capacities[key] = cap.device_capacities(candidate.device)
        return published

    def _selectable(self, key: tuple[int, int, int], plan: Plan, candidate: Candidate) -> bool:
        state = self._states(key, plan)[candidate.order]
        if isinstance(state, AllocationError):
            raise state
        return state

    def _states(self, key: tuple[int, int, int], plan: Plan) -> list[bool | AllocationError]:
        """Whether each device of the node passes ``plan``'s selectors (class first, then the request's,
        each stopping at the first false). A selector that fails on a device is kept as the error, raised
        only if the search reaches that device, as kube-scheduler evaluates devices lazily in order."""
        states = self._plan_states.get(key)
        if states is None:
            states = [self._check(key, plan, c) for c in self.devices]
            self._plan_states[key] = states
            self._plan_indices[key] = [i for i, s in enumerate(states) if s is not False]
        return states

    def _indices(self, key: tuple[int, int, int], plan: Plan) -> list[int]:
        """Indices of the devices ``plan``'s selectors accept (or fail on), in first-fit order."""
        self._states(key, plan)
        return self._plan_indices[key]

    def _check(self, key: tuple[int, int, int], plan: Plan, candidate: Candidate) -> bool | AllocationError:
        device = candidate.device
        if device.get("bindingConditions") or device.get("consumesCounters"):
            return False
        for from_class, expressions in ((True, plan.class_exprs), (False, plan.exprs)):
            for i, expression in enumerate(expressions):
                try:
                    if not self._verdict(expression, candidate):
                        return False
                except SelectorError as exc:
                    source = (
                        "class " + str(plan.device_class["metadata"]["name"])
                        if from_class
                        else "claim " + _ref(self.claims[key[0]])
                    )
                    return AllocationError(f"{source}: selector #{i} on device {'/'.join(candidate.id)}: {exc}")
        return True

    def _used(self, device_id: DeviceID) -> dict[str, Quantity]:
        used = dict(self.state.consumed.get(device_id, {}))
        cap.add_into(used, self.allocating_capacity.get(device_id, {}))
        return used

    def _consumed(self, plan: Plan, candidate: Candidate) -> dict[str, Quantity] | str:
        """What one allocation of ``candidate`` for ``plan`` consumes, or why it cannot (memoised per search
        and capacity request: the alternatives of one request usually ask the same)."""
        key = (plan.capacity_key, candidate.id)
        found = self._consumption.get(key)
        if found is None:
            try:
                found = cap.consumption(
                    plan.capacity_requests, candidate.driver, candidate.device, self._device_capacities(candidate)
                )
            except cap.CapacityMismatch as exc:
                found = str(exc)
            self._consumption[key] = found
        return found

    def _capacity_ok(self, plan: Plan, candidate: Candidate) -> str | None:
        """None when the device's capacity can serve one more allocation for ``plan``; else why not."""
        consumed = self._consumed(plan, candidate)
        if isinstance(consumed, str):
            return consumed
        if not candidate.multi:
            return cap.fits(consumed, {}, candidate.device, self._device_capacities(candidate))
        key = (plan.capacity_key, candidate.id, self._version)
        fit = self._fits.get(key)
        if fit is None:
            problem = cap.fits(consumed, self._used(candidate.id), candidate.device, self._device_capacities(candidate))
            fit = self._fits[key] = problem or ""
        return fit or None

    def _in_use(self, candidate: Candidate) -> bool:
        if candidate.id in self.state.exclusive:
            return True
        return bool(self.allocating.get(candidate.id))

    # -------------------------------------------------------------- recursion
    def run(self) -> bool:
        return self._claim(0)

    def _claim(self, ci: int) -> bool:
        if ci == len(self.claims):
            return True
        return self._request(ci, 0)

    def _request(self, ci: int, ri: int) -> bool:
        requests = ((self.claims[ci].get("spec") or {}).get("devices") or {}).get("requests") or []
        if ri == len(requests):
            return self._claim(ci + 1)
        if requests[ri].get("firstAvailable"):
            for si in range(len(requests[ri]["firstAvailable"])):
                if self._device(ci, ri, si, 0, 0):
                    self.selected_sub[(ci, ri)] = si
                    return True
            return False
        return self._device(ci, ri, -1, 0, 0)

    def _device(self, ci: int, ri: int, si: int, n: int, start: int) -> bool:
        key = (ci, ri, si)
        plan = self.plans[key]
        if plan.mode == "All" and not plan.all_devices:
            return False
        if n >= plan.count:
            return self._request(ci, ri + 1)
        if len(self.picked[ci]) + plan.count - n > MAX_RESULTS:
            return False
        if plan.all_devices is not None:
            candidate = plan.all_devices[n]
            if not self._take(ci, key, plan, candidate):
                return False
            if self._device(ci, ri, si, n + 1, 0):
                return True
            self._release(ci, plan)
            return False
        indices = self._indices(key, plan)
        for index in indices[bisect.bisect_left(indices, start) :]:
            candidate = self.devices[index]
            if not plan.admin and self._in_use(candidate):
                continue
            if not self._selectable(key, plan, candidate):
                continue
            if not self._take(ci, key, plan, candidate):
                continue
            if self._device(ci, ri, si, n + 1, index + 1):
                return True
            self._release(ci, plan)
        return False

    def _take(self, ci: int, key: tuple[int, int, int], plan: Plan, candidate: Candidate) -> bool:
        if not plan.admin and self._in_use(candidate):
            return False
        if taint_blocks(candidate.device, plan.tolerations) is not None:
            return False
        if self._capacity_ok(plan, candidate) is not None:
            return False
        added: list[Constraint] = []
        for constraint in self.constraints[ci]:
            if not constraint.add(plan, candidate):
                for c in added:
                    c.remove(plan, candidate)
                if plan.all_devices is not None:
                    raise AllocationError(
                        f"claim {_ref(self.claims[ci])}, request {plan.name}: cannot add device "
                        f"{'/'.join(candidate.id)} because a claim constraint would not be satisfied"
                    )
                return False
            added.append(constraint)
        consumed: dict[str, Quantity] | None = None
        share_id: str | None = None
        if candidate.multi:
            found = self._consumed(plan, candidate)
            assert not isinstance(found, str)  # _capacity_ok passed
            consumed = dict(found)
            share_id = self.new_share_id()
            cap.add_into(self.allocating_capacity.setdefault(candidate.id, {}), consumed)
            self._version += 1
        else:
            self.allocating.setdefault(candidate.id, set()).add(ci)
        self.picked[ci].append(Picked(plan, candidate, consumed, share_id))
        return True

    def _release(self, ci: int, plan: Plan) -> None:
        picked = self.picked[ci].pop()
        for constraint in self.constraints[ci]:
            constraint.remove(plan, picked.candidate)
        if picked.consumed is not None:
            cap.subtract_from(self.allocating_capacity[picked.candidate.id], picked.consumed)
            self._version += 1
        else:
            self.allocating[picked.candidate.id].discard(ci)

    # -------------------------------------------------------------- results
    def results(self) -> list[Obj]:
        out = []
        for ci, claim in enumerate(self.claims):
            out.append(self._allocation(ci, claim))
        return out

    def _allocation(self, ci: int, claim: Mapping[str, Any]) -> Obj:
        results = []
        for p in self.picked[ci]:
            result: Obj = {
                "request": p.plan.name,
                "driver": p.candidate.driver,
                "pool": p.candidate.pool,
                "device": p.candidate.name,
            }
            if p.plan.admin:
                result["adminAccess"] = True
            if p.plan.tolerations:
                result["tolerations"] = copy.deepcopy(p.plan.tolerations)
            if p.share_id is not None:
                result["shareID"] = p.share_id
            if p.consumed is not None:
                result["consumedCapacity"] = {name: str(q) for name, q in p.consumed.items()}
            results.append(result)
        devices: Obj = {"results": results}
        config = self._config(ci, claim)
        if config:
            devices["config"] = config
        allocation: Obj = {"devices": devices}
        selector = self._node_selector(ci)
        if selector is not None:
            allocation["nodeSelector"] = selector
        return allocation

    def _chosen_plans(self, ci: int) -> list[Plan]:
        requests = ((self.claims[ci].get("spec") or {}).get("devices") or {}).get("requests") or []
        plans = []
        for ri, request in enumerate(requests):
            si = self.selected_sub.get((ci, ri), 0) if request.get("firstAvailable") else -1
            plans.append(self.plans[(ci, ri, si)])
        return plans

    def _config(self, ci: int, claim: Mapping[str, Any]) -> list[Obj]:
        plans = self._chosen_plans(ci)
        out: list[Obj] = []
        by_class: dict[str, list[Obj]] = {}
        for plan in plans:
            class_name = str(plan.device_class["metadata"]["name"])
            if class_name in by_class:
                for entry in by_class[class_name]:
                    entry["requests"].append(plan.name)
                continue
            entries = [
                {
                    "source": "FromClass",
                    "requests": [plan.name],
                    **{k: copy.deepcopy(v) for k, v in c.items() if k != "requests"},
                }
                for c in (plan.device_class.get("spec") or {}).get("config") or []
            ]
            by_class[class_name] = entries
            out.extend(entries)
        for entry in out:
            if len(entry["requests"]) == len(plans):
                del entry["requests"]
        names = {p.base for p in plans} | {p.name for p in plans}
        for config in ((claim.get("spec") or {}).get("devices") or {}).get("config") or []:
            wanted = config.get("requests") or []
            if not wanted or names.intersection(wanted):
                out.append({"source": "FromClaim", **copy.deepcopy(dict(config))})
        return out

    def _node_selector(self, ci: int) -> Obj | None:
        node_name = self.node["metadata"]["name"]
        local = False
        selectors = []
        for p in self.picked[ci]:
            spec = p.candidate.slice_spec
            device = p.candidate.device
            if spec.get("nodeName") or (spec.get("perDeviceNodeSelection") and device.get("nodeName")):
                local = True
            elif spec.get("nodeSelector"):
                selectors.append(spec["nodeSelector"])
            elif spec.get("perDeviceNodeSelection") and device.get("nodeSelector"):
                selectors.append(device["nodeSelector"])
        if local:
            return {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
                ]
            }
        if selectors:
            return dict(copy.deepcopy(selectors[0]))
        return None

    def score(self) -> int:
        """KEP-4816 (1.35+): 8 - index of the chosen subrequest, summed over firstAvailable requests."""
        return sum(8 - si for si in self.selected_sub.values())


def allocate_on_node(
    node: Mapping[str, Any],
    claims: Sequence[Mapping[str, Any]],
    classes: Mapping[str, Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    state: AllocatedState,
    *,
    new_share_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    explain_failure: bool = True,
) -> NodeAllocation:
    """Allocate ``claims`` (all unallocated) together on ``node``; never raises for a lack of devices.
    ``explain_failure=False`` answers a lack of devices with :data:`NO_ROOM` instead of the reasons
    (they cost a second look at every device)."""
    node_name = str(node["metadata"]["name"])
    pools = gather_pools(slices, node)
    search = _Search(node, claims, classes, pools, state, new_share_id)
    try:
        search.prepare()
        if search.run():
            return NodeAllocation(node_name, search.results(), score=search.score(), evaluations=search.evaluations)
    except AllocationError as exc:
        return NodeAllocation(node_name, None, str(exc), evaluations=search.evaluations)
    reason = explain(search) if explain_failure else NO_ROOM
    return NodeAllocation(node_name, None, reason, evaluations=search.evaluations)


NO_ROOM = "the claims do not fit the node's devices"


# ---------------------------------------------------------------------------- why not
def explain(search: _Search) -> str:
    """Why the claims do not fit on the node, per request, in words a user can act on."""
    if not search.devices:
        unusable = [p.describe() for p in search.pools if not p.usable]
        return "; ".join(unusable) if unusable else "no ResourceSlice publishes devices for this node"
    parts: list[str] = []
    for ci, claim in enumerate(search.claims):
        requests = ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []
        for ri, request in enumerate(requests):
            keys = (
                [(ci, ri, si) for si in range(len(request["firstAvailable"]))]
                if request.get("firstAvailable")
                else [(ci, ri, -1)]
            )
            reasons = [_explain_plan(search, key) for key in keys]
            if all(r is None for r in reasons):
                continue
            text = (
                "; ".join(r for r in reasons if r is not None)
                if len(keys) == 1
                else " | ".join(
                    f"{search.plans[k].name}: {r or 'fits alone'}" for k, r in zip(keys, reasons, strict=True)
                )
            )
            parts.append(f"claim {_ref(claim)} request {request['name']!r}: {text}")
        if search.constraints[ci]:
            names = ", ".join(c.describe() for c in search.constraints[ci])
            if not parts:
                parts.append(f"claim {_ref(claim)}: its constraints ({names}) cannot be met together")
    if not parts:
        return "the claims' requests each fit alone but not together"
    return "; ".join(parts)


def _explain_plan(search: _Search, key: tuple[int, int, int]) -> str | None:
    plan = search.plans[key]
    need = plan.count
    if plan.mode == "All" and not plan.all_devices:
        return "allocationMode All, but no device matches"
    matching_class = [c for c in search.devices if _try_selectors(search, key, plan, c, class_only=True)]
    matching = [c for c in matching_class if _try_selectors(search, key, plan, c, class_only=False)]
    free = []
    blocked: list[str] = []
    for c in matching:
        if not plan.admin and c.id in search.state.exclusive:
            blocked.append(f"{c.label()}: in use")
            continue
        taint = taint_blocks(c.device, plan.tolerations)
        if taint is not None:
            blocked.append(
                f"{c.label()}: untolerated taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
            )
            continue
        consumed = search._consumed(plan, c)
        if isinstance(consumed, str):
            blocked.append(f"{c.label()}: {consumed}")
            continue
        used = dict(search.state.consumed.get(c.id, {})) if c.multi else {}
        problem = cap.fits(consumed, used, c.device, search._device_capacities(c))
        if problem is not None:
            blocked.append(f"{c.label()}: {problem}")
            continue
        free.append(c)
    if len(free) >= need:
        return None
    counts = (
        f"needs {need} device(s); {len(search.devices)} on the node, {len(matching_class)} of class "
        f"{plan.device_class['metadata']['name']}, {len(matching)} matching the request's selectors, "
        f"{len(free)} with room"
    )
    return counts + (f" ({'; '.join(blocked)})" if blocked else "")


def _try_selectors(search: _Search, key: tuple[int, int, int], plan: Plan, c: Candidate, *, class_only: bool) -> bool:
    expressions = plan.class_selectors if class_only else plan.class_selectors + plan.selectors
    try:
        return all(search._verdict(e, c) for e in expressions)
    except SelectorError:
        return False


def _ref(claim: Mapping[str, Any]) -> str:
    meta = claim.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}".lstrip("/")
