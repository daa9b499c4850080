"""The webhook as a tenant attacks it: pods that try to get around the isolation of their shares, sent
over real HTTPS as AdmissionReviews shaped as kube-apiserver sends them (CREATE of ``pods``, UPDATE of
``pods/ephemeralcontainers`` with the whole pod as ``object`` and ``oldObject``)."""

from __future__ import annotations

import base64
import copy
import uuid
from typing import Any

import pytest

import vendors
from vendors.base import SharingPolicy, host_dirs
from webhook import safety
from webhook.convert import Converter

from .conftest import container, make_pod
from .test_server import Stack, apply, gpu_pod, stack  # noqa: F401  (stack: the HTTPS server fixture)

TEAM = "team-a"
"""A namespace the admin lets pods opt out in (the tests' converter lists it)."""


def admission(
    pod: dict[str, Any],
    *,
    namespace: str = "default",
    operation: str = "CREATE",
    subresource: str = "",
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as kube-apiserver sends it for ``pods`` (or one of its subresources)."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": pod["metadata"].get("name", ""),
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "mallory", "groups": ["system:authenticated"]},
        "object": pod,
        "oldObject": old,
        "dryRun": False,
        "options": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
        },
    }
    if subresource:
        request["subResource"] = request["requestSubResource"] = subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.fixture
def hardened(stack: Stack) -> Stack:  # noqa: F811
    """The server with the chart's defaults, high priority turned off and one opt-out namespace."""
    stack.webhook.converter = Converter(
        vendors.admission_vendors(),
        policy=SharingPolicy(allow_high_priority=False),
        opt_out_namespaces=[TEAM],
    )
    return stack


async def denied(srv: Stack, review: dict[str, Any], *needles: str) -> str:
    response = await srv.post(review)
    assert response["allowed"] is False, response
    assert "patch" not in response
    message: str = response["status"]["message"]
    for needle in needles:
        assert needle in message, message
    return message


def claim_pod(name: str = "holder", **spec: Any) -> dict[str, Any]:
    """A pod that references a claim its author wrote (no accelerator resource for the webhook to convert)."""
    main = container("main")
    main["resources"] = {"claims": [{"name": "gpu"}]}
    pod = make_pod(main, name=name, resourceClaims=[{"name": "gpu", "resourceClaimName": "my-own-claim"}], **spec)
    return pod


# --- the opt-out ------------------------------------------------------------------------------------


async def test_the_opt_out_label_is_not_a_way_around_the_safety_checks(hardened: Stack) -> None:
    srv = hardened
    privileged = {"securityContext": {"privileged": True}}
    # Outside the namespaces the admin lists, the label changes nothing: the pod is converted and
    # checked like any other, and its author is told why.
    for where in ("labels", "annotations"):
        pod = make_pod(container("main", limits={"nvidia.com/gpu": 1}), **{where: {"tessera.dev/webhook": "ignore"}})  # type: ignore[arg-type]
        response = await srv.post(admission(pod))
        assert response["allowed"] and response["patch"], response
        assert any("webhook.optOutNamespaces" in w for w in response["warnings"])
        assert apply(pod, response)["spec"]["resourceClaims"]
        bad = copy.deepcopy(pod)
        bad["spec"]["containers"][0].update(privileged)
        await denied(srv, admission(bad), "is privileged")
    # Inside a listed namespace the pod is left unconverted, but a pod holding a claim is still checked.
    opted = make_pod(container("main", limits={"nvidia.com/gpu": 1}), labels={"tessera.dev/webhook": "ignore"})
    response = await srv.post(admission(opted, namespace=TEAM))
    assert response["allowed"] and "patch" not in response
    sneaky = claim_pod(labels={"tessera.dev/webhook": "ignore"})
    sneaky["spec"]["containers"][0].update(privileged)
    await denied(srv, admission(sneaky, namespace=TEAM), "container 'main' is privileged")
    with_caps = claim_pod(labels={"tessera.dev/webhook": "ignore"}, hostPID=True)
    await denied(srv, admission(with_caps, namespace=TEAM), "hostPID: true")


# --- pod settings that reach around the isolation ----------------------------------------------------


