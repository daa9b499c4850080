"""Pure parts of the API server stand-in: selectors, patches, defaults."""

from __future__ import annotations

import pytest

from e2e.apiserver import APIError
from e2e.apiserver.kinds import kind_for_plural
from e2e.apiserver.patching import merge_patch, strategic_merge_patch
from e2e.apiserver.selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    selector_from_label_selector,
)
from e2e.apiserver.strategy import apply_defaults, check_update, qos_class


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a in (x, y),b notin (z)", {"a": "y", "b": "w"}, True),
        ("a in (x,y)", {}, False),
        ("a notin (x)", {}, True),
        ("n>3", {"n": "4"}, True),
        ("n<3", {"n": "4"}, False),
        ("tessera.dev/webhook!=ignore", {"tessera.dev/webhook": "ignore"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("bad", ["a in ()", "a=b c", "n>x", "=b"])
def test_bad_label_selectors(bad: str) -> None:
    with pytest.raises(APIError) as exc:
        parse_label_selector(bad)
    assert exc.value.code == 400


def test_label_selector_objects() -> None:
    sel = selector_from_label_selector(
        {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}
    )
    assert sel is not None
    assert labels_match(sel, {"a": "1"}) and not labels_match(sel, {"a": "1", "b": "x"})
    assert labels_match(selector_from_label_selector({}) or [], {"anything": "x"})


def test_field_selectors() -> None:
    pods = kind_for_plural("pods")
    reqs = parse_field_selector("spec.nodeName=,metadata.name!=x", pods.supports_field)
    assert fields_match(reqs, {"metadata": {"name": "y"}, "spec": {}})
    assert not fields_match(reqs, {"metadata": {"name": "y"}, "spec": {"nodeName": "n"}})
    with pytest.raises(APIError):
        parse_field_selector("spec.hostname=a", pods.supports_field)


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None}, "l": [3]}) == {"a": {"c": 2}, "l": [3]}


def test_strategic_merge_patch_merges_keyed_lists() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
                {"name": "b", "image": "y"},
            ],
            "tolerations": [{"key": "t"}],
        },
        "metadata": {"finalizers": ["f1"]},
    }
    patch = {
        "spec": {
            "containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}, {"name": "b", "$patch": "delete"}],
            "tolerations": [{"key": "u"}],
        },
        "metadata": {"finalizers": ["f2"], "$deleteFromPrimitiveList/finalizers": ["f1"]},
    }
    out = strategic_merge_patch(pod, patch)
    assert out["spec"]["containers"] == [
        {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]}
    ]
    assert out["spec"]["tolerations"] == [{"key": "u"}]  # no patch strategy: replaced
    assert out["metadata"]["finalizers"] == ["f2"]


def test_pod_defaults_copy_limits_to_requests() -> None:
    pod = {
        "spec": {
            "containers": [{"name": "c", "image": "ubuntu", "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "1"}}}]
        }
    }
    apply_defaults(kind_for_plural("pods"), pod)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"nvidia.com/gpu": 1, "cpu": "1"}
    assert container["imagePullPolicy"] == "Always"
    assert qos_class(pod) == "Burstable"


def test_claim_defaults_and_immutability() -> None:
    claims = kind_for_plural("resourceclaims")
    claim = {
        "spec": {
            "devices": {
                "requests": [
                    {"name": "a", "exactly": {"deviceClassName": "x"}},
                    {"name": "b", "firstAvailable": [{"name": "s", "deviceClassName": "x", "allocationMode": "All"}]},
                ]
            }
        }
    }
    apply_defaults(claims, claim)
    requests = claim["spec"]["devices"]["requests"]
    assert requests[0]["exactly"] == {"deviceClassName": "x", "allocationMode": "ExactCount", "count": 1}
    assert "count" not in requests[1]["firstAvailable"][0]
    changed = {"spec": {"devices": {"requests": []}}}
    assert check_update(claims, changed, claim) == [("spec", "Invalid value: field is immutable")]
