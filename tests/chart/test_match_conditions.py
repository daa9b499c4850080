"""The chart's ``matchConditions`` send the webhook exactly the pods it acts on, so that while it is
down only those are refused (``failurePolicy: Fail``) and every other pod is still created.

The rendered expression is evaluated as kube-apiserver evaluates it (``e2e.apiserver.matchconditions``,
CEL with ``object``/``oldObject``/``request``). Chart and code agree: the chart's prefix lists are the
code's (``vendors.RESOURCE_PREFIXES``, ``vendors.ANNOTATION_PREFIXES``); every resource name a vendor
converts, in containers and init containers, requests and limits, reaches the webhook; and any pod the
conditions let pass is one the webhook would have admitted unchanged (a property over generated pods).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vendors
from e2e.apiserver import matchconditions
from vendors import cambricon, hygon, iluvatar, nvidia
from webhook.convert import GPU_POLICY_KEY, NODE_POLICY_KEY, Converter

from . import helm

Obj = dict[str, Any]

# every name a vendor module converts (and the seed pods' Ascend names)
CONVERTED_RESOURCES = sorted(
    set(nvidia.ALL_RESOURCES)
    | set(cambricon.ALL_RESOURCES)
    | set(hygon.ALL_RESOURCES)
    | set(iluvatar.COUNT_RESOURCES + iluvatar.MEMORY_RESOURCES + iluvatar.CORE_RESOURCES)
    | {"huawei.com/Ascend910", "huawei.com/Ascend910-memory", "huawei.com/Ascend910B3", "iluvatar.ai/MR-V100-vgpu"}
)
# the annotations the vendors and the conversion read
READ_ANNOTATIONS = sorted(
    {
        nvidia.USE_TYPE,
        nvidia.NOUSE_TYPE,
        nvidia.USE_UUID,
        nvidia.NOUSE_UUID,
        nvidia.NUMA_BIND,
        cambricon.USE_TYPE,
        cambricon.NOUSE_UUID,
        hygon.USE_TYPE,
        hygon.NOUSE_UUID,
        "huawei.com/vnpu-mode",
        "hami.io/use-Ascend910B3-uuid",
        "hami.io/no-use-MR-V100-uuid",
        NODE_POLICY_KEY,
        GPU_POLICY_KEY,
        "tessera.dev/claim-template",
        "tessera.dev/converted",
    }
)
UNRELATED_RESOURCES = [
    *("cpu", "memory", "ephemeral-storage", "hugepages-2Mi", "example.com/gpu", "amd.com/gpu", "intel.com/gpu"),
    *("xnvidia.com/gpu", "nvidia.co/gpu", "volcano.sh/queue", "huawei.com/npu-core"),
]


@pytest.fixture(scope="module")
def conditions(default_objs: list[helm.Obj]) -> list[Obj]:
    hook = helm.one(default_objs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["failurePolicy"] == "Fail"
    found: list[Obj] = hook["matchConditions"]
    return found


def pod(
    *,
    containers: list[Obj] | None = None,
    init: list[Obj] | None = None,
    ephemeral: list[Obj] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    claims: list[Obj] | None = None,
) -> Obj:
    spec: Obj = {"containers": containers or [{"name": "main", "image": "busybox:1.36"}]}
    if init:
        spec["initContainers"] = init
    if ephemeral:
        spec["ephemeralContainers"] = ephemeral
    if claims:
        spec["resourceClaims"] = claims
    meta: Obj = {"name": "p", "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def container(part: str, resources: dict[str, Any], name: str = "main") -> Obj:
    return {"name": name, "image": "busybox:1.36", "resources": {part: resources}}


def sent(conditions: list[Obj], obj: Obj | None, operation: str = "CREATE") -> bool:
    request = {"operation": operation, "namespace": "default", "name": "p"}
    verdict = matchconditions.evaluate(conditions, {"object": obj, "oldObject": None, "request": request})
    assert not verdict.errors, verdict.errors  # an error would refuse the pod (failurePolicy Fail)
    return verdict.call


def test_the_charts_prefix_lists_are_the_codes(conditions: list[Obj]) -> None:
    (condition,) = conditions
    lists = {tuple(json.loads(m)) for m in re.findall(r'\[(?:"[^"]*",?)+\]', condition["expression"])}
    resources = tuple(p for prefixes in vendors.RESOURCE_PREFIXES.values() for p in prefixes)
    assert lists == {resources, vendors.ANNOTATION_PREFIXES}


@pytest.mark.parametrize("resource", CONVERTED_RESOURCES)
def test_every_converted_resource_reaches_the_webhook(conditions: list[Obj], resource: str) -> None:
    assert vendors.vendor_for_resource(resource) is not None
    for part in ("limits", "requests"):
        assert sent(conditions, pod(containers=[container(part, {resource: "1"})]))
        init = [container(part, {resource: "1"}, name="init")]
        assert sent(conditions, pod(init=init))
        # among other resources, in the second container
        other = container("limits", {"cpu": "1", resource: 2}, name="second")
        assert sent(conditions, pod(containers=[container(part, {"cpu": "1"}), other]))


@pytest.mark.parametrize("resource", UNRELATED_RESOURCES)
def test_other_resources_do_not(conditions: list[Obj], resource: str) -> None:
    assert vendors.vendor_for_resource(resource) is None
    for part in ("limits", "requests"):
        assert not sent(conditions, pod(containers=[container(part, {resource: "1"})]))
        assert not sent(conditions, pod(init=[container(part, {resource: "1"}, name="init")]))


def test_prefix_boundaries_follow_the_code(conditions: list[Obj]) -> None:
    """Each prefix and the same prefix one character short: sent exactly when the code classifies it."""
    for prefixes in vendors.RESOURCE_PREFIXES.values():
        for prefix in prefixes:
            for name in (prefix + "x", prefix[:-1] + "x", "a" + prefix + "x"):
                expected = vendors.vendor_for_resource(name) is not None
                assert sent(conditions, pod(containers=[container("limits", {name: "1"})])) is expected, name


@pytest.mark.parametrize("key", READ_ANNOTATIONS)
def test_annotations_the_webhook_reads_reach_it(conditions: list[Obj], key: str) -> None:
    assert key.startswith(vendors.ANNOTATION_PREFIXES)
    assert sent(conditions, pod(annotations={key: "x"}))
    assert not sent(conditions, pod(annotations={"example.com/" + key.rsplit("/", 1)[-1]: "x"}))


def test_claims_reach_the_webhook(conditions: list[Obj]) -> None:
    claims = [{"name": "gpu", "resourceClaimTemplateName": "t"}]
    assert sent(conditions, pod(claims=claims))
    with_ref = {"name": "main", "image": "busybox:1.36", "resources": {"claims": [{"name": "gpu"}]}}
    assert sent(conditions, pod(containers=[with_ref], claims=claims))
    assert sent(conditions, pod(containers=[with_ref]))  # the webhook reads container claims too
    assert sent(conditions, pod(ephemeral=[{**with_ref, "name": "debug"}]))
    # kubectl debug on a pod holding a claim: the UPDATE of pods/ephemeralcontainers is sent
    debugged = pod(claims=claims, ephemeral=[{"name": "debug", "image": "busybox:1.36"}])
    request = {"operation": "UPDATE", "subResource": "ephemeralcontainers", "namespace": "default", "name": "p"}
    verdict = matchconditions.evaluate(conditions, {"object": debugged, "oldObject": pod(claims=claims),
                                                    "request": request})  # fmt: skip
    assert verdict.call and not verdict.errors


def test_plain_and_odd_pods_pass_without_an_error(conditions: list[Obj]) -> None:
    assert not sent(conditions, pod())
    assert not sent(conditions, pod(containers=[{"name": "main", "image": "busybox:1.36", "resources": {}}]))
    assert not sent(conditions, pod(annotations={}, claims=[]))
    assert not sent(conditions, pod(init=[{"name": "i", "image": "busybox:1.36", "resources": {"limits": {}}}]))
    assert not sent(conditions, None, "DELETE")  # a DELETE carries no object
    seed = [d for d in yaml.safe_load_all((helm.REPO / "examples" / "seed-pods.yaml").read_text()) if d]
    assert seed and all(sent(conditions, p) for p in seed)


# --- the property: what the conditions skip, the webhook would have left alone --------------------
_resource_names = st.sampled_from(CONVERTED_RESOURCES + UNRELATED_RESOURCES)
_values = st.one_of(st.integers(0, 200_000), st.sampled_from(["1", "3k", "10Gi", "1500m", "x", "-1"]))
_containers = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "limits": st.dictionaries(_resource_names, _values, max_size=3),
            "requests": st.dictionaries(_resource_names, _values, max_size=3),
        },
    ),
    min_size=1,
    max_size=3,
)
_annotation_keys = st.sampled_from([*READ_ANNOTATIONS, "example.com/x", "app", "kubernetes.io/psp", "x.io/y"])


@st.composite
def pods(draw: st.DrawFn) -> Obj:
    def build(parts: list[Obj], prefix: str) -> list[Obj]:
        out = []
        for i, resources in enumerate(parts):
            c: Obj = {"name": f"{prefix}{i}", "image": "busybox:1.36"}
            if resources or draw(st.booleans()):
                c["resources"] = dict(resources)
            out.append(c)
        return out

    claims = draw(st.booleans()) and draw(st.integers(0, 10)) == 0
    ephemeral = [{"name": "debug", "image": "busybox:1.36"}]
    if draw(st.booleans()):  # one that names a claim (ephemeral containers may not, the webhook reads them)
        ephemeral[0]["resources"] = {"claims": [{"name": "gpu"}]}
    return pod(
        containers=build(draw(_containers), "c"),
        init=build(draw(st.lists(_containers.map(lambda x: x[0]), max_size=2)), "i"),
        ephemeral=ephemeral if draw(st.booleans()) else None,
        annotations=draw(st.dictionaries(_annotation_keys, st.sampled_from(["", "A100", "binpack", "x"]), max_size=2)),
        labels={"tessera.dev/webhook": "ignore"} if draw(st.booleans()) else None,
        claims=[{"name": "gpu", "resourceClaimTemplateName": "t"}] if claims else None,
    )


CONVERTERS = [
    Converter(vendors.admission_vendors()),
    Converter(vendors.admission_vendors(["nvidia"])),
    Converter([]),
    Converter(vendors.admission_vendors(), opt_out_namespaces=["default"]),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pods())
def test_a_pod_the_conditions_skip_is_one_the_webhook_leaves_alone(conditions: list[Obj], obj: Obj) -> None:
    if sent(conditions, obj):
        return
    before = {**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "ephemeralContainers"}}
    for converter in CONVERTERS:
        result = converter.convert(obj, "default")
        assert result.allowed and not result.patch and result.template is None, (obj, result)
        debugged = converter.check_ephemeral(obj, before)  # the same pod as a kubectl debug UPDATE
        assert debugged.allowed and not debugged.patch, (obj, debugged)
