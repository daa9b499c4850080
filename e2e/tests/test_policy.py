"""A tenant writes its own ResourceClaim whose opaque config disables the SM limit: the cluster's sharing
policy (the chart's defaults) refuses it at prepare, with the reason on the pod; a claim within the
policy runs with what it asked for."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import DRIVER, SHOW, Cluster, Obj, env_of, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")

REFUSAL = "goes beyond the cluster's sharing policy"


def own_claim(name: str, **config: Any) -> Obj:
    parameters = {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", **config}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": DRIVER,
                            "capacity": {"requests": {"memory": "1Gi", "cores": "20"}},
                        },
                    }
                ],
                "config": [{"requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": parameters}}],
            }
        },
    }


def claiming_pod(name: str, claim: str) -> Obj:
    spec = pod(name, f"{SHOW}; sleep 3600")
    spec["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim}]
    spec["spec"]["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    return spec


async def _refusal(cluster: Cluster, ns: str, name: str) -> str | None:
    """The prepare error as the kubelet reports it: a pod condition (harness) or an event (kubelet)."""
    got = await cluster.get(ns, name)
    for condition in (got.get("status") or {}).get("conditions") or []:
        if REFUSAL in str(condition.get("message", "")):
            return str(condition["message"])
    for event in await cluster.events(ns, name, "FailedPrepareDynamicResources"):
        if REFUSAL in str(event.get("message", "")):
            return str(event["message"])
    return None


async def test_a_tenants_own_claim_cannot_loosen_the_sharing_policy(cluster: Cluster, ns: str) -> None:
    claims = f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims"
    await cluster.kube.create(claims, own_claim("no-sm-limit", coreLimitPolicy="disable"))
    await cluster.kube.create(claims, own_claim("strict", coreLimitPolicy="force"))
    await cluster.create(ns, claiming_pod("loose", "no-sm-limit"))
    await cluster.create(ns, claiming_pod("tight", "strict"))

    async def refused() -> str | None:
        return await _refusal(cluster, ns, "loose")

    message = await cluster.wait(refused, what="the prepare of no-sm-limit to be refused")
    assert f"ResourceClaim {ns}/no-sm-limit" in message and "coreLimitPolicy: disable" in message
    assert "policy.allowCoreLimitDisable" in message
    assert (await cluster.phase(ns, "loose")) != "Running"
    await cluster.wait_running(ns, "tight")
    env = env_of(await cluster.logs_with(ns, "tight", "GPU_CORE_UTILIZATION_POLICY"))
    assert env["GPU_CORE_UTILIZATION_POLICY"] == "force" and env["CUDA_DEVICE_SM_LIMIT_0"] == "20"
