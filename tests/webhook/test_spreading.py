"""The topology spread constraint the webhook adds for the node policy (webhook.spreading), alone and
in the patch of a converted pod."""

from __future__ import annotations

from typing import Any

import vendors
from webhook.convert import Converter
from webhook.placement import Policies
from webhook.spreading import HOSTNAME, NO_POD, WORKLOAD_LABEL, Spread, controller_uid, for_pod
from webhook.workloads import template_as_pod, template_path

from .conftest import make_pod, patched, validate

SHARE = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096}
UID = "0c7e2d4a-5b1f-4e8a-9d3c-6f2b1a8e7d40"


def owned(kind: str = "ReplicaSet", uid: Any = UID, *, controller: Any = True, **meta: Any) -> dict[str, Any]:
    ref = {"apiVersion": "apps/v1", "kind": kind, "name": "w", "uid": uid, "controller": controller}
    return {"name": "p", "ownerReferences": [ref], **meta}


def _convert(meta: dict[str, Any], policy: str | None, **spec: Any) -> tuple[dict[str, Any], Any]:
    annotations = {"hami.io/node-scheduler-policy": policy} if policy else {}
    pod = make_pod({"name": "main", "resources": {"limits": SHARE}}, annotations=annotations, **spec)
    pod["metadata"].update(meta)
    pod["metadata"]["namespace"] = "team-a"
    result = Converter(vendors.admission_vendors()).convert(pod, "team-a", None)
    assert result.allowed, result.message
    return patched(pod, result), result


def test_spread_pods_of_a_controller_are_labelled_with_its_uid_and_spread_over_nodes_by_it() -> None:
    for kind in ("ReplicaSet", "Job", "StatefulSet", "PyTorchJob"):
        got = for_pod(Policies("spread"), owned(kind), {})
        assert got.constraints == [
            {
                "maxSkew": 1,
                "topologyKey": HOSTNAME,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {WORKLOAD_LABEL: UID}},
            }
        ]
        assert got.labels == {WORKLOAD_LABEL: UID} and got.note and UID in got.note


def test_binpack_pods_get_a_constraint_that_counts_no_pod() -> None:
    for meta in (owned(), {"name": "bare"}):
        got = for_pod(Policies("binpack", ("spread",)), meta, {})
        (constraint,) = got.constraints
        assert constraint["labelSelector"] == NO_POD and constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert got.labels == {} and got.note and "default spreading" in got.note
    present, absent = NO_POD["matchExpressions"]
    assert present["key"] == absent["key"]
    assert {present["operator"], absent["operator"]} == {"Exists", "DoesNotExist"}


def test_nothing_is_added_without_a_node_policy_a_controller_or_where_the_pod_has_its_own() -> None:
    assert for_pod(Policies(None, ("spread",)), owned(), {}) == Spread()  # GPU policy only
    assert for_pod(Policies("spread"), {"name": "bare", "labels": {"pod-template-hash": "x"}}, {}) == Spread()
    own = {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}
    assert for_pod(Policies("spread"), owned(), own) == Spread()
    assert for_pod(Policies("binpack"), owned(), own) == Spread()


def test_only_a_controller_reference_with_a_usable_uid_groups_pods() -> None:
    assert controller_uid(owned()) == UID
    assert controller_uid(owned(controller=False)) is None  # an owner, not the controller
    assert controller_uid(owned(controller="true")) is None
    assert controller_uid(owned(uid=7)) is None
    assert controller_uid(owned(uid="not a label value!")) is None
    assert controller_uid(owned(uid="x" * 64)) is None  # longer than a label value may be
    assert controller_uid({"ownerReferences": "junk"}) is None and controller_uid({}) is None


def test_the_converted_pod_carries_label_and_constraint_validates_and_passes_again_unchanged() -> None:
    cases = [
        (owned(labels={"app": "infer"}), "spread"),  # labels present: one is added
        (owned(), "spread"),  # no labels: the map is added
        ({"name": "bare"}, "binpack"),
    ]
    for meta, policy in cases:
        pod, result = _convert(meta, policy)
        expected = for_pod(Policies(policy), meta, {})
        assert pod["spec"]["topologySpreadConstraints"] == expected.constraints
        for key, value in expected.labels.items():
            assert pod["metadata"]["labels"][key] == value
        if "labels" in meta:
            assert pod["metadata"]["labels"]["app"] == "infer"
        assert any("topology spread constraint" in n for n in result.notes)
        validate(pod)
        again = Converter(vendors.admission_vendors()).convert(pod, "team-a", None)
        assert again.allowed and not again.patch


def test_a_forged_workload_label_is_replaced_by_the_controllers_uid() -> None:
    pod, _ = _convert(owned(labels={WORKLOAD_LABEL: "someone-else"}), "spread")
    assert pod["metadata"]["labels"][WORKLOAD_LABEL] == UID


def test_a_pods_own_constraints_are_left_as_written() -> None:
    own = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "infer"}}}]  # fmt: skip
    pod, result = _convert(owned(), "spread", topologySpreadConstraints=own)
    assert pod["spec"]["topologySpreadConstraints"] == own and WORKLOAD_LABEL not in pod["metadata"].get("labels", {})
    assert not any("topologySpreadConstraints" in p["path"] or "/labels" in p["path"] for p in result.patch)


def test_the_cluster_default_node_policy_counts_as_the_pods() -> None:
    pod = make_pod({"name": "main", "resources": {"limits": SHARE}})
    pod["metadata"].update(owned())
    result = Converter(vendors.admission_vendors(), scheduling=Policies("spread")).convert(pod, "team-a", None)
    assert patched(pod, result)["spec"]["topologySpreadConstraints"][0]["labelSelector"] == {
        "matchLabels": {WORKLOAD_LABEL: UID}
    }


def test_pods_of_a_template_converted_beforehand_get_the_constraint_when_created() -> None:
    # `python -m webhook convert` rewrites a Deployment's template; its pods then arrive converted,
    # and only at creation do they have an owner
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "infer", "namespace": "team-a"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"hami.io/node-scheduler-policy": "spread"}},
                "spec": {"containers": [{"name": "main", "resources": {"limits": SHARE}}]},
            }
        },
    }
    path = template_path(deployment)
    assert path is not None
    template_pod = template_as_pod(deployment, path, "team-a")
    converter = Converter(vendors.admission_vendors())
    result = converter.convert(template_pod, "team-a", None)
    assert result.allowed and not any("topologySpreadConstraints" in p["path"] for p in result.patch)
    pod = patched(template_pod, result)
    pod["metadata"].update(owned())  # what the ReplicaSet controller sends
    created = converter.convert(pod, "team-a", None)
    assert created.allowed, created.message
    out = patched(pod, created)
    assert out["spec"]["topologySpreadConstraints"] == for_pod(Policies("spread"), owned(), {}).constraints
    assert out["metadata"]["labels"] == {WORKLOAD_LABEL: UID}
    validate(out)
    assert not converter.convert(out, "team-a", None).patch  # and again: unchanged
    # a pod of the user's own claims (no conversion record) is never touched
    own = make_pod({"name": "main", "resources": {"claims": [{"name": "gpu"}]}}, resourceClaims=[
        {"name": "gpu", "resourceClaimTemplateName": "mine"}])  # fmt: skip
    own["metadata"].update(owned(annotations={"hami.io/node-scheduler-policy": "spread"}))
    assert not converter.convert(own, "team-a", None).patch
