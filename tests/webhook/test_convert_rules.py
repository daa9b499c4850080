"""The conversion rules of docs/webhook.md, one by one, on small pods."""

from __future__ import annotations

import copy
import json

import pytest

import vendors
from vendors.base import MIB, SharingPolicy
from webhook.convert import ALLOWED, CONVERTED_ANNOTATION, TEMPLATE_ANNOTATION, Converter
from webhook.inventory import Inventory

from .conftest import NVIDIA, container, make_pod, patched, requests_of, validate


def _convert(converter: Converter, pod: dict, inventory: Inventory | None = None) -> tuple[dict, dict]:
    result = converter.convert(pod, "team-a", inventory)
    assert result.allowed, result.message
    assert result.template is not None
    validate(result.template)
    new = patched(pod, result)
    validate(new)
    return result.template, new


def _exactly(template: dict, request: str = "c") -> dict:
    return requests_of(template)[request]["exactly"]


def _denied(converter: Converter, pod: dict, *needles: str, inventory: Inventory | None = None) -> str:
    result = converter.convert(pod, "team-a", inventory)
    assert not result.allowed, f"expected a denial, got patch {result.patch}"
    assert result.patch == [] and result.template is None
    for needle in needles:
        assert needle in result.message, result.message
    return result.message


# --- what becomes what ----------------------------------------------------------------------------


def test_count_only_is_a_whole_card(converter: Converter):
    template, _ = _convert(converter, make_pod(container(limits={"nvidia.com/gpu": 1})))
    exactly = _exactly(template)
    assert exactly["count"] == 1
    assert exactly["capacity"] == {"requests": {"cores": "100"}}
    assert "constraints" not in template["spec"]["spec"]["devices"]


def test_memory_without_count_means_one_device_and_no_cores(converter: Converter):
    template, _ = _convert(converter, make_pod(container(limits={"nvidia.com/gpumem": 2048})))
    assert _exactly(template)["count"] == 1
    assert _exactly(template)["capacity"] == {"requests": {"memory": "2048Mi"}}


@pytest.mark.parametrize("name", ["nvidia.com/gpucores", "nvidia.com/gpucore", "volcano.sh/vgpu-cores"])
def test_cores_spellings(converter: Converter, name: str):
    template, _ = _convert(converter, make_pod(container(limits={name: "25"})))
    assert _exactly(template)["capacity"] == {"requests": {"cores": "25"}}


def test_limits_win_over_requests_and_both_are_removed(converter: Converter):
    c = container()
    c["resources"] = {
        "requests": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 100, "cpu": "1"},
        "limits": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 200, "cpu": "2"},
    }
    template, new = _convert(converter, make_pod(c))
    assert _exactly(template)["capacity"] == {"requests": {"memory": "200Mi"}}
    assert new["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1"},
        "limits": {"cpu": "2"},
        "claims": [{"name": "tessera", "request": "c"}],
    }


def test_percentage_becomes_one_subrequest_per_model(converter: Converter, inventory: Inventory, cel):
    from .conftest import cel_device, slice_devices

    pod = make_pod(
        container(limits={"nvidia.com/gpu": 2, "nvidia.com/gpumem-percentage": 25, "nvidia.com/gpucores": 40})
    )
    template, _ = _convert(converter, pod, inventory)
    request = requests_of(template)["c"]
    assert "exactly" not in request
    subs = {s["name"]: s for s in request["firstAvailable"]}
    models = {m.model: m for m in inventory.models(NVIDIA)}
    assert set(subs) == {m.lower() for m in models} == {"a100", "h200", "l4"}
    for model in models.values():
        sub = subs[model.model.lower()]
        assert sub["count"] == 2 and sub["deviceClassName"] == NVIDIA
        assert sub["capacity"]["requests"] == {"memory": f"{model.memory_bytes // MIB // 4}Mi", "cores": "40"}
        (selector,) = sub["selectors"]
        picked = {
            d["attributes"]["type"]["string"]
            for d in slice_devices()
            if cel.matches(selector["cel"]["expression"], cel_device(d, NVIDIA))
        }
        assert picked == {model.model}
    # Constraints and config name the main request and so cover every alternative.
    devices = template["spec"]["spec"]["devices"]
    assert devices["constraints"] == [{"requests": ["c"], "distinctAttribute": f"{NVIDIA}/uuid"}]
    assert devices["config"][0]["requests"] == ["c"]