def _with(pod: dict[str, Any], where: str, **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    if where == "spec":
        out["spec"].update(fields)
    else:
        kind, index = where.split(":")
        out["spec"][kind][int(index)].update(fields)
    return out


def _caps(*add: str) -> dict[str, Any]:
    return {"securityContext": {"capabilities": {"add": list(add), "drop": ["NET_RAW"]}}}


def _host_path(path: str) -> dict[str, Any]:
    return {"volumes": [{"name": "host", "hostPath": {"path": path, "type": "Directory"}}]}


ESCAPES = [
    ("containers:0", _caps("SYS_ADMIN"), ["container 'main' adds capability SYS_ADMIN", "unmount"]),
    ("containers:0", _caps("NET_ADMIN", "ALL"), ["adds capability ALL"]),
    ("containers:0", _caps("cap_sys_admin"), ["adds capability cap_sys_admin"]),
    ("initContainers:0", _caps("SYS_MODULE"), ["container 'setup' adds capability SYS_MODULE"]),
    ("spec", {"hostPID": True}, ["hostPID: true", "signal the processes of the other tenants"]),
    ("spec", {"hostIPC": True}, ["hostIPC: true"]),
    ("spec", _host_path("/usr/local/tessera"), ["host path '/usr/local/tessera'", "/usr/local/tessera"]),
    ("spec", _host_path("/usr/local/tessera/claims"), ["Tessera's directory /usr/local/tessera"]),
    ("spec", _host_path("//usr/local/./tessera/"), ["Tessera's directory /usr/local/tessera"]),
    ("spec", _host_path("/usr/local"), ["holds", "/usr/local/tessera"]),
    ("spec", _host_path("/"), ["host path '/'"]),
    ("spec", _host_path("/var/run/cdi"), ["/var/run/cdi"]),
    ("spec", _host_path("/run/cdi"), ["/var/run/cdi"]),
    ("spec", _host_path("/var/lib/kubelet/plugins/nvidia.tessera.dev"), ["plugins/nvidia.tessera.dev"]),
    ("spec", _host_path("/var/lib/kubelet/plugins_registry"), ["plugins_registry"]),
    ("spec", _host_path("/var/lib/kubelet"), ["/var/lib/kubelet/plugins"]),
]


@pytest.mark.parametrize(("where", "fields", "needles"), ESCAPES)
async def test_pods_with_shares_that_reach_around_the_isolation_are_refused(
    hardened: Stack, where: str, fields: dict[str, Any], needles: list[str]
) -> None:
    asking = make_pod(container("main", limits={"nvidia.com/gpu": 1}), init=[container("setup")])
    holding = claim_pod()
    holding["spec"]["initContainers"] = [container("setup")]
    for pod in (asking, holding):
        message = await denied(hardened, admission(_with(pod, where, **fields)), *needles)
        assert "remove" in message  # says what to do
    assert hardened.templates() == []


@pytest.mark.parametrize(
    "fields",
    [_caps("NET_ADMIN", "SYS_PTRACE"), {"hostNetwork": True}, _host_path("/data"), _host_path("/usr/local/lib")],
)
async def test_what_does_not_reach_the_shares_is_left_to_the_cluster(hardened: Stack, fields: dict[str, Any]) -> None:
    pod = gpu_pod()
    where = "containers:0" if "securityContext" in fields else "spec"
    response = await hardened.post(admission(_with(pod, where, **fields)))
    assert response["allowed"] and response["patch"], response


async def test_a_pod_without_shares_is_none_of_the_webhooks_business(hardened: Stack) -> None:
    plain = _with(make_pod(container("main")), "spec", hostPID=True, **_host_path("/usr/local/tessera"))
    plain = _with(plain, "containers:0", **_caps("SYS_ADMIN"))
    response = await hardened.post(admission(plain))
    assert response["allowed"] and "patch" not in response


async def test_the_protected_directories_come_from_the_configuration(hardened: Stack) -> None:
    hardened.webhook.converter = Converter(
        vendors.admission_vendors(),
        host_dirs=host_dirs(["nvidia.tessera.dev"], kubelet_dir="/var/lib/k0s/kubelet", host_lib_dir="/opt/tessera"),
    )
    await denied(hardened, admission(_with(gpu_pod(), "spec", **_host_path("/opt/tessera/node"))), "/opt/tessera")
    await denied(
        hardened,
        admission(_with(gpu_pod(), "spec", **_host_path("/var/lib/k0s/kubelet/plugins_registry"))),
        "plugins_registry",
    )
    response = await hardened.post(admission(_with(gpu_pod(), "spec", **_host_path("/usr/local/tessera"))))
    assert response["allowed"], "not a Tessera directory on this cluster"


async def test_high_priority_beyond_the_policy_is_refused_at_admission(hardened: Stack) -> None:
    pod = gpu_pod(**{"nvidia.com/gpu": 1, "nvidia.com/priority": 0})
    await denied(hardened, admission(pod), "task priority 0", "policy.allowHighPriority", "remove the priority")
    env = make_pod(container("main", limits={"nvidia.com/gpu": 1}, env=[{"name": "CUDA_TASK_PRIORITY", "value": "0"}]))
    await denied(hardened, admission(env), "task priority 0")
    low = gpu_pod(**{"nvidia.com/gpu": 1, "nvidia.com/priority": 1})
    assert (await hardened.post(admission(low)))["allowed"]


# --- ephemeral containers ------------------------------------------------------------------------------


def debug_container(name: str = "debugger", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "targetContainerName": "main", "stdin": True, "tty": True, **extra}


def with_ephemeral(pod: dict[str, Any], *ephemeral: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    out["spec"]["ephemeralContainers"] = [*out["spec"].get("ephemeralContainers", []), *ephemeral]
    return out


async def test_ephemeral_containers_cannot_join_a_pod_holding_shares(hardened: Stack) -> None:
    srv = hardened
    pod = gpu_pod()
    converted = apply(pod, await srv.post(admission(pod)))
    converted["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="7")
    converted["spec"]["nodeName"] = "node1"  # scheduled and running
    for pod_now in (converted, claim_pod()):
        debugged = with_ephemeral(pod_now, debug_container())
        review = admission(debugged, operation="UPDATE", subresource="ephemeralcontainers", old=pod_now)
        message = await denied(srv, review, "ephemeral container(s) 'debugger' cannot be added", "kubectl exec")
        assert "--copy-to" in message
    # Even one that asks for nothing, and even when it comes second.
    once = with_ephemeral(claim_pod(), debug_container("first"))
    twice = with_ephemeral(once, debug_container("second"))
    review = admission(twice, operation="UPDATE", subresource="ephemeralcontainers", old=once)
    await denied(srv, review, "'second'")
    # A pod without shares may be debugged; an update that adds nothing passes unchanged.
    plain = make_pod(container("main"))
    review = admission(with_ephemeral(plain, debug_container()), operation="UPDATE", subresource="ephemeralcontainers",
                       old=plain)  # fmt: skip
    answer = await srv.post(review)
    assert answer["allowed"] and "patch" not in answer
    same = admission(once, operation="UPDATE", subresource="ephemeralcontainers", old=once)
    answer = await srv.post(same)
    assert answer["allowed"] and "patch" not in answer


async def test_an_update_never_reconverts_a_converted_pod(hardened: Stack) -> None:
    pod = gpu_pod()
    converted = apply(pod, await hardened.post(admission(pod)))
    changed = copy.deepcopy(converted)
    changed["metadata"]["labels"] = {"tier": "gold"}
    for review in (
        admission(changed, operation="UPDATE", old=converted),
        admission(changed, operation="UPDATE", subresource="status", old=converted),
        admission(pod, operation="UPDATE", old=converted),  # even a pod that still names the resources
    ):
        answer = await hardened.post(review)
        assert answer["allowed"] and "patch" not in answer
    malformed = admission(converted, operation="UPDATE", subresource="ephemeralcontainers")
    malformed["request"]["object"] = None
    answer = await hardened.post(malformed)
    assert answer["allowed"] is False and "must carry the pod" in answer["status"]["message"]


def test_host_paths_are_compared_as_the_node_resolves_them() -> None:
    assert safety.canonical_host_path("//var/run/./cdi/") == "/run/cdi"
    assert safety.overlaps("/var/run", "/var/run/cdi") and safety.overlaps("/run/cdi/x.json", "/var/run/cdi")
    assert not safety.overlaps("/usr/local/tessera-old", "/usr/local/tessera")
    assert not safety.overlaps("/var/lib/kubelet/pods", "/var/lib/kubelet/plugins_registry")


# --- through the API server, with the chart's own webhook configuration ---------------------------------


async def test_kubectl_debug_and_the_opt_out_through_the_chart_configuration(hardened: Stack) -> None:
    """The chart's MutatingWebhookConfiguration in the API server stand-in: the opt-out label does not
    keep a pod from the webhook, and `kubectl debug` (a PATCH of pods/<name>/ephemeralcontainers)
    reaches it and is refused for a pod holding shares."""
    from e2e.cluster.harness import render_chart
    from kubeapi import KubeClient, KubeError

    (config,) = [d for d in render_chart() if d.get("kind") == "MutatingWebhookConfiguration"]
    for hook in config["webhooks"]:
        hook["clientConfig"] = {
            "url": hardened.url + "/mutate",
            "caBundle": base64.b64encode(hardened.ca.cert_pem.bytes()).decode(),
        }
    client = await KubeClient.connect(hardened.kubeconfig)
    try:
        await client.create("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", config)
        pods = "/api/v1/namespaces/default/pods"
        labelled = make_pod(container("main", limits={"nvidia.com/gpu": 1}), name="labelled",
                            labels={"tessera.dev/webhook": "ignore"})  # fmt: skip
        created = await client.create(pods, labelled)
        assert created["spec"]["resourceClaims"], "the label is not honoured in this namespace"
        with pytest.raises(KubeError) as refused:
            await client.create(pods, _with(gpu_pod("admin"), "containers:0", **_caps("SYS_ADMIN")))
        assert refused.value.status == 400 and "SYS_ADMIN" in refused.value.reason
        debug = {"spec": {"ephemeralContainers": [debug_container()]}}
        with pytest.raises(KubeError) as debugging:
            await client.request(
                "PATCH", f"{pods}/labelled/ephemeralcontainers", body=debug,
                content_type="application/strategic-merge-patch+json",
            )  # fmt: skip
        assert (
            debugging.value.status == 400 and "cannot be added: the pod holds device shares" in debugging.value.reason
        )
        stored = hardened.api.store.get("pods", "default", "labelled")
        assert "ephemeralContainers" not in stored["spec"]
        # A pod without shares can be debugged.
        await client.create(pods, make_pod(container("main"), name="plain"))
        await client.request(
            "PATCH", f"{pods}/plain/ephemeralcontainers", body=debug,
            content_type="application/strategic-merge-patch+json",
        )  # fmt: skip
        assert hardened.api.store.get("pods", "default", "plain")["spec"]["ephemeralContainers"]
    finally:
        await client.close()
