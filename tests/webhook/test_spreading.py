"""The topology spread constraint the webhook adds for the node policy (webhook.spreading), alone and
in the patch of a converted pod."""

from __future__ import annotations

from typing import Any

import vendors
from webhook.convert import Converter
from webhook.placement import Policies
from webhook.spreading import (
    HOSTNAME,
    NO_POD,
    SHIFTED_WINDOW_LABEL,
    WINDOW_LABEL,
    WORKLOAD_LABEL,
    Spread,
    controller_uid,
    for_pod,
    windows,
)
from webhook.workloads import template_as_pod, template_path

from .conftest import make_pod, patched, validate

SHARE = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096}
UID = "0c7e2d4a-5b1f-4e8a-9d3c-6f2b1a8e7d40"
NOW = 1_796_000_000.4  # seconds since the epoch, 0.4 s into a 2 s window's first half
WINDOWS = {WINDOW_LABEL: "898000000", SHIFTED_WINDOW_LABEL: "898000000"}


def spread(policies: Policies, meta: dict[str, Any], spec: dict[str, Any] | None = None, **kw: Any) -> Spread:
    return for_pod(policies, meta, spec or {}, **({"now": NOW, "window": 2.0} | kw))


def hostname(key: str, value: str) -> dict[str, Any]:
    return {
        "maxSkew": 1,
        "topologyKey": HOSTNAME,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {key: value}},
    }


def converter(**kw: Any) -> Converter:
    return Converter(vendors.admission_vendors(), **({"clock": lambda: NOW} | kw))


def owned(kind: str = "ReplicaSet", uid: Any = UID, *, controller: Any = True, **meta: Any) -> dict[str, Any]:
    ref = {"apiVersion": "apps/v1", "kind": kind, "name": "w", "uid": uid, "controller": controller}
    return {"name": "p", "ownerReferences": [ref], **meta}


def _convert(meta: dict[str, Any], policy: str | None, **spec: Any) -> tuple[dict[str, Any], Any]:
    annotations = {"hami.io/node-scheduler-policy": policy} if policy else {}
    pod = make_pod({"name": "main", "resources": {"limits": SHARE}}, annotations=annotations, **spec)
    pod["metadata"].update(meta)
    pod["metadata"]["namespace"] = "team-a"
    result = converter().convert(pod, "team-a", None)
    assert result.allowed, result.message
    return patched(pod, result), result


def test_spread_pods_avoid_the_nodes_of_pods_admitted_in_the_same_windows() -> None:
    got = spread(Policies("spread"), {"name": "bare"})
    assert got.labels == WINDOWS
    assert got.constraints == [hostname(k, v) for k, v in WINDOWS.items()]
    assert got.note and "2 s windows" in got.note
    # the shifted window changes half a window later: two pods within a second always share one
    assert windows(NOW + 0.7, 2.0) == {WINDOW_LABEL: "898000000", SHIFTED_WINDOW_LABEL: "898000001"}
    assert windows(NOW + 1.7, 2.0) == {WINDOW_LABEL: "898000001", SHIFTED_WINDOW_LABEL: "898000001"}
    for a in range(0, 40):
        for gap in (0.0, 0.25, 0.5, 0.99):
            t = NOW + a / 10
            assert set(windows(t, 2.0).items()) & set(windows(t + gap, 2.0).items()), (t, gap)
    assert spread(Policies("spread"), {"name": "bare"}, window=0) == Spread()  # windows off


def test_spread_pods_of_a_controller_are_labelled_with_its_uid_and_spread_over_nodes_by_it() -> None:
    for kind in ("ReplicaSet", "Job", "StatefulSet", "PyTorchJob"):
        got = spread(Policies("spread"), owned(kind))
        assert got.labels == WINDOWS | {WORKLOAD_LABEL: UID}
        assert got.constraints[-1] == hostname(WORKLOAD_LABEL, UID) and len(got.constraints) == 3
        assert got.note and UID in got.note
        alone = spread(Policies("spread"), owned(kind), window=0)
        assert alone.labels == {WORKLOAD_LABEL: UID} and alone.constraints == [hostname(WORKLOAD_LABEL, UID)]


