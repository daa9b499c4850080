"""GPU-memory and core quota per namespace, HAMi's ResourceQuota names on DRA claims: pure.

A namespace's ResourceQuota caps Tessera's shares with HAMi's names (``limits.nvidia.com/gpumem: 20480``,
``limits.nvidia.com/gpucores: 200``, the other vendors' :class:`vendors.base.QuotaNames`). Kubernetes's
own quota does not count them for DRA claims, so the webhook does, in a ledger per namespace:

* :meth:`Catalog.charge` is what a claim spec costs: per device request of one of our DeviceClasses,
  ``count`` times its memory (MiB, in the quota's unit, rounded up) and times its cores (percent). A
  request that names no memory gets a whole device: it is charged the memory of the largest device it
  may get in the cluster (the webhook's inventory). A request that names no cores is charged none
  (HAMi's rule; the device's ``cores`` default of 1 is DRA bookkeeping, not a share of the compute).
  ``firstAvailable`` is charged its most expensive alternative, admin-access requests nothing.
* :class:`Ledger` holds what is charged: the claims admitted (by uid) and the reservations of pods
  whose claim does not exist yet (made at pod admission, consumed by the pod's claim when the claim
  controller creates it, else expiring). ``used`` is their sum.
* :func:`reserve`, :func:`admit_claim` and :func:`reconcile` are the three changes; the I/O around
  them (the ledger object, compare-and-swap) is :mod:`webhook.ledger`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tessera_common.quantity import QuantityError, parse_quantity, quantity_bytes
from vendors.base import ATTR_TYPE, MIB, AdmissionVendor, QuotaNames, QuotaVendor, VendorNames

from .inventory import Inventory

LIMITS_PREFIX = "limits."
"""HAMi's spelling: the quota names in ``spec.hard`` are ``limits.<resource>``."""
LEDGER_KEY = "ledger.json"
LEDGER_VERSION = 1

Charge = dict[str, int]
"""Quota name (without ``limits.``) -> amount in the name's unit; only non-zero amounts."""


