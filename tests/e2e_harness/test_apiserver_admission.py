"""Pod CREATE through MutatingWebhookConfigurations over real HTTPS, schema validation, feature gates."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from e2e.apiserver import APIServer
from kubeapi import KubeClient, KubeError, cluster_path, namespaced_path

PODS = namespaced_path("v1", "pods", "default")
CONFIGS = cluster_path("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations")

Review = dict[str, Any]


class ScriptedWebhook:
    """A small HTTPS admission webhook whose answer each test chooses."""

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.reviews: list[Review] = []
        self.answer: Callable[[Review], dict[str, Any]] = lambda review: {"allowed": True}
        self.delay = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        cert = self.ca.issue_cert("127.0.0.1", "tessera-webhook.tessera-system.svc")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        app = web.Application()
        app.router.add_post("/mutate", self._mutate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _mutate(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        if self.delay:
            await asyncio.sleep(self.delay)
        response = {"uid": review["request"]["uid"], **self.answer(review)}
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.cert_pem.bytes()).decode()


def patch_answer(ops: list[dict[str, Any]]) -> Callable[[Review], dict[str, Any]]:
    encoded = base64.b64encode(json.dumps(ops).encode()).decode()
    return lambda review: {"allowed": True, "patchType": "JSONPatch", "patch": encoded}


def config(hook: ScriptedWebhook, name: str = "tessera", **overrides: Any) -> dict[str, Any]:
    webhook = {
        "name": "pods.tessera.dev",
        "clientConfig": {"url": f"https://127.0.0.1:{hook.port}/mutate", "caBundle": hook.ca_bundle},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": "Fail",
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": 5,
        "admissionReviewVersions": ["v1"],
        "reinvocationPolicy": "IfNeeded",
        "objectSelector": {
            "matchExpressions": [{"key": "tessera.dev/webhook", "operator": "NotIn", "values": ["ignore"]}]
        },
        "namespaceSelector": {
            "matchExpressions": [{"key": "tessera.dev/webhook", "operator": "NotIn", "values": ["ignore"]}]
        },
    }
    webhook.update(overrides)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


def pod(name: str | None = "p", labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name} if name else {"generateName": "gen-"}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
        },
    }


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[APIServer, KubeClient, ScriptedWebhook]]:
    hook = ScriptedWebhook(trustme.CA())
    await hook.start()
    async with APIServer.running() as api:
        kube = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kc"), timeout=10)
        try:
            yield api, kube, hook
        finally:
            await kube.close()
            await hook.stop()


async def test_mutating_webhook_patch_is_applied(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    api, kube, hook = env
    await kube.create(CONFIGS, config(hook))
    hook.answer = patch_answer(
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"tessera.dev/seen": "yes"}},
            {"op": "remove", "path": "/spec/containers/0/resources/limits"},
        ]
    )
    # an extended resource cannot be left with a request and no limit (kube-apiserver's validation)
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod(None))
    assert exc.value.status == 422 and "Limit must be set for non overcommitable resources" in exc.value.reason
    cpu = pod(None)
    cpu["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1000m"}}
    created = await kube.create(PODS, cpu)
    assert created["metadata"]["annotations"] == {"tessera.dev/seen": "yes"}
    # scheme defaults ran before the webhook (requests copied from limits) and the patch kept them, in
    # canonical form
    assert created["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "1"}}
    request = hook.reviews[-1]["request"]
    assert request["object"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1"}  # as decoded
    assert request["operation"] == "CREATE" and request["namespace"] == "default"
    assert request["name"] == ""  # generateName: no name yet, as on a real server
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert request["dryRun"] is False
    assert request["object"]["spec"]["restartPolicy"] == "Always"
    assert "uid" not in request["object"]["metadata"]
    assert api.webhooks.calls[-1].patched


async def test_dry_run_reaches_webhook_flagged_and_stores_nothing(
    env: tuple[APIServer, KubeClient, ScriptedWebhook],
) -> None:
    api, kube, hook = env
    await kube.create(CONFIGS, config(hook))
    await kube.create(PODS, pod("dry"), dry_run=True)
    assert hook.reviews[-1]["request"]["dryRun"] is True
    assert api.store.get("pods", "default", "dry") is None
    await kube.replace(f"{CONFIGS}/tessera", {**config(hook, sideEffects="Some"), "metadata": {"name": "tessera"}})
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod("dry"), dry_run=True)
    assert exc.value.status == 400 and "does not support dry run" in exc.value.reason


async def test_denial_is_returned_to_the_client(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    api, kube, hook = env
    await kube.create(CONFIGS, config(hook))
    hook.answer = lambda review: {"allowed": False, "status": {"code": 422, "message": "cores > 100"}}
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod())
    assert exc.value.status == 422
    assert exc.value.reason == 'admission webhook "pods.tessera.dev" denied the request: cores > 100'
    assert api.store.get("pods", "default", "p") is None


async def test_failure_policy(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    api, kube, hook = env
    await kube.create(CONFIGS, config(hook))
    await hook.stop()
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod())
    assert exc.value.status == 500
    assert 'failed calling webhook "pods.tessera.dev"' in exc.value.reason
    assert api.store.get("pods", "default", "p") is None
    await kube.replace(f"{CONFIGS}/tessera", {**config(hook, failurePolicy="Ignore"), "metadata": {"name": "tessera"}})
    created = await kube.create(PODS, pod())
    assert created["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


async def test_timeout_seconds(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    _api, kube, hook = env
    await kube.create(CONFIGS, config(hook, timeoutSeconds=1))
    hook.delay = 2.0
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod())
    assert exc.value.status == 500 and "deadline exceeded" in exc.value.reason


async def test_wrong_ca_bundle_fails_tls(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    _api, kube, hook = env
    other = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    cfg = config(hook)
    cfg["webhooks"][0]["clientConfig"]["caBundle"] = other
    await kube.create(CONFIGS, cfg)
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod())
    assert exc.value.status == 500 and "certificate" in exc.value.reason.lower()
    assert hook.reviews == []


async def test_selectors_opt_out(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    _api, kube, hook = env
    await kube.create(CONFIGS, config(hook))
    await kube.create(PODS, pod("skipped", labels={"tessera.dev/webhook": "ignore"}))
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "quiet", "labels": {"tessera.dev/webhook": "ignore"}},
    }
    await kube.create(cluster_path("v1", "namespaces"), ns)
    await kube.create(namespaced_path("v1", "pods", "quiet"), pod("q"))
    assert hook.reviews == []
    await kube.create(PODS, pod("seen"))
    assert len(hook.reviews) == 1


async def test_service_reference(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    api, kube, hook = env
    cfg = config(hook)
    cfg["webhooks"][0]["clientConfig"] = {
        "service": {"namespace": "tessera-system", "name": "tessera-webhook", "path": "/mutate", "port": 443},
        "caBundle": hook.ca_bundle,
    }
    await kube.create(CONFIGS, cfg)
    with pytest.raises(KubeError):
        await kube.create(PODS, pod())  # not registered: fails (failurePolicy Fail)
    api.webhooks.services[("tessera-system", "tessera-webhook")] = ("127.0.0.1", hook.port)
    await kube.create(PODS, pod())  # TLS verified against tessera-webhook.tessera-system.svc
    assert len(hook.reviews) == 1


async def test_strict_schema_validation(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    _api, kube, _hook = env
    bad = pod()
    bad["spec"]["containers"][0]["bogus"] = True
    # unknown fields: refused with fieldValidation=Strict (what kubectl sends), else dropped (Warn, the default)
    with pytest.raises(KubeError) as exc:
        await kube.request("POST", PODS, body=bad, query={"fieldValidation": "Strict"})
    assert exc.value.status == 400
    assert 'strict decoding error: unknown field "spec.containers[0].bogus"' in exc.value.reason
    created = await kube.create(PODS, bad)
    assert "bogus" not in created["spec"]["containers"][0]
    with pytest.raises(KubeError) as exc:
        await kube.request("POST", PODS, body=pod("x"), query={"fieldValidation": "Loose"})
    assert exc.value.status == 400 and "fieldValidation parameter unsupported" in exc.value.reason
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "Bad_Name"}, "spec": {}}
    with pytest.raises(KubeError) as exc:
        await kube.create(namespaced_path("resource.k8s.io/v1", "resourceclaims", "default"), claim)
    assert exc.value.status == 422 and "metadata.name" in exc.value.reason
    refs = pod("r")
    refs["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, refs)
    assert "spec.resourceClaims" in exc.value.reason


def _slice(policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "n1-nvidia"},
        "spec": {
            "driver": "nvidia.tessera.dev",
            "nodeName": "n1",
            "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "gpu-0",
                    "allowMultipleAllocations": True,
                    "capacity": {"tessera.dev/memory": {"value": "80Gi", "requestPolicy": policy}},
                }
            ],
        },
    }


async def test_capacity_policy_rules_and_gate(tmp_path: Path) -> None:
    slices = cluster_path("resource.k8s.io/v1", "resourceslices")
    async with APIServer.running() as api:
        kube = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kc"))
        try:
            bad = _slice({"default": "100Mi", "validRange": {"min": "1Gi", "step": "1Gi"}})
            with pytest.raises(KubeError) as exc:
                await kube.create(slices, bad)
            assert "default" in exc.value.reason and "validRange" in exc.value.reason
            good = _slice({"default": "80Gi", "validRange": {"min": "1Mi", "step": "1Mi"}})
            stored = await kube.create(slices, good)
            assert stored["spec"]["devices"][0]["allowMultipleAllocations"] is True
        finally:
            await kube.close()
    async with APIServer.running(feature_gates={"DRAConsumableCapacity": False}) as api:
        kube = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kc2"))
        try:
            stored = await kube.create(slices, _slice({"default": "80Gi", "validRange": {"min": "1Mi"}}))
            device = stored["spec"]["devices"][0]
            assert "allowMultipleAllocations" not in device
            assert device["capacity"] == {"tessera.dev/memory": {"value": "80Gi"}}
        finally:
            await kube.close()


# --- matchConditions, as kube-apiserver evaluates them ------------------------------------------------
GPU_ONLY = {
    "name": "gpu-pods",
    "expression": "object != null && object.spec.containers.exists(c, has(c.resources) && has(c.resources.limits)"
    " && c.resources.limits.exists(r, r.startsWith('nvidia.com/')))",
}


def plain_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }


async def test_match_conditions_choose_the_pods_sent(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    _api, kube, hook = env
    by_operation = {"name": "creates", "expression": "request.operation == 'CREATE' && oldObject == null"}
    await kube.create(CONFIGS, config(hook, matchConditions=[by_operation, GPU_ONLY]))
    await kube.create(PODS, plain_pod("plain"))  # a condition false: skipped
    assert hook.reviews == []
    await kube.create(PODS, pod("gpu"))  # all true: sent
    assert [r["request"]["name"] for r in hook.reviews] == ["gpu"]


async def test_match_condition_errors_follow_the_failure_policy(
    env: tuple[APIServer, KubeClient, ScriptedWebhook],
) -> None:
    api, kube, hook = env
    # no has() guard: a pod without limits makes the expression fail (no such key)
    unguarded = {"name": "unguarded", "expression": "object.spec.containers[0].resources.limits.size() > 0"}
    await kube.create(CONFIGS, config(hook, matchConditions=[unguarded]))
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, plain_pod("plain"))
    assert exc.value.status == 403
    assert exc.value.reason == (
        f"pods \"plain\" is forbidden: expression '{unguarded['expression']}' resulted in error: no such key: limits"
    )
    assert api.store.get("pods", "default", "plain") is None and hook.reviews == []
    # a false condition wins over an error in another one: skipped, not refused
    never = {"name": "never", "expression": "false"}
    await kube.replace(f"{CONFIGS}/tessera", config(hook, matchConditions=[unguarded, never]))
    await kube.create(PODS, plain_pod("plain"))
    # failurePolicy Ignore: the error skips the webhook
    await kube.replace(f"{CONFIGS}/tessera", config(hook, matchConditions=[unguarded], failurePolicy="Ignore"))
    await kube.create(PODS, plain_pod("plain-2"))
    assert hook.reviews == []
    await kube.create(PODS, pod("gpu"))  # the condition holds: sent
    assert len(hook.reviews) == 1


async def test_match_conditions_are_validated_on_write(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    _api, kube, hook = env
    many = [{"name": f"c{i}", "expression": "true"} for i in range(65)]
    with pytest.raises(KubeError) as exc:
        await kube.create(CONFIGS, config(hook, matchConditions=many))
    assert exc.value.status == 422
    assert "webhooks[0].matchConditions: Too many: 65: must have at most 64 items" in exc.value.reason
    twice = [{"name": "a", "expression": "true"}, {"name": "a", "expression": "true"}]
    with pytest.raises(KubeError) as exc:
        await kube.create(CONFIGS, config(hook, matchConditions=twice))
    assert 'webhooks[0].matchConditions[1].name: Duplicate value: "a"' in exc.value.reason.replace("'", '"')
    broken = [{"name": "a", "expression": "object.spec.("}, {"name": "-b-", "expression": " "}]
    with pytest.raises(KubeError) as exc:
        await kube.create(CONFIGS, config(hook, matchConditions=broken))
    reason = exc.value.reason
    assert "webhooks[0].matchConditions[0].expression: Invalid value" in reason and "compilation failed" in reason
    assert "webhooks[0].matchConditions[1].expression: Required value" in reason
    assert "webhooks[0].matchConditions[1].name: Invalid value" in reason
    await kube.create(CONFIGS, config(hook, matchConditions=many[:64]))  # 64 is the limit


async def test_unreachable_webhook_is_worded_as_kube_apiserver_does(
    env: tuple[APIServer, KubeClient, ScriptedWebhook],
) -> None:
    api, kube, hook = env
    cfg = config(hook, matchConditions=[GPU_ONLY])
    cfg["webhooks"][0]["clientConfig"] = {
        "service": {"namespace": "tessera-system", "name": "tessera-webhook", "path": "/mutate", "port": 443},
        "caBundle": hook.ca_bundle,
    }
    await kube.create(CONFIGS, cfg)
    shown = "https://tessera-webhook.tessera-system.svc:443/mutate?timeout=5s"
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod("a"))
    assert exc.value.reason == (
        'Internal error occurred: failed calling webhook "pods.tessera.dev": failed to call webhook: '
        f'Post "{shown}": services "tessera-webhook" not found'
    )
    api.webhooks.services[("tessera-system", "tessera-webhook")] = None  # the service, no ready endpoint
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod("a"))
    assert exc.value.status == 500 and exc.value.reason.endswith(
        f'Post "{shown}": no endpoints available for service "tessera-webhook"'
    )
    await hook.stop()
    api.webhooks.services[("tessera-system", "tessera-webhook")] = ("127.0.0.1", hook.port)  # nothing listens
    with pytest.raises(KubeError) as exc:
        await kube.create(PODS, pod("a"))
    assert exc.value.reason.endswith(f'Post "{shown}": dial tcp 127.0.0.1:{hook.port}: connect: connection refused')
    await kube.create(PODS, plain_pod("plain"))  # not matched: created while the webhook is down


async def test_ephemeral_containers_subresource(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    """`kubectl debug`: a strategic-merge PATCH of pods/<name>/ephemeralcontainers, admitted as an UPDATE of
    that subresource carrying the whole pod (object and oldObject), storing only the ephemeral containers."""
    api, kube, hook = env
    ephemeral_rule = {
        "operations": ["UPDATE"],
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["pods/ephemeralcontainers"],
        "scope": "Namespaced",
    }
    created = await kube.create(PODS, pod())
    await kube.create(CONFIGS, config(hook, rules=[ephemeral_rule]))
    assert hook.reviews == []  # the CREATE rule is not there
    path = f"{PODS}/p/ephemeralcontainers"
    debugger = {"name": "debugger", "image": "busybox:1.36", "targetContainerName": "c", "stdin": True, "tty": True}
    hook.answer = lambda review: {"allowed": False, "status": {"code": 400, "message": "no debugging here"}}
    with pytest.raises(KubeError) as refused:
        await kube.request(
            "PATCH", path, body={"spec": {"ephemeralContainers": [debugger]}},
            content_type="application/strategic-merge-patch+json",
        )  # fmt: skip
    assert refused.value.status == 400 and "no debugging here" in refused.value.reason
    (review,) = hook.reviews
    request = review["request"]
    assert (request["operation"], request["subResource"], request["kind"]["kind"]) == (
        "UPDATE",
        "ephemeralcontainers",
        "Pod",
    )
    assert request["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert request["object"]["spec"]["ephemeralContainers"][0]["name"] == "debugger"
    assert request["object"]["spec"]["containers"] == created["spec"]["containers"]
    assert "ephemeralContainers" not in request["oldObject"]["spec"]
    assert "ephemeralContainers" not in api.store.get("pods", "default", "p")["spec"]

    hook.answer = lambda review: {"allowed": True}
    await kube.request(
        "PATCH", path, body={"spec": {"ephemeralContainers": [debugger]}},
        content_type="application/strategic-merge-patch+json",
    )  # fmt: skip
    stored = api.store.get("pods", "default", "p")
    assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["debugger"]
    assert stored["spec"]["containers"] == created["spec"]["containers"]
    # Only ephemeral containers change through it, and existing ones never do.
    sneaky = dict(stored, spec={**stored["spec"], "hostPID": True})
    await kube.replace(path, sneaky)
    assert "hostPID" not in api.store.get("pods", "default", "p")["spec"]
    changed = dict(stored, spec={**stored["spec"], "ephemeralContainers": [{**debugger, "image": "evil:1"}]})
    with pytest.raises(KubeError) as invalid:
        await kube.replace(path, changed)
    assert invalid.value.status == 422 and "may not be changed" in invalid.value.reason
    # Through the pod itself ephemeral containers cannot be added at all.
    plain = dict(stored, spec={**stored["spec"], "ephemeralContainers": [debugger, {**debugger, "name": "more"}]})
    with pytest.raises(KubeError) as forbidden:
        await kube.replace(f"{PODS}/p", plain)
    assert forbidden.value.status == 422


VALIDATING = cluster_path("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations")


def validating(hook: ScriptedWebhook, **overrides: Any) -> dict[str, Any]:
    body = config(hook, "checks", **overrides)
    body["kind"] = "ValidatingWebhookConfiguration"
    del body["webhooks"][0]["reinvocationPolicy"]
    return body


async def test_validating_webhooks_see_the_generated_name_and_uid(
    env: tuple[APIServer, KubeClient, ScriptedWebhook],
) -> None:
    """kube-apiserver runs validating admission after name generation and the system fields (its store's
    BeforeCreate), mutating admission before: only the validating webhook sees the uid."""
    api, kube, hook = env
    await kube.create(CONFIGS, config(hook))
    await kube.create(VALIDATING, validating(hook))
    created = await kube.create(PODS, pod(None))
    mutating_review, validating_review = hook.reviews
    assert "uid" not in mutating_review["request"]["object"]["metadata"]
    assert mutating_review["request"]["name"] == ""
    seen = validating_review["request"]["object"]["metadata"]
    assert seen["uid"] == created["metadata"]["uid"] and seen["name"] == created["metadata"]["name"]
    assert validating_review["request"]["name"] == created["metadata"]["name"]
    # a validating denial stores nothing
    hook.answer = lambda review: (
        {"allowed": True} if review["request"]["object"]["metadata"].get("uid") is None
        else {"allowed": False, "status": {"code": 403, "message": "no"}}
    )  # fmt: skip
    with pytest.raises(KubeError) as refused:
        await kube.create(PODS, pod("refused"))
    assert refused.value.status == 403 and 'admission webhook "pods.tessera.dev" denied the request: no' in (
        refused.value.reason
    )
    assert api.store.raw("pods", "default", "refused") is None


async def test_a_service_with_several_endpoints_is_called_in_turn(
    env: tuple[APIServer, KubeClient, ScriptedWebhook],
) -> None:
    api, kube, hook = env
    other = ScriptedWebhook(hook.ca)
    await other.start()
    try:
        body = config(hook)
        body["webhooks"][0]["clientConfig"] = {
            "service": {"namespace": "tessera-system", "name": "tessera-webhook", "path": "/mutate"},
            "caBundle": hook.ca_bundle,
        }
        api.webhooks.services[("tessera-system", "tessera-webhook")] = [
            ("127.0.0.1", hook.port),
            ("127.0.0.1", other.port),
        ]
        await kube.create(CONFIGS, body)
        for i in range(4):
            await kube.create(PODS, pod(f"p{i}"))
        assert [r["request"]["object"]["metadata"]["name"] for r in hook.reviews] == ["p0", "p2"]
        assert [r["request"]["object"]["metadata"]["name"] for r in other.reviews] == ["p1", "p3"]
    finally:
        await other.stop()


async def test_resource_quota_status_is_its_own(env: tuple[APIServer, KubeClient, ScriptedWebhook]) -> None:
    """ResourceQuota: status only through /status, spec only through the object, as the real strategy."""
    _, kube, _ = env
    path = namespaced_path("v1", "resourcequotas", "default")
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
             "spec": {"hard": {"limits.nvidia.com/gpumem": "1024"}}, "status": {"used": {"x": "1"}}}  # fmt: skip
    created = await kube.create(path, quota)
    assert "status" not in created or not created["status"].get("used")
    written = await kube.replace(f"{path}/q/status", {**created, "status": {"used": {"limits.nvidia.com/gpumem": "5"}}})
    assert written["status"]["used"] == {"limits.nvidia.com/gpumem": "5"}
    spec_only = await kube.replace(f"{path}/q", {**written, "status": {"used": {}}})
    assert spec_only["status"]["used"] == {"limits.nvidia.com/gpumem": "5"}
    with pytest.raises(KubeError) as stale:
        await kube.replace(f"{path}/q/status", created)  # an old resourceVersion
    assert stale.value.status == 409
