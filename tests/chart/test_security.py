"""Security properties of the rendered chart, read from the objects themselves."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from vendors.base import OPT_OUT_KEY, OPT_OUT_VALUE

from . import helm

DRIVER_RULES = [
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims/status"], "verbs": ["update"]},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"],
     "verbs": ["list", "watch", "create", "update", "delete"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]  # fmt: skip
WEBHOOK_RULES = [
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaimtemplates"], "verbs": ["get", "create"]},
]
WEBHOOK_INVENTORY_RULES = [{"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"], "verbs": ["list"]}]
WEBHOOK_QUOTA_RULES = [
    {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["resourcequotas/status"], "verbs": ["update"]},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["list", "watch"]},
]
WEBHOOK_LEDGER_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
]
EXPORTER_RULES = [
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices", "resourceclaims"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
]


def _mwc(objs: list[helm.Obj]) -> dict[str, Any]:
    config = helm.one(objs, "MutatingWebhookConfiguration")
    assert len(config["webhooks"]) == 1
    hook: dict[str, Any] = config["webhooks"][0]
    return hook


def test_webhook_fails_closed(objs: list[helm.Obj]) -> None:
    hook = _mwc(objs)
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        },
        # kubectl debug adds ephemeral containers with an UPDATE of this subresource (the whole pod).
        {
            "operations": ["UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods/ephemeralcontainers"],
            "scope": "Namespaced",
        },
    ]


def test_failure_policy_cannot_be_configured_away(helm_home: Any) -> None:
    result = helm.run_helm(helm.template_args(sets={"webhook.failurePolicy": "Ignore"}), helm_home, check=False)
    assert result.returncode != 0 and "failurePolicy" in result.stderr


def test_no_label_keeps_a_pod_from_the_webhook(objs: list[helm.Obj]) -> None:
    """Pods' labels are their authors', namespaces' labels may be their own admins': only namespace
    names (set by the API server) leave pods out; the opt-out label is the webhook's to judge."""
    hook = _mwc(objs)
    assert "objectSelector" not in hook
    (by_name,) = hook["namespaceSelector"]["matchExpressions"]
    assert by_name["key"] == "kubernetes.io/metadata.name" and by_name["operator"] == "NotIn"
    assert {helm.NAMESPACE, "kube-system"} <= set(by_name["values"])


def test_opt_out_namespaces_reach_the_webhook(default_objs: list[helm.Obj], all_objs: list[helm.Obj]) -> None:
    def env(objs: list[helm.Obj]) -> dict[str, Any]:
        container = helm.pod_spec(helm.one(objs, "Deployment", "tessera-webhook"))["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert env(default_objs)["TESSERA_OPT_OUT_NAMESPACES"] == ""  # honoured nowhere unless the admin lists some
    assert env(all_objs)["TESSERA_OPT_OUT_NAMESPACES"] == "legacy-gpu,team-b"


def test_extra_excluded_namespaces(all_objs: list[helm.Obj]) -> None:
    (by_name,) = [e for e in _mwc(all_objs)["namespaceSelector"]["matchExpressions"] if e["operator"] == "NotIn"
                  and e["key"] == "kubernetes.io/metadata.name"]  # fmt: skip
    assert by_name["values"] == [helm.NAMESPACE, "kube-system", "monitoring", "gpu-operator"]


def test_our_own_pods_are_never_sent(objs: list[helm.Obj]) -> None:
    excluded = _mwc(objs)["namespaceSelector"]["matchExpressions"][0]["values"]
    for workload in helm.workloads(objs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels[OPT_OUT_KEY] == OPT_OUT_VALUE, workload["metadata"]["name"]
        assert workload["metadata"]["namespace"] == helm.NAMESPACE in excluded


def test_webhook_client_config_points_at_the_webhook_service(objs: list[helm.Obj]) -> None:
    hook = _mwc(objs)
    svc_ref = hook["clientConfig"]["service"]
    service = helm.one(objs, "Service", svc_ref["name"])
    assert svc_ref["namespace"] == helm.NAMESPACE and svc_ref["path"] == "/mutate"
    (port,) = service["spec"]["ports"]
    assert port["port"] == svc_ref["port"] == 443
    deployment = helm.one(objs, "Deployment", "tessera-webhook")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in helm.pod_spec(deployment)["containers"][0]["ports"]}
    assert port["targetPort"] in ports


def _claim_hook(objs: list[helm.Obj]) -> dict[str, Any]:
    config = helm.one(objs, "ValidatingWebhookConfiguration")
    assert len(config["webhooks"]) == 1
    hook: dict[str, Any] = config["webhooks"][0]
    return hook


def test_claim_webhook_fails_closed_on_our_claims_only(objs: list[helm.Obj]) -> None:
    """The quota's claim check: CREATE of resourceclaims, failurePolicy Fail like the pod webhook, the same
    namespaces left out, and matchConditions that let only claims naming our DeviceClasses depend on it."""
    hook = _claim_hook(objs)
    pods = _mwc(objs)
    assert hook["name"] == "claims.tessera.dev"
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "NoneOnDryRun"
    assert hook["matchPolicy"] == "Equivalent" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] == pods["timeoutSeconds"]
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": ["resource.k8s.io"], "apiVersions": ["v1"],
                              "resources": ["resourceclaims"], "scope": "Namespaced"}]  # fmt: skip
    assert hook["namespaceSelector"] == pods["namespaceSelector"]
    assert "objectSelector" not in hook
    svc = hook["clientConfig"]["service"]
    assert svc["path"] == "/validate" and svc["name"] == pods["clientConfig"]["service"]["name"]
    assert hook["clientConfig"].get("caBundle") == pods["clientConfig"].get("caBundle")


