"""GPU-memory quota per namespace with HAMi's ResourceQuota names: 50 pods created at once against a
quota that fits 10 get exactly 10 admitted, across both webhook replicas (the API server calls them in
turn); deleting one admits the next; a user's own claim is charged too; the usage shows in the
ResourceQuota's status and in the webhooks' metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubeapi import KubeError

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")

PER_POD_MIB = 1024
FITS = 10
LIMIT = "limits.nvidia.com/gpumem"


def _quota(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpu-memory", "namespace": ns},
        "spec": {"hard": {LIMIT: str(FITS * PER_POD_MIB)}},
    }


def _sample(page: str, name: str, **labels: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _used(cluster: Cluster, ns: str) -> str | None:
    quota = await cluster.kube.get(f"/api/v1/namespaces/{ns}/resourcequotas/gpu-memory")
    return ((quota.get("status") or {}).get("used") or {}).get(LIMIT)


async def _create(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | KubeError:
    limits = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": PER_POD_MIB}
    try:
        return await cluster.create(ns, pod(name, "sleep 3600", limits=limits))
    except KubeError as exc:
        return exc


async def test_fifty_pods_at_once_against_a_quota_that_fits_ten(cluster: Cluster, ns: str) -> None:
    await cluster.kube.create(f"/api/v1/namespaces/{ns}/resourcequotas", _quota(ns))

    async def seen() -> bool:  # every replica's reconciler reported the (empty) usage
        return await _used(cluster, ns) == "0"

    await cluster.wait(seen, what="the quota's usage in its status")
    before = [
        _sample(p, "tessera_webhook_quota_checks_total", kind="pod") for p in await cluster.control.webhook_metrics()
    ]

    results = await asyncio.gather(*(_create(cluster, ns, f"burst-{i:02d}") for i in range(50)))
    admitted = [r["metadata"]["name"] for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, KubeError)]
    assert len(admitted) == FITS, [str(r) for r in refused[:2]]
    assert len(refused) == 50 - FITS
    for exc in refused:
        assert exc.status == 403
        assert f"{LIMIT}: used {FITS * PER_POD_MIB}, asked {PER_POD_MIB}, limit {FITS * PER_POD_MIB}" in exc.reason
    pages = await cluster.control.webhook_metrics()
    if len(pages) > 1:  # every replica took part: the limit held across them
        after = [_sample(p, "tessera_webhook_quota_checks_total", kind="pod") for p in pages]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

    # the admitted pods run; their claims (made by the claim controller) took over the charge
    for name in admitted:
        await cluster.wait_running(ns, name)

    async def charged() -> bool:
        return await _used(cluster, ns) == str(FITS * PER_POD_MIB)

    await cluster.wait(charged, what="the usage of the ten claims")
    late = await _create(cluster, ns, "late")
    assert isinstance(late, KubeError) and late.status == 403
    # a user's own claim is charged when it is created
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "mine"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "nvidia.tessera.dev", "capacity": {"requests": {"memory": f"{PER_POD_MIB}Mi"}}}}]}},
    }  # fmt: skip
    with pytest.raises(KubeError) as own:
        await cluster.kube.create(f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims", claim)
    assert own.value.status == 403 and "resource claim mine would exceed" in own.value.reason

    # deleting one pod releases its charge (its claim goes with it), and the next pod is admitted
    await cluster.delete_and_wait(ns, admitted[0])

    async def released() -> bool:
        return await _used(cluster, ns) == str((FITS - 1) * PER_POD_MIB)

    await cluster.wait(released, what="the deleted pod's charge to be released")
    nxt = await _create(cluster, ns, "next")
    assert isinstance(nxt, dict), nxt
    await cluster.wait_running(ns, "next")
    again = await _create(cluster, ns, "one-too-many")
    assert isinstance(again, KubeError) and again.status == 403

    async def metric() -> bool:
        pages = await cluster.control.webhook_metrics()
        return all(
            _sample(p, "hami_resource_quota_used", namespace=ns, quota_name="nvidia.com/gpumem") == FITS * PER_POD_MIB
            for p in pages
        )

    await cluster.wait(metric, what="hami_resource_quota_used on every replica")
