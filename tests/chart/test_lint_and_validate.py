"""helm lint --strict, values.schema.json, and strict schema validation of every rendered object."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from . import helm

# Kinds from CRDs (cert-manager, Prometheus Operator): kubernetes-validate has no schema for them;
# test_security.py and test_names.py check their fields. Nothing else may go unvalidated.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


@pytest.mark.parametrize("values", [[], [helm.ALL_OPTIONS]], ids=["default", "all-options"])
def test_helm_lint_strict(helm_home: Path, values: list[Path]) -> None:
    args = ["lint", "--strict", str(helm.CHART), "--namespace", helm.NAMESPACE]
    for v in values:
        args += ["-f", str(v)]
    result = helm.run_helm(args, helm_home, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("version", helm.KUBE_VERSIONS)
@pytest.mark.parametrize("values", ["default", "all"])
def test_every_object_validates_strictly(
    renders: dict[tuple[str, str], list[helm.Obj]], values: str, version: str
) -> None:
    objs = renders[(values, version)]
    assert objs
    unvalidated = []
    for obj in objs:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            unvalidated.append(obj["kind"])
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc}") from None
    expected = {"all": {"Issuer", "Certificate", "ServiceMonitor"}, "default": set()}[values]
    assert set(unvalidated) == expected


def test_validation_catches_an_unknown_field(default_objs: list[helm.Obj]) -> None:
    """Control: strict validation rejects a field the API does not have."""
    device_class = helm.find(default_objs, "DeviceClass")[0]
    broken = {**device_class, "spec": {**device_class["spec"], "bogus": True}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, helm.KUBE_VERSIONS[0], strict=True)


def test_kubernetes_validate_has_the_target_versions() -> None:
    # validate() silently falls back to the newest older schema set: make sure both are bundled.
    bundled = set(kubernetes_validate.utils.all_versions())
    assert set(helm.KUBE_VERSIONS) <= bundled


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"webhook.bogus": "1"}, "additional properties 'bogus' not allowed"),
        ({"webhook.timeoutSeconds": "60"}, "timeoutSeconds"),
        ({"policy.coreLimitPolicy": "sometimes"}, "coreLimitPolicy"),
        ({"policy.coreLimitPolicy": "disable"}, "policy.allowCoreLimitDisable is false"),
        ({"policy.allowHighPriority": "maybe"}, "allowHighPriority"),
        ({"webhook.corePolicy": "force"}, "additional properties 'corePolicy' not allowed"),
        ({"webhook.optOutNamespaces[0]": "Not_A_Namespace"}, "optOutNamespaces"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"vendors.nvidia.backend": ""}, "backend"),
        ({"vendors.nvidia.enabeld": "true"}, "additional properties 'enabeld' not allowed"),
        ({"driver.kubeletDir": "var/lib/kubelet"}, "kubeletDir"),
        ({"webhook.image.digest": "latest"}, "digest"),
        ({"webhook.replicas": "0"}, "replicas"),
    ],
)
def test_schema_rejects_bad_values(helm_home: Path, sets: dict[str, str], message: str) -> None:
    result = helm.run_helm(helm.template_args(sets=sets), helm_home, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_chart_refuses_clusters_older_than_1_34(helm_home: Path) -> None:
    result = helm.run_helm(helm.template_args(kube_version="1.33.4"), helm_home, check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr, result.stderr


def test_mock_backend_for_test_clusters(helm_home: Path) -> None:
    objs = helm.render(helm_home, sets={"vendors.nvidia.backend": "mock", "vendors.nvidia.mockDevices": "2xH100"})
    driver = helm.one(objs, "DaemonSet")
    env = helm.env_of(helm.pod_spec(driver)["containers"][0])
    assert env["TESSERA_BACKEND"]["value"] == "mock"
    assert env["TESSERA_MOCK_DEVICES"]["value"] == "2xH100"
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the runtime injection env belongs to the real backend


def test_a_vendor_is_a_values_entry(helm_home: Path) -> None:
    """Enabling a vendor adds its DaemonSet and DeviceClass and nothing else changes."""
    base = helm.render(helm_home)
    more = helm.render(helm_home, sets={"vendors.cambricon.enabled": "true"})
    names = {(o["kind"], o["metadata"]["name"]) for o in more} - {(o["kind"], o["metadata"]["name"]) for o in base}
    assert names == {("DaemonSet", "tessera-cambricon-driver"), ("DeviceClass", "cambricon.tessera.dev")}
    webhook = helm.env_of(helm.pod_spec(helm.one(more, "Deployment", "tessera-webhook"))["containers"][0])
    assert webhook["TESSERA_VENDORS"]["value"] == "cambricon,nvidia"