def test_percentage_without_inventory_is_explained_not_guessed(converter: Converter):
    pod = make_pod(container(limits={"nvidia.com/gpumem-percentage": 50}))
    _denied(converter, pod, "50%", "inventory", "MiB")


def test_percentage_without_published_devices_is_explained(converter: Converter):
    pod = make_pod(container(limits={"nvidia.com/gpumem-percentage": 50}))
    _denied(converter, pod, "no nvidia.tessera.dev devices", inventory=Inventory([]))


def test_full_percentage_is_the_whole_memory_and_needs_no_inventory(converter: Converter):
    template, _ = _convert(converter, make_pod(container(limits={"nvidia.com/gpumem-percentage": 100})))
    assert "capacity" not in _exactly(template)


def test_more_than_eight_models_cannot_be_alternatives(converter: Converter, inventory: Inventory):
    from webhook.inventory import Device

    many = Inventory(
        Device(NVIDIA, "pool", f"gpu-{i}", f"M{i}", f"Model {i}", f"GPU-{i}", (i + 1) * 1024 * MIB) for i in range(9)
    )
    pod = make_pod(container(limits={"nvidia.com/gpumem-percentage": 10}))
    _denied(converter, pod, "9", "at most 8", inventory=many)


def test_memory_larger_than_any_device_is_refused_with_an_inventory(converter: Converter, inventory: Inventory):
    largest = max(m.memory_bytes for m in inventory.models(NVIDIA)) // MIB
    ok = make_pod(container(limits={"nvidia.com/gpumem": largest}))
    _convert(converter, ok, inventory)
    too_big = make_pod(container(limits={"nvidia.com/gpumem": largest + 1}))
    _denied(converter, too_big, f"{largest + 1} MiB", f"{largest} MiB", "H200", inventory=inventory)
    # Without an inventory it cannot be decided: admitted, and the note says what was not checked.
    result = converter.convert(too_big, "team-a", None)
    assert result.allowed and any("not checked" in n for n in result.notes)


def test_uuid_annotations_become_exact_selectors(converter: Converter, cel):
    from .conftest import cel_device, slice_devices

    devices = slice_devices()
    uuids = [d["attributes"]["uuid"]["string"] for d in devices]
    for key, expected in (
        ("nvidia.com/use-gpuuuid", {uuids[0], uuids[5]}),
        ("nvidia.com/nouse-gpuuuid", set(uuids) - {uuids[0], uuids[5]}),
    ):
        pod = make_pod(container(limits={"nvidia.com/gpu": 1}), annotations={key: f"{uuids[0]}, {uuids[5]}"})
        template, _ = _convert(converter, pod)
        (selector,) = _exactly(template)["selectors"]
        picked = {
            d["attributes"]["uuid"]["string"]
            for d in devices
            if cel.matches(selector["cel"]["expression"], cel_device(d, NVIDIA))
        }
        assert picked == expected, key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a100", {"A100"}),  # case-insensitive
        ("H2", {"H200"}),  # substring of the type
        ("NVIDIA L", {"L4"}),  # substring of the product name
        ("A1.0", set()),  # a regex metacharacter is literal: A1.0 does not match A100
        ("A100,L4", {"A100", "L4"}),  # any of a list
    ],
)
def test_type_selector_semantics(converter: Converter, cel, value: str, expected: set[str]):
    from .conftest import cel_device, slice_devices

    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), annotations={"nvidia.com/use-gputype": value})
    template, _ = _convert(converter, pod)
    (selector,) = _exactly(template)["selectors"]
    picked = {
        d["attributes"]["type"]["string"]
        for d in slice_devices()
        if cel.matches(selector["cel"]["expression"], cel_device(d, NVIDIA))
    }
    assert picked == expected


