"""kube-scheduler's PodTopologySpread score: its soft constraints (``whenUnsatisfiable:
ScheduleAnyway``), as ``pkg/scheduler/framework/plugins/podtopologyspread/scoring.go`` computes them.

Constraints: the pod's own soft ones; a pod with none of its own gets the system defaults (hostname
with ``maxSkew`` 3, zone with ``maxSkew`` 5) when a ReplicaSet, StatefulSet or ReplicationController
owns it. kube-scheduler derives those defaults' selector from the Services and controllers that select
the pod; the harness counts the pods of the same owner instead (the same pods for a ReplicaSet, which
is what its selector is for; Services are not modelled).

Per constraint, the pods counted are those matching its selector (``labelSelector`` plus the pod's
values of ``matchLabelKeys``; no selector counts nothing) in the pod's namespace, not terminating, on a
node. Nodes that miss a constraint's topology key are ignored (score 0) when the pod has constraints of
its own; topology values are those of the feasible nodes, counted over every node that matches the
pod's node selector and required affinity (``nodeAffinityPolicy: Honor``, the default; taints are
ignored, the default ``nodeTaintsPolicy``; a constraint's own inclusion policies are not read). The
weight of a constraint is ``ln(values + 2)``; a node scores ``round(sum(count * weight + maxSkew -
1))`` and is normalised reversed against the others: ``100 * (max + min - score) // max`` (all 100
when ``max`` is 0). The plugin's weight in the default profile is 2 (DynamicResources: 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .pools import _requirement_matches, node_affinity_mismatch

HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
WEIGHT = 2
"""PodTopologySpread's weight in kube-scheduler's default profile."""
SYSTEM_DEFAULTS = ((HOSTNAME, 3), (ZONE, 5))
DEFAULTED_OWNERS = frozenset({"ReplicaSet", "StatefulSet", "ReplicationController"})
MAX_NODE_SCORE = 100
"""kube-scheduler's ``framework.MaxNodeScore``: every plugin's normalised score is 0..100."""

PodMatcher = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Constraint:
    key: str
    max_skew: int
    counts: PodMatcher
    """Whether an existing pod (same namespace, not terminating) counts."""


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _selector(constraint: Mapping[str, Any], pod_labels: Mapping[str, str]) -> PodMatcher:
    selector = constraint.get("labelSelector")
    if selector is None:
        return lambda _pod: False
    wanted = dict(selector.get("matchLabels") or {})
    for key in constraint.get("matchLabelKeys") or []:
        if key in pod_labels:
            wanted[key] = pod_labels[key]
    expressions = list(selector.get("matchExpressions") or [])

    def matches(other: Mapping[str, Any]) -> bool:
        labels = _labels(other)
        return all(labels.get(k) == v for k, v in wanted.items()) and all(
            _requirement_matches(labels, e) for e in expressions
        )

    return matches


def _owner(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next(
        (r for r in (pod.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")),
        None,
    )


def constraints(pod: Mapping[str, Any]) -> tuple[list[Constraint], bool]:
    """The soft constraints that score ``pod``, and whether nodes must carry every topology key
    (true for the pod's own constraints, false for the system defaults)."""
    own = (pod.get("spec") or {}).get("topologySpreadConstraints") or []
    if own:
        pod_labels = _labels(pod)
        soft = [c for c in own if c.get("whenUnsatisfiable") == "ScheduleAnyway"]
        return [
            Constraint(str(c["topologyKey"]), int(c.get("maxSkew", 1)), _selector(c, pod_labels)) for c in soft
        ], True
    owner = _owner(pod)
    if owner is None or owner.get("kind") not in DEFAULTED_OWNERS:
        return [], False
    uid = owner.get("uid")

    def same_owner(other: Mapping[str, Any]) -> bool:
        theirs = _owner(other)
        return theirs is not None and theirs.get("uid") == uid

    return [Constraint(key, skew, same_owner) for key, skew in SYSTEM_DEFAULTS], False


def scores(
    pod: Mapping[str, Any],
    feasible: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    pods_on: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, int] | None:
    """Normalised PodTopologySpread scores (0..100) of the ``feasible`` nodes; ``nodes`` are all of
    them and ``pods_on`` the pods bound (or assumed) to each. None when the pod has no soft
    constraint (the plugin skips it)."""
    found, require_all = constraints(pod)
    if not found:
        return None
    namespace = (pod.get("metadata") or {}).get("namespace")

    def counted(node_name: str, constraint: Constraint) -> int:
        return sum(
            1
            for other in pods_on.get(node_name, ())
            if (other.get("metadata") or {}).get("namespace") == namespace
            and not (other.get("metadata") or {}).get("deletionTimestamp")
            and constraint.counts(other)
        )

    def has_keys(node: Mapping[str, Any]) -> bool:
        return all(c.key in _labels(node) for c in found)

    ignored = {str(n["metadata"]["name"]) for n in feasible if require_all and not has_keys(n)}
    eligible = [n for n in feasible if str(n["metadata"]["name"]) not in ignored]
    values: list[dict[str, int]] = [
        {} if c.key == HOSTNAME else dict.fromkeys({_labels(n).get(c.key, "") for n in eligible}, 0) for c in found
    ]
    for node in nodes:
        if node_affinity_mismatch(pod, node) is not None or (require_all and not has_keys(node)):
            continue
        for i, c in enumerate(found):
            value = _labels(node).get(c.key, "")
            if c.key != HOSTNAME and value in values[i]:
                values[i][value] += counted(str(node["metadata"]["name"]), c)
    weights = [math.log((len(eligible) if c.key == HOSTNAME else len(values[i])) + 2) for i, c in enumerate(found)]
    raw: dict[str, int] = {}
    for node in eligible:
        name = str(node["metadata"]["name"])
        total = 0.0
        for i, c in enumerate(found):
            label = _labels(node).get(c.key)
            if label is None:
                continue
            count = counted(name, c) if c.key == HOSTNAME else values[i][label]
            total += count * weights[i] + (c.max_skew - 1)
        raw[name] = math.floor(total + 0.5)  # Go's math.Round (half away from zero; total >= 0)
    low, high = min(raw.values(), default=0), max(raw.values(), default=0)
    out = dict.fromkeys(ignored, 0)
    for name, score in raw.items():
        out[name] = MAX_NODE_SCORE if high == 0 else MAX_NODE_SCORE * (high + low - score) // high
    return out
