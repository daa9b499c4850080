"""The webhook down: with failurePolicy Fail, pods are refused (never let through unconverted)."""

from __future__ import annotations

import pytest

from kubeapi import KubeError

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_pods_are_refused_while_the_webhook_is_down(cluster: Cluster, ns: str) -> None:
    await cluster.control.stop_webhook()
    try:
        try:
            await cluster.create(ns, pod("refused", "true", limits={"nvidia.com/gpu": 1}))
        except KubeError as exc:
            assert exc.status == 500 and "failed calling webhook" in exc.reason, exc
        else:
            raise AssertionError("a GPU pod was admitted while the webhook was down")
        assert await cluster.gone(f"/api/v1/namespaces/{ns}/pods/refused")
    finally:
        await cluster.control.start_webhook()
    created = await cluster.create(ns, pod("refused", "true", limits={"nvidia.com/gpu": 1}))
    assert created["spec"].get("resourceClaims")
    assert (await cluster.wait_done(ns, "refused"))["status"]["phase"] == "Succeeded"