def test_numa_bind_matches_numa_node_of_a_container_with_several_devices(converter: Converter):
    two = make_pod(container(limits={"nvidia.com/gpu": 2}), annotations={"nvidia.com/numa-bind": "true"})
    template, _ = _convert(converter, two)
    assert template["spec"]["spec"]["devices"]["constraints"] == [
        {"requests": ["c"], "distinctAttribute": f"{NVIDIA}/uuid"},
        {"requests": ["c"], "matchAttribute": f"{NVIDIA}/numaNode"},
    ]
    one = make_pod(container(limits={"nvidia.com/gpu": 1}), annotations={"nvidia.com/numa-bind": "true"})
    template, _ = _convert(converter, one)
    assert "constraints" not in template["spec"]["spec"]["devices"]
    bad = make_pod(container(limits={"nvidia.com/gpu": 2}), annotations={"nvidia.com/numa-bind": "yes"})
    _denied(converter, bad, "nvidia.com/numa-bind", '"true"')


def test_init_and_several_containers_share_one_claim(converter: Converter):
    pod = make_pod(
        container("main", limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000}),
        container("side", limits={"cpu": "1"}),
        container("aux", limits={"nvidia.com/gpu": 1, "nvidia.com/priority": 0}),
        init=[container("prep", limits={"nvidia.com/gpumem": 500})],
    )
    template, new = _convert(converter, pod)
    requests = requests_of(template)
    assert list(requests) == ["prep", "main", "aux"]  # init containers first, then containers
    assert new["spec"]["initContainers"][0]["resources"]["claims"] == [{"name": "tessera", "request": "prep"}]
    by_name = {c["name"]: c for c in new["spec"]["containers"]}
    assert by_name["main"]["resources"]["claims"] == [{"name": "tessera", "request": "main"}]
    assert by_name["aux"]["resources"]["claims"] == [{"name": "tessera", "request": "aux"}]
    assert "claims" not in by_name["side"]["resources"]
    configs = template["spec"]["spec"]["devices"]["config"]
    assert sorted(c["requests"] for c in configs) == [["aux"], ["prep", "main"]]
    aux = next(c for c in configs if c["requests"] == ["aux"])
    assert aux["opaque"]["parameters"]["priority"] == 0


def test_core_policy_goes_into_every_config():
    converter = Converter(vendors.admission_vendors(), policy=SharingPolicy(core_limit_policy="force"))
    template, _ = _convert(converter, make_pod(container(limits={"nvidia.com/gpu": 1})))
    (config,) = template["spec"]["spec"]["devices"]["config"]
    assert config["opaque"]["parameters"]["coreLimitPolicy"] == "force"


def test_existing_claims_are_kept_and_our_entry_gets_a_free_name(converter: Converter):
    c = container(limits={"nvidia.com/gpu": 1})
    c["resources"]["claims"] = [{"name": "tessera"}]
    pod = make_pod(c, resourceClaims=[{"name": "tessera", "resourceClaimName": "mine"}])
    template, new = _convert(converter, pod)
    assert new["spec"]["resourceClaims"] == [
        {"name": "tessera", "resourceClaimName": "mine"},
        {"name": "tessera-2", "resourceClaimTemplateName": template["metadata"]["name"]},
    ]
    assert new["spec"]["containers"][0]["resources"]["claims"] == [
        {"name": "tessera"},
        {"name": "tessera-2", "request": "c"},
    ]


