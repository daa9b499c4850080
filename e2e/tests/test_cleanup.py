"""Deleting a pod removes its claim, the CDI spec and the claim directory on the node."""

from __future__ import annotations

import pytest

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_delete_cleans_claims_cdi_specs_and_claim_dirs(cluster: Cluster, ns: str) -> None:
    await cluster.create(ns, pod("doomed", "sleep 3600", limits={"nvidia.com/gpu": 2, "nvidia.com/gpumem": 1000}))
    running = await cluster.wait_running(ns, "doomed")
    node = running["spec"]["nodeName"]
    (claim,) = await cluster.claims(ns, "doomed")
    uid = claim["metadata"]["uid"]
    assert any(uid in f for f in await cluster.control.cdi_specs(node))
    assert uid in await cluster.control.claim_dirs(node)
    await cluster.delete_and_wait(ns, "doomed")
    path = f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{claim['metadata']['name']}"
    await cluster.wait(lambda: cluster.gone(path), what="the claim to go")

    async def node_clean() -> bool:
        return not any(
            uid in f for f in await cluster.control.cdi_specs(node)
        ) and uid not in await cluster.control.claim_dirs(node)

    await cluster.wait(node_clean, what="the CDI spec and claim dir to go")
