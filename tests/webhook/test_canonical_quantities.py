"""Pods as kube-apiserver sends them: every quantity in canonical form (``3000`` arrives as ``"3k"``).

The canonical form is made by the API server stand-in's own canonicalizer (:mod:`e2e.apiserver.quantities`,
apimachinery's rules, written apart from the product's parser); a pod must convert exactly as its
plain form does, read with HAMi's unit semantics (``nvidia.com/gpumem: 3k`` is 3000 MiB).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vendors
from e2e.allocator.quantity import canonical
from e2e.apiserver import kinds, quantities
from tessera_common.quantity import parse_quantity
from webhook.convert import CONVERTED_ANNOTATION, Converter, Result
from webhook.inventory import Inventory
from webhook.templates import contains

from .conftest import INVENTORY, container, make_pod, seed_pods, vendor_slices

SEEDS = seed_pods()
POD = kinds.kind_for_plural("pods")


def as_sent(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as kube-apiserver hands it to the webhook (every Quantity canonical)."""
    out = copy.deepcopy(pod)
    quantities.canonicalize(POD, out)
    return out


def _record(result: Result) -> dict[str, Any] | None:
    for op in result.patch:
        if op["path"].endswith(CONVERTED_ANNOTATION.replace("/", "~1")):
            return dict(json.loads(op["value"]))
        if op["path"] in ("/metadata", "/metadata/annotations"):
            annotations = op["value"].get("annotations", op["value"])
            if CONVERTED_ANNOTATION in annotations:
                return dict(json.loads(annotations[CONVERTED_ANNOTATION]))
    return None


def _comparable(result: Result) -> tuple[Any, ...]:
    """What a conversion decides: the patch and template, the record's values read as numbers."""
    record = _record(result)
    if record is not None:
        for entry in record.values():
            entry["resources"] = {k: parse_quantity(v) for k, v in entry.get("resources", {}).items()}
    patch = [op for op in result.patch if CONVERTED_ANNOTATION.replace("/", "~1") not in op["path"]]
    patch = [op for op in patch if op["path"] not in ("/metadata", "/metadata/annotations")]
    return result.allowed, patch, result.template, record


def assert_same(plain: Result, sent: Result) -> None:
    assert plain.allowed == sent.allowed, (plain.message, sent.message)
    if plain.allowed:
        assert _comparable(plain) == _comparable(sent)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_pod_converts_the_same_as_kube_apiserver_sends_it(
    name: str, converter: Converter, inventory: Inventory
) -> None:
    pod = SEEDS[name]
    sent = as_sent(pod)
    limits = [c["resources"]["limits"] for c in sent["spec"]["containers"] if c.get("resources")]
    assert all(isinstance(v, str) for lim in limits for v in lim.values())  # every value is a string now
    plain_result = converter.convert(pod, "default", inventory)
    sent_result = converter.convert(sent, "default", inventory)
    assert plain_result.allowed, plain_result.message
    assert_same(plain_result, sent_result)


