"""Quota per namespace over the real wire: two webhook replicas (HTTPS, trustme CA) behind the chart's
Mutating/ValidatingWebhookConfigurations in the API server stand-in, which calls them in turn; pods and
claims created through the API; the ledgers, ResourceQuota status and metrics read back."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web

import vendors
from e2e.apiserver import APIServer
from e2e.cluster.harness import render_chart
from e2e.controllers.claims import claim_from_template
from kubeapi import KubeClient, KubeError
from webhook import quota as q
from webhook import server
from webhook.convert import Converter
from webhook.ledger import LedgerStore, ledger_name
from webhook.metrics import Metrics
from webhook.quota_controller import QuotaController
from webhook.server import Webhook
from webhook.templates import TemplateStore
from webhook.tls import ReloadingTLS

from .conftest import INVENTORY

HOME = "tessera-system"
SERVICE = "tessera-webhook"
NS = "team-a"
PODS = f"/api/v1/namespaces/{NS}/pods"
CLAIMS = f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims"
QUOTAS = f"/api/v1/namespaces/{NS}/resourcequotas"


@dataclass
class Replica:
    webhook: Webhook
    metrics: Metrics
    runner: web.AppRunner
    client: KubeClient
    url: str


@dataclass
class Cluster:
    api: APIServer
    kube: KubeClient
    replicas: list[Replica]
    ssl: ssl.SSLContext

    def ledger(self, namespace: str = NS) -> q.Ledger | None:
        obj = self.api.store.raw("configmaps", HOME, ledger_name(namespace))
        return None if obj is None else q.Ledger.from_data(namespace, obj.get("data"))

    async def wait(self, check: Any, what: str, timeout: float = 10.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = check()
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def metrics(self, replica: Replica) -> str:
        async with aiohttp.ClientSession() as http, http.get(replica.url + "/metrics", ssl=self.ssl) as resp:
            return await resp.text()


def gpu_pod(name: str, memory: int = 1024) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox", "resources": {"limits": limits}}]},
    }


def user_claim(name: str, memory: str = "1Gi", device_class: str = "nvidia.tessera.dev") -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": device_class, "count": 1}}
    if memory:
        request["exactly"]["capacity"] = {"requests": {"memory": memory}}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [request]}},
    }


def resource_quota(hard: dict[str, str], name: str = "gpu") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}


async def claim_for(cluster: Cluster, pod: dict[str, Any]) -> dict[str, Any]:
    """The claim controller's part: the claim made from the pod's template (it goes through /validate)."""
    entry = pod["spec"]["resourceClaims"][0]
    template = await cluster.kube.get(
        f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaimtemplates/{entry['resourceClaimTemplateName']}"
    )
    return await cluster.kube.create(CLAIMS, claim_from_template(pod, entry["name"], template))


async def _replica(api: APIServer, kubeconfig: str, cert: tuple[str, str], *, resync: float) -> Replica:
    client = await KubeClient.connect(kubeconfig, timeout=5.0)
    metrics = Metrics()
    tls = ReloadingTLS(*cert, interval=60, on_reload=lambda ok: None)
    webhook = Webhook(
        Converter(vendors.admission_vendors()),
        client=client,
        metrics=metrics,
        templates=TemplateStore(client, metrics, deadline=2.0, backoff=0.05),
        tls=tls,
        inventory_refresh=0.5,
    )
    webhook.quota = QuotaController(
        client,
        q.Catalog(vendors.admission_vendors()),
        LedgerStore(client, HOME, metrics, deadline=2.0),
        metrics,
        inventory=lambda: webhook.inventory,
        resync=resync,
        grace=1.0,
        pending=30.0,
    )
    runner = web.AppRunner(webhook.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context)
    await site.start()
    port = runner.addresses[0][1]
    for _ in range(200):
        if webhook.inventory is not None and webhook.quota.synced:
            break
        await asyncio.sleep(0.02)
    return Replica(webhook, metrics, runner, client, f"https://127.0.0.1:{port}")


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    monkeypatch.setattr(server, "READY_CACHE_SECONDS", 0.0)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", f"{SERVICE}.{HOME}.svc")
    cert_file, key_file = str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
    issued.cert_chain_pems[0].write_to_path(cert_file)
    issued.private_key_pem.write_to_path(key_file)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    chart = await asyncio.to_thread(render_chart)
    async with APIServer.running() as api:
        for doc in yaml.safe_load_all(INVENTORY.read_text(encoding="utf-8")):
            if doc:
                api.store.put(doc)
        for ns in (HOME, NS):
            api.store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        replicas = [await _replica(api, kubeconfig, (cert_file, key_file), resync=0.3) for _ in range(2)]
        api.webhooks.services[(HOME, SERVICE)] = [("127.0.0.1", int(r.url.rsplit(":", 1)[1])) for r in replicas]
        for doc in chart:
            if doc["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                for hook in doc["webhooks"]:
                    hook["clientConfig"]["caBundle"] = base64.b64encode(ca.cert_pem.bytes()).decode()
                api.store.put(doc)
        kube = await KubeClient.connect(kubeconfig, timeout=10.0)
        try:
            yield Cluster(api, kube, replicas, context)
        finally:
            await kube.close()
            for replica in replicas:
                await replica.runner.cleanup()
                await replica.client.close()


async def _create(cluster: Cluster, path: str, obj: dict[str, Any]) -> dict[str, Any] | KubeError:
    try:
        return await cluster.kube.create(path, obj)
    except KubeError as exc:
        return exc


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_fifty_pods_on_two_replicas_admit_exactly_what_fits_and_claims_take_over(cluster: Cluster) -> None:
    await cluster.kube.create(QUOTAS, resource_quota({"limits.nvidia.com/gpumem": "10240"}))
    await cluster.wait(lambda: all(r.webhook.quota and r.webhook.quota.quotas.cache for r in cluster.replicas), "quota")
    results = await asyncio.gather(*(_create(cluster, PODS, gpu_pod(f"p{i:02d}")) for i in range(50)))
    admitted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, KubeError)]
    assert len(admitted) == 10, [str(r) for r in refused[:3]]
    assert len(refused) == 40
    for exc in refused:
        assert exc.status == 403, exc
        assert "limits.nvidia.com/gpumem: used 10240, asked 1024, limit 10240 (MiB; ResourceQuota gpu)" in exc.reason
        assert "Delete pods or resource claims in team-a" in exc.reason
    # both replicas checked pods against the quota (the API server calls them in turn): the limit held
    # across them, whichever won the ledger's compare-and-swap
    total = 0.0
    for replica in cluster.replicas:
        page = await cluster.metrics(replica)
        checks = [
            _sample(page, "tessera_webhook_quota_checks_total", kind="pod", result=r) or 0
            for r in ("admitted", "denied")
        ]
        assert sum(checks) >= 20, checks
        total += checks[0]
    assert total == 10
    ledger = cluster.ledger()
    assert ledger is not None and len(ledger.pending) == 10 and not ledger.claims

    # the claim controller makes the pods' claims: each takes its pod's reservation, on either replica
    claims = await asyncio.gather(*(claim_for(cluster, pod) for pod in admitted))
    ledger = cluster.ledger()
    assert ledger is not None and not ledger.pending
    assert set(ledger.claims) == {c["metadata"]["uid"] for c in claims}
    assert ledger.used(0) == {"nvidia.com/gpumem": 10240}

    # a user's own claim is charged when created: the namespace is full
    with pytest.raises(KubeError) as full:
        await cluster.kube.create(CLAIMS, user_claim("mine"))
    assert full.value.status == 403 and "resource claim mine would exceed" in full.value.reason
    assert "used 10240, asked 1024, limit 10240" in full.value.reason

    # deleting one pod's claim releases it (the reconciler's watch); the next pod is then admitted
    gone = claims[0]
    await cluster.kube.delete(f"{CLAIMS}/{gone['metadata']['name']}")
    await cluster.wait(lambda: (led := cluster.ledger()) is not None and gone["metadata"]["uid"] not in led.claims,
                       "the deleted claim to be released")  # fmt: skip
    assert isinstance(await _create(cluster, PODS, gpu_pod("next")), dict)
    again = await _create(cluster, PODS, gpu_pod("one-too-many"))
    assert isinstance(again, KubeError) and again.status == 403


async def test_claims_are_counted_when_the_quota_comes_and_usage_is_reported(cluster: Cluster) -> None:
    # claims made before any quota: allowed (nothing to charge) ...
    for name in ("a", "b"):
        await cluster.kube.create(CLAIMS, user_claim(name, "2Gi"))
    whole = await cluster.kube.create(CLAIMS, user_claim("whole", ""))  # no memory: a whole card
    assert cluster.ledger() is None
    # ... and counted once a quota names our resources (the ledger is rebuilt from the claims)
    await cluster.kube.create(
        QUOTAS, resource_quota({"limits.nvidia.com/gpumem": "200000", "limits.nvidia.com/gpucores": "300", "pods": "9"})
    )
    ledger = await cluster.wait(cluster.ledger, "the ledger")
    assert ledger.used(0) == {"nvidia.com/gpumem": 4096 + 143771}
    assert whole["metadata"]["uid"] in ledger.claims

    def reported() -> dict[str, str] | None:
        quota = cluster.api.store.raw("resourcequotas", NS, "gpu")
        used = ((quota or {}).get("status") or {}).get("used") or {}
        return used if used.get("limits.nvidia.com/gpumem") == str(4096 + 143771) else None

    used = await cluster.wait(reported, "status.used of the ResourceQuota")
    assert used["limits.nvidia.com/gpucores"] == "0"
    assert "pods" not in used  # the quota controller's names are left alone
    for replica in cluster.replicas:
        page = await cluster.metrics(replica)
        labels = {"namespace": NS, "quota_name": "nvidia.com/gpumem", "zone": "vGPU"}
        assert _sample(page, "hami_resource_quota_used", limit="200000", **labels) == 4096 + 143771
        assert _sample(page, "hami_resource_quota_limit", **labels) == 200000

    # the ledger deleted by hand is rebuilt from the claims that exist
    cluster.api.store.delete("configmaps", HOME, ledger_name(NS))
    rebuilt = await cluster.wait(cluster.ledger, "the ledger to be rebuilt")
    assert rebuilt.used(0) == {"nvidia.com/gpumem": 4096 + 143771}
    # a ledger someone scribbled over is rebuilt too
    cluster.api.store.put(
        {**cluster.api.store.raw("configmaps", HOME, ledger_name(NS)), "data": {"ledger.json": "{}"}}  # type: ignore[dict-item]
    )
    await cluster.kube.create(CLAIMS, user_claim("c", "1Gi"))
    assert (await cluster.wait(cluster.ledger, "ledger")).used(0) == {"nvidia.com/gpumem": 5120 + 143771}
    # the quota gone: so is the ledger
    await cluster.kube.delete(f"{QUOTAS}/gpu")
    await cluster.wait(lambda: cluster.ledger() is None, "the ledger to go with the quota")


async def test_dry_runs_and_namespaces_without_quota_write_no_ledger(cluster: Cluster) -> None:
    await cluster.kube.create(PODS, gpu_pod("free"))  # no quota in the namespace
    assert cluster.ledger() is None
    await cluster.kube.create(QUOTAS, resource_quota({"limits.nvidia.com/gpumem": "2048"}))
    await cluster.wait(cluster.ledger, "the ledger")  # made by the reconciler, empty
    for _ in range(3):  # a dry run is checked, never charged
        await cluster.kube.create(PODS, gpu_pod("dry", 2048), dry_run=True)
    ledger = cluster.ledger()
    assert ledger is not None and not ledger.pending and ledger.used(0) == {}
    with pytest.raises(KubeError) as big:
        await cluster.kube.create(PODS, gpu_pod("too-big", 4096), dry_run=True)
    assert big.value.status == 403 and "asked 4096, limit 2048" in big.value.reason
    # claims of other drivers never reach the webhook (matchConditions)
    calls = len(cluster.api.webhooks.calls)
    await cluster.kube.create(CLAIMS, user_claim("other", "1Gi", device_class="gpu.example.com"))
    assert len(cluster.api.webhooks.calls) == calls


async def test_a_ledger_that_cannot_be_written_refuses_with_503_and_admits_nothing(cluster: Cluster) -> None:
    await cluster.kube.create(QUOTAS, resource_quota({"limits.nvidia.com/gpumem": "8192"}))
    await cluster.wait(cluster.ledger, "the ledger")
    cluster.api.faults.add("PUT", rf"/configmaps/{ledger_name(NS)}$", status=503, count=None)
    with pytest.raises(KubeError) as down:
        await cluster.kube.create(PODS, gpu_pod("p"))
    assert down.value.status == 503 and "could not be checked" in down.value.reason
    cluster.api.faults.clear()
    assert isinstance(await _create(cluster, PODS, gpu_pod("p")), dict)
    ledger = cluster.ledger()
    assert ledger is not None and [r.pod for r in ledger.pending] == ["p"]


async def test_ledger_json_is_what_the_docs_show(cluster: Cluster) -> None:
    await cluster.kube.create(QUOTAS, resource_quota({"limits.nvidia.com/gpumem": "8192"}))
    await cluster.kube.create(CLAIMS, user_claim("mine", "1Gi"))
    obj = await cluster.wait(lambda: cluster.api.store.raw("configmaps", HOME, ledger_name(NS)), "ledger")
    assert obj["metadata"]["labels"]["tessera.dev/quota-ledger"] == "true"
    assert obj["metadata"]["annotations"]["tessera.dev/namespace"] == NS
    body = json.loads(obj["data"]["ledger.json"])
    assert body["version"] == 1 and body["namespace"] == NS and body["pending"] == []
    (entry,) = body["claims"].values()
    assert entry["name"] == "mine" and entry["charge"] == {"nvidia.com/gpumem": 1024}


async def test_junk_claims_on_validate_get_well_formed_answers(cluster: Cluster) -> None:
    """What the API server would never send (it validates first) still gets an answer, never an internal error."""
    await cluster.kube.create(QUOTAS, resource_quota({"limits.nvidia.com/gpumem": "1024"}))
    await cluster.wait(cluster.ledger, "the ledger")
    claims = {"group": "resource.k8s.io", "version": "v1", "resource": "resourceclaims"}
    ours = {"name": "g", "exactly": {"deviceClassName": "nvidia.tessera.dev"}}
    junk: list[Any] = [
        {"metadata": [], "spec": "x"},
        {"metadata": {"ownerReferences": 3}, "spec": {"devices": {"requests": [{"exactly": []}]}}},
        {"spec": {"devices": {"requests": [{**ours, "exactly": {**ours["exactly"], "count": -2}}]}}},
        {
            "spec": {
                "devices": {
                    "requests": [{**ours, "exactly": {**ours["exactly"], "capacity": {"requests": {"memory": "lots"}}}}]
                }
            }
        },
    ]
    async with aiohttp.ClientSession() as http:
        for i, obj in enumerate(junk):
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "request": {"uid": f"j{i}", "operation": "CREATE", "namespace": NS, "resource": claims,
                                  "object": obj}}  # fmt: skip
            async with http.post(cluster.replicas[i % 2].url + "/validate", json=review, ssl=cluster.ssl) as resp:
                assert resp.status == 200
                answer = (await resp.json())["response"]
            assert answer["uid"] == f"j{i}"
            if not answer["allowed"]:
                assert answer["status"]["code"] == 403 and "cannot be charged" in answer["status"]["message"]
    for replica in cluster.replicas:
        assert _sample(await cluster.metrics(replica), "tessera_webhook_reviews_total", outcome="error") is None