def test_zero_count_just_drops_the_resources(converter: Converter):
    pod = make_pod(container(limits={"nvidia.com/gpu": 0, "cpu": "1"}))
    result = converter.convert(pod, "team-a", None)
    assert result.allowed and result.template is None
    new = patched(pod, result)
    assert new["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    assert converter.convert(new, "team-a", None) is ALLOWED


# --- naming and idempotency -------------------------------------------------------------------------


def test_identical_pods_share_a_template_and_different_ones_do_not(converter: Converter):
    a = make_pod(container(limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000}), name="a", labels={"x": "1"})
    b = make_pod(container(limits={"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}), name="b")
    c = make_pod(container(limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1001}), name="c")
    names = [converter.convert(p, "team-a", None).template["metadata"]["name"] for p in (a, b, c)]  # type: ignore[index]
    assert names[0] == names[1] != names[2]
    # The name is a hash of the content, not of the memo: a fresh converter agrees.
    fresh = Converter(vendors.admission_vendors())
    fresh.memo_size = 0
    assert fresh.convert(a, "team-a", None).template["metadata"]["name"] == names[0]  # type: ignore[index]


def test_a_converted_pod_passes_unchanged(converter: Converter, inventory: Inventory):
    pod = make_pod(
        container(
            "a", limits={"nvidia.com/gpu": 2, "nvidia.com/gpumem-percentage": 30}, env=[{"name": "X", "value": "1"}]
        ),
        init=[container("i", limits={"nvidia.com/gpu": 1})],
        annotations={"nvidia.com/use-gputype": "H200,A100"},
    )
    _, new = _convert(converter, pod, inventory)
    again = converter.convert(new, "team-a", inventory)
    assert again.allowed and again.patch == [] and again.template is None


def test_user_set_annotations_under_our_domain_are_overwritten_or_removed(converter: Converter):
    forged = {
        TEMPLATE_ANNOTATION: "tessera-00000000000000000000",
        CONVERTED_ANNOTATION: "{}",
        "tessera.dev/anything": "x",
        "tessera.dev/webhook": "keep",  # the opt-out key is the user's own (any value but ignore)
        "other.io/x": "y",
    }
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), annotations=dict(forged))
    template, new = _convert(converter, pod)
    annotations = new["metadata"]["annotations"]
    assert annotations[TEMPLATE_ANNOTATION] == template["metadata"]["name"]
    assert json.loads(annotations[CONVERTED_ANNOTATION]) == {
        "c": {"requests": ["c"], "resources": {"nvidia.com/gpu": "1"}}
    }
    assert "tessera.dev/anything" not in annotations
    assert annotations["tessera.dev/webhook"] == "keep" and annotations["other.io/x"] == "y"


def test_forged_annotations_on_a_pod_with_claims_are_stripped(converter: Converter):
    c = container()
    c["resources"] = {"claims": [{"name": "gpu"}]}
    pod = make_pod(
        c,
        resourceClaims=[{"name": "gpu", "resourceClaimTemplateName": "tessera-00000000000000000000"}],
        annotations={TEMPLATE_ANNOTATION: "tessera-11111111111111111111", CONVERTED_ANNOTATION: '{"c": {}}'},
    )
    result = converter.convert(pod, "team-a", None)
    assert result.allowed and result.template is None
    assert "tessera.dev/" not in json.dumps(patched(pod, result)["metadata"])
    # ...but when they describe the pod (our own conversion), the pod passes unchanged.
    pod["metadata"]["annotations"] = {
        TEMPLATE_ANNOTATION: "tessera-00000000000000000000",
        CONVERTED_ANNOTATION: '{"c": {"requests": []}}',
    }
    assert converter.convert(pod, "team-a", None).patch == []


def test_pods_without_accelerators_take_the_fast_path(converter: Converter):
    plain = make_pod(container(limits={"cpu": "1", "memory": "1Gi"}), init=[container("i")])
    assert converter.convert(plain, "team-a", None) is ALLOWED
    # Isolation env is only policed in pods that use shared devices.
    env = make_pod(container(env=[{"name": "CUDA_DEVICE_MEMORY_LIMIT_0", "value": "1m"}]))
    assert converter.convert(env, "team-a", None) is ALLOWED


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_opt_out_leaves_the_pod_alone_where_the_admin_allows_it(where: str):
    converter = Converter(vendors.admission_vendors(), opt_out_namespaces=["team-a"])
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), **{where: {"tessera.dev/webhook": "ignore"}})  # type: ignore[arg-type]
    result = converter.convert(pod, "team-a", None)
    assert result.allowed and result.patch == [] and result.template is None and not result.warnings
    # Anywhere else the opt-out is not honoured: the pod is converted and its author is told why.
    elsewhere = converter.convert(pod, "team-b", None)
    assert elsewhere.allowed and elsewhere.template is not None
    (warning,) = elsewhere.warnings
    assert "webhook.optOutNamespaces" in warning and "'team-b'" in warning


