"""What the e2e tests need beyond the Kubernetes API, for each kind of cluster.

``HarnessControl`` drives the local harness directly; ``KindControl`` does the same on a kind
cluster where the chart is installed (``e2e/kind/run.sh``): drivers are the DaemonSet's pods,
the webhook is a Deployment, and node files are read with ``docker exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
from typing import Any, Protocol

import aiohttp

from e2e.cluster import DRIVER, Harness
from kubeapi import KubeClient, KubeError

NAMESPACE = os.environ.get("TESSERA_E2E_NAMESPACE", "tessera-system")
HOST_LIB_DIR = os.environ.get("TESSERA_E2E_HOST_LIB_DIR", "/usr/local/tessera")
CDI_DIR = os.environ.get("TESSERA_E2E_CDI_DIR", "/var/run/cdi")
DRIVER_METRICS_PORT = int(os.environ.get("TESSERA_E2E_DRIVER_METRICS_PORT", "9400"))


class ClusterControl(Protocol):
    kubeconfig: str

    async def nodes_with_devices(self) -> list[str]: ...
    async def stop_driver(self, node: str, *, kill: bool = False) -> None: ...
    async def start_driver(self, node: str) -> None: ...
    async def stop_webhook(self) -> None: ...
    async def start_webhook(self) -> None: ...
    async def webhook_metrics(self) -> list[str]:
        """The ``/metrics`` page of each webhook replica."""
        ...

    async def cdi_specs(self, node: str) -> list[str]: ...
    async def claim_dirs(self, node: str) -> list[str]: ...
    async def cdi_spec(self, node: str, driver: str, claim_uid: str) -> dict[str, Any] | None:
        """The CDI spec ``driver`` wrote on ``node`` for a claim (``None`` when there is none)."""
        ...

    async def host_files(self, node: str, directory: str) -> dict[str, str]:
        """The regular files of a host directory of ``node`` (a path as the CDI spec names it): name -> text."""
        ...

    async def driver_metrics(self, node: str) -> str:
        """What the NVIDIA driver on ``node`` answers on ``/metrics``."""
        ...

    async def inject_faults(self, node: str, lines: list[str]) -> None:
        """Write the mock backend's fault control file of the NVIDIA driver on ``node`` (``[]`` clears it);
        lines as ``gpu-1 xid 79`` (see the driver docs)."""
        ...

    async def exporter_metrics(self) -> str:
        """One scrape of the cluster exporter's ``/metrics``."""
        ...


def cdi_spec_name(driver: str, claim_uid: str) -> str:
    return f"k8s.{driver}-claim_{claim_uid}.json"


class HarnessControl:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.kubeconfig = harness.kubeconfig

    async def nodes_with_devices(self) -> list[str]:
        return sorted(self.harness.nodes)

    async def stop_driver(self, node: str, *, kill: bool = False) -> None:
        await self.harness.stop_driver(node, kill=kill)

    async def start_driver(self, node: str) -> None:
        await self.harness.start_driver(node)

    async def stop_webhook(self) -> None:
        await self.harness.stop_webhook()

    async def start_webhook(self) -> None:
        await self.harness.start_webhook()

    async def webhook_metrics(self) -> list[str]:
        return await self.harness.webhook_metrics()

    async def cdi_specs(self, node: str) -> list[str]:
        return sorted(os.listdir(self.harness.nodes[node].cdi_dir))

    async def claim_dirs(self, node: str) -> list[str]:
        return sorted(os.listdir(os.path.join(self.harness.nodes[node].host_lib_dir, "claims")))

    async def cdi_spec(self, node: str, driver: str, claim_uid: str) -> dict[str, Any] | None:
        path = os.path.join(self.harness.nodes[node].cdi_dir, cdi_spec_name(driver, claim_uid))
        return await asyncio.to_thread(_read_json, path)

    async def host_files(self, node: str, directory: str) -> dict[str, str]:
        # the harness's host paths are this machine's paths
        return await asyncio.to_thread(_read_files, directory)

    async def driver_metrics(self, node: str) -> str:
        port = self.harness.nodes[node].metrics_port
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            resp.raise_for_status()
            return await resp.text()

    async def inject_faults(self, node: str, lines: list[str]) -> None:
        path = self.harness.nodes[node].mock_faults
        text = "".join(f"{line}\n" for line in lines)
        await asyncio.to_thread(_write_atomic, path, text)

    async def exporter_metrics(self) -> str:
        return await self.harness.exporter_metrics()


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return dict(json.load(fh))
    except FileNotFoundError:
        return None


