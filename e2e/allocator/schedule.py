"""Choosing a node for a pod: kube-scheduler's node filters that matter here, then DRA allocation.

Filters, with kube-scheduler's words: unschedulable nodes, untolerated ``NoSchedule``/``NoExecute``
taints, ``nodeSelector`` and required node affinity, the node selectors of claims that are already
allocated, and allocation of the pod's unallocated claims on the node (:mod:`.allocate`).

Scoring is the DynamicResources plugin's from 1.35 (KEP-4816): per node, ``8 - index`` of the
subrequest each ``firstAvailable`` request of the claims allocated in this cycle got, summed;
normalised as kube-scheduler's default normaliser does (``score * 100 // max``, all 0 when the max
is 0) and weighted 1 (its default weight); plus PodTopologySpread's soft constraints, weighted 2
(:mod:`.spread`). No other score plugin is modelled (the harness's pods ask no CPU or memory, and
carry no inter-pod affinity). The highest sum wins; ties go to the node that sorts first by name
(deterministic, where kube-scheduler picks one of them at random: ``tie_break`` can do that). A pod
that fits nowhere gets a message in kube-scheduler's form, followed by why, per node.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import spread as topology_spread
from .allocate import NO_ROOM, AllocatedState, NodeAllocation, allocate_on_node, tolerates
from .pools import node_affinity_mismatch, node_selector_matches

Obj = dict[str, Any]


MAX_NODE_SCORE = topology_spread.MAX_NODE_SCORE
DRA_WEIGHT = 1
"""DynamicResources' weight in kube-scheduler's default profile (none given: 1)."""


@dataclass
class Decision:
    node: str | None
    allocations: dict[str, Obj] = field(default_factory=dict)  # claim name -> status.allocation
    message: str = ""
    per_node: dict[str, str] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    """Normalised DynamicResources score of every feasible node (0..100)."""
    spread: dict[str, int] | None = None
    """Normalised PodTopologySpread score of every feasible node (0..100); None when it skipped the pod."""
    evaluations: int = 0
    """CEL selector evaluations this decision ran (memoised verdicts not counted)."""

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
    why = node_affinity_mismatch(pod, node)
    if why is not None:
        return "node(s) didn't match Pod's node affinity/selector", why
    return None


def normalise(scores: Mapping[str, int]) -> dict[str, int]:
    """kube-scheduler's ``DefaultNormalizeScore`` (not reversed): ``score * 100 // max``; 0 when max is 0."""
    top = max(scores.values(), default=0)
    if top <= 0:
        return dict.fromkeys(scores, 0)
    return {node: MAX_NODE_SCORE * score // top for node, score in scores.items()}


def schedule(
    pod: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    pod_claims: Sequence[Mapping[str, Any]],
    classes: Mapping[str, Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    other_claims: Sequence[Mapping[str, Any]],
    *,
    new_share_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    state: AllocatedState | None = None,
    tie_break: Callable[[list[str]], str] | None = None,
    pods_on: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Decision:
    """Pick a node for ``pod`` whose claims are ``pod_claims`` (allocated or not); ``other_claims`` are
    every other claim in the cluster (their allocations hold devices), or ``state`` is what they hold
    (then ``other_claims`` is not read; ``state`` is not changed). ``pods_on``: the pods bound or
    assumed on each node, for PodTopologySpread (none: no pod counted). ``tie_break`` picks among the
    nodes with the best score (sorted by name); default: the first."""
    if state is None:
        state = AllocatedState.from_claims(c for c in other_claims if (c.get("status") or {}).get("allocation"))
    elif any((c.get("status") or {}).get("allocation") for c in pod_claims):
        state = state.copy()
    for claim in pod_claims:
        if (claim.get("status") or {}).get("allocation"):
            state.add(claim)
    to_allocate = [c for c in pod_claims if not (c.get("status") or {}).get("allocation")]
    allocated = [c for c in pod_claims if (c.get("status") or {}).get("allocation")]
    summaries: dict[str, int] = {}
    per_node: dict[str, str] = {}
    feasible: list[NodeAllocation] = []
    unexplained: list[Mapping[str, Any]] = []  # nodes without room, explained only if the pod fits nowhere
    evaluations = 0
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
        result = allocate_on_node(
            node, to_allocate, classes, slices, state, new_share_id=new_share_id, explain_failure=False
        )
        evaluations += result.evaluations
        if result.ok:
            feasible.append(result)
        else:
            summaries["cannot allocate all claims"] = summaries.get("cannot allocate all claims", 0) + 1
            per_node[name] = result.reason
            if result.reason == NO_ROOM:
                unexplained.append(node)
    if feasible:
        scores = normalise({r.node: r.score for r in feasible})
        by_name = {str(n["metadata"]["name"]): n for n in nodes}
        spread = topology_spread.scores(pod, [by_name[r.node] for r in feasible], nodes, pods_on or {})
        totals = {
            r.node: DRA_WEIGHT * scores[r.node] + (topology_spread.WEIGHT * spread[r.node] if spread else 0)
            for r in feasible
        }
        top = max(totals.values())
        best_nodes = [r.node for r in feasible if totals[r.node] == top]  # sorted by name
        chosen = tie_break(best_nodes) if tie_break is not None and len(best_nodes) > 1 else best_nodes[0]
        best = next(r for r in feasible if r.node == chosen)
        allocations = {
            str(claim["metadata"]["name"]): allocation
            for claim, allocation in zip(to_allocate, best.allocations or [], strict=True)
        }
        return Decision(
            best.node, allocations, per_node=per_node, scores=scores, spread=spread, evaluations=evaluations
        )
    if not nodes:
        return Decision(None, message="0/0 nodes are available: no nodes registered.")
    for node in unexplained:
        why = allocate_on_node(node, to_allocate, classes, slices, state, new_share_id=new_share_id)
        per_node[str(node["metadata"]["name"])] = why.reason
    summary = ", ".join(f"{count} {text}" for text, count in sorted(summaries.items(), key=lambda kv: kv[0]))
    details = " ".join(f"[{node}] {why}." for node, why in per_node.items())
    message = f"0/{len(nodes)} nodes are available: {summary}. {details}".strip()
    return Decision(None, message=message, per_node=per_node, evaluations=evaluations)
