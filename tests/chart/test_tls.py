"""The chart-generated webhook certificate: valid for the Service, and kept across upgrades."""

from __future__ import annotations

import asyncio
import base64
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from . import fake_cluster, helm

DRA_GROUPS = {
    "resource.k8s.io": ["v1"], "apps": ["v1"], "policy": ["v1"], "rbac.authorization.k8s.io": ["v1"],
    "admissionregistration.k8s.io": ["v1"],
}  # fmt: skip


def _as_installed(obj: helm.Obj) -> helm.Obj:
    """The object as `helm install` leaves it in the cluster (release ownership metadata)."""
    meta = obj["metadata"]
    annotations = {"meta.helm.sh/release-name": helm.RELEASE, "meta.helm.sh/release-namespace": helm.NAMESPACE}
    labels = {**meta.get("labels", {}), "app.kubernetes.io/managed-by": "Helm"}
    return {**obj, "metadata": {**meta, "labels": labels, "annotations": annotations}}


def _cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def _verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        assert cert.signature_hash_algorithm is not None
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert cert.signature_hash_algorithm is not None
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    else:
        raise AssertionError(f"unexpected CA key type {type(key)}")


def test_generated_certificate_is_valid_for_the_service(default_objs: list[helm.Obj]) -> None:
    data = helm.one(default_objs, "Secret")["data"]
    ca, cert = _cert(data["ca.crt"]), _cert(data["tls.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    _verify_signed_by(cert, ca)
    service = helm.one(default_objs, "Service", "tessera-webhook")["metadata"]["name"]
    sans = set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )
    assert f"{service}.{helm.NAMESPACE}.svc" in sans  # the name kube-apiserver dials
    assert f"{service}.{helm.NAMESPACE}.svc.cluster.local" in sans
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert (cert.not_valid_after_utc - now).days >= 3649  # webhook.tls.validityDays
    # The private key belongs to the certificate.
    key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


async def _template_against(cluster: fake_cluster.FakeCluster, home: Path, *extra: str) -> tuple[int, str, str]:
    kubeconfig = cluster.write_kubeconfig(home / "kubeconfig")
    # The objects themselves are validated offline (test_lint_and_validate.py); the fake serves no OpenAPI.
    args = [*helm.template_args(), "--dry-run=server", "--disable-openapi-validation", "--kubeconfig",
            str(kubeconfig), *extra]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *helm.helm_cmd(*args), env=helm.helm_env(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_upgrade_keeps_the_certificate_and_ca_bundle(tmp_path: Path) -> None:
    async with fake_cluster.running(DRA_GROUPS) as cluster:
        rc, out, err = await _template_against(cluster, tmp_path)
        assert rc == 0, err
        first = helm.parse(out)
        secret = helm.one(first, "Secret")
        # The install happened: the Secret now exists in the cluster.
        cluster.secrets[(helm.NAMESPACE, secret["metadata"]["name"])] = _as_installed(secret)
        rc, out, err = await _template_against(cluster, tmp_path)
        assert rc == 0, err
        second = helm.parse(out)
        assert helm.one(second, "Secret")["data"] == secret["data"]
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            bundle = helm.one(second, kind)["webhooks"][0]["clientConfig"]["caBundle"]
            assert bundle == secret["data"]["ca.crt"], kind
        assert f"/api/v1/namespaces/{helm.NAMESPACE}/secrets/{secret['metadata']['name']}" in cluster.requests

        # regenerate=true replaces both, together.
        rc, out, err = await _template_against(cluster, tmp_path, "--set", "webhook.tls.regenerate=true")
        assert rc == 0, err
        third = helm.parse(out)
        new = helm.one(third, "Secret")["data"]
        assert new["ca.crt"] != secret["data"]["ca.crt"] and new["tls.crt"] != secret["data"]["tls.crt"]
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            assert helm.one(third, kind)["webhooks"][0]["clientConfig"]["caBundle"] == new["ca.crt"], kind


async def test_incomplete_secret_is_not_reused(tmp_path: Path) -> None:
    async with fake_cluster.running(DRA_GROUPS) as cluster:
        name = "tessera-webhook-tls"
        cluster.secrets[(helm.NAMESPACE, name)] = _as_installed({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": helm.NAMESPACE},
            "data": {"tls.crt": "Q1JU"},
        })  # fmt: skip
        rc, out, err = await _template_against(cluster, tmp_path)
        assert rc == 0, err
        data = helm.one(helm.parse(out), "Secret")["data"]
        assert data["tls.crt"] != "Q1JU"
        _verify_signed_by(_cert(data["tls.crt"]), _cert(data["ca.crt"]))


async def test_cluster_without_dra_v1_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    async with fake_cluster.running({"resource.k8s.io": ["v1beta2"], "apps": ["v1"]}) as cluster:
        rc, _, err = await _template_against(cluster, tmp_path)
    assert rc != 0
    assert "needs the resource.k8s.io/v1 API" in err