@pytest.mark.parametrize("values", ["default", "all"])
def test_claim_webhook_match_conditions_select_our_device_classes(
    values: str, renders: dict[tuple[str, str], list[helm.Obj]]
) -> None:
    import celpy

    objs = renders[(values, helm.KUBE_VERSIONS[0])]
    (condition,) = _claim_hook(objs)["matchConditions"]
    env = celpy.Environment()
    program = env.program(env.compile(condition["expression"]))
    ours = sorted(dc["metadata"]["name"] for dc in helm.find(objs, "DeviceClass"))
    assert ours and (values == "default") == (ours == ["nvidia.tessera.dev"])

    def sent(spec: dict[str, Any]) -> bool:
        claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c"}, "spec": spec}
        return bool(program.evaluate({"object": celpy.json_to_cel(claim), "oldObject": celpy.json_to_cel(None)}))

    def request(device_class: str, first: bool = False) -> dict[str, Any]:
        if first:
            return {"name": "r", "firstAvailable": [{"name": "a", "deviceClassName": "gpu.example.com"},
                                                    {"name": "b", "deviceClassName": device_class}]}  # fmt: skip
        return {"name": "r", "exactly": {"deviceClassName": device_class}}

    for device_class in ours:
        assert sent({"devices": {"requests": [request(device_class)]}})
        assert sent({"devices": {"requests": [request("gpu.example.com"), request(device_class, first=True)]}})
    assert not sent({"devices": {"requests": [request("gpu.example.com"), request("nvidia.tessera.dev.evil")]}})
    assert not sent({"devices": {"requests": [request("gpu.example.com", first=True)]}})
    assert not sent({}) and not sent({"devices": {}})