def _write_atomic(path: str, text: str) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(temp, path)


def _read_files(directory: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                out[name] = fh.read()
    return out


class KindControl:
    """A kind cluster with the chart installed as ``e2e/kind/run.sh`` installs it."""

    def __init__(self, kubeconfig: str, kube: KubeClient) -> None:
        self.kubeconfig = kubeconfig
        self.kube = kube
        self._replicas = 1
        self._affinity: dict[str, Any] = {}

    async def nodes_with_devices(self) -> list[str]:
        slices = await self.kube.list("/apis/resource.k8s.io/v1/resourceslices", fieldSelector=f"spec.driver={DRIVER}")
        return sorted({s["spec"]["nodeName"] for s in slices.get("items") or [] if s["spec"].get("nodeName")})

    async def _driver_pods(self, node: str) -> list[dict[str, Any]]:
        pods = await self.kube.list(
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            labelSelector="app.kubernetes.io/component=driver",
            fieldSelector=f"spec.nodeName={node}",
        )
        return list(pods.get("items") or [])

    async def _driver_daemonsets(self) -> list[dict[str, Any]]:
        got = await self.kube.list(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets", labelSelector="app.kubernetes.io/component=driver"
        )
        return list(got.get("items") or [])

    async def stop_driver(self, node: str, *, kill: bool = False) -> None:
        """Keep the driver DaemonSets that run on ``node`` off it (an anti-affinity on its hostname) and
        remove their pods (``kill``: at once, like SIGKILL; else with the grace period). The other
        vendors' DaemonSets are left alone (patching their template would restart their pods)."""
        on_node = {
            ref["name"]
            for pod in await self._driver_pods(node)
            for ref in pod["metadata"].get("ownerReferences") or []
            if ref.get("kind") == "DaemonSet"
        }
        for ds in await self._driver_daemonsets():
            name = ds["metadata"]["name"]
            if name not in on_node:
                continue
            self._affinity.setdefault(name, ds["spec"]["template"]["spec"].get("affinity"))
            away = {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node]}
                                ]
                            }
                        ]
                    }
                }
            }
            await self.kube.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{name}",
                body=[{"op": "add", "path": "/spec/template/spec/affinity", "value": away}],
                content_type="application/json-patch+json",
            )
        for pod in await self._driver_pods(node):
            path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}"
            with contextlib.suppress(KubeError):
                await self.kube.request("DELETE", path, body={"gracePeriodSeconds": 0 if kill else 30})
        await _until(lambda: self._no_pods(node), 120)

    async def _no_pods(self, node: str) -> bool:
        return not await self._driver_pods(node)

    async def start_driver(self, node: str) -> None:
        for ds in await self._driver_daemonsets():
            name = ds["metadata"]["name"]
            if name not in self._affinity:
                continue
            original = self._affinity.pop(name)
            op: dict[str, Any] = (
                {"op": "add", "path": "/spec/template/spec/affinity", "value": original}
                if original
                else {"op": "remove", "path": "/spec/template/spec/affinity"}
            )
            await self.kube.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{name}",
                body=[op],
                content_type="application/json-patch+json",
            )
        await _until(lambda: self._driver_ready(node), 180)

    async def _driver_ready(self, node: str) -> bool:
        for pod in await self._driver_pods(node):
            status = pod.get("status") or {}
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
                return True
        return False

    async def _scale(self, replicas: int) -> None:
        deployments = await self.kube.list(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", labelSelector="app.kubernetes.io/component=webhook"
        )
        for d in deployments.get("items") or []:
            if replicas == 0:
                self._replicas = int(d["spec"].get("replicas") or 1)
            await self.kube.merge_patch(
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{d['metadata']['name']}",
                {"spec": {"replicas": replicas}},
            )

    async def stop_webhook(self) -> None:
        await self._scale(0)
        await _until(self._webhook_gone, 120)

    async def _webhook_pods(self) -> list[dict[str, Any]]:
        pods = await self.kube.list(
            f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector="app.kubernetes.io/component=webhook"
        )
        return list(pods.get("items") or [])

    async def _webhook_gone(self) -> bool:
        return not await self._webhook_pods()

    async def start_webhook(self) -> None:
        await self._scale(self._replicas)

        async def ready() -> bool:
            endpoints = await self.kube.list(
                f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
                labelSelector="kubernetes.io/service-name=tessera-webhook",
            )
            return any(
                any((e.get("conditions") or {}).get("ready") for e in s.get("endpoints") or [])
                for s in endpoints.get("items") or []
            )

        await _until(ready, 180)

    async def webhook_metrics(self) -> list[str]:
        """Through the API server's proxy to each webhook pod's HTTPS port."""
        pages = []
        for pod in await self._webhook_pods():
            port = next(
                p["containerPort"]
                for c in pod["spec"]["containers"]
                for p in c.get("ports") or []
                if p["name"] == "https"
            )
            path = f"/api/v1/namespaces/{NAMESPACE}/pods/https:{pod['metadata']['name']}:{port}/proxy/metrics"
            pages.append(await self.kube.text(path))
        return pages

    async def _docker_ls(self, node: str, path: str) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            "docker", "exec", node, "sh", "-c", f"ls -1 {path} 2>/dev/null", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return sorted(line for line in out.decode().splitlines() if line)

    async def cdi_specs(self, node: str) -> list[str]:
        return [f for f in await self._docker_ls(node, CDI_DIR) if f.startswith(f"k8s.{DRIVER}")]

    async def claim_dirs(self, node: str) -> list[str]:
        return await self._docker_ls(node, f"{HOST_LIB_DIR}/claims")

    async def _docker_cat(self, node: str, path: str) -> str | None:
        proc = await asyncio.create_subprocess_exec(
            "docker", "exec", node, "cat", path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        return out.decode() if proc.returncode == 0 else None

    async def cdi_spec(self, node: str, driver: str, claim_uid: str) -> dict[str, Any] | None:
        text = await self._docker_cat(node, f"{CDI_DIR}/{cdi_spec_name(driver, claim_uid)}")
        return None if text is None else dict(json.loads(text))

    async def driver_metrics(self, node: str) -> str:
        pods = [
            p
            for p in await self._driver_pods(node)
            if any(ref.get("name", "").endswith("-nvidia") for ref in p["metadata"].get("ownerReferences") or [])
        ] or await self._driver_pods(node)
        name = pods[0]["metadata"]["name"]
        return await self.kube.text(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}:{DRIVER_METRICS_PORT}/proxy/metrics")

    async def inject_faults(self, node: str, lines: list[str]) -> None:
        path = f"/var/lib/kubelet/plugins/{DRIVER}/mock-faults"
        text = "".join(f"{line}\n" for line in lines)
        proc = await asyncio.create_subprocess_exec(
            "docker", "exec", node, "sh", "-c", f"printf %s {shlex.quote(text)} > {path}.tmp && mv {path}.tmp {path}"
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"cannot write {path} on {node}")

    async def exporter_metrics(self) -> str:
        # through the API server's service proxy, as a user with access to the namespace would
        return await self.kube.text(f"/api/v1/namespaces/{NAMESPACE}/services/tessera-exporter:metrics/proxy/metrics")

    async def host_files(self, node: str, directory: str) -> dict[str, str]:
        out = {}
        for name in await self._docker_ls(node, shlex.quote(directory)):
            text = await self._docker_cat(node, f"{directory.rstrip('/')}/{name}")
            if text is not None:
                out[name] = text
        return out


async def _until(check: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await check():  # type: ignore[operator]
                return
        except KubeError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s")
        await asyncio.sleep(1.0)
