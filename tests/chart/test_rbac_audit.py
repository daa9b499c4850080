"""RBAC audit on the real wire: what the driver and the webhook request is what the chart grants.

The API server stand-in (e2e.apiserver) does not enforce RBAC, so a missing verb would only show
on a real cluster. Here the real driver (configured from the chart's DaemonSet env) and the
webhook's API paths run against it; every request in its log is mapped to (group, resource, verb)
and must be allowed by the chart's ClusterRole for that component. The driver part covers slice
publishing, prepares (the claim read and its status.devices), a failing prepare (a pod Event, then
its count) and a device fault (Events on the Node and the pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver import cli as driver_cli
from dra_driver.daemon import Driver
from dra_driver.proto import dra_v1_pb2, dra_v1_pb2_grpc
from e2e.apiserver import APIServer
from kubeapi import KubeClient
from tessera_exporter.exporter import Exporter
from tests.exporter.helpers import claim, pod, request, slices
from webhook import inventory
from webhook.metrics import Metrics
from webhook.templates import TemplateStore

from . import helm

Access = tuple[str, str, str]  # (api group, resource, verb)


def access_of(method: str, path: str, query: dict[str, str]) -> Access | None:
    """The RBAC attributes of a resource request; ``None`` for non-resource paths (discovery)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = "/".join([rest[0], *rest[2:3]])
    named = len(rest) >= 2
    if method == "GET":
        verb = "get" if named else ("watch" if query.get("watch") in ("1", "true") else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return group, resource, verb


def allocated_claim(name: str, node: str, priority: int) -> dict[str, Any]:
    """A claim allocated a share of ``gpu-0`` of ``node``, reserved for a pod (priority 7 is invalid)."""
    uid = str(uuid.uuid4())
    params = {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", "priority": priority}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "nvidia.tessera.dev"}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {
                            "request": "gpu",
                            "driver": "nvidia.tessera.dev",
                            "pool": node,
                            "device": "gpu-0",
                            "shareID": str(uuid.uuid4()),
                            "consumedCapacity": {"memory": "1Gi", "cores": "1", "shares": "1"},
                        }
                    ],
                    "config": [
                        {"source": "FromClaim", "opaque": {"driver": "nvidia.tessera.dev", "parameters": params}}
                    ],
                }
            },
            "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": str(uuid.uuid4())}],
        },
    }


def granted(role: helm.Obj) -> set[Access]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def accesses(api: APIServer) -> set[Access]:
    out = set()
    for record in api.requests:
        access = access_of(record.method, record.path, dict(record.query))
        if access is not None:
            out.add(access)
    return out


async def _pushed(driver: Driver) -> None:
    """Until the occupancy tracker has listed, watched and published (its watches are then open)."""
    for _ in range(400):
        if driver.occupancy is not None and driver.occupancy.published is not None:
            return
        await asyncio.sleep(0.05)


def _not_granted(used: Iterable[Access], role: helm.Obj) -> list[Access]:
    return sorted(set(used) - granted(role))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tc", dir="/tmp"))  # Unix socket paths stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_request_mapping() -> None:
    assert access_of("GET", "/apis/resource.k8s.io/v1/resourceslices", {"watch": "true"}) == (
        "resource.k8s.io", "resourceslices", "watch")  # fmt: skip
    assert access_of("POST", "/api/v1/namespaces/default/events", {}) == ("", "events", "create")
    assert access_of("GET", "/api/v1/nodes/n1", {}) == ("", "nodes", "get")
    assert access_of("PUT", "/api/v1/nodes/n1/status", {}) == ("", "nodes/status", "update")
    assert access_of("PUT", "/apis/resource.k8s.io/v1/namespaces/a/resourceclaims/c/status", {}) == (
        "resource.k8s.io", "resourceclaims/status", "update")  # fmt: skip
    assert access_of("GET", "/version", {}) is None


