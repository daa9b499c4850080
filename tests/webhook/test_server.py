"""The admission server over real HTTPS (trustme CA), creating templates through kubernetes_asyncio in the
API server stand-in (``e2e.apiserver``), and once through the stand-in's own admission path."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonpatch
import pytest
import trustme
import yaml
from aiohttp import web

import vendors
from e2e.apiserver import APIServer
from kubeapi import KubeClient, KubeError
from webhook import logs, server
from webhook.convert import Converter
from webhook.metrics import Metrics
from webhook.server import Webhook
from webhook.templates import TemplateStore
from webhook.tls import ReloadingTLS

from .conftest import INVENTORY, container, make_pod, seed_pods, validate

NS = "default"
LABEL = "app.kubernetes.io/managed-by=tessera-webhook"


@dataclass
class Stack:
    api: APIServer
    webhook: Webhook
    store: TemplateStore
    metrics: Metrics
    url: str
    ca: trustme.CA
    ssl: ssl.SSLContext
    session: aiohttp.ClientSession
    cert_file: str
    key_file: str
    kubeconfig: str

    async def post(self, body: Any, *, raw: bytes | None = None) -> dict[str, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(
            self.url + "/mutate", data=data, ssl=self.ssl, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        return dict(answer["response"])

    async def get(self, path: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str]:
        async with self.session.get(self.url + path, ssl=ctx or self.ssl) as resp:
            return resp.status, await resp.text()

    def templates(self) -> list[dict[str, Any]]:
        return self.api.store.list("resourceclaimtemplates", NS, label_selector=LABEL)


def review(pod: dict[str, Any], *, dry_run: bool = False, operation: str = "CREATE", uid: str | None = None) -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"].get("name", ""),
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": pod,
            "dryRun": dry_run,
        },
    }


def write_cert(ca: trustme.CA, cert_file: str, key_file: str) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
async def stack(tmp_path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setattr(server, "READY_CACHE_SECONDS", 0.0)
    ca = trustme.CA()
    cert_file, key_file = str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
    write_cert(ca, cert_file, key_file)
    async with APIServer.running() as api:
        for doc in yaml.safe_load_all(INVENTORY.read_text(encoding="utf-8")):
            if doc:
                api.store.put(doc)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        client = await KubeClient.connect(kubeconfig, timeout=5.0)
        metrics = Metrics()
        store = TemplateStore(client, metrics, deadline=0.8, backoff=0.05)
        tls = ReloadingTLS(cert_file, key_file, interval=0.05, on_reload=lambda ok: None)
        webhook = Webhook(
            Converter(vendors.admission_vendors()),
            client=client,
            metrics=metrics,
            templates=store,
            tls=tls,
            inventory_refresh=0.5,
        )
        runner = web.AppRunner(webhook.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context)
        await site.start()
        port = runner.addresses[0][1]
        for _ in range(100):  # the background task reads the inventory
            if webhook.inventory is not None:
                break
            await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as session:
            yield Stack(
                api, webhook, store, metrics, f"https://127.0.0.1:{port}", ca, client_context(ca), session,
                cert_file, key_file, kubeconfig,
            )  # fmt: skip
        await runner.cleanup()
        await client.close()


def gpu_pod(name: str = "train", **limits: Any) -> dict[str, Any]:
    return make_pod(container("main", limits=limits or {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096}), name=name)


def apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    out: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    return out


async def test_review_in_patch_out_and_the_template_is_created(stack: Stack):
    pod = gpu_pod()
    req = review(pod)
    response = await stack.post(req)
    assert response["uid"] == req["request"]["uid"]
    assert response["allowed"] is True
    new = apply(pod, response)
    validate(new)
    (entry,) = new["spec"]["resourceClaims"]
    stored = stack.api.store.get("resourceclaimtemplates", NS, entry["resourceClaimTemplateName"])
    assert stored is not None
    request = stored["spec"]["spec"]["devices"]["requests"][0]
    assert request["exactly"]["capacity"]["requests"] == {"memory": "4Gi"}  # 4096Mi, as the API server keeps it
    assert stack.templates() == [stored]


async def test_percentages_use_the_inventory_read_from_the_api(stack: Stack):
    pod = gpu_pod(**{"nvidia.com/gpumem-percentage": 50})
    response = await stack.post(review(pod))
    assert response["allowed"], response
    (template,) = stack.templates()
    subs = template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]
    assert {s["name"] for s in subs} == {"a100", "h200", "l4"}
    # ...and the inventory says which memory asks no device can hold.
    too_big = await stack.post(review(gpu_pod(**{"nvidia.com/gpumem": 10**6})))
    assert not too_big["allowed"] and "largest" in too_big["status"]["message"]


async def test_dry_run_creates_nothing(stack: Stack):
    response = await stack.post(review(gpu_pod(), dry_run=True))
    assert response["allowed"] and response["patch"]
    assert stack.templates() == []


async def test_the_same_pod_twice_creates_one_template(stack: Stack):
    first = await stack.post(review(gpu_pod("a")))
    second = await stack.post(review(gpu_pod("b")))
    assert first["patch"] == second["patch"]
    stack.store.forget()  # not from memory: the API says it exists (409), with our content
    third = await stack.post(review(gpu_pod("c")))
    assert third["allowed"]
    assert len(stack.templates()) == 1
    counts = {
        s.labels["result"]: s.value
        for m in stack.metrics.templates.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counts == {"created": 1.0, "cached": 1.0, "exists": 1.0}


async def test_concurrent_identical_pods_share_one_create(stack: Stack):
    answers = await asyncio.gather(*(stack.post(review(gpu_pod(f"p{i}"))) for i in range(20)))
    assert all(a["allowed"] for a in answers)
    posts = [r for r in stack.api.requests if r.method == "POST" and "resourceclaimtemplates" in r.path]
    assert len(posts) == 1 and len(stack.templates()) == 1


async def test_a_converted_pod_passes_unchanged(stack: Stack):
    pod = gpu_pod()
    new = apply(pod, await stack.post(review(pod)))
    again = await stack.post(review(new))
    assert again["allowed"] is True and "patch" not in again


async def test_api_down_gives_a_denial_that_says_so_and_recovers(stack: Stack):
    await stack.api.stop()
    try:
        response = await stack.post(review(gpu_pod()))
        assert response["allowed"] is False
        assert response["status"]["code"] == 503
        message = response["status"]["message"]
        assert "could not be reached" in message and "not admitted" in message
        status, text = await stack.get("/readyz")
        assert status == 503 and "does not answer" in text
        # A pod without accelerators needs no API: still admitted.
        plain = await stack.post(review(make_pod(container())))
        assert plain["allowed"] is True
    finally:
        await stack.api.start()
    assert (await stack.post(review(gpu_pod())))["allowed"] is True
    assert (await stack.get("/readyz"))[0] == 200


async def test_transient_errors_are_retried(stack: Stack):
    stack.api.faults.add(method="POST", path_regex=r".*/resourceclaimtemplates$", status=500, count=2)
    assert (await stack.post(review(gpu_pod())))["allowed"] is True
    assert len(stack.templates()) == 1


async def test_a_refusal_by_the_api_is_not_retried_and_says_what_to_fix(stack: Stack):
    stack.api.faults.add(method="POST", path_regex=r".*/resourceclaimtemplates$", status=403, count=1)
    response = await stack.post(review(gpu_pod()))
    assert not response["allowed"] and "service account" in response["status"]["message"]
    assert (await stack.post(review(gpu_pod())))["allowed"] is True


async def test_a_template_name_taken_by_other_content_is_not_used(stack: Stack):
    pod = gpu_pod()
    dry = await stack.post(review(pod, dry_run=True))
    name = apply(pod, dry)["spec"]["resourceClaims"][0]["resourceClaimTemplateName"]
    stack.api.store.put(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"spec": {"devices": {"requests": [
                {"name": "x", "exactly": {"deviceClassName": "nvidia.tessera.dev", "allocationMode": "All"}}
            ]}}},
        }
    )  # fmt: skip
    response = await stack.post(review(pod))
    assert not response["allowed"] and "other content" in response["status"]["message"]


async def test_denials_carry_a_message(stack: Stack):
    response = await stack.post(review(gpu_pod(**{"nvidia.com/gpucores": 150})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400 and "at most 100" in response["status"]["message"]


@pytest.mark.parametrize(
    ("raw", "uid", "needle"),
    [
        (b"not json", "", "not JSON"),
        (b"[1, 2]", "", "not a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u1"}}',
         "u1", "admissionReviewVersions"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "", "no request"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}',
         "", "no uid"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u2", '
         b'"operation": "CREATE", "resource": {"group": "", "resource": "pods"}}}', "u2", "object is missing"),
        (b"[" * 100000 + b"]" * 100000, "", "not JSON"),
    ],
)  # fmt: skip
async def test_malformed_reviews_get_a_well_formed_denial(stack: Stack, raw: bytes, uid: str, needle: str):
    response = await stack.post(None, raw=raw)
    assert response["uid"] == uid
    assert response["allowed"] is False and needle in response["status"]["message"]


async def test_an_oversized_review_gets_a_well_formed_denial(stack: Stack):
    response = await stack.post(None, raw=b" " * (server.MAX_BODY + 1))
    assert response["allowed"] is False and "larger than" in response["status"]["message"]


async def test_other_operations_and_resources_pass(stack: Stack):
    update = await stack.post(review(gpu_pod(), operation="UPDATE"))
    assert update["allowed"] and "patch" not in update
    configmap = review(gpu_pod())
    configmap["request"]["resource"] = {"group": "", "version": "v1", "resource": "configmaps"}
    assert "patch" not in await stack.post(configmap)
    status = review(gpu_pod())
    status["request"]["subResource"] = "status"
    assert "patch" not in await stack.post(status)


async def test_probes_and_metrics(stack: Stack):
    assert await stack.get("/healthz") == (200, "ok\n")
    assert await stack.get("/readyz") == (200, "ok\n")
    assert stack.webhook.inventory is not None and len(stack.webhook.inventory) > 10
    await stack.post(review(gpu_pod()))
    await stack.post(review(make_pod(container())))
    await stack.post(review(gpu_pod(**{"nvidia.com/gpu": -1})))
    await stack.post(None, raw=b"{}")
    status, text = await stack.get("/metrics")
    assert status == 200
    for line in (
        'tessera_webhook_reviews_total{outcome="mutated",vendor="nvidia"} 1.0',
        'tessera_webhook_reviews_total{outcome="allowed",vendor="none"} 1.0',
        'tessera_webhook_reviews_total{outcome="denied",vendor="nvidia"} 1.0',
        'tessera_webhook_reviews_total{outcome="invalid",vendor="none"} 1.0',
        'tessera_webhook_template_creations_total{result="created"} 1.0',
        "tessera_webhook_review_duration_seconds_count 4.0",
        f"tessera_webhook_inventory_devices {float(len(stack.webhook.inventory or ())):.1f}",
    ):
        assert line in text, line


async def test_certificate_and_key_are_reloaded_when_the_files_change(stack: Stack):
    new_ca = trustme.CA()
    write_cert(new_ca, stack.cert_file, stack.key_file)
    new_ctx = client_context(new_ca)
    for _ in range(100):
        try:
            if (await stack.get("/healthz", new_ctx))[0] == 200:
                break
        except aiohttp.ClientConnectorCertificateError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the new certificate was never served")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await stack.get("/healthz", stack.ssl)
    assert stack.webhook.tls is not None and stack.webhook.tls.reloads == 1


async def test_a_half_written_rotation_keeps_the_old_pair(stack: Stack):
    other = trustme.CA().issue_cert("127.0.0.1")
    other.cert_chain_pems[0].write_to_path(stack.cert_file)  # new certificate, old key: not a pair
    await asyncio.sleep(0.3)
    assert (await stack.get("/healthz"))[0] == 200
    assert stack.webhook.tls is not None and stack.webhook.tls.reloads == 0


async def test_tls_1_2_and_1_3_are_served_and_nothing_older(stack: Stack):
    tls = stack.webhook.tls
    assert tls is not None
    # Every context a handshake can use (the listening one and the reloaded one) refuses < 1.2.
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls._current.minimum_version == ssl.TLSVersion.TLSv1_2
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(stack.ca)
        ctx.minimum_version = ctx.maximum_version = version
        port = int(stack.url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
        try:
            negotiated = writer.get_extra_info("ssl_object").version()
        finally:
            writer.close()
        assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


async def test_logs_carry_namespace_pod_and_uid(stack: Stack):
    log = logs.logger()
    saved = (list(log.handlers), log.level, log.propagate)
    sink = io.StringIO()
    logs.setup("json", "info", stream=sink)
    try:
        req = review(gpu_pod("logged"))
        await stack.post(req)
        await stack.post(review(gpu_pod("refused", **{"nvidia.com/gpu": "x"}), uid="refused-uid"))
    finally:
        log.handlers[:], log.level, log.propagate = saved
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    converted = [x for x in lines if x.get("uid") == req["request"]["uid"]]
    assert converted and all(x["namespace"] == NS and x["pod"] == "logged" for x in converted)
    assert any(x["msg"] == "converted" and x["template"].startswith("tessera-") for x in converted)
    refused = [x for x in lines if x.get("uid") == "refused-uid"]
    assert refused and refused[0]["msg"].startswith("denied:") and refused[0]["pod"] == "refused"


async def test_pods_created_through_the_api_server_are_converted(stack: Stack):
    """The stand-in calls the webhook from a MutatingWebhookConfiguration, as kube-apiserver does."""
    client = await KubeClient.connect(stack.kubeconfig)
    try:
        await client.create(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "tessera"},
                "webhooks": [
                    {
                        "name": "pods.tessera.dev",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "NoneOnDryRun",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 5,
                        "reinvocationPolicy": "IfNeeded",
                        "clientConfig": {
                            "url": stack.url + "/mutate",
                            "caBundle": base64.b64encode(stack.ca.cert_pem.bytes()).decode(),
                        },
                        "rules": [
                            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                             "resources": ["pods"], "scope": "Namespaced"}
                        ],
                    }
                ],
            },
        )  # fmt: skip
        pods = "/api/v1/namespaces/default/pods"
        seed = seed_pods()["gpu-pod12"]
        dry = await client.create(pods, seed, dry_run=True)
        assert dry["spec"]["resourceClaims"] and stack.templates() == []
        created = await client.create(pods, seed)
        assert "nvidia.com/gpu" not in json.dumps(created["spec"]["containers"])
        (template,) = stack.templates()
        assert created["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == template["metadata"]["name"]
        with pytest.raises(KubeError) as refused:
            await client.create(pods, gpu_pod("bad", **{"nvidia.com/gpumem-percentage": 120}))
        assert refused.value.status == 400 and "between 0 and 100" in refused.value.reason
    finally:
        await client.close()