class QuotaError(ValueError):
    """A claim cannot be charged, or a ledger cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class Resource:
    """One quota name of one vendor."""

    name: str
    kind: Literal["memory", "cores"]
    driver: str
    unit_mib: int = 1
    models: frozenset[str] = frozenset()

    @property
    def quota_key(self) -> str:
        return LIMITS_PREFIX + self.name

    def unit(self) -> str:
        if self.kind == "cores":
            return "percent of a device, summed over devices"
        return "MiB" if self.unit_mib == 1 else f"units of {self.unit_mib} MiB"

    def covers(self, models: frozenset[str] | None) -> bool:
        """Whether a request that may get a device of ``models`` (``None``: any) is charged here."""
        return not self.models or models is None or bool(self.models & models)


@dataclass(frozen=True)
class Limit:
    value: int
    quota: str
    """The ResourceQuota that sets it (the lowest, when several name it)."""


@dataclass(frozen=True)
class Charged:
    amounts: Charge
    notes: tuple[str, ...] = ()
    """How whole devices were sized (for denial messages)."""


class Catalog:
    """The quota names of the enabled vendors, by DeviceClass (one per driver, same name)."""

    def __init__(self, vendors: Iterable[AdmissionVendor]) -> None:
        self.classes: dict[str, tuple[VendorNames, tuple[Resource, ...]]] = {}
        self.resources: dict[str, Resource] = {}
        for vendor in vendors:
            if not isinstance(vendor, QuotaVendor):
                continue
            names = vendor.names
            resources = tuple(_resources(names.driver, vendor.quota_names()))
            self.classes[names.device_class] = (names, resources)
            for resource in resources:
                self.resources[resource.name] = resource

    def __bool__(self) -> bool:
        return bool(self.resources)

    def managed(self, quota_key: str) -> Resource | None:
        """The resource of a ``spec.hard`` key (``limits.nvidia.com/gpumem``), ``None`` when not ours."""
        if not quota_key.startswith(LIMITS_PREFIX):
            return None
        return self.resources.get(quota_key[len(LIMITS_PREFIX) :])

    def limits(self, quotas: Iterable[Mapping[str, Any]]) -> dict[str, Limit]:
        """The namespace's limits on our names from its ResourceQuotas: the lowest where several name one
        (each quota holds on its own). Values are whole numbers (rounded down); unreadable ones are skipped
        (the API server validates quantities, so there are none on a real cluster)."""
        out: dict[str, Limit] = {}
        for quota in quotas:
            meta = quota.get("metadata") or {}
            hard = (quota.get("spec") or {}).get("hard") or {}
            if not isinstance(hard, Mapping) or meta.get("deletionTimestamp"):
                continue
            for key, raw in hard.items():
                resource = self.managed(str(key))
                if resource is None:
                    continue
                try:
                    value = math.floor(parse_quantity(raw))
                except QuantityError:
                    continue
                current = out.get(resource.name)
                if current is None or value < current.value:
                    out[resource.name] = Limit(max(0, value), str(meta.get("name", "")))
        return out

    def charge(self, spec: Any, inventory: Inventory | None, wanted: Collection[str] | None = None) -> Charged:
        """What a ResourceClaim spec costs under our quota names.

        ``wanted``: the names the namespace limits; a name that cannot be computed (a whole device while
        no device of the driver is published, ``allocationMode: All``) is an error only when wanted, and
        left out otherwise. ``None``: every name is wanted.
        """
        devices = spec.get("devices") if isinstance(spec, Mapping) else None
        requests = devices.get("requests") if isinstance(devices, Mapping) else None
        total: Charge = {}
        notes: list[str] = []
        for request in requests if isinstance(requests, list) else []:
            if not isinstance(request, Mapping):
                continue
            if isinstance(request.get("exactly"), Mapping):
                alternatives: list[Any] = [request["exactly"]]
            else:
                alternatives = request.get("firstAvailable") or []
            most: Charge = {}
            for alt in alternatives if isinstance(alternatives, list) else []:
                if not isinstance(alt, Mapping):
                    continue
                amounts = self._request(alt, str(request.get("name", "")), inventory, wanted, notes)
                for name, amount in amounts.items():
                    most[name] = max(most.get(name, 0), amount)
            for name, amount in most.items():
                total[name] = total.get(name, 0) + amount
        return Charged({k: v for k, v in sorted(total.items()) if v > 0}, tuple(dict.fromkeys(notes)))

    def _request(
        self,
        alt: Mapping[str, Any],
        request: str,
        inventory: Inventory | None,
        wanted: Collection[str] | None,
        notes: list[str],
    ) -> Charge:
        known = self.classes.get(str(alt.get("deviceClassName", "")))
        if known is None or alt.get("adminAccess") is True:
            return {}
        names, resources = known
        models = models_of(names, alt.get("selectors"))
        applicable = [r for r in resources if r.covers(models) and (wanted is None or r.name in wanted)]
        if not applicable:
            return {}
        who = f"request {request!r} ({names.device_class})"
        if alt.get("allocationMode", "ExactCount") == "All":
            raise QuotaError(
                f"{who} asks for all matching devices (allocationMode: All), which cannot be charged to "
                f"{', '.join(r.quota_key for r in applicable)} before they are allocated; ask for an exact count"
            )
        count = alt.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise QuotaError(f"{who}: count must be a whole number, got {count!r}")
        capacity = alt.get("capacity")
        asked = capacity.get("requests") if isinstance(capacity, Mapping) else None
        asked = asked if isinstance(asked, Mapping) else {}
        out: Charge = {}
        memory_mib: int | None = None
        if any(r.kind == "memory" for r in applicable):
            if "memory" in asked:
                try:
                    memory_mib = -(-quantity_bytes(asked["memory"]) // MIB)
                except QuantityError as exc:
                    raise QuotaError(f"{who}: capacity memory: {exc}") from None
            else:
                memory_mib = _whole_device_mib(names, models, inventory, who, notes)
        cores = 0
        if "cores" in asked:
            try:
                cores = math.ceil(parse_quantity(asked["cores"]))
            except QuantityError as exc:
                raise QuotaError(f"{who}: capacity cores: {exc}") from None
        for resource in applicable:
            if resource.kind == "memory" and memory_mib is not None:
                out[resource.name] = -(-count * memory_mib // resource.unit_mib)
            elif resource.kind == "cores":
                out[resource.name] = count * max(0, cores)
        return out


def _resources(driver: str, names: Sequence[QuotaNames]) -> Iterable[Resource]:
    for q in names:
        yield Resource(q.memory, "memory", driver, max(1, q.memory_unit_mib), q.models)
        if q.cores:
            yield Resource(q.cores, "cores", driver, 1, q.models)


def _whole_device_mib(
    names: VendorNames, models: frozenset[str] | None, inventory: Inventory | None, who: str, notes: list[str]
) -> int:
    devices = [
        d
        for d in (inventory.devices(names.driver) if inventory is not None else ())
        if d.memory_bytes and (models is None or d.model in models)
    ]
    if not devices:
        raise QuotaError(
            f"{who} asks for whole devices, which count their memory against the namespace's quota, but no "
            f"{names.driver} device{' of model ' + ', '.join(sorted(models)) if models else ''} is published in "
            f"the cluster yet to size them; ask for memory explicitly, or retry once the driver runs"
        )
    largest = max(devices, key=lambda d: d.memory_bytes or 0)
    mib = (largest.memory_bytes or 0) // MIB
    notes.append(
        f"a request without a memory size takes whole devices and counts {mib} MiB each (the largest "
        f"{names.driver} device it may get: {largest.model or largest.name})"
    )
    return mib


_CEL_STRING = r'"(?:[^"\\]|\\.)*"'


def models_of(names: VendorNames, selectors: Any) -> frozenset[str] | None:
    """The device models a request may get, from selectors of the form the webhook writes
    (``device.attributes["<driver>"].type == "X"`` or ``... in ["X", "Y"]``); several such selectors
    intersect. ``None`` when no selector fixes the model (any model)."""
    attr = re.escape(f'device.attributes["{names.driver}"].{ATTR_TYPE}')
    single = re.compile(rf"^{attr} == ({_CEL_STRING})$")
    listed = re.compile(rf"^{attr} in \[({_CEL_STRING}(?:, {_CEL_STRING})*)\]$")
    found: frozenset[str] | None = None
    for selector in selectors if isinstance(selectors, list) else []:
        cel = selector.get("cel") if isinstance(selector, Mapping) else None
        expression = cel.get("expression") if isinstance(cel, Mapping) else None
        if not isinstance(expression, str):
            continue
        expression = expression.strip()
        match = single.match(expression) or listed.match(expression)
        if not match:
            continue
        try:
            values = frozenset(json.loads(f"[{match.group(1)}]"))
        except ValueError:
            continue
        found = values if found is None else found & values
    return found


# --- the ledger -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimEntry:
    name: str
    charge: Charge
    at: float
    """When it was charged (seconds since the epoch, the admitting replica's clock)."""


@dataclass(frozen=True)
class Reservation:
    """A pod admitted whose claim does not exist yet (the claim controller creates it from the template)."""

    id: str
    """The admission request's uid (the pod has none yet at mutating admission)."""
    pod: str
    charge: Charge
    until: float
    """When it expires unless a claim of the pod consumed it."""


@dataclass(frozen=True)
class Ledger:
    namespace: str
    claims: Mapping[str, ClaimEntry] = field(default_factory=dict)
    """Admitted claims by uid."""
    pending: tuple[Reservation, ...] = ()

    def used(self, now: float) -> Charge:
        out: Charge = {}
        for charge in [e.charge for e in self.claims.values()] + [p.charge for p in self.pending if p.until > now]:
            for name, amount in charge.items():
                out[name] = out.get(name, 0) + amount
        return out

    def to_data(self) -> dict[str, str]:
        """The ConfigMap ``data`` holding the ledger."""
        body = {
            "version": LEDGER_VERSION,
            "namespace": self.namespace,
            "claims": {
                uid: {"name": e.name, "charge": e.charge, "at": round(e.at, 3)}
                for uid, e in sorted(self.claims.items())
            },
            "pending": [
                {"id": p.id, "pod": p.pod, "charge": p.charge, "until": round(p.until, 3)} for p in self.pending
            ],
        }
        return {LEDGER_KEY: json.dumps(body, sort_keys=True, separators=(",", ":"))}

    @classmethod
    def from_data(cls, namespace: str, data: Any) -> Ledger:
        """A ledger from ConfigMap ``data``; :class:`QuotaError` when it is not one (then it is rebuilt
        from the claims that exist)."""
        raw = data.get(LEDGER_KEY) if isinstance(data, Mapping) else None
        try:
            body = json.loads(raw) if isinstance(raw, str) else None
            if not isinstance(body, dict) or body.get("version") != LEDGER_VERSION:
                raise ValueError("not a version 1 ledger")
            if body.get("namespace") != namespace:
                raise ValueError(f"it is the ledger of namespace {body.get('namespace')!r}")
            claims = {
                str(uid): ClaimEntry(str(e["name"]), _charge(e["charge"]), float(e["at"]))
                for uid, e in dict(body["claims"]).items()
            }
            pending = tuple(
                Reservation(str(p["id"]), str(p["pod"]), _charge(p["charge"]), float(p["until"]))
                for p in list(body["pending"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise QuotaError(f"the quota ledger of namespace {namespace} is unreadable ({exc})") from None
        return cls(namespace, claims, pending)


def _charge(value: Any) -> Charge:
    if not isinstance(value, Mapping):
        raise ValueError("a charge is not a map")
    out: Charge = {}
    for name, amount in value.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"charge {name}: {amount!r} is not a whole number")
        out[str(name)] = amount
    return out


# --- decisions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Excess:
    resource: Resource
    used: int
    asked: int
    limit: Limit


@dataclass(frozen=True)
class Outcome:
    ledger: Ledger | None
    """The new ledger; ``None``: unchanged."""
    excesses: tuple[Excess, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.excesses


def excesses(
    catalog: Catalog, used: Mapping[str, int], charge: Mapping[str, int], limits: Mapping[str, Limit]
) -> list[Excess]:
    """The limits ``charge`` would take the namespace over (a limit of 0 allows nothing, as Kubernetes's)."""
    out = []
    for name, amount in sorted(charge.items()):
        limit = limits.get(name)
        resource = catalog.resources.get(name)
        if limit is None or resource is None or amount <= 0:
            continue
        if used.get(name, 0) + amount > limit.value:
            out.append(Excess(resource, used.get(name, 0), amount, limit))
    return out


def reserve(
    catalog: Catalog,
    ledger: Ledger,
    *,
    id: str,
    pod: str,
    charge: Charge,
    limits: Mapping[str, Limit],
    now: float,
    ttl: float,
) -> Outcome:
    """A pod's admission: its claim's charge is reserved until the claim exists (or ``ttl`` passes)."""
    if any(p.id == id for p in ledger.pending):
        return Outcome(None)
    over = excesses(catalog, ledger.used(now), charge, limits)
    if over:
        return Outcome(None, tuple(over))
    live = tuple(p for p in ledger.pending if p.until > now)
    return Outcome(dataclasses.replace(ledger, pending=(*live, Reservation(id, pod, dict(charge), now + ttl))))


def admit_claim(
    catalog: Catalog,
    ledger: Ledger,
    *,
    uid: str,
    name: str,
    charge: Charge,
    limits: Mapping[str, Limit],
    now: float,
    from_pod: bool,
) -> Outcome:
    """A claim's admission. A claim the claim controller made for a pod (``from_pod``) takes over a
    reservation of the same charge, if one is live (its pod was checked at admission); any other claim,
    or one whose reservation expired, is checked against the limits now."""
    if uid in ledger.claims:
        return Outcome(None)
    live = [p for p in ledger.pending if p.until > now]
    entry = ClaimEntry(name, dict(charge), now)
    if from_pod:
        match = next((p for p in live if p.charge == charge), None)
        if match is not None:
            live.remove(match)
            return Outcome(Ledger(ledger.namespace, {**ledger.claims, uid: entry}, tuple(live)))
    over = excesses(catalog, ledger.used(now), charge, limits)
    if over:
        return Outcome(None, tuple(over))
    return Outcome(Ledger(ledger.namespace, {**ledger.claims, uid: entry}, tuple(live)))


@dataclass(frozen=True)
class Existing:
    """A claim that exists (the reconciler's informer), with what it costs."""

    name: str
    charge: Charge
    from_pod: bool


def reconcile(
    ledger: Ledger, existing: Mapping[str, Existing], gone: Collection[str], *, now: float, grace: float
) -> Ledger:
    """The ledger after comparing it with the claims that exist in its namespace.

    An entry is dropped when its claim is known deleted (``gone``, from a watch), or when it is absent
    and older than ``grace`` (younger ones may be admitted but not yet stored, or not yet seen). A
    claim that exists but is not charged (created while the webhook was bypassed, or before the
    ledger) is added, taking over a live reservation of its pod. Expired reservations go.
    """
    claims = {
        uid: e for uid, e in ledger.claims.items() if uid in existing or (uid not in gone and e.at >= now - grace)
    }
    live = [p for p in ledger.pending if p.until > now]
    for uid, claim in sorted(existing.items()):
        if uid in claims or not claim.charge:
            continue
        if claim.from_pod:
            match = next((p for p in live if p.charge == claim.charge), None)
            if match is not None:
                live.remove(match)
        claims[uid] = ClaimEntry(claim.name, dict(claim.charge), now)
    return Ledger(ledger.namespace, claims, tuple(live))


def denial(namespace: str, what: str, over: Sequence[Excess], notes: Sequence[str] = ()) -> str:
    """The message of a refusal: per limit the numbers (used, asked, limit) and what to do."""
    parts = [
        f"{e.resource.quota_key}: used {e.used}, asked {e.asked}, limit {e.limit.value} "
        f"({e.resource.unit()}; ResourceQuota {e.limit.quota})"
        for e in over
    ]
    names = ", ".join(dict.fromkeys(e.resource.name for e in over))
    text = f"{what} would exceed the quota of namespace {namespace}: " + "; ".join(parts)
    if notes:
        text += "; " + "; ".join(notes)
    return (
        f"{text}. Delete pods or resource claims in {namespace} that use {names}, ask for less, or ask the "
        "cluster admin to raise the quota"
    )