# --- denials ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "needles"),
    [
        ({"nvidia.com/gpu": -1}, ["nvidia.com/gpu", "negative"]),
        ({"nvidia.com/gpu": "two"}, ["nvidia.com/gpu", "whole number"]),
        ({"nvidia.com/gpu": 1.5}, ["nvidia.com/gpu", "whole number"]),
        ({"nvidia.com/gpumem": "1500m"}, ["nvidia.com/gpumem", "whole number", "must be an integer"]),
        ({"nvidia.com/gpu": "1e-3"}, ["nvidia.com/gpu", "must be an integer"]),
        ({"nvidia.com/gpumem": [1]}, ["nvidia.com/gpumem", "whole number"]),
        ({"nvidia.com/gpumem-percentage": 101}, ["between 0 and 100"]),
        ({"nvidia.com/gpucores": 101}, ["at most 100"]),
        ({"nvidia.com/gpu": 1, "nvidia.com/priority": 2}, ["0 (high) or 1 (low)"]),
        (
            {"nvidia.com/mig-1g.5gb": 1},
            ["nvidia.com/mig-1g.5gb", "not a nvidia resource", "tessera.dev/webhook=ignore"],
        ),
    ],
)
def test_bad_values_are_denied_with_the_resource_named(converter: Converter, limits: dict, needles: list[str]):
    _denied(converter, make_pod(container(limits=limits)), *needles)


def test_privileged_container_asking_for_a_share_is_denied(converter: Converter):
    c = container(limits={"nvidia.com/gpu": 1}, securityContext={"privileged": True})
    _denied(converter, make_pod(c), "'c' is privileged")
    with_claims = container(securityContext={"privileged": True})
    with_claims["resources"] = {"claims": [{"name": "x"}]}
    _denied(converter, make_pod(with_claims, resourceClaims=[{"name": "x", "resourceClaimName": "y"}]), "privileged")
    # A privileged sidecar in a pod that uses shares could reach the devices without the library.
    sidecar = container("s", securityContext={"privileged": True})
    _denied(converter, make_pod(container(limits={"nvidia.com/gpu": 1}), sidecar), "'s' is privileged", "own")
    # A privileged container in a pod without accelerators is not ours to police.
    plain = converter.convert(make_pod(container(), sidecar), "team-a")
    assert plain.allowed and plain.patch == []


def test_node_name_is_denied(converter: Converter):
    _denied(converter, make_pod(container(limits={"nvidia.com/gpu": 1}), nodeName="n1"), "nodeName", "nodeSelector")


@pytest.mark.parametrize(
    "env",
    [
        {"name": "CUDA_DEVICE_MEMORY_LIMIT", "value": "1g"},
        {"name": "CUDA_DEVICE_MEMORY_LIMIT_0", "value": "1g"},
        {"name": "CUDA_DEVICE_SM_LIMIT_1", "value": "100"},
        {"name": "CUDA_DISABLE_CONTROL", "value": "true"},
        {"name": "LD_PRELOAD", "value": "/opt/x.so:/usr/local/tessera/libvgpu.so"},
    ],
)
def test_user_set_isolation_env_is_denied_in_any_container(converter: Converter, env: dict):
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), container("other", env=[env]))
    _denied(converter, pod, "'other'", env["name"] if env["name"] != "LD_PRELOAD" else "libvgpu")
    with_claims = container(env=[env])
    with_claims["resources"] = {"claims": [{"name": "x"}]}
    _denied(converter, make_pod(with_claims, resourceClaims=[{"name": "x", "resourceClaimName": "y"}]))


def test_unrelated_ld_preload_is_fine(converter: Converter):
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}, env=[{"name": "LD_PRELOAD", "value": "/opt/jemalloc.so"}]))
    _convert(converter, pod)


def test_vendor_not_enabled():
    converter = Converter([])
    msg = _denied(Converter([]), make_pod(container(limits={"nvidia.com/gpu": 1})), "vendor nvidia not enabled")
    assert "--vendors" in msg
    assert converter.convert(make_pod(container(limits={"cpu": "1"})), "team-a", None) is ALLOWED


def test_other_vendors_are_enabled_or_refused_by_the_registry(converter: Converter):
    registered = {v.names.vendor for v in vendors.admission_vendors()}
    for vendor, resource in (("hygon", "hygon.com/dcunum"), ("cambricon", "cambricon.com/vmlu")):
        result = converter.convert(make_pod(container(limits={resource: 1})), "team-a", None)
        assert result.vendors == (vendor,)
        if vendor not in registered:
            assert not result.allowed and f"vendor {vendor} not enabled" in result.message


