"""The API server stand-in, driven by the official client and by kubeapi.KubeClient over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from e2e.apiserver import APIServer
from kubeapi import RESOURCE_V1, KubeClient, KubeError, cluster_path, namespaced_path


@pytest.fixture
async def api() -> AsyncIterator[APIServer]:
    async with APIServer.running() as server:
        yield server


@pytest.fixture
async def kube(api: APIServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kubeconfig"), timeout=5)
    yield client
    await client.close()


@pytest.fixture
async def official(api: APIServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=api.write_kubeconfig(tmp_path / "kc"), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as client:
        yield client


def pod(name: str = "p", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["true"]}]},
    }


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "nvidia.tessera.dev"}}]}},
    }


PODS = namespaced_path("v1", "pods", "default")
CLAIMS = namespaced_path("resource.k8s.io/v1", "resourceclaims", "default")


# ------------------------------------------------------------------------------ official client
async def test_official_client_pod_lifecycle(api: APIServer, official: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(official)
    created = await core.create_namespaced_pod("default", pod("web", app="web"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"  # scheme defaults applied
    got = await core.read_namespaced_pod("web", "default")
    assert got.metadata.resource_version == created.metadata.resource_version
    listed = await core.list_namespaced_pod("default", label_selector="app=web")
    assert [p.metadata.name for p in listed.items] == ["web"]
    assert (await core.list_namespaced_pod("default", label_selector="app!=web")).items == []
    # strategic merge patch (the client's default for dict bodies) merges labels
    patched = await core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"tier": "x"}}})
    assert patched.metadata.labels == {"app": "web", "tier": "x"}
    # status subresource
    status = await core.patch_namespaced_pod_status("web", "default", {"status": {"phase": "Running"}})
    assert status.status.phase == "Running"
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod("default", pod("web"))
    assert exc.value.status == 409
    assert json.loads(exc.value.body)["reason"] == "AlreadyExists"
    await core.delete_namespaced_pod("web", "default")
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_pod("web", "default")
    assert exc.value.status == 404


async def test_official_client_resource_v1(api: APIServer, official: k8s.ApiClient) -> None:
    resource = k8s.ResourceV1Api(official)
    created = await resource.create_namespaced_resource_claim("default", claim("c1"))
    # API defaults: allocationMode ExactCount and count 1
    assert created.spec.devices.requests[0].exactly.allocation_mode == "ExactCount"
    assert created.spec.devices.requests[0].exactly.count == 1
    status = {
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "gpu", "driver": "nvidia.tessera.dev", "pool": "n1", "device": "gpu-0"}]
                }
            }
        }
    }
    updated = await resource.patch_namespaced_resource_claim_status("c1", "default", status)
    assert updated.status.allocation.devices.results[0].device == "gpu-0"
    slices = await resource.list_resource_slice(field_selector="spec.nodeName=n1")
    assert slices.items == []


async def test_official_client_watch(api: APIServer, official: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(official)
    await core.create_namespaced_pod("default", pod("before"))
    seen: list[tuple[str, str]] = []
    w = k8s_watch.Watch()

    async def consume() -> None:
        async for event in w.stream(core.list_namespaced_pod, "default", timeout_seconds=5):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 3:
                w.stop()
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await core.create_namespaced_pod("default", pod("after"))
    await core.delete_namespaced_pod("before", "default")
    await asyncio.wait_for(task, 5)
    assert seen == [("ADDED", "before"), ("ADDED", "after"), ("DELETED", "before")]


# ------------------------------------------------------------------------------ kubeapi.KubeClient
async def test_kubeclient_crud_and_conflict(api: APIServer, kube: KubeClient) -> None:
    created = await kube.create(CLAIMS, claim("c"))
    rv = created["metadata"]["resourceVersion"]
    assert created["metadata"]["generation"] == 1
    stale = dict(created)
    await kube.replace(
        f"{CLAIMS}/c",
        {**created, "metadata": {**created["metadata"], "labels": {"a": "b"}}},
    )
    with pytest.raises(KubeError) as exc:
        await kube.replace(f"{CLAIMS}/c", {**stale, "metadata": {**stale["metadata"], "labels": {"x": "y"}}})
    assert exc.value.conflict
    current = await kube.get(f"{CLAIMS}/c")
    assert current["metadata"]["labels"] == {"a": "b"}
    assert int(current["metadata"]["resourceVersion"]) > int(rv)
    assert api.store.get("resourceclaims", "default", "c") == current


async def test_kubeclient_generate_name_and_dry_run(api: APIServer, kube: KubeClient) -> None:
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "job-"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    one = await kube.create(PODS, template)
    two = await kube.create(PODS, template)
    assert one["metadata"]["name"].startswith("job-") and len(one["metadata"]["name"]) == 9
    assert one["metadata"]["name"] != two["metadata"]["name"]
    rv = api.store.resource_version
    dry = await kube.create(PODS, pod("dry"), dry_run=True)
    assert dry["metadata"]["name"] == "dry"
    assert api.store.get("pods", "default", "dry") is None
    assert api.store.resource_version == rv


async def test_kubeclient_patches(api: APIServer, kube: KubeClient) -> None:
    await kube.create(PODS, pod("p", a="1"))
    merged = await kube.merge_patch(f"{PODS}/p", {"metadata": {"labels": {"a": None, "b": "2"}}})
    assert merged["metadata"]["labels"] == {"b": "2"}
    patched = await kube.request(
        "PATCH",
        f"{PODS}/p",
        body=[{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}],
        content_type="application/json-patch+json",
    )
    assert patched["metadata"]["annotations"] == {"k": "v"}
    with pytest.raises(KubeError) as exc:
        await kube.request(
            "PATCH",
            f"{PODS}/p",
            body=[{"op": "test", "path": "/metadata/name", "value": "other"}],
            content_type="application/json-patch+json",
        )
    assert exc.value.status == 422
    # main endpoint ignores status, /status ignores spec
    await kube.merge_patch(f"{PODS}/p", {"status": {"phase": "Running"}})
    assert (await kube.get(f"{PODS}/p"))["status"]["phase"] == "Pending"
    await kube.merge_patch(f"{PODS}/p/status", {"status": {"phase": "Running"}, "spec": {"hostname": "h"}})
    got = await kube.get(f"{PODS}/p")
    assert got["status"]["phase"] == "Running" and "hostname" not in got["spec"]
    # pod spec is immutable apart from a few fields
    with pytest.raises(KubeError) as exc:
        await kube.merge_patch(f"{PODS}/p", {"spec": {"hostname": "h"}})
    assert exc.value.status == 422


async def test_kubeclient_watch_resume_and_selectors(api: APIServer, kube: KubeClient) -> None:
    nodes = cluster_path("v1", "nodes")
    await kube.create(nodes, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    listed = await kube.list(nodes)
    rv = listed["metadata"]["resourceVersion"]
    assert "kind" not in listed["items"][0]  # list items carry no kind, as on a real server
    await kube.create(nodes, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})
    await kube.merge_patch(f"{nodes}/n1", {"metadata": {"labels": {"role": "gpu"}}})
    events = []
    async for event in kube.watch(nodes, resource_version=rv, timeout_seconds=1):
        events.append((event["type"], event["object"]["metadata"]["name"], event["object"]["kind"]))
    assert events == [("ADDED", "n2", "Node"), ("MODIFIED", "n1", "Node")]
    # a label selector watch: leaving the selection reads as DELETED
    seen = []

    async def consume() -> None:
        async for event in kube.watch(nodes, timeout_seconds=2, labelSelector="role=gpu"):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) == 2:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await kube.merge_patch(f"{nodes}/n1", {"metadata": {"labels": {"role": None}}})
    await asyncio.wait_for(task, 3)
    assert seen == [("ADDED", "n1"), ("DELETED", "n1")]


async def test_field_selectors(api: APIServer, kube: KubeClient) -> None:
    slices = f"{RESOURCE_V1}/resourceslices"
    for node in ("a", "b"):
        await kube.create(
            slices,
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"s-{node}"},
                "spec": {
                    "driver": "nvidia.tessera.dev",
                    "nodeName": node,
                    "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                    "devices": [],
                },
            },
        )
    got = await kube.list(slices, fieldSelector="spec.nodeName=b,spec.driver=nvidia.tessera.dev")
    assert [s["metadata"]["name"] for s in got["items"]] == ["s-b"]
    with pytest.raises(KubeError) as exc:
        await kube.list(slices, fieldSelector="spec.pool.name=a")
    assert exc.value.status == 400 and "field label not supported" in exc.value.reason


async def test_namespace_must_exist_and_finalizers(api: APIServer, kube: KubeClient) -> None:
    with pytest.raises(KubeError) as exc:
        await kube.create(namespaced_path("v1", "pods", "nowhere"), pod())
    assert exc.value.not_found
    created = await kube.create(CLAIMS, {**claim("f"), "metadata": {"name": "f", "finalizers": ["x/y"]}})
    deleting = await kube.delete(f"{CLAIMS}/f")
    assert deleting["metadata"]["deletionTimestamp"]
    assert api.store.get("resourceclaims", "default", "f") is not None
    await kube.merge_patch(f"{CLAIMS}/f", {"metadata": {"finalizers": None}})
    assert api.store.get("resourceclaims", "default", "f") is None
    del created


async def test_bound_pods_delete_gracefully_and_binding(api: APIServer, kube: KubeClient) -> None:
    await kube.create(PODS, pod("b"))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "b"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
    }
    await kube.create(f"{PODS}/b/binding", binding)
    with pytest.raises(KubeError) as exc:
        await kube.create(f"{PODS}/b/binding", binding)
    assert exc.value.conflict
    assert (await kube.get(f"{PODS}/b"))["spec"]["nodeName"] == "n1"
    first = await kube.delete(f"{PODS}/b")
    assert first["metadata"]["deletionGracePeriodSeconds"] == 30
    assert api.store.get("pods", "default", "b") is not None  # the kubelet finishes the deletion
    await kube.request("DELETE", f"{PODS}/b", body={"gracePeriodSeconds": 0})
    assert api.store.get("pods", "default", "b") is None


async def test_faults_and_restart(api: APIServer, kube: KubeClient) -> None:
    await kube.create(CLAIMS, claim("c"))
    fault = api.faults.add(method="GET", path_regex=r".*/resourceclaims/.*", status=500, count=2)
    for _ in range(2):
        with pytest.raises(KubeError) as exc:
            await kube.get(f"{CLAIMS}/c")
        assert exc.value.status == 500
    assert (await kube.get(f"{CLAIMS}/c"))["metadata"]["name"] == "c"
    assert fault.hits == 2
    port = api.port
    await api.stop()
    with pytest.raises(KubeError) as exc:
        await kube.get(f"{CLAIMS}/c")
    assert exc.value.unreachable
    await api.start()
    assert api.port == port
    assert (await kube.get(f"{CLAIMS}/c"))["metadata"]["name"] == "c"


async def test_watch_ends_when_server_stops(api: APIServer, kube: KubeClient) -> None:
    async def consume() -> int:
        count = 0
        async for _ in kube.watch(PODS, timeout_seconds=30):
            count += 1
        return count

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await api.stop()
    await asyncio.wait_for(task, 5)


async def test_discovery_and_events_views(api: APIServer, kube: KubeClient) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.url}/apis") as resp:
            groups = {g["name"] for g in (await resp.json())["groups"]}
        assert {"resource.k8s.io", "events.k8s.io", "admissionregistration.k8s.io"} <= groups
        async with http.get(f"{api.url}/apis/resource.k8s.io/v1") as resp:
            names = {r["name"] for r in (await resp.json())["resources"]}
        assert {"resourceclaims", "resourceclaims/status", "resourceslices", "deviceclasses"} <= names
        async with http.get(f"{api.url}/version") as resp:
            assert (await resp.json())["minor"] == "34"
    new_event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "e1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "tessera.dev/scheduler",
        "reportingInstance": "x",
        "action": "Scheduling",
        "reason": "FailedScheduling",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        "note": "0/1 nodes are available",
        "type": "Warning",
    }
    await kube.create("/apis/events.k8s.io/v1/namespaces/default/events", new_event)
    core = await kube.list(namespaced_path("v1", "events", "default"), fieldSelector="involvedObject.name=p")
    assert core["items"][0]["message"] == "0/1 nodes are available"
    assert core["items"][0]["reportingComponent"] == "tessera.dev/scheduler"
    back = await kube.list("/apis/events.k8s.io/v1/namespaces/default/events", fieldSelector="regarding.name=p")
    assert back["items"][0]["note"] == "0/1 nodes are available"


async def test_cli_serves_and_writes_kubeconfig(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    proc = await asyncio.create_subprocess_exec(
        ".venv/bin/python",
        "-m",
        "e2e.apiserver",
        "--port",
        "0",
        "--kubeconfig-out",
        str(kc),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.startswith(b"serving http://127.0.0.1:")
        client = await KubeClient.connect(str(kc))
        try:
            ns = await client.list(cluster_path("v1", "namespaces"))
            assert "default" in {n["metadata"]["name"] for n in ns["items"]}
        finally:
            await client.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_quantities_are_stored_and_served_in_canonical_form(kube: KubeClient) -> None:
    """As kube-apiserver: every Quantity field is re-emitted canonically on write; bad ones are a 400."""
    body = pod("q")
    body["spec"]["containers"][0]["resources"] = {
        "limits": {"example.com/gpumem": 3000, "memory": "2048Mi", "cpu": "0.5"},
        "requests": {"example.com/gpumem": "3000", "memory": "1.5Gi", "cpu": "500m"},
    }
    body["spec"]["overhead"] = {"cpu": "1000m"}
    created = await kube.create(namespaced_path("v1", "pods", "default"), body)
    resources = created["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"example.com/gpumem": "3k", "memory": "2Gi", "cpu": "500m"}
    assert resources["requests"] == {"example.com/gpumem": "3k", "memory": "1536Mi", "cpu": "500m"}
    assert created["spec"]["overhead"] == {"cpu": "1"}
    slice_body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "s"},
        "spec": {
            "driver": "example.com",
            "nodeName": "n",
            "pool": {"name": "n", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "d", "capacity": {"memory": {"value": "81920Mi"}, "cores": {"value": 100}}}],
        },
    }
    got = await kube.create(cluster_path("resource.k8s.io/v1", "resourceslices"), slice_body)
    assert got["spec"]["devices"][0]["capacity"] == {"memory": {"value": "80Gi"}, "cores": {"value": "100"}}
    body = pod("bad")
    body["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    with pytest.raises(KubeError) as exc:
        await kube.create(namespaced_path("v1", "pods", "default"), body)
    assert exc.value.status == 400 and "cannot be handled as a Pod: quantities must match" in exc.value.reason
    body["spec"]["containers"][0]["resources"] = {"limits": {"example.com/gpu": "1500m"}}
    with pytest.raises(KubeError) as exc:
        await kube.create(namespaced_path("v1", "pods", "default"), body)
    assert exc.value.status == 422 and "must be an integer" in exc.value.reason
