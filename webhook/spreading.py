"""The node policy across the pods of one workload, as a pod topology spread constraint (pure).

The ``firstAvailable`` alternatives (:mod:`.placement`) steer each pod by the occupancy the drivers
publish, which is up to a second old: the pods of a burst (a Deployment scaled up) all see the
cluster as it was before the burst and, under node spread, all prefer the same few nodes.
kube-scheduler counts the pods it has just placed itself, so a soft topology spread constraint on the
node (``whenUnsatisfiable: ScheduleAnyway``, scored with weight 2 against DynamicResources' 1)
spreads the burst where the slices cannot:

* node ``spread``, on a pod a controller made (an owner reference with ``controller: true``: a
  ReplicaSet's, a StatefulSet's, a Job's, a Kubeflow or Volcano job's, a RayCluster's...): the pod is
  labelled ``tessera.dev/workload: <the owner's uid>`` and gets ``maxSkew: 1`` on
  ``kubernetes.io/hostname`` over the pods with that label;
* node ``spread``, every pod: the pods admitted close together avoid each other's nodes. The pod is
  labelled with the number of its admission window (``tessera.dev/spread-window: floor(t / w)``) and
  of a window shifted by half (``tessera.dev/spread-window-shifted: floor(t / w + 1/2)``), with ``w``
  twice the drivers' occupancy interval, and gets one ``maxSkew: 1`` constraint per label over the
  pods with the same value: two pods admitted within ``w / 2`` of each other always share one. Those
  are the pods whose allocations the published occupancy may not show yet; kube-scheduler counts
  them, so the constraints correct the staleness where it is (PodTopologySpread counts the pods of
  the pod's own namespace only);
* node ``binpack``: a constraint that counts no pod. kube-scheduler gives a pod without constraints of
  its own default ones when a Service or controller selects it (``maxSkew: 3`` per node), and those
  outweigh the binpack score: a Deployment would be spread. Any constraint of the pod's own turns the
  defaults off; one whose selector can match no pod scores every node the same.

A pod that has constraints of its own keeps them unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vendors.base import DOMAIN

from .placement import Policies

HOSTNAME = "kubernetes.io/hostname"
WORKLOAD_LABEL = f"{DOMAIN}/workload"
"""The label that groups the pods of one controller (its uid) for node spread."""
WINDOW_LABEL = f"{DOMAIN}/spread-window"
SHIFTED_WINDOW_LABEL = f"{DOMAIN}/spread-window-shifted"
DEFAULT_WINDOW = 2.0
"""Seconds: twice the drivers' default occupancy interval (a slice is rewritten at most once a second)."""
NO_POD_KEY = f"{DOMAIN}/binpack"
NO_POD = {
    "matchExpressions": [{"key": NO_POD_KEY, "operator": "Exists"}, {"key": NO_POD_KEY, "operator": "DoesNotExist"}]
}
"""A label selector no pod can match (a key both present and absent)."""
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Spread:
    """What the webhook adds to a pod for its node policy."""

    constraints: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid of the pod's controller (the owner reference with ``controller: true``) when it can be a
    label value."""
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            uid = ref.get("uid")
            return uid if isinstance(uid, str) and _LABEL_VALUE.match(uid) else None
    return None


def _hostname(selector: dict[str, Any]) -> dict[str, Any]:
    return {"maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}


def windows(now: float, window: float) -> dict[str, str]:
    """The admission-window labels of a pod admitted at ``now`` (seconds since the epoch)."""
    return {
        WINDOW_LABEL: str(math.floor(now / window)),
        SHIFTED_WINDOW_LABEL: str(math.floor(now / window + 0.5)),
    }


def for_pod(
    policies: Policies, meta: Mapping[str, Any], spec: Mapping[str, Any], *, now: float, window: float
) -> Spread:
    """The constraints (and labels) to add for the pod's node policy, with a note saying why; nothing
    when the pod has constraints of its own or no node policy applies. ``now``: the admission time;
    ``window``: the admission window in seconds (0: no window constraints)."""
    if spec.get("topologySpreadConstraints") or policies.node is None:
        return Spread()
    if policies.node == "binpack":
        return Spread(
            [_hostname(NO_POD)],
            note="node binpack: added a topology spread constraint that counts no pod, so that kube-scheduler's "
            "default spreading (for pods a Service or controller selects) does not spread the pods",
        )
    labels = windows(now, window) if window > 0 else {}
    why = [f"over the pods admitted in the same {window:g} s windows ({', '.join(labels)})"] if labels else []
    uid = controller_uid(meta)
    if uid is not None:
        labels[WORKLOAD_LABEL] = uid
        why.append(f"over the pods of its controller ({WORKLOAD_LABEL}={uid})")
    if not labels:
        return Spread()
    return Spread(
        [_hostname({"matchLabels": {key: value}}) for key, value in labels.items()],
        labels,
        f"node spread: added topology spread constraints on {HOSTNAME} {' and '.join(why)}, so that pods "
        "placed before the published occupancy shows them spread",
    )