async def test_driver_requests_are_granted(helm_home: Path, short_dir: Path) -> None:
    objs = helm.render(helm_home, sets={"vendors.nvidia.backend": "mock"})
    (ds,) = helm.find(objs, "DaemonSet")
    (container,) = helm.pod_spec(ds)["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    async with APIServer.running(host="127.0.0.1", port=0) as api:
        api.store.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
        env.update(
            NODE_NAME="node-1",
            TESSERA_KUBECONFIG=api.write_kubeconfig(short_dir / "kubeconfig"),
            TESSERA_PLUGIN_DIR=str(short_dir / "plugin"),
            TESSERA_REGISTRY_DIR=str(short_dir / "registry"),
            TESSERA_CDI_DIR=str(short_dir / "cdi"),
            TESSERA_HOST_LIB_DIR=str(short_dir / "lib"),
            TESSERA_METRICS_PORT="0",
            TESSERA_HEALTHZ_PORT="0",
        )
        for d in ("plugin", "registry", "cdi", "lib"):
            (short_dir / d).mkdir()
        good, bad = (allocated_claim(name, "node-1", priority) for name, priority in (("good", 1), ("bad", 7)))
        for c in (good, bad):
            api.store.put(c)
        settings = driver_cli.settings_from_args([], env)
        driver = Driver(settings)
        await driver.start()
        try:
            assert driver.publisher is not None
            await asyncio.wait_for(driver.publisher.published.wait(), timeout=20)
            assert driver.occupancy is not None
            await asyncio.wait_for(_pushed(driver), timeout=20)
            slices = api.store.list("resourceslices")
            assert slices and all(s["spec"]["nodeName"] == "node-1" for s in slices)
            # a prepare (claim status), a failing one twice (a pod Event, then its count), a device fault
            async with grpc.aio.insecure_channel(f"unix://{settings.dra_socket}") as channel:
                stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
                for c in (good, bad, bad):
                    meta = c["metadata"]
                    ref = dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
                    await stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=10)
            (short_dir / "plugin" / "mock-faults").write_text("gpu-0 xid 62\n")
            assert driver.monitor is not None and driver.status_writer is not None
            await driver.monitor.check()
            await driver.status_writer.flush()
        finally:
            await driver.stop()
        used = accesses(api)
    assert ("resource.k8s.io", "resourceslices", "create") in used
    assert ("resource.k8s.io", "resourceclaims", "list") in used, "the occupancy tracker (its watch ends with the test)"
    assert ("", "nodes", "get") in used
    assert ("", "nodes/status", "update") in used, "the sharing condition on the Node"
    assert ("resource.k8s.io", "resourceclaims/status", "update") in used, "the claim's status.devices"
    assert ("", "events", "create") in used and ("", "events", "patch") in used, "events, counted"
    assert not _not_granted(used, helm.one(objs, "ClusterRole", "tessera-driver")), used


async def test_webhook_requests_are_granted(default_objs: list[helm.Obj], short_dir: Path) -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "tessera-0123456789", "namespace": "default"},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "gpu", "exactly": {"deviceClassName": "nvidia.tessera.dev", "count": 1}}]}}},
    }  # fmt: skip
    async with APIServer.running(host="127.0.0.1", port=0) as api:
        client = await KubeClient.connect(api.write_kubeconfig(short_dir / "kubeconfig"))
        try:
            await inventory.fetch(client)
            assert await TemplateStore(client, Metrics()).ensure(template, {}) == "created"
            # Another replica (no cache) finds it on a conflict and compares content.
            assert await TemplateStore(client, Metrics()).ensure(template, {}) == "exists"
        finally:
            await client.close()
        used = accesses(api)
    assert ("resource.k8s.io", "resourceclaimtemplates", "get") in used
    roles = [helm.one(default_objs, "ClusterRole", n) for n in ("tessera-webhook", "tessera-webhook-inventory")]
    all_granted = set().union(*(granted(r) for r in roles))
    assert not sorted(used - all_granted), used


