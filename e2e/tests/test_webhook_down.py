"""The webhook down: pods Tessera acts on are refused (failurePolicy Fail, never let through
unconverted), every other pod is still created and runs (the chart's matchConditions do not send it)."""

from __future__ import annotations

import pytest

from kubeapi import KubeError

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_gpu_pods_are_refused_and_plain_pods_created_while_the_webhook_is_down(cluster: Cluster, ns: str) -> None:
    await cluster.control.stop_webhook()
    try:
        try:
            await cluster.create(ns, pod("refused", "true", limits={"nvidia.com/gpu": 1}))
        except KubeError as exc:
            # kube-apiserver's words: which webhook, and why it could not be called
            assert exc.status == 500, exc
            assert 'failed calling webhook "pods.tessera.dev"' in exc.reason, exc
            assert "no endpoints available" in exc.reason or "connection refused" in exc.reason, exc
        else:
            raise AssertionError("a GPU pod was admitted while the webhook was down")
        assert await cluster.gone(f"/api/v1/namespaces/{ns}/pods/refused")
        created = await cluster.create(ns, pod("plain", "echo plain"))
        assert not created["spec"].get("resourceClaims")
        assert (await cluster.wait_done(ns, "plain"))["status"]["phase"] == "Succeeded"
    finally:
        await cluster.control.start_webhook()
    created = await cluster.create(ns, pod("refused", "true", limits={"nvidia.com/gpu": 1}))
    assert created["spec"].get("resourceClaims")
    assert (await cluster.wait_done(ns, "refused"))["status"]["phase"] == "Succeeded"
