"""Consumable capacity (KEP-5075) as kube-scheduler computes it (pure functions).

For each capacity of a multi-allocatable device a request consumes:
requested and a policy -> the request rounded up (``validRange``: to ``min``, then to ``min + n*step``;
``validValues``: to the first value >= the request); requested and no policy -> the request as is;
not requested -> the policy's ``default``, else the whole ``value``. A consumed amount that breaks
the policy (above ``validRange.max``, off the step grid, not one of ``validValues``) or that does not
fit in what is left makes the device ineligible; so does a request naming a capacity the device
does not publish. Names: a request may name a capacity with or without the driver's domain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .quantity import Quantity


@dataclass(frozen=True)
class Policy:
    default: Quantity | None
    valid_values: tuple[Quantity, ...]
    low: Quantity | None
    high: Quantity | None
    step: Quantity | None
    has_range: bool

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> Policy | None:
        if not spec:
            return None
        rng = spec.get("validRange")
        return cls(
            default=Quantity.parse(spec["default"]) if spec.get("default") is not None else None,
            valid_values=tuple(Quantity.parse(v) for v in spec.get("validValues") or []),
            low=Quantity.parse(rng["min"]) if rng and rng.get("min") is not None else None,
            high=Quantity.parse(rng["max"]) if rng and rng.get("max") is not None else None,
            step=Quantity.parse(rng["step"]) if rng and rng.get("step") is not None else None,
            has_range=rng is not None,
        )


@dataclass(frozen=True)
class Capacity:
    name: str  # as the device publishes it
    value: Quantity
    policy: Policy | None


def device_capacities(device: Mapping[str, Any]) -> dict[str, Capacity]:
    """Capacities keyed by the qualified name (driver domain added where missing) -> Capacity."""
    return {
        str(name): Capacity(str(name), Quantity.parse(spec.get("value")), Policy.parse(spec.get("requestPolicy")))
        for name, spec in (device.get("capacity") or {}).items()
    }


def resolve_name(requested: str, driver: str, published: Mapping[str, Capacity]) -> str | None:
    """The published name a requested capacity refers to (exact, or the same name with/without the
    driver's domain), or None when the device does not have it."""
    if requested in published:
        return requested
    domain, sep, ident = requested.partition("/")
    if sep:
        return ident if domain == driver and ident in published else None
    qualified = f"{driver}/{requested}"
    return qualified if qualified in published else None


def round_up(requested: Quantity, policy: Policy | None) -> Quantity:
    if policy is None:
        return requested
    if policy.has_range and policy.low is not None:
        if requested < policy.low:
            return policy.low
        if policy.step is None:
            return requested
        req, low, step = requested.integer(), policy.low.integer(), policy.step.integer()
        n = math.ceil(Fraction(req - low, step))
        return Quantity(Fraction(low + step * n), policy.step.format)
    if policy.valid_values:
        for value in policy.valid_values:
            if requested <= value:
                return value
    return requested


def consumed_amount(requested: Quantity | None, capacity: Capacity) -> Quantity:
    if requested is None:
        if capacity.policy is not None and capacity.policy.default is not None:
            return capacity.policy.default
        return capacity.value
    return round_up(requested, capacity.policy)


def violates(amount: Quantity, policy: Policy | None) -> str | None:
    """Why ``amount`` breaks the policy (kube-scheduler's ``violatesPolicy``), or None."""
    if policy is None:
        return None
    if policy.default is not None and amount == policy.default:
        return None
    if policy.has_range:
        if policy.high is not None and amount > policy.high:
            return f"more than the device allows (at most {policy.high})"
        step, low = policy.step, policy.low
        if step is not None and low is not None and (amount.integer() - low.integer()) % step.integer() != 0:
            return f"not {low} plus a multiple of {step}"
        return None
    if policy.valid_values and amount not in policy.valid_values:
        return f"not one of the allowed values ({', '.join(str(v) for v in policy.valid_values)})"
    return None


class CapacityMismatch(Exception):
    """Why a device cannot serve a capacity request (a reason, not an error)."""


def consumption(
    requests: Mapping[str, Any] | None,
    driver: str,
    device: Mapping[str, Any],
    published: Mapping[str, Capacity] | None = None,
) -> dict[str, Quantity]:
    """What one allocation of ``device`` for a request with these ``capacity.requests`` consumes, for
    every capacity of the device (published names); :class:`CapacityMismatch` when a requested
    capacity is missing or breaks the device's policy. ``published``: the device's parsed capacities."""
    published = device_capacities(device) if published is None else published
    resolved: dict[str, Quantity] = {}
    for name, value in (requests or {}).items():
        target = resolve_name(str(name), driver, published)
        if target is None:
            raise CapacityMismatch(f"has no capacity {name!r}")
        resolved[target] = Quantity.parse(value)
    out: dict[str, Quantity] = {}
    for name, capacity in published.items():
        amount = consumed_amount(resolved.get(name), capacity)
        problem = violates(amount, capacity.policy)
        if problem is not None:
            raise CapacityMismatch(f"{name}: {resolved.get(name, amount)} asked, {problem}")
        out[name] = amount
    return out


def fits(
    consumed: Mapping[str, Quantity],
    used: Mapping[str, Quantity],
    device: Mapping[str, Any],
    published: Mapping[str, Capacity] | None = None,
) -> str | None:
    """None when ``consumed`` fits on top of ``used``; otherwise which capacity runs out."""
    for name, capacity in (device_capacities(device) if published is None else published).items():
        total = used.get(name, Quantity(Fraction(0))).value + consumed.get(name, Quantity(Fraction(0))).value
        if total > capacity.value.value:
            left = capacity.value.value - used.get(name, Quantity(Fraction(0))).value
            return f"{name}: {consumed[name]} asked, {Quantity(left, capacity.value.format)} of {capacity.value} free"
    return None


def add_into(total: dict[str, Quantity], amounts: Mapping[str, Quantity]) -> None:
    for name, amount in amounts.items():
        total[name] = total[name] + amount if name in total else amount


def subtract_from(total: dict[str, Quantity], amounts: Mapping[str, Quantity]) -> None:
    for name, amount in amounts.items():
        total[name] = total[name] - amount
