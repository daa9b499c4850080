"""Choosing a node for a pod: kube-scheduler's node filters that matter here, then DRA allocation.

Filters, with kube-scheduler's words: unschedulable nodes, untolerated ``NoSchedule``/``NoExecute``
taints, ``nodeSelector`` and required node affinity, the node selectors of claims that are already
allocated, and allocation of the pod's unallocated claims on the node (:mod:`.allocate`). Among the
nodes that pass, the one where ``firstAvailable`` requests got their earliest choices wins (1.35
scoring); ties go to the node that sorts first by name (deterministic where kube-scheduler picks at
random). A pod that fits nowhere gets a message in kube-scheduler's form, followed by why, per node.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .allocate import AllocatedState, NodeAllocation, allocate_on_node, tolerates
from .pools import node_selector_matches

Obj = dict[str, Any]


@dataclass
class Decision:
    node: str | None
    allocations: dict[str, Obj] = field(default_factory=dict)  # claim name -> status.allocation
    message: str = ""
    per_node: dict[str, str] = field(default_factory=dict)

    @property
    def scheduled(self) -> bool:
        return self.node is not None


def _pod_tolerates(pod: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    return tolerates((pod.get("spec") or {}).get("tolerations") or [], taint)


def node_filter(pod: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(summary, detail) when the node is out for this pod regardless of devices, else None."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable") and not _pod_tolerates(
        pod, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ):
        return "node(s) were unschedulable", "node is cordoned (spec.unschedulable)"
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _pod_tolerates(pod, taint):
            text = f"{{{taint.get('key')}: {taint.get('value', '')}}}"
            return f"node(s) had untolerated taint {text}", f"untolerated taint {text}"
    pod_spec = pod.get("spec") or {}
    labels = node.get("metadata", {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return "node(s) didn't match Pod's node affinity/selector", f"nodeSelector {key}={value} does not match"
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required and not node_selector_matches(required, node):
        return "node(s) didn't match Pod's node affinity/selector", "required node affinity does not match"
    return None


def schedule(
    pod: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    pod_claims: Sequence[Mapping[str, Any]],
    classes: Mapping[str, Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    other_claims: Sequence[Mapping[str, Any]],
    *,
    new_share_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> Decision:
    """Pick a node for ``pod`` whose claims are ``pod_claims`` (allocated or not); ``other_claims`` are
    every other claim in the cluster (their allocations hold devices)."""
    state = AllocatedState.from_claims(c for c in other_claims if (c.get("status") or {}).get("allocation"))
    for claim in pod_claims:
        if (claim.get("status") or {}).get("allocation"):
            state.add(claim)
    to_allocate = [c for c in pod_claims if not (c.get("status") or {}).get("allocation")]
    allocated = [c for c in pod_claims if (c.get("status") or {}).get("allocation")]
    summaries: dict[str, int] = {}
    per_node: dict[str, str] = {}
    feasible: list[NodeAllocation] = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        name = str(node["metadata"]["name"])
        out = node_filter(pod, node)
        if out is None:
            for claim in allocated:
                selector = claim["status"]["allocation"].get("nodeSelector")
                if selector is not None and not node_selector_matches(selector, node):
                    meta = claim.get("metadata", {})
                    out = (
                        "resourceclaim not available on the node",
                        f"claim {meta.get('namespace')}/{meta.get('name')} is allocated elsewhere",
                    )
                    break
        if out is not None:
            summaries[out[0]] = summaries.get(out[0], 0) + 1
            per_node[name] = out[1]
            continue
        if not to_allocate:
            feasible.append(NodeAllocation(name, []))
            continue
        result = allocate_on_node(node, to_allocate, classes, slices, state, new_share_id=new_share_id)
        if result.ok:
            feasible.append(result)
        else:
            summaries["cannot allocate all claims"] = summaries.get("cannot allocate all claims", 0) + 1
            per_node[name] = result.reason
    if feasible:
        best = max(feasible, key=lambda r: r.score)  # first (by name) among the best scores
        allocations = {
            str(claim["metadata"]["name"]): allocation
            for claim, allocation in zip(to_allocate, best.allocations or [], strict=True)
        }
        return Decision(best.node, allocations, per_node=per_node)
    if not nodes:
        return Decision(None, message="0/0 nodes are available: no nodes registered.")
    summary = ", ".join(f"{count} {text}" for text, count in sorted(summaries.items(), key=lambda kv: kv[0]))
    details = " ".join(f"[{node}] {why}." for node, why in per_node.items())
    message = f"0/{len(nodes)} nodes are available: {summary}. {details}".strip()
    return Decision(None, message=message, per_node=per_node)