def test_generated_tls_secret_feeds_the_ca_bundle(default_objs: list[helm.Obj]) -> None:
    hook = _mwc(default_objs)
    secret = helm.one(default_objs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert base64.b64decode(secret["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    volumes = {v["name"]: v for v in helm.pod_spec(helm.one(default_objs, "Deployment", "tessera-webhook"))["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_cert_manager_mode(all_objs: list[helm.Obj]) -> None:
    config = helm.one(all_objs, "MutatingWebhookConfiguration")
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    assert not helm.find(all_objs, "Secret")  # cert-manager writes it
    cert = helm.one(all_objs, "Certificate")
    issuer = helm.one(all_objs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    own_issuer = {"name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io"}
    assert cert["spec"]["issuerRef"] == own_issuer
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    )
    service = helm.one(all_objs, "Service", _mwc(all_objs)["clientConfig"]["service"]["name"])
    assert f"{service['metadata']['name']}.{helm.NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    volumes = {v["name"]: v for v in helm.pod_spec(helm.one(all_objs, "Deployment", "tessera-webhook"))["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == cert["spec"]["secretName"]


def test_cert_manager_with_an_existing_issuer(helm_home: Any) -> None:
    objs = helm.render(
        helm_home,
        sets={"webhook.tls.certManager.enabled": "true", "webhook.tls.certManager.issuerRef.name": "corp-ca",
              "webhook.tls.certManager.issuerRef.kind": "ClusterIssuer"},
    )  # fmt: skip
    assert not helm.find(objs, "Issuer")
    assert helm.one(objs, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_webhook_deployment_is_highly_available(objs: list[helm.Obj]) -> None:
    deployment = helm.one(objs, "Deployment", "tessera-webhook")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = helm.one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container = helm.pod_spec(deployment)["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}


def test_webhook_runs_as_non_root_with_nothing_extra(objs: list[helm.Obj]) -> None:
    deployment = helm.one(objs, "Deployment", "tessera-webhook")
    spec = helm.pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    for c in helm.containers(deployment):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
        assert sc.get("privileged", False) is False


def _watchdog(workload: helm.Obj, *, kills: bool = False) -> bool:
    """The NVIDIA driver with its real backend runs the watchdog (hostPID; capability KILL if it kills)."""
    env = {e["name"]: e.get("value") for c in helm.containers(workload) for e in c.get("env", [])}
    return (
        workload["metadata"]["name"] == "tessera-nvidia-driver"
        and env.get("TESSERA_BACKEND") != "mock"
        and env.get("TESSERA_WATCHDOG") not in ("off", *(("report",) if kills else ()))
    )


def test_every_container_is_locked_down(objs: list[helm.Obj]) -> None:
    for workload in helm.workloads(objs):
        spec = helm.pod_spec(workload)
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if key == "hostPID" and _watchdog(workload):
                continue  # test_the_watchdog_adds_host_pids_and_kill_only
            assert not spec.get(key), f"{workload['metadata']['name']}: {key}"
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in helm.containers(workload):
            who = f"{workload['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, who
            assert all("hostPort" not in p for p in c.get("ports", [])), who
            if sc.get("privileged"):
                continue  # only where a value asked for it: test_privileged_only_on_request
            assert sc["allowPrivilegeEscalation"] is False, who
            if _watchdog(workload, kills=True) and c["name"] == "driver":
                assert sc["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}, who
            else:
                assert sc["capabilities"] == {"drop": ["ALL"]}, who
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, who
            assert c["resources"]["requests"] and c["resources"]["limits"], who
            assert c["resources"]["limits"].get("memory"), who


def _privileged(objs: list[helm.Obj]) -> set[tuple[str, str]]:
    return {
        (w["metadata"]["name"], c["name"])
        for w in helm.workloads(objs)
        for c in helm.containers(w)
        if c["securityContext"].get("privileged")
    }


def test_privileged_only_on_request(default_objs: list[helm.Obj], all_objs: list[helm.Obj]) -> None:
    # All options: hygon asks (privileged: true); ascend and iluvatar run their real backend, whose
    # tools open host device nodes (backendPrivileged); nvidia and cambricon are mock.
    assert _privileged(all_objs) == {
        ("tessera-ascend-driver", "driver"),
        ("tessera-hygon-driver", "driver"),
        ("tessera-iluvatar-driver", "driver"),
    }
    assert not _privileged(default_objs)


def test_mock_backends_are_never_privileged_by_the_backend(helm_home: Any) -> None:
    sets = {f"vendors.{v}.enabled": "true" for v in ("ascend", "cambricon", "hygon", "iluvatar")}
    assert len(_privileged(helm.render(helm_home, sets=sets))) == 4  # their real backends
    mock = {**sets, **{f"vendors.{v}.backend": "mock" for v in ("ascend", "cambricon", "hygon", "iluvatar")}}
    assert not _privileged(helm.render(helm_home, sets=mock))
    # An explicit `privileged: false` wins (e.g. the Ascend Docker Runtime injects the devices).
    off = {**sets, "vendors.ascend.privileged": "false"}
    assert ("tessera-ascend-driver", "driver") not in _privileged(helm.render(helm_home, sets=off))


def _host_paths(workload: helm.Obj) -> dict[str, dict[str, str]]:
    return {v["name"]: v["hostPath"] for v in helm.pod_spec(workload)["volumes"] if "hostPath" in v}


WRITABLE_HOST_VOLUMES = {"plugin-dir", "registry-dir", "cdi-dir", "host-lib"}


@pytest.mark.parametrize(
    ("values", "kubelet", "real_backends"),
    [("default", "/var/lib/kubelet", {"nvidia"}), ("all", "/var/lib/k0s/kubelet", {"ascend", "hygon", "iluvatar"})],
)
def test_driver_host_paths_are_exactly_the_needed_ones(
    renders: dict[tuple[str, str], list[helm.Obj]], values: str, kubelet: str, real_backends: set[str]
) -> None:
    """The four directories the driver writes, plus, with a real backend only, the vendor's
    configured `backendHostPaths` (tool and libraries), read-only. Nothing else of the host."""
    objs = renders[(values, helm.KUBE_VERSIONS[0])]
    settings = helm.effective_values(*([helm.ALL_OPTIONS] if values == "all" else []))["vendors"]
    daemonsets = helm.find(objs, "DaemonSet")
    assert daemonsets
    seen_real = set()
    for ds in daemonsets:
        vendor = ds["metadata"]["labels"]["tessera.dev/vendor"]
        real = settings[vendor]["backend"] != "mock"
        seen_real |= {vendor} if real else set()
        backend_paths = settings[vendor]["backendHostPaths"] if real else []
        assert _host_paths(ds) == {
            "plugin-dir": {"path": f"{kubelet}/plugins/{vendor}.tessera.dev", "type": "DirectoryOrCreate"},
            "registry-dir": {"path": f"{kubelet}/plugins_registry", "type": "Directory"},
            "cdi-dir": {"path": "/var/run/cdi", "type": "DirectoryOrCreate"},
            "host-lib": {"path": "/usr/local/tessera", "type": "DirectoryOrCreate"},
            **{f"backend-path-{i}": {"path": p["path"], "type": p["type"]} for i, p in enumerate(backend_paths)},
        }
        spec = helm.pod_spec(ds)
        host_volumes = _host_paths(ds)
        for c in helm.containers(ds):
            for mount in c.get("volumeMounts", []):
                if mount["name"] in host_volumes:
                    # Mounted at the host path: sockets and CDI specs name host paths.
                    assert mount["mountPath"] == host_volumes[mount["name"]]["path"]
                    assert not mount.get("mountPropagation")
                    # Only the driver's own directories are writable; the vendor's files never.
                    assert mount.get("readOnly", False) is (mount["name"] not in WRITABLE_HOST_VOLUMES), mount
        for init in spec.get("initContainers", []):
            assert [m["name"] for m in init["volumeMounts"]] == ["host-lib"]
    assert seen_real == real_backends & {ds["metadata"]["labels"]["tessera.dev/vendor"] for ds in daemonsets}
    if values == "all":
        assert sum(len(_host_paths(ds)) - 4 for ds in daemonsets) == 5  # ascend 3, hygon 1, iluvatar 1
    deployment = helm.one(objs, "Deployment", "tessera-webhook")
    assert not _host_paths(deployment)


def _rules(objs: list[helm.Obj], name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = helm.one(objs, "ClusterRole", name)["rules"]
    return rules


def test_rbac_is_exactly_what_the_code_uses(objs: list[helm.Obj]) -> None:
    assert _rules(objs, "tessera-driver") == DRIVER_RULES
    assert _rules(objs, "tessera-webhook") == WEBHOOK_RULES
    assert _rules(objs, "tessera-webhook-inventory") == WEBHOOK_INVENTORY_RULES
    assert _rules(objs, "tessera-webhook-quota") == WEBHOOK_QUOTA_RULES
    assert _rules(objs, "tessera-webhook-quota-ledger") == WEBHOOK_LEDGER_RULES
    assert _rules(objs, "tessera-exporter") == EXPORTER_RULES
    assert not helm.find(objs, "Role")
    assert len(helm.find(objs, "ClusterRole")) == 6


def test_quota_ledgers_are_bound_only_in_the_release_namespace(objs: list[helm.Obj]) -> None:
    """The ledgers' ConfigMap rights hold in the release namespace alone: never in a tenant's namespace,
    where the tenant could rewrite what it is charged."""
    (binding,) = [b for b in helm.find(objs, "RoleBinding") if b["roleRef"]["name"] == "tessera-webhook-quota-ledger"]
    assert binding["metadata"]["namespace"] == helm.NAMESPACE
    assert not [
        b for b in helm.find(objs, "ClusterRoleBinding") if b["roleRef"]["name"] == "tessera-webhook-quota-ledger"
    ]


def test_quota_off_renders_no_quota_rights_or_claim_webhook(helm_home: Any) -> None:
    objs = helm.render(helm_home, sets={"quota.enabled": "false"})
    assert not helm.find(objs, "ValidatingWebhookConfiguration")
    roles = {r["metadata"]["name"] for r in helm.find(objs, "ClusterRole")}
    assert not {"tessera-webhook-quota", "tessera-webhook-quota-ledger"} & roles
    assert {"tessera-driver", "tessera-webhook", "tessera-webhook-inventory"} <= roles
    assert not helm.find(objs, "RoleBinding")
    (container,) = helm.containers(helm.one(objs, "Deployment", "tessera-webhook"))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TESSERA_QUOTA"] == "false" and "TESSERA_QUOTA_NAMESPACE" not in env


def test_no_wildcards_secrets_or_escalation_in_rbac(objs: list[helm.Obj]) -> None:
    for role in helm.find(objs, "ClusterRole") + helm.find(objs, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: wildcard in {key}"
            assert not {"secrets", "serviceaccounts/token", "*"} & set(rule["resources"])
            if "pods" in rule["resources"]:  # the exporter only reads them (which container holds a share)
                assert role["metadata"]["name"] == "tessera-exporter" and set(rule["verbs"]) == {"list", "watch"}
            assert not {"escalate", "bind", "impersonate", "approve"} & set(rule["verbs"])


def test_bindings_bind_only_our_roles_to_our_service_accounts(objs: list[helm.Obj]) -> None:
    roles = {r["metadata"]["name"] for r in helm.find(objs, "ClusterRole")}
    accounts = {(sa["metadata"]["name"], sa["metadata"]["namespace"]) for sa in helm.find(objs, "ServiceAccount")}
    bindings = helm.find(objs, "ClusterRoleBinding") + helm.find(objs, "RoleBinding")
    assert bindings
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole" and binding["roleRef"]["name"] in roles
        assert binding["roleRef"]["name"] not in ("cluster-admin", "admin", "edit")
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert (subject["name"], subject["namespace"]) in accounts
    for workload in helm.workloads(objs):
        sa = helm.pod_spec(workload)["serviceAccountName"]
        assert (sa, helm.NAMESPACE) in accounts
    for sa in helm.find(objs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False  # only the pods that use the API mount it


def test_template_permissions_can_be_limited_to_namespaces(all_objs: list[helm.Obj]) -> None:
    role_bindings = [b for b in helm.find(all_objs, "RoleBinding") if b["roleRef"]["name"] == "tessera-webhook"]
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    cluster_bound = {b["roleRef"]["name"] for b in helm.find(all_objs, "ClusterRoleBinding")}
    assert cluster_bound == {"tessera-driver", "tessera-webhook-inventory", "tessera-webhook-quota", "tessera-exporter"}


def test_network_policies_open_only_served_ports(all_objs: list[helm.Obj]) -> None:
    policies = {p["metadata"]["name"]: p for p in helm.find(all_objs, "NetworkPolicy")}
    for workload in helm.workloads(all_objs):
        policy = policies[workload["metadata"]["name"]]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        served = {p["name"] for c in helm.pod_spec(workload)["containers"] for p in c.get("ports", [])}
        allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert allowed == served
        assert all("from" not in rule for rule in policy["spec"]["ingress"])


def test_service_monitors_select_what_serves_metrics(all_objs: list[helm.Obj]) -> None:
    monitors = {m["metadata"]["name"]: m for m in helm.find(all_objs, "ServiceMonitor")}
    assert set(monitors) == {"tessera-webhook", "tessera-driver", "tessera-exporter"}
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in helm.find(all_objs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert services, monitor["metadata"]["name"]
        port = monitor["spec"]["endpoints"][0]["port"]
        assert all(port in {p["name"] for p in s["spec"]["ports"]} for s in services)
    webhook_tls = monitors["tessera-webhook"]["spec"]["endpoints"][0]["tlsConfig"]
    assert "insecureSkipVerify" not in webhook_tls
    cert = helm.one(all_objs, "Certificate")
    assert webhook_tls["ca"]["secret"]["name"] == cert["spec"]["secretName"]
    assert webhook_tls["serverName"] in cert["spec"]["dnsNames"]


def test_key_material_only_in_the_tls_secret(default_objs: list[helm.Obj]) -> None:
    key_b64 = helm.one(default_objs, "Secret")["data"]["tls.key"]
    assert b"PRIVATE KEY" in base64.b64decode(key_b64)
    text = yaml.safe_dump_all(o for o in default_objs if o["kind"] != "Secret")
    assert "PRIVATE KEY" not in text and key_b64 not in text


def _driver_container(workload: helm.Obj) -> dict[str, Any]:
    container: dict[str, Any] = next(c for c in helm.containers(workload) if c["name"] == "driver")
    return container


def test_the_watchdog_adds_host_pids_and_kill_only(helm_home: Any, default_objs: list[helm.Obj]) -> None:
    """Where the watchdog runs (NVIDIA, real backend), and only there: hostPID, and the capability KILL
    when it kills; `off`, or the mock backend (no NVML), renders neither. Its settings reach every
    driver as env."""
    nvidia = next(w for w in helm.workloads(default_objs) if w["metadata"]["name"] == "tessera-nvidia-driver")
    assert helm.pod_spec(nvidia)["hostPID"] is True
    env = {e["name"]: e.get("value") for e in _driver_container(nvidia)["env"]}
    assert (env["TESSERA_WATCHDOG"], env["TESSERA_WATCHDOG_PERIOD"], env["TESSERA_WATCHDOG_TOLERANCE"]) == (
        "kill",
        "5",
        "512Mi",
    )
    for sets in (
        {"driver.watchdog.action": "off"},
        {"vendors.nvidia.backend": "mock"},
    ):
        objs = helm.render(helm_home, sets=sets)
        driver = next(w for w in helm.workloads(objs) if w["metadata"]["name"] == "tessera-nvidia-driver")
        assert "hostPID" not in helm.pod_spec(driver), sets
        assert _driver_container(driver)["securityContext"]["capabilities"] == {"drop": ["ALL"]}, sets
    objs = helm.render(
        helm_home,
        sets={"driver.watchdog.action": "report", "driver.watchdog.period": "2", "driver.watchdog.tolerance": "10%"},
    )
    driver = next(w for w in helm.workloads(objs) if w["metadata"]["name"] == "tessera-nvidia-driver")
    assert helm.pod_spec(driver)["hostPID"] is True  # it still reads host PIDs, but kills nothing
    assert _driver_container(driver)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in _driver_container(driver)["env"]}
    assert (env["TESSERA_WATCHDOG"], env["TESSERA_WATCHDOG_PERIOD"], env["TESSERA_WATCHDOG_TOLERANCE"]) == (
        "report",
        "2",
        "10%",
    )
    bad = helm.run_helm(helm.template_args(sets={"driver.watchdog.action": "shoot"}), helm_home, check=False)
    assert bad.returncode != 0 and "watchdog" in bad.stderr