def test_binpack_pods_get_a_constraint_that_counts_no_pod() -> None:
    for meta in (owned(), {"name": "bare"}):
        got = spread(Policies("binpack", ("spread",)), meta)
        (constraint,) = got.constraints
        assert constraint["labelSelector"] == NO_POD and constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert got.labels == {} and got.note and "default spreading" in got.note
    present, absent = NO_POD["matchExpressions"]
    assert present["key"] == absent["key"]
    assert {present["operator"], absent["operator"]} == {"Exists", "DoesNotExist"}


def test_nothing_is_added_without_a_node_policy_or_where_the_pod_has_its_own() -> None:
    assert spread(Policies(None, ("spread",)), owned()) == Spread()  # GPU policy only
    own = {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}
    assert spread(Policies("spread"), owned(), own) == Spread()
    assert spread(Policies("binpack"), owned(), own) == Spread()


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
        (owned(labels={"app": "infer"}), "spread"),  # labels present: ours are added
        (owned(), "spread"),  # no labels: the map is added
        ({"name": "bare"}, "spread"),
        ({"name": "bare"}, "binpack"),
    ]
    for meta, policy in cases:
        pod, result = _convert(meta, policy)
        expected = spread(Policies(policy), meta)
        assert pod["spec"]["topologySpreadConstraints"] == expected.constraints
        for key, value in expected.labels.items():
            assert pod["metadata"]["labels"][key] == value
        if "labels" in meta:
            assert pod["metadata"]["labels"]["app"] == "infer"
        assert any("topology spread constraint" in n for n in result.notes)
        validate(pod)
        again = converter(clock=lambda: NOW + 60).convert(pod, "team-a", None)  # later: still no change
        assert again.allowed and not again.patch


def test_a_forged_workload_label_is_replaced_by_the_controllers_uid() -> None:
    pod, _ = _convert(owned(labels={WORKLOAD_LABEL: "someone-else"}), "spread")
    assert pod["metadata"]["labels"][WORKLOAD_LABEL] == UID


def test_a_pods_own_constraints_are_left_as_written() -> None:
    own = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "infer"}}}]  # fmt: skip
    pod, result = _convert(owned(), "spread", topologySpreadConstraints=own)
    assert pod["spec"]["topologySpreadConstraints"] == own
    assert not {WORKLOAD_LABEL, WINDOW_LABEL} & set(pod["metadata"].get("labels", {}))
    assert not any("topologySpreadConstraints" in p["path"] or "/labels" in p["path"] for p in result.patch)


def test_the_cluster_default_node_policy_counts_as_the_pods() -> None:
    pod = make_pod({"name": "main", "resources": {"limits": SHARE}})
    pod["metadata"].update(owned())
    result = converter(scheduling=Policies("spread")).convert(pod, "team-a", None)
    assert patched(pod, result)["spec"]["topologySpreadConstraints"] == spread(Policies("spread"), owned()).constraints


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
    # as `python -m webhook convert` does it: no admission windows ahead of time
    result = converter(spread_window=0).convert(template_pod, "team-a", None)
    assert result.allowed and not any("topologySpreadConstraints" in p["path"] for p in result.patch)
    pod = patched(template_pod, result)
    pod["metadata"].update(owned())  # what the ReplicaSet controller sends
    created = converter().convert(pod, "team-a", None)
    assert created.allowed, created.message
    out = patched(pod, created)
    assert out["spec"]["topologySpreadConstraints"] == spread(Policies("spread"), owned()).constraints
    assert out["metadata"]["labels"] == WINDOWS | {WORKLOAD_LABEL: UID}
    validate(out)
    assert not converter().convert(out, "team-a", None).patch  # and again: unchanged
    # a pod of the user's own claims (no conversion record) is never touched
    own = make_pod({"name": "main", "resources": {"claims": [{"name": "gpu"}]}}, resourceClaims=[
        {"name": "gpu", "resourceClaimTemplateName": "mine"}])  # fmt: skip
    own["metadata"].update(owned(annotations={"hami.io/node-scheduler-policy": "spread"}))
    assert not converter().convert(own, "team-a", None).patch
