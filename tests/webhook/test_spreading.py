"""The topology spread constraint the webhook adds for the node policy (webhook.spreading), alone and
in the patch of a converted pod."""

from __future__ import annotations

from typing import Any

import vendors
from webhook.convert import Converter
from webhook.placement import Policies
from webhook.spreading import HOSTNAME, NO_POD, constraints

from .conftest import make_pod, patched, validate

SHARE = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096}
RS_LABELS = {"app": "infer", "pod-template-hash": "5d8f7c9b6"}
JOB_LABELS = {"batch.kubernetes.io/controller-uid": "0c7e2d4a", "batch.kubernetes.io/job-name": "train"}


def _convert(labels: dict[str, str] | None, policy: str | None, **spec: Any) -> tuple[dict[str, Any], Any]:
    annotations = {"hami.io/node-scheduler-policy": policy} if policy else {}
    pod = make_pod({"name": "main", "resources": {"limits": SHARE}}, annotations=annotations, labels=labels, **spec)
    pod["metadata"]["namespace"] = "team-a"
    result = Converter(vendors.admission_vendors()).convert(pod, "team-a", None)
    assert result.allowed, result.message
    return patched(pod, result), result


def test_spread_pods_of_a_workload_spread_over_nodes_by_its_own_label() -> None:
    for labels, key in ((RS_LABELS, "pod-template-hash"), (JOB_LABELS, "batch.kubernetes.io/controller-uid")):
        (got,), note = constraints(Policies("spread"), labels, {})
        assert got == {
            "maxSkew": 1,
            "topologyKey": HOSTNAME,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {key: labels[key]}},
        }
        assert note and key in note


def test_binpack_pods_get_a_constraint_that_counts_no_pod() -> None:
    for labels in (RS_LABELS, {}):
        (got,), note = constraints(Policies("binpack", ("spread",)), labels, {})
        assert got["labelSelector"] == NO_POD and got["whenUnsatisfiable"] == "ScheduleAnyway"
        assert note and "default spreading" in note
    (key_present, key_absent) = NO_POD["matchExpressions"]
    assert key_present["key"] == key_absent["key"] and {key_present["operator"], key_absent["operator"]} == {
        "Exists",
        "DoesNotExist",
    }


def test_nothing_is_added_without_a_node_policy_a_workload_or_where_the_pod_has_its_own() -> None:
    assert constraints(Policies(None, ("spread",)), RS_LABELS, {}) == ([], None)  # GPU policy only
    assert constraints(Policies("spread"), {"app": "x"}, {}) == ([], None)  # a pod of its own
    own = {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}
    assert constraints(Policies("spread"), RS_LABELS, own) == ([], None)
    assert constraints(Policies("binpack"), RS_LABELS, own) == ([], None)


def test_the_converted_pod_carries_the_constraint_validates_and_passes_again_unchanged() -> None:
    for labels, policy in ((RS_LABELS, "spread"), (None, "binpack")):
        pod, result = _convert(labels, policy)
        assert pod["spec"]["topologySpreadConstraints"] == constraints(Policies(policy), labels or {}, {})[0]
        assert any("topology spread constraint" in n for n in result.notes)
        validate(pod)
        again = Converter(vendors.admission_vendors()).convert(pod, "team-a", None)
        assert again.allowed and not again.patch


def test_a_pods_own_constraints_are_left_as_written() -> None:
    own = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "infer"}}}]  # fmt: skip
    pod, result = _convert(RS_LABELS, "spread", topologySpreadConstraints=own)
    assert pod["spec"]["topologySpreadConstraints"] == own
    assert not any(p["path"].startswith("/spec/topologySpreadConstraints") for p in result.patch)


def test_the_cluster_default_node_policy_counts_as_the_pods() -> None:
    pod = make_pod({"name": "main", "resources": {"limits": SHARE}}, labels=RS_LABELS)
    result = Converter(vendors.admission_vendors(), scheduling=Policies("spread")).convert(pod, "team-a", None)
    assert patched(pod, result)["spec"]["topologySpreadConstraints"][0]["labelSelector"] == {
        "matchLabels": {"pod-template-hash": "5d8f7c9b6"}
    }