async def test_quota_requests_are_granted_and_ledgers_stay_home(default_objs: list[helm.Obj], short_dir: Path) -> None:
    """The quota controller's informers, admissions, reconciling passes and status writes use only what
    the quota roles grant; its ConfigMaps are all in the release namespace, where the ledger role is bound."""
    import vendors
    from webhook import quota as q
    from webhook.ledger import LedgerStore, ledger_name
    from webhook.quota_controller import QuotaController

    ns = "team-a"
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": ns},
             "spec": {"hard": {"limits.nvidia.com/gpumem": "4096"}}}  # fmt: skip
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
             "metadata": {"name": "mine", "namespace": ns, "uid": "u-1"},
             "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                 "deviceClassName": "nvidia.tessera.dev", "capacity": {"requests": {"memory": "1Gi"}}}}]}}}  # fmt: skip
    async with APIServer.running(host="127.0.0.1", port=0) as api:
        for name in (helm.NAMESPACE, ns):
            api.store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        api.store.put(quota)
        client = await KubeClient.connect(api.write_kubeconfig(short_dir / "kubeconfig"))
        metrics = Metrics()
        controller = QuotaController(
            client,
            q.Catalog(vendors.admission_vendors()),
            LedgerStore(client, helm.NAMESPACE, metrics),
            metrics,
            inventory=lambda: None,
            resync=0.1,
            grace=0.1,
        )
        task = asyncio.create_task(controller.run())
        try:
            verdict = await controller.check_claim(ns, claim, dry_run=False, review_uid="r", log={})
            assert verdict.allowed
            api.store.put(claim)
            for _ in range(100):
                status = (api.store.raw("resourcequotas", ns, "gpu") or {}).get("status") or {}
                if (status.get("used") or {}).get("limits.nvidia.com/gpumem") == "1024":
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the quota's status was not written")
            second = {**claim, "metadata": {**claim["metadata"], "name": "second", "uid": "u-2"}}
            assert (await controller.check_claim(ns, second, dry_run=False, review_uid="r2", log={})).allowed
            api.store.delete("resourcequotas", ns, "gpu")
            for _ in range(100):
                if api.store.raw("configmaps", helm.NAMESPACE, ledger_name(ns)) is None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the ledger was not removed with the quota")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()
        used = accesses(api)
        configmap_paths = {r.path for r in api.requests if "/configmaps" in r.path}
    for needed in [("", "resourcequotas/status", "update"), ("", "configmaps", "create"), ("", "configmaps", "update"),
                   ("", "configmaps", "delete"), ("resource.k8s.io", "resourceclaims", "list")]:  # fmt: skip
        assert needed in used, needed
    quota_roles = [
        helm.one(default_objs, "ClusterRole", n) for n in ("tessera-webhook-quota", "tessera-webhook-quota-ledger")
    ]
    assert not sorted(used - set().union(*(granted(r) for r in quota_roles))), used
    assert configmap_paths and all(
        p.startswith(f"/api/v1/namespaces/{helm.NAMESPACE}/configmaps") for p in configmap_paths
    )


async def test_exporter_requests_are_granted(default_objs: list[helm.Obj], short_dir: Path) -> None:
    async with APIServer.running(host="127.0.0.1", port=0) as api:
        kube = await KubeClient.connect(api.write_kubeconfig(short_dir / "kubeconfig"))
        exporter = Exporter(kube)
        try:
            await exporter.start()
            await exporter.wait_synced(10)
            # objects through the store's back door: every request on the wire is the exporter's
            waiting = pod("w", {"main": [("gpu", "")]}, claims={"gpu": "w"}, unschedulable="no room")
            for obj in [*slices("node1", "1xH200"), waiting, claim("w", [], [request()], allocated=False)]:
                api.store.put(obj)
            for _ in range(200):
                if exporter.state.view().pending_claims:
                    break
                await asyncio.sleep(0.05)
            assert exporter.state.view().pending_claims and exporter.state.view().devices
        finally:
            await exporter.stop()
            await kube.close()
    used = accesses(api)
    assert {("resource.k8s.io", "resourceslices", "watch"), ("", "pods", "list")} <= used
    assert not _not_granted(used, helm.one(default_objs, "ClusterRole", "tessera-exporter")), used
