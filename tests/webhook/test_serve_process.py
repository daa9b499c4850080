"""``python -m webhook serve`` as a process, configured through TESSERA_* env as the chart does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from e2e.apiserver import APIServer

from .conftest import ROOT, container, make_pod


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cert(tmp_path) -> tuple[ssl.SSLContext, str, str]:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx, str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")


@dataclass
class Served:
    """A ``python -m webhook serve`` process, ready, and a session to talk to it; after the block, its
    exit status and its JSON log lines."""

    session: aiohttp.ClientSession
    base: str
    ssl: ssl.SSLContext
    proc: asyncio.subprocess.Process
    returncode: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, api: APIServer, settings: dict[str, str], ready_path: str, ready: Callable[[int, str], bool]
) -> AsyncIterator[Served]:
    """The webhook as the chart runs it (TESSERA_* env, TLS, JSON logs) plus ``settings``, until it
    answers ``ready_path`` as ``ready`` wants; SIGTERM when the block ends."""
    ctx, cert, key = _cert(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_PORT": str(port),
        "TESSERA_TLS_CERT_FILE": cert,
        "TESSERA_TLS_KEY_FILE": key,
        "TESSERA_KUBECONFIG": api.write_kubeconfig(tmp_path / "kubeconfig"),
        "TESSERA_LOG_FORMAT": "json",
        **settings,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "webhook", "serve", cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    served = None
    try:
        async with aiohttp.ClientSession() as session:
            base = f"https://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    async with session.get(base + ready_path, ssl=ctx) as resp:
                        if ready(resp.status, await resp.text()):
                            break
                except aiohttp.ClientConnectorError:
                    pass
                assert proc.returncode is None, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
            served = Served(session, base, ctx, proc)
            yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    served.returncode = proc.returncode
    assert proc.returncode == 0, err.decode()
    served.log = [json.loads(line) for line in err.decode().splitlines()]


async def test_serve_process_answers_and_stops_on_sigterm(tmp_path):
    settings = {
        "TESSERA_VENDORS": "nvidia", "TESSERA_CORE_POLICY": "disable", "TESSERA_ALLOW_CORE_LIMIT_DISABLE": "true",
    }  # fmt: skip

    def ready(status: int, _: str) -> bool:
        return status == 200

    async with APIServer.running() as api, serving(tmp_path, api, settings, "/readyz", ready) as served:
        pod = make_pod(container(limits={"nvidia.com/gpu": 1}))
        uid = str(uuid.uuid4())
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": "CREATE", "namespace": "default", "object": pod,
                        "resource": {"group": "", "version": "v1", "resource": "pods"}},
        }  # fmt: skip
        async with served.session.post(served.base + "/mutate", json=review, ssl=served.ssl) as resp:
            answer = await resp.json()
        assert answer["response"]["uid"] == uid and answer["response"]["allowed"] is True
        (template,) = api.store.list("resourceclaimtemplates", "default")
        config = template["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]
        assert config["coreLimitPolicy"] == "disable"
    assert any(x["msg"].startswith("serving https://127.0.0.1") for x in served.log)
    assert any(x.get("uid") == uid and x["msg"] == "converted" for x in served.log)
    assert served.log[-1]["msg"] == "stopping"


def test_serve_without_tls_exits_2_with_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m webhook serve: serve needs --tls-cert-file and --tls-key-file "
        "(or TESSERA_TLS_CERT_FILE/TESSERA_TLS_KEY_FILE)"
    ]


def test_serve_with_a_bad_certificate_exits_2(tmp_path):
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--tls-cert-file", str(tmp_path / "tls.crt"),
         "--tls-key-file", str(tmp_path / "tls.key")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "cannot load the serving certificate" in line and "Traceback" not in proc.stderr


def test_quota_settings_that_cannot_work_exit_2(tmp_path):
    _, cert, key = _cert(tmp_path)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    base.update(TESSERA_TLS_CERT_FILE=cert, TESSERA_TLS_KEY_FILE=key)
    for extra, expected in (
        ({"TESSERA_QUOTA": "true"}, "--quota true needs --quota-namespace (or TESSERA_QUOTA_NAMESPACE)"),
        ({"TESSERA_QUOTA": "maybe"}, "--quota 'maybe': expected true or false"),
    ):
        proc = subprocess.run([sys.executable, "-m", "webhook", "serve"], env={**base, **extra}, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert expected in line


async def test_serve_process_with_the_quota_as_the_chart_configures_it(tmp_path):
    """TESSERA_QUOTA and TESSERA_QUOTA_NAMESPACE as the chart sets them: a claim past the namespace's
    quota is refused on /validate, and /metrics carries HAMi's quota gauges."""
    settings = {"TESSERA_QUOTA": "true", "TESSERA_QUOTA_NAMESPACE": "tessera-system"}
    async with APIServer.running() as api:
        for name in ("tessera-system", "team-a"):
            api.store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        api.store.put({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": "team-a"},
                       "spec": {"hard": {"limits.nvidia.com/gpumem": "1024"}}})  # fmt: skip

        def ledger_made(_: int, page: str) -> bool:
            return "hami_resource_quota_limit{" in page  # the reconciler made the namespace's ledger

        async with serving(tmp_path, api, settings, "/metrics", ledger_made) as served:
            claim = {
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": "big", "namespace": "team-a", "uid": "u-1"},
                "spec": {"devices": {"requests": [{"name": "g", "exactly": {
                    "deviceClassName": "nvidia.tessera.dev", "capacity": {"requests": {"memory": "2Gi"}}}}]}},
            }  # fmt: skip
            claims = {"group": "resource.k8s.io", "version": "v1", "resource": "resourceclaims"}
            review = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "r-1", "operation": "CREATE", "namespace": "team-a", "object": claim,
                            "resource": claims},
            }  # fmt: skip
            async with served.session.post(served.base + "/validate", json=review, ssl=served.ssl) as resp:
                answer = (await resp.json())["response"]
            async with served.session.get(served.base + "/metrics", ssl=served.ssl) as resp:
                page = await resp.text()
            assert answer["allowed"] is False and answer["status"]["code"] == 403
            assert "limits.nvidia.com/gpumem: used 0, asked 2048, limit 1024" in answer["status"]["message"]
            limit = 'hami_resource_quota_limit{namespace="team-a",quota_name="nvidia.com/gpumem",zone="vGPU"} 1024.0'
            assert limit in page
            assert 'tessera_webhook_quota_checks_total{kind="claim",result="denied"} 1.0' in page
    assert any("quota ledgers in tessera-system" in x["msg"] for x in served.log)
    assert any(x["msg"].startswith("quota: denied") and x.get("claim") == "big" for x in served.log)
