"""The node policy across the pods of one workload, as a pod topology spread constraint (pure).

The ``firstAvailable`` alternatives (:mod:`.placement`) steer each pod by the occupancy the drivers
publish, which is up to a second old: the pods of a burst (a Deployment scaled up) all see the
cluster as it was before the burst and, under node spread, all prefer the same few nodes.
kube-scheduler counts the pods it has just placed itself, so a soft topology spread constraint on the
node (``whenUnsatisfiable: ScheduleAnyway``, scored with weight 2 against DynamicResources' 1)
spreads the burst where the slices cannot:

* node ``spread``, pod of a workload (it carries ``pod-template-hash``, a Job's
  ``batch.kubernetes.io/controller-uid`` or a StatefulSet's ``controller-revision-hash``): ``maxSkew: 1``
  on ``kubernetes.io/hostname``, counting the pods with the same value of that label;
* node ``binpack``: a constraint that counts no pod. kube-scheduler gives a pod without constraints of
  its own default ones when a Service or controller selects it (``maxSkew: 3`` per node), and those
  outweigh the binpack score: a Deployment would be spread. Any constraint of the pod's own turns the
  defaults off; one whose selector can match no pod scores every node the same.

A pod that has constraints of its own keeps them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vendors.base import DOMAIN

from .placement import Policies

HOSTNAME = "kubernetes.io/hostname"
WORKLOAD_LABELS = ("pod-template-hash", "batch.kubernetes.io/controller-uid", "controller-revision-hash")
"""Labels the controllers put on their pods, each shared by the pods of one workload (revision)."""
NO_POD_KEY = f"{DOMAIN}/binpack"
NO_POD = {
    "matchExpressions": [{"key": NO_POD_KEY, "operator": "Exists"}, {"key": NO_POD_KEY, "operator": "DoesNotExist"}]
}
"""A label selector no pod can match (a key both present and absent)."""


def constraints(
    policies: Policies, labels: Mapping[str, Any], spec: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], str | None]:
    """The ``topologySpreadConstraints`` to add for the pod's node policy, with a note saying why;
    none when the pod has its own or nothing applies."""
    if spec.get("topologySpreadConstraints") or policies.node is None:
        return [], None
    if policies.node == "binpack":
        constraint = {
            "maxSkew": 1,
            "topologyKey": HOSTNAME,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": NO_POD,
        }
        return [constraint], (
            "node binpack: added a topology spread constraint that counts no pod, so that kube-scheduler's "
            "default spreading (for pods a Service or controller selects) does not spread the pods"
        )
    key = next((k for k in WORKLOAD_LABELS if isinstance(labels.get(k), str)), None)
    if key is None:
        return [], None
    constraint = {
        "maxSkew": 1,
        "topologyKey": HOSTNAME,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {key: labels[key]}},
    }
    return [constraint], (
        f"node spread: added a topology spread constraint on {HOSTNAME} over the pods with {key}={labels[key]}, "
        "so that a burst of them spreads before the published occupancy catches up"
    )