def test_the_seed_pod_that_a_real_cluster_sends_as_3k_is_converted_as_3000_mib(
    converter: Converter, inventory: Inventory
) -> None:
    sent = as_sent(SEEDS["gpu-priority-pod"])
    assert sent["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] == "3k"
    result = converter.convert(sent, "default", inventory)
    assert result.allowed, result.message
    assert result.template is not None
    (request,) = result.template["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["capacity"]["requests"]["memory"] == "3000Mi"


@pytest.mark.parametrize(
    ("written", "sent"),
    [(3000, "3k"), (8000, "8k"), ("2048Mi", "2Gi"), ("0.5", "500m"), ("1.5Gi", "1536Mi"), ("1e3", "1e3"),
     ("10e2", "1e3"), (10240, "10240"), ("1000m", "1"), ("+5", "+5"), ("1024Ki", "1Mi"), ("0.5Ki", "512")],
)  # fmt: skip
def test_the_stand_in_canonicalizes_as_apimachinery(written: object, sent: str) -> None:
    assert canonical(written) == sent


def test_memory_in_binary_units_is_read_as_hami_reads_it(converter: Converter, inventory: Inventory) -> None:
    # HAMi takes Quantity.Value(): 10Gi of nvidia.com/gpumem is 10737418240 MiB, larger than any card
    huge = as_sent(make_pod(container(limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": "10Gi"})))
    result = converter.convert(huge, "default", inventory)
    assert not result.allowed and "10737418240 MiB" in result.message and "largest" in result.message
    # 1Ki of it is 1024 MiB, a share like any other
    small = converter.convert(as_sent(make_pod(container(limits={"nvidia.com/gpumem": "1Ki"}))), "default", inventory)
    plain = converter.convert(make_pod(container(limits={"nvidia.com/gpumem": 1024})), "default", inventory)
    assert small.allowed and _comparable(small)[2] == _comparable(plain)[2]


@pytest.mark.parametrize("value", ["1500m", "0.5", "1e-3", "2.5"])
def test_fractions_are_refused_as_kube_apiserver_refuses_them(
    value: str, converter: Converter, inventory: Inventory
) -> None:
    for limits in ({"nvidia.com/gpu": value}, {"nvidia.com/gpu": 1, "nvidia.com/gpumem": value}):
        result = converter.convert(as_sent(make_pod(container(limits=limits))), "default", inventory)
        assert not result.allowed and "must be an integer" in result.message, result.message


def test_the_inventory_reads_canonical_slices_as_plain_ones() -> None:
    import yaml

    with open(INVENTORY, encoding="utf-8") as handle:
        slices = [doc for doc in yaml.safe_load_all(handle) if doc] + vendor_slices()
    sent = copy.deepcopy(slices)
    for s in sent:
        quantities.canonicalize(kinds.kind_for_plural("resourceslices"), s)
    assert sent != slices  # 81920Mi is sent as 80Gi, '100' as 100 ...
    plain, canon = Inventory.from_slices(slices), Inventory.from_slices(sent)
    for driver in {s["spec"]["driver"] for s in slices}:
        assert plain.models(driver) == canon.models(driver)
        assert plain.largest(driver) == canon.largest(driver)


# --- property: any spelling of a number, once canonical, converts as the number ----------------------


def spellings(n: int) -> st.SearchStrategy[object]:
    """Ways a user may write the whole number ``n`` (kube-apiserver canonicalizes each)."""
    forms: list[object] = [n, str(n), f"+{n}", f"0{n}", f"{n}.0", f"{n * 1000}m", f"{n}e0", f"{n * 10}e-1"]
    for exp, suffix in ((3, "k"), (6, "M")):
        forms.append(f"{Decimal(n).scaleb(-exp).normalize():f}{suffix}")
    if n % 1024 == 0:
        forms.append(f"{n // 1024}Ki")
    if n % 10 == 0:
        forms.append(f"{n // 10}e1")
    return st.sampled_from(forms)


def _extended_values(pod: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [
        (i, part, name)
        for i, c in enumerate(pod["spec"]["containers"])
        for part in ("limits", "requests")
        for name in (c.get("resources") or {}).get(part) or {}
        if vendors.vendor_for_resource(name)
    ]


@st.composite
def respelled_pods(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a pod with plain numbers, the same pod with each number spelled some other way)."""
    pod = copy.deepcopy(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    spelled = copy.deepcopy(pod)
    for i, part, name in _extended_values(pod):
        original = int(pod["spec"]["containers"][i]["resources"][part][name])
        n = draw(st.one_of(st.just(original), st.integers(0, max(4 * original, 4))))
        pod["spec"]["containers"][i]["resources"][part][name] = n
        spelled["spec"]["containers"][i]["resources"][part][name] = draw(spellings(n))
    return pod, spelled


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=respelled_pods())
def test_any_spelling_sent_canonically_converts_as_the_plain_number(
    pair: tuple[dict[str, Any], dict[str, Any]], converter: Converter, inventory: Inventory
) -> None:
    plain, spelled = pair
    sent = as_sent(spelled)
    assert_same(converter.convert(plain, "default", inventory), converter.convert(sent, "default", inventory))
    assert_same(converter.convert(plain, "default", inventory), converter.convert(as_sent(plain), "default", inventory))


def test_a_template_read_back_in_canonical_form_is_recognised_as_ours(
    converter: Converter, inventory: Inventory
) -> None:
    # The API server keeps 10240Mi as 10Gi: a template that exists already (a webhook restart, another
    # replica) must still be seen to hold our content, or every such pod would be refused.
    result = converter.convert(SEEDS["gpu-pod12"], "default", inventory)
    assert result.template is not None
    stored = copy.deepcopy(result.template)
    quantities.canonicalize(kinds.kind_for_plural("resourceclaimtemplates"), stored)
    capacity = stored["spec"]["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]
    assert capacity["memory"] == "10Gi"
    assert contains(result.template["spec"], stored["spec"])
    capacity["memory"] = "11Gi"
    assert not contains(result.template["spec"], stored["spec"])
