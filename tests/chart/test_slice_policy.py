"""The own-node policies (ResourceSlices, the Node's status), their CEL evaluated (cel-python) for the
requests that matter."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from . import helm

DRIVER_USER = f"system:serviceaccount:{helm.NAMESPACE}:tessera-driver"
NODE_KEY = "authentication.kubernetes.io/node-name"


def _policy(objs: list[helm.Obj], name: str = "tessera-own-node-slices") -> helm.Obj:
    policy = helm.one(objs, "ValidatingAdmissionPolicy", name)
    binding = helm.one(objs, "ValidatingAdmissionPolicyBinding", name)
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    return policy


def _eval(expr: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr)).evaluate(activation)


def _admit(policy: helm.Obj, *, user: str, node: str | None, op: str, new: str | None, old: str | None) -> str | None:
    """None when admitted, else the denial message (as kube-apiserver evaluates the policy)."""
    obj = None if new is None else {"spec": {"nodeName": new, "driver": "nvidia.tessera.dev"}}
    old_obj = None if old is None else {"spec": {"nodeName": old, "driver": "nvidia.tessera.dev"}}
    return _evaluate(policy, user=user, node=node, op=op, obj=obj, old_obj=old_obj)


def _evaluate(
    policy: helm.Obj, *, user: str, node: str | None, op: str, obj: helm.Obj | None, old_obj: helm.Obj | None
) -> str | None:
    extra = {NODE_KEY: [node]} if node else {}
    request = {"operation": op, "userInfo": {"username": user, "extra": extra}}
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
    activation = {**base, "variables": json_to_cel({k: _plain(v) for k, v in variables.items()})}
    for validation in spec["validations"]:
        if not _eval(validation["expression"], activation):
            if "messageExpression" in validation:
                return str(_eval(validation["messageExpression"], activation))
            return str(validation["message"])
    return None


def _plain(value: Any) -> Any:
    """A CEL value back to JSON-like Python, to feed it in again as a variable."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value)


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


def _node(name: str, *, cpu: str = "16", condition: str = "True") -> helm.Obj:
    return {
        "metadata": {"name": name},
        "status": {
            "capacity": {"cpu": cpu, "memory": "64Gi"},
            "allocatable": {"cpu": cpu, "memory": "62Gi"},
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "TesseraNvidiaSharing", "status": condition},
            ],
        },
    }


@pytest.mark.parametrize(
    ("target", "new", "allowed"),
    [
        ("node-a", _node("node-a", condition="False"), True),  # its own condition on its own node
        ("node-b", _node("node-b", condition="False"), False),  # another node's status
        ("node-a", _node("node-a", cpu="64"), False),  # the kubelet's capacity
    ],
)
def test_driver_may_update_only_its_own_nodes_condition(
    default_objs: list[helm.Obj], target: str, new: helm.Obj, allowed: bool
) -> None:
    policy = _policy(default_objs, "tessera-own-node-status")
    old = _node(target)
    denial = _evaluate(policy, user=DRIVER_USER, node="node-a", op="UPDATE", obj=new, old_obj=old)
    assert (denial is None) == allowed, denial
    # Other service accounts are not this policy's business.
    assert _evaluate(policy, user="system:node:node-b", node=None, op="UPDATE", obj=new, old_obj=old) is None
