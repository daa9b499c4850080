"""HAMi's scheduling policies as ``firstAvailable`` alternatives that kube-scheduler honours (pure).

kube-scheduler allocates DRA devices first fit: within a node it takes the first alternative of a
``firstAvailable`` request that fits, on the first device that fits it; from Kubernetes 1.35 it also
scores nodes by that alternative (``8 - index``, summed over the pod's requests), so among the feasible
nodes it prefers one where an earlier alternative fits. The driver publishes per device its
occupancy and its node's (``occupancy``, ``nodeOccupancy``: percent rounded up to a step of 10, 0 only
when nothing is allocated) and their ranks (``deviceRank``, ``nodeRank``: percent of the node's
devices, of the driver's nodes, that are less occupied). Ordering the alternatives by those
attributes turns first fit into a policy:

* GPU ``binpack``: busy devices first (``occupancy >= 80, 60, 40, 20``, in use); ``spread``: idle
  devices, then the node's least occupied (``deviceRank == 0``), then those at most as occupied as
  the node's mean.
* node ``binpack``: busy nodes first (``nodeOccupancy >= 80, 60, 40, 20``, in use); ``spread``: the
  least occupied nodes (``nodeRank == 0, <= 10, 20, 30, 50, 70``), relative to the others, so it
  keeps ordering nodes whatever the cluster's load. On 1.35+ the node score does the rest.
* Both: node tiers, and GPU tiers inside each (HAMi picks the node by its node score, then the
  devices by their device score), then each node tier alone. Binpack: ``nodeOccupancy >= 50, 10``
  with ``occupancy >= 50, 10``; spread: ``nodeRank <= 10, 20, 30, 50`` with ``deviceRank == 0``
  (the top tier is the least loaded tenth, not the single least loaded node, so that pods arriving
  before the slices are rewritten do not all go to one node and one card).
* The last alternative names no occupancy, so a stale or missing attribute never makes a pod
  unschedulable: it only changes which device is tried first.
* ``mutex`` (only idle devices, a hard filter in HAMi) adds ``occupancy == 0`` to every alternative,
  the last one included: the one policy that can leave a pod pending until a device is idle again.
* ``numa``: for a container with several devices, the preference alternatives also require one NUMA
  node (``matchAttribute: numaNode`` on the subrequest); the last one does not.
* ``topology-aware`` (HAMi's NVLink pair scores) has no published attribute to select on: accepted,
  recorded, and without effect on placement (a note says so).

Whole-device requests (no memory named, or ``cores: 100``) only fit idle devices, so only node tiers
apply to them. At most 8 alternatives per request (the API's limit), shared with the one-per-model
alternatives of a memory percentage: the most preferred ones are kept, and the last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vendors.base import (
    ATTR_DEVICE_RANK,
    ATTR_NODE_OCCUPANCY,
    ATTR_NODE_RANK,
    ATTR_OCCUPANCY,
    DOMAIN,
    ConversionError,
    cel_string,
)

NODE_POLICY_KEY = "hami.io/node-scheduler-policy"
GPU_POLICY_KEY = "hami.io/gpu-scheduler-policy"
NODE_POLICY_ANNOTATION = f"{DOMAIN}/node-scheduler-policy"
GPU_POLICY_ANNOTATION = f"{DOMAIN}/gpu-scheduler-policy"
NODE_POLICIES = ("binpack", "spread")
GPU_POLICIES = ("binpack", "spread", "topology-aware", "mutex", "numa")
MAX_ALTERNATIVES = 8


@dataclass(frozen=True)
class Policies:
    """The node policy and the GPU policy chain that apply to one pod."""

    node: str | None = None
    gpu: tuple[str, ...] = ()

    @property
    def gpu_direction(self) -> str | None:
        """``binpack`` or ``spread``: the first of them in the chain (HAMi's chain is a list of sort keys)."""
        return next((p for p in self.gpu if p in ("binpack", "spread")), None)

    @property
    def mutex(self) -> bool:
        return "mutex" in self.gpu

    @property
    def numa(self) -> bool:
        return "numa" in self.gpu

    def annotations(self) -> dict[str, str]:
        """The claim annotations that record the policies applied."""
        out: dict[str, str] = {}
        if self.node:
            out[NODE_POLICY_ANNOTATION] = self.node
        if self.gpu:
            out[GPU_POLICY_ANNOTATION] = ",".join(self.gpu)
        return out


NO_POLICIES = Policies()


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_node_policy(value: str, where: str) -> str | None:
    """A node policy (``binpack``, ``spread``; empty: none); :class:`ConversionError` otherwise."""
    text = value.strip()
    if text and text not in NODE_POLICIES:
        raise ConversionError(f"{where} must be one of {', '.join(NODE_POLICIES)}, got {_short(value)}")
    return text or None


def parse_gpu_policy(value: str, where: str) -> tuple[str, ...]:
    """A GPU policy or comma chain (``binpack,numa``); empty: none; :class:`ConversionError` otherwise."""
    if not value.strip():
        return ()
    chain = tuple(p.strip() for p in value.split(","))
    if any(p not in GPU_POLICIES for p in chain):
        raise ConversionError(
            f"{where} must be one of {', '.join(GPU_POLICIES)} or a comma list of them, got {_short(value)}"
        )
    return chain


def policies_for(annotations: Mapping[str, str], defaults: Policies = NO_POLICIES) -> Policies:
    """The pod's policies: its HAMi annotations, each falling back to the cluster default when absent."""
    node = defaults.node
    if NODE_POLICY_KEY in annotations:
        node = parse_node_policy(annotations[NODE_POLICY_KEY], f"annotation {NODE_POLICY_KEY}")
        if node is None:
            raise ConversionError(
                f"annotation {NODE_POLICY_KEY} must be one of {', '.join(NODE_POLICIES)}, got ''; "
                "remove it to get the cluster default"
            )
    gpu = defaults.gpu
    if GPU_POLICY_KEY in annotations:
        gpu = parse_gpu_policy(annotations[GPU_POLICY_KEY], f"annotation {GPU_POLICY_KEY}")
        if not gpu:
            raise ConversionError(
                f"annotation {GPU_POLICY_KEY} must be one of {', '.join(GPU_POLICIES)} or a comma list of them, "
                "got ''; remove it to get the cluster default"
            )
    return Policies(node, gpu)


# --- alternatives ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """``attribute >= value`` (binpack) or ``attribute <= value`` (spread) on an occupancy attribute,
    or, with ``other``, the same comparison against another attribute of the device."""

    attribute: str
    at_least: bool
    value: int
    other: str | None = None

    def cel(self, driver: str) -> str:
        domain = f"device.attributes[{cel_string(driver)}]"
        attr = f"{domain}.{self.attribute}"
        # has(): a device without the attribute (occupancy off, an older driver) just does not match,
        # instead of failing the allocation on its node with a CEL runtime error.
        if self.other is not None:
            other = f"{domain}.{self.other}"
            return f"has({attr}) && has({other}) && {attr} {'>=' if self.at_least else '<='} {other}"
        if not self.at_least and self.value == 0:
            test = f"{attr} == 0"
        else:
            test = f"{attr} {'>=' if self.at_least else '<='} {self.value}"
        return f"has({attr}) && {test}"

    @property
    def idle_only(self) -> bool:
        """True when the condition only holds for nothing allocated."""
        return self.other is None and not self.at_least and self.value == 0


IDLE_DEVICE = Condition(ATTR_OCCUPANCY, False, 0)


@dataclass(frozen=True)
class Alternative:
    """One ``firstAvailable`` subrequest's placement part: its occupancy conditions, and whether it
    keeps the container's devices on one NUMA node."""

    conditions: tuple[Condition, ...] = ()
    same_numa: bool = False

    @property
    def preference(self) -> bool:
        return bool(self.conditions) or self.same_numa

    def selectors(self, driver: str) -> list[str]:
        return [c.cel(driver) for c in self.conditions]


def _node(direction: str, value: int) -> Condition:
    if direction == "binpack":
        return Condition(ATTR_NODE_OCCUPANCY, True, value)  # busy nodes: absolute occupancy
    return Condition(ATTR_NODE_RANK, False, value)  # least occupied nodes: rank among the driver's nodes


LEAST_OCCUPIED = "least"
"""A GPU tier: the device is among its node's least occupied (``deviceRank == 0``)."""
BELOW_MEAN = "mean"
"""A GPU tier: the device is at most as occupied as its node on average."""


def _gpu(direction: str, value: int | str) -> Condition:
    if value == LEAST_OCCUPIED:
        return Condition(ATTR_DEVICE_RANK, False, 0)
    if value == BELOW_MEAN:
        return Condition(ATTR_OCCUPANCY, False, 0, other=ATTR_NODE_OCCUPANCY)
    assert isinstance(value, int)
    return Condition(ATTR_OCCUPANCY, direction == "binpack", value)


# Tiers, most preferred first: binpack thresholds are "at least" (occupancy), spread ones "at most"
# (node: rank among the driver's nodes; GPU: occupancy, or relative to the node).
NODE_TIERS = {"binpack": (80, 60, 40, 20, 10), "spread": (0, 10, 20, 30, 50, 70)}
GPU_TIERS: dict[str, tuple[int | str, ...]] = {
    "binpack": (80, 60, 40, 20, 10),
    "spread": (0, LEAST_OCCUPIED, BELOW_MEAN),
}
# When both apply: node tiers, and GPU tiers inside each of them.
# Spread starts at ``nodeRank <= 10`` (the least loaded tenth of the nodes: with 16 nodes the least
# loaded two) rather than ``== 0`` (the one least loaded): a slice is rewritten at most once per
# interval, so pods arriving within it see the same least loaded node and would all land there, on
# the same card; a top tier of two nodes lets kube-scheduler's random tie break split them.
NODE_TIERS_BOTH = {"binpack": (50, 10), "spread": (10, 20, 30, 50)}
GPU_TIERS_BOTH: dict[str, tuple[int | str, ...]] = {"binpack": (50, 10), "spread": (LEAST_OCCUPIED,)}


def alternatives(policies: Policies, *, whole: bool, count: int, budget: int = MAX_ALTERNATIVES) -> list[Alternative]:
    """The alternatives for one request, most preferred first, the last one without occupancy
    preferences (only ``mutex`` conditions it); a single entry means no ``firstAvailable`` is needed.
    ``whole``: the request needs an idle device (GPU tiers are pointless); ``budget``: how many
    alternatives this request may use (8, or fewer when each is repeated per device model): the
    most preferred ones are kept, and the last."""
    mutex = (IDLE_DEVICE,) if policies.mutex else ()
    numa = policies.numa and count > 1
    gpu_dir = None if whole or policies.mutex else policies.gpu_direction
    node_dir = policies.node
    groups: list[tuple[Condition, ...]] = []
    if node_dir and gpu_dir:
        for n in NODE_TIERS_BOTH[node_dir]:
            node = _node(node_dir, n)
            groups.extend((node, _gpu(gpu_dir, g)) for g in GPU_TIERS_BOTH[gpu_dir])
            groups.append((node,))
    elif node_dir:
        groups = [(_node(node_dir, n),) for n in NODE_TIERS[node_dir]]
    elif gpu_dir:
        groups = [(_gpu(gpu_dir, g),) for g in GPU_TIERS[gpu_dir]]
    preferences = [Alternative(g + mutex, same_numa=numa) for g in groups]
    if numa and not preferences:
        preferences = [Alternative(mutex, same_numa=True)]
    budget = max(1, min(budget, MAX_ALTERNATIVES))
    return [*preferences[: budget - 1], Alternative(mutex)]


def notes(policies: Policies) -> list[str]:
    """What the user should know about policies that cannot be expressed."""
    out = []
    if "topology-aware" in policies.gpu:
        out.append(
            f"{GPU_POLICY_KEY}: topology-aware has no effect under DRA (no interconnect topology is published "
            "to select on); the other policies of the chain apply"
        )
    return out
