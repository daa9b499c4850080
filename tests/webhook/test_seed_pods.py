"""Every seed pod converts as docs/webhook.md says; every emitted object and patched pod passes strict validation."""

from __future__ import annotations

import pytest

import vendors
from webhook.convert import CONVERTED_ANNOTATION, TEMPLATE_ANNOTATION, Converter, Result
from webhook.inventory import Inventory

from .conftest import (
    NVIDIA,
    patched,
    pod_vendors,
    registered_vendors,
    requests_of,
    seed_pods,
    validate,
)

SEEDS = seed_pods()


def _check_common(pod: dict, result: Result) -> dict:
    """What holds for every converted pod; returns the patched pod."""
    assert result.allowed, result.message
    assert result.template is not None
    template = result.template
    validate(template)
    new = patched(pod, result)
    validate(new)
    name = template["metadata"]["name"]
    assert name.startswith("tessera-")
    assert template["metadata"]["namespace"] == "default"
    entries = new["spec"]["resourceClaims"]
    assert entries == [{"name": "tessera", "resourceClaimTemplateName": name}]
    assert new["metadata"]["annotations"][TEMPLATE_ANNOTATION] == name
    assert CONVERTED_ANNOTATION in new["metadata"]["annotations"]
    requests = requests_of(template)
    for c in new["spec"]["containers"]:
        resources = c.get("resources") or {}
        for part in ("limits", "requests"):
            assert not any(vendors.vendor_for_resource(r) for r in resources.get(part) or {}), c
        claims = resources.get("claims") or []
        assert claims, f"container {c['name']} lost its devices"
        for ref in claims:
            assert ref["name"] == "tessera" and ref["request"] in requests
    return new


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_pod_converts_or_names_the_missing_vendor(name: str, converter: Converter, inventory: Inventory):
    pod = SEEDS[name]
    result = converter.convert(pod, "default", inventory)
    missing = pod_vendors(pod) - registered_vendors()
    if missing:
        assert not result.allowed
        assert any(f"vendor {v} not enabled" in result.message for v in missing), result.message
        assert set(result.vendors) & missing
        return
    new = _check_common(pod, result)
    # A converted pod passes unchanged (reinvocationPolicy: IfNeeded is safe).
    again = converter.convert(new, "default", inventory)
    assert again.allowed and again.patch == [] and again.template is None


def _nvidia(name: str, converter: Converter, inventory: Inventory) -> tuple[dict, dict, dict]:
    pod = SEEDS[name]
    result = converter.convert(pod, "default", inventory)
    new = _check_common(pod, result)
    assert result.vendors == ("nvidia",)
    assert result.template is not None
    (request,) = requests_of(result.template).values()
    return result.template, request, new


def _config(template: dict) -> list[dict]:
    return template["spec"]["spec"]["devices"]["config"]


def test_gpu_pod12_two_shares_of_10240_mib_and_30_percent(converter: Converter, inventory: Inventory):
    template, request, new = _nvidia("gpu-pod12", converter, inventory)
    assert request["name"] == "ubuntu-container"
    assert request["exactly"] == {
        "deviceClassName": NVIDIA,
        "allocationMode": "ExactCount",
        "count": 2,
        "capacity": {"requests": {"memory": "10240Mi", "cores": "30"}},
    }
    assert template["spec"]["spec"]["devices"]["constraints"] == [
        {"requests": ["ubuntu-container"], "distinctAttribute": f"{NVIDIA}/uuid"}
    ]
    (config,) = _config(template)
    assert config["requests"] == ["ubuntu-container"]
    assert config["opaque"]["driver"] == NVIDIA
    assert config["opaque"]["parameters"] == {
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "SharingConfig",
        "coreLimitPolicy": "default",
        "oversubscribe": False,
    }
    assert new["spec"]["containers"][0]["resources"] == {"claims": [{"name": "tessera", "request": "ubuntu-container"}]}


@pytest.mark.parametrize(("name", "negate"), [("gpu-pod", False), ("gpu-pod2", True)])
def test_type_annotations_become_a_selector_and_count_only_is_a_whole_card(
    name: str, negate: bool, converter: Converter, inventory: Inventory, cel
):
    from .conftest import cel_device, slice_devices

    _, request, _ = _nvidia(name, converter, inventory)
    exactly = request["exactly"]
    assert exactly["count"] == 2
    assert exactly["capacity"] == {"requests": {"cores": "100"}}  # memory: the driver's default, the whole card
    (selector,) = exactly["selectors"]
    picked = {
        dev["attributes"]["type"]["string"]
        for dev in slice_devices()
        if cel.matches(selector["cel"]["expression"], cel_device(dev, NVIDIA))
    }
    assert picked == ({"H200", "L4"} if negate else {"A100"})


def test_priority_env_moves_into_the_opaque_config(converter: Converter, inventory: Inventory):
    template, request, new = _nvidia("gpu-priority-pod", converter, inventory)
    assert request["exactly"]["capacity"] == {"requests": {"memory": "3000Mi", "cores": "30"}}
    assert request["exactly"]["count"] == 1
    assert "constraints" not in template["spec"]["spec"]["devices"]
    (config,) = _config(template)
    assert config["opaque"]["parameters"]["priority"] == 0
    assert "env" not in new["spec"]["containers"][0], "CUDA_TASK_PRIORITY is no longer a user env var"


def test_policy_annotations_are_recorded_on_the_claim(converter: Converter, inventory: Inventory):
    template, request, _ = _nvidia("gpu-policy-pod", converter, inventory)
    assert template["spec"]["metadata"]["annotations"] == {
        "tessera.dev/gpu-scheduler-policy": "binpack",
        "tessera.dev/node-scheduler-policy": "spread",
    }
    assert request["exactly"]["capacity"] == {"requests": {"memory": "4096Mi"}}  # no cores asked: none named


def test_volcano_names_convert_like_nvidia(converter: Converter, inventory: Inventory):
    template, request, new = _nvidia("volcano-gpu-pod12", converter, inventory)
    assert request["exactly"]["count"] == 2
    assert request["exactly"]["capacity"] == {"requests": {"memory": "10240Mi"}}
    assert new["spec"]["schedulerName"] == "volcano"
    gpu12 = converter.convert(SEEDS["gpu-pod12"], "default", inventory)
    assert gpu12.template is not None
    assert gpu12.template["metadata"]["name"] != template["metadata"]["name"]


def test_models_implied_by_resource_names_become_a_selector_that_evaluates(
    converter: Converter, inventory: Inventory, cel
):
    """Ascend's ``huawei.com/Ascend910`` names a chip family; the claim selects exactly those models."""
    import copy

    from .conftest import cel_device, slice_devices

    if "ascend" not in registered_vendors():
        pytest.skip("this build has no Ascend vendor module")
    pod = SEEDS["ascend-pod"]
    result = converter.convert(pod, "default", inventory)
    assert result.allowed and result.template is not None, result.message
    (request,) = requests_of(result.template).values()
    vendor = vendors.admission_vendor("ascend")
    ask = vendor.parse(pod["spec"]["containers"][0])
    assert ask is not None and len(ask.models) > 1
    expressions = [s["cel"]["expression"] for s in request["exactly"]["selectors"]]
    (device,) = slice_devices(vendor.names.driver)[:1]
    for model in [*ask.models, "310P3", "910"]:
        candidate = copy.deepcopy(device)
        candidate["attributes"]["type"] = {"string": model}
        picked = all(cel.matches(e, cel_device(candidate, vendor.names.driver)) for e in expressions)
        assert picked == (model in ask.models), model