@pytest.mark.parametrize(
    ("annotations", "needle"),
    [
        ({"hami.io/node-scheduler-policy": "pack"}, "binpack, spread"),
        ({"hami.io/gpu-scheduler-policy": "binpack,closest"}, "topology-aware"),
    ],
)
def test_bad_policy_annotations_are_denied(converter: Converter, annotations: dict, needle: str):
    _denied(converter, make_pod(container(limits={"nvidia.com/gpu": 1}), annotations=annotations), needle)


def test_policy_chain_is_kept(converter: Converter):
    pod = make_pod(
        container(limits={"nvidia.com/gpu": 1}), annotations={"hami.io/gpu-scheduler-policy": "binpack, numa"}
    )
    template, _ = _convert(converter, pod)
    assert template["spec"]["metadata"]["annotations"] == {"tessera.dev/gpu-scheduler-policy": "binpack,numa"}


def test_limits_of_one_claim(converter: Converter):
    many = [container(f"c{i}", limits={"nvidia.com/gpu": 1}) for i in range(33)]
    _denied(converter, make_pod(*many), "33 containers", "at most 32")
    bound = [container(f"c{i}", limits={"nvidia.com/gpu": 2}) for i in range(17)]
    _denied(converter, make_pod(*bound, annotations={"nvidia.com/numa-bind": "true"}), "34 device constraints", "split")
    huge = ",".join(f"GPU-{i:040d}" for i in range(300))
    _denied(
        converter,
        make_pod(container(limits={"nvidia.com/gpu": 1}), annotations={"nvidia.com/use-gpuuuid": huge}),
        "10240",
    )


def test_container_names_must_make_request_names(converter: Converter):
    _denied(converter, make_pod(container("Bad_Name", limits={"nvidia.com/gpu": 1})), "DNS label")


def test_pod_without_namespace_cannot_get_a_template(converter: Converter):
    result = converter.convert(make_pod(container(limits={"nvidia.com/gpu": 1})), "", None)
    assert not result.allowed and "namespace" in result.message


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.__setitem__("spec", []),
        lambda p: p["spec"].__setitem__("containers", {"a": 1}),
        lambda p: p["spec"]["containers"].append("x"),
        lambda p: p["spec"]["containers"][0].__setitem__("resources", "lots"),
        lambda p: p["spec"]["containers"][0]["resources"].__setitem__("limits", [1]),
        lambda p: p["spec"]["containers"][0].__setitem__("env", {"A": "1"}),
        lambda p: p["metadata"].__setitem__("annotations", {"a": 1}),
        lambda p: p["spec"]["containers"][0].pop("name"),
        lambda p: p["spec"].__setitem__("resourceClaims", "x"),
    ],
)
def test_malformed_pods_are_denied_as_malformed(converter: Converter, mangle):
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), annotations={})
    mangle(pod)
    result = converter.convert(copy.deepcopy(pod), "team-a", None)
    assert not result.allowed and result.malformed and result.message


@pytest.mark.parametrize("metadata", [None, "absent"])
def test_a_pod_without_metadata_still_gets_a_patch_that_applies(converter: Converter, metadata):
    """Found by the property test: the annotations patch must create metadata when there is none."""
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}))
    if metadata == "absent":
        del pod["metadata"]
    else:
        pod["metadata"] = None
    result = converter.convert(pod, "team-a", None)
    assert result.allowed
    new = patched(pod, result)
    assert new["metadata"]["annotations"][TEMPLATE_ANNOTATION] == result.template["metadata"]["name"]  # type: ignore[index]
    assert converter.convert(new, "team-a", None).patch == []


def test_hami_scheduler_name_is_dropped_other_schedulers_kept(converter: Converter):
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), schedulerName="hami-scheduler")
    _, new = _convert(converter, pod)
    assert "schedulerName" not in new["spec"]
    pod = make_pod(container(limits={"nvidia.com/gpu": 1}), schedulerName="volcano")
    _, new = _convert(converter, pod)
    assert new["spec"]["schedulerName"] == "volcano"
    # A pod without accelerators keeps whatever scheduler it names.
    plain = make_pod(container(), schedulerName="hami-scheduler")
    assert converter.convert(plain, "default").patch == []
