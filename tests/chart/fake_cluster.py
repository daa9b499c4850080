"""A minimal API server for ``helm template --dry-run=server``: discovery and Secret GETs.

Helm's ``lookup`` only talks to a real cluster; this serves the few paths it uses (``/version``,
``/api``, ``/apis``, ``/api/v1`` discovery and ``GET .../secrets/<name>``), so the chart's
keep-the-certificate-on-upgrade logic runs on the real wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

# group/version -> (kind, plural, namespaced): the kinds the chart renders by default.
KINDS: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [("Secret", "secrets", True), ("Service", "services", True), ("ServiceAccount", "serviceaccounts", True)],
    "apps/v1": [("Deployment", "deployments", True), ("DaemonSet", "daemonsets", True)],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    "rbac.authorization.k8s.io/v1": [
        ("ClusterRole", "clusterroles", False), ("ClusterRoleBinding", "clusterrolebindings", False),
        ("Role", "roles", True), ("RoleBinding", "rolebindings", True),
    ],
    "admissionregistration.k8s.io/v1": [
        ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", False),
        ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", False),
        ("ValidatingAdmissionPolicy", "validatingadmissionpolicies", False),
        ("ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", False),
    ],
    "resource.k8s.io/v1": [("DeviceClass", "deviceclasses", False)],
}  # fmt: skip


def _resources(group_version: str) -> list[dict[str, Any]]:
    return [
        {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
         "verbs": ["get", "list", "create", "update", "patch", "delete"]}
        for kind, plural, namespaced in KINDS.get(group_version, [])
    ]  # fmt: skip


class FakeCluster:
    def __init__(self, *, served_groups: dict[str, list[str]]) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.served_groups = served_groups
        self.requests: list[str] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._get)
        return app

    async def _get(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        path = request.path
        if path == "/version":
            return web.json_response({"major": "1", "minor": "34", "gitVersion": "v1.34.2", "platform": "linux/amd64"})
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/api/v1":
            return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": _resources("v1")})
        if path == "/apis":
            groups = [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in versions],
                 "preferredVersion": {"groupVersion": f"{g}/{versions[0]}", "version": versions[0]}}
                for g, versions in self.served_groups.items()
            ]  # fmt: skip
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in self.served_groups.get(parts[1], []):
            gv = f"{parts[1]}/{parts[2]}"
            return web.json_response({"kind": "APIResourceList", "groupVersion": gv, "resources": _resources(gv)})
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
            secret = self.secrets.get((parts[3], parts[5]))
            if secret is not None:
                return web.json_response(secret)
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}, status=404
        )

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: fake, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: fake, user: {}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n"
            "current-context: fake\n"
        )
        return path


@asynccontextmanager
async def running(served_groups: dict[str, list[str]]) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(served_groups=served_groups)
    runner = web.AppRunner(cluster.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cluster.url = f"http://127.0.0.1:{port}"
    try:
        yield cluster
    finally:
        await runner.cleanup()
