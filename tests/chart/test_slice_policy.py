"""The own-node ResourceSlice policy, its CEL evaluated (cel-python) for the requests that matter."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from . import helm

DRIVER_USER = f"system:serviceaccount:{helm.NAMESPACE}:tessera-driver"
NODE_KEY = "authentication.kubernetes.io/node-name"


def _policy(objs: list[helm.Obj]) -> helm.Obj:
    policy = helm.one(objs, "ValidatingAdmissionPolicy")
    binding = helm.one(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    return policy


def _eval(expr: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr)).evaluate(activation)


def _admit(policy: helm.Obj, *, user: str, node: str | None, op: str, new: str | None, old: str | None) -> str | None:
    """None when admitted, else the denial message (as kube-apiserver evaluates the policy)."""
    extra = {NODE_KEY: [node]} if node else {}
    request = {"operation": op, "userInfo": {"username": user, "extra": extra}}
    obj = None if new is None else {"spec": {"nodeName": new, "driver": "nvidia.tessera.dev"}}
    old_obj = None if old is None else {"spec": {"nodeName": old, "driver": "nvidia.tessera.dev"}}
    base = {
        "request": json_to_cel(request),
        "object": json_to_cel(obj),
        "oldObject": json_to_cel(old_obj),
    }
    spec = policy["spec"]
    if not all(_eval(c["expression"], base) for c in spec["matchConditions"]):
        return None
    variables: dict[str, Any] = {}
    for var in spec["variables"]:
        variables[var["name"]] = _eval(var["expression"], {**base, "variables": json_to_cel(variables)})
    activation = {**base, "variables": json_to_cel({k: str(v) for k, v in variables.items()})}
    for validation in spec["validations"]:
        if not _eval(validation["expression"], activation):
            if "messageExpression" in validation:
                return str(_eval(validation["messageExpression"], activation))
            return str(validation["message"])
    return None


@pytest.mark.parametrize(
    ("op", "new", "old", "allowed"),
    [
        ("CREATE", "node-a", None, True),
        ("UPDATE", "node-a", "node-a", True),
        ("DELETE", None, "node-a", True),
        ("CREATE", "node-b", None, False),
        ("UPDATE", "node-b", "node-b", False),
        ("UPDATE", "node-a", "node-b", False),  # taking over another node's slice
        ("UPDATE", "node-b", "node-a", False),  # handing one's slice to another node
        ("DELETE", None, "node-b", False),
    ],
)
def test_driver_may_touch_only_its_own_nodes_slices(
    default_objs: list[helm.Obj], op: str, new: str | None, old: str | None, allowed: bool
) -> None:
    denial = _admit(_policy(default_objs), user=DRIVER_USER, node="node-a", op=op, new=new, old=old)
    assert (denial is None) == allowed, denial
    if not allowed:
        assert "node-a" in str(denial)


def test_request_without_node_info_is_refused_with_the_fix(default_objs: list[helm.Obj]) -> None:
    denial = _admit(_policy(default_objs), user=DRIVER_USER, node=None, op="CREATE", new="node-a", old=None)
    assert denial and "ServiceAccountTokenPodNodeInfo" in denial and "restrictSlicesToOwnNode" in denial


def test_other_users_are_not_affected(default_objs: list[helm.Obj]) -> None:
    for user in ("system:node:node-b", "system:serviceaccount:other:tessera-driver", "admin"):
        assert _admit(_policy(default_objs), user=user, node=None, op="DELETE", new=None, old="node-a") is None


def test_the_policy_names_the_drivers_service_account(default_objs: list[helm.Obj]) -> None:
    (ds,) = helm.find(default_objs, "DaemonSet")
    sa = helm.pod_spec(ds)["serviceAccountName"]
    assert f"system:serviceaccount:{helm.NAMESPACE}:{sa}" == DRIVER_USER
    assert _policy(default_objs)["spec"]["failurePolicy"] == "Fail"


def test_policy_can_be_turned_off(helm_home: Any) -> None:
    objs = helm.render(helm_home, sets={"driver.restrictSlicesToOwnNode": "false"})
    assert not helm.find(objs, "ValidatingAdmissionPolicy") and not helm.find(objs, "ValidatingAdmissionPolicyBinding")
