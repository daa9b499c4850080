"""What the API server stand-in shows kubectl, piece by piece: OpenAPI documents, server-side tables,
field management and server-side apply, protobuf bodies, and the exec stream of the kubelet."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from e2e.apiserver import APIError, APIServer, kinds, managed, openapi, protobuf, tables
from e2e.kubelet import execs
from kubeapi import KubeClient, KubeError

POD = kinds.kind_for_plural("pods")
CLAIM = kinds.kind_for_plural("resourceclaims")
CM = kinds.kind_for_plural("configmaps")
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


# ------------------------------------------------------------------------------ OpenAPI
def _refs(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            out.add(node["$ref"])
        for value in node.values():
            out |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            out |= _refs(value)
    return out


def test_openapi_v3_has_every_group_version_with_patch_operations_kubectl_reads() -> None:
    index = openapi.v3_index()["paths"]
    assert set(index) == {
        f"apis/{g}/{v}" if g else f"api/{v}" for g, versions in kinds.groups().items() for v in versions
    }
    assert all(entry["serverRelativeURL"].startswith(f"/openapi/v3/{path}?hash=") for path, entry in index.items())
    doc = openapi.v3_document("resource.k8s.io", "v1")
    schemas = doc["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(doc))  # every $ref resolves
    for kind in kinds.kinds_in("resource.k8s.io", "v1"):
        gvk = {"group": "resource.k8s.io", "kind": kind.kind, "version": "v1"}
        patches = [op["patch"] for op in doc["paths"].values() if op.get("patch", {}).get(
            "x-kubernetes-group-version-kind") == gvk]  # fmt: skip
        assert patches, kind.kind
        for op in patches:
            assert "fieldValidation" in {p["name"] for p in op["parameters"] if p["in"] == "query"}
            assert set(op["requestBody"]["content"]) >= {"application/strategic-merge-patch+json",
                                                         "application/apply-patch+yaml"}  # fmt: skip
        definition = schemas[f"io.k8s.api.resource.v1.{kind.kind}"]
        assert gvk in definition["x-kubernetes-group-version-kind"]
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["oneOf"] == [{"type": "string"}, {"type": "number"}]  # no "null" types in OpenAPI
    containers = openapi.v3_document("", "v1")["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"][
        "containers"
    ]
    assert containers["x-kubernetes-patch-merge-key"] == "name" and containers["type"] == "array"


def test_openapi_v2_is_swagger_with_string_quantities() -> None:
    doc = json.loads(openapi.v2_body())
    assert doc["swagger"] == "2.0"
    assert doc["definitions"]["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"
    assert doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert all(ref.removeprefix("#/definitions/") in doc["definitions"] for ref in _refs(doc))


# ------------------------------------------------------------------------------ tables
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (-1, "0s"), (-5, "<invalid>"), (59, "59s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
     (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"), (50 * 3600, "2d2h"), (30 * 86400, "30d"), (3 * 365 * 86400, "3y")],
)  # fmt: skip
def test_ages_read_as_kubectl_prints_them(seconds: int, shown: str) -> None:
    assert tables.human_duration(seconds) == shown


def _pod(phase: str, statuses: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "p", "creationTimestamp": now, **extra.pop("meta", {})},
        "spec": {"containers": [{"name": s["name"]} for s in statuses], **extra.pop("spec", {})},
        "status": {"phase": phase, "containerStatuses": statuses, **extra},
    }


@pytest.mark.parametrize(
    ("pod", "ready", "status", "restarts"),
    [
        (_pod("Running", [{"name": "a", "ready": True, "state": {"running": {}}}]), "1/1", "Running", "0"),
        (_pod("Pending", [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]), "0/1",
         "ContainerCreating", "0"),
        (_pod("Succeeded", [{"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]),
         "0/1", "Completed", "0"),
        (_pod("Failed", [{"name": "a", "restartCount": 2, "state": {"terminated": {"exitCode": 3}}}]), "0/1",
         "ExitCode:3", "2"),
        (_pod("Running", [{"name": "a", "ready": True, "state": {"running": {}}}],
              meta={"deletionTimestamp": "2030-01-01T00:00:00Z"}), "1/1", "Terminating", "0"),
        (_pod("Pending", [], spec={"initContainers": [{"name": "i"}]},
              initContainerStatuses=[{"name": "i", "state": {"running": {}}}]), "0/0", "Init:0/1", "0"),
    ],
)  # fmt: skip
def test_pod_rows_as_kube_apiserver_prints_them(pod: dict[str, Any], ready: str, status: str, restarts: str) -> None:
    out = tables.table(POD, [pod], list_meta={}, query={}, accept=TABLE)
    assert [c["name"] for c in out["columnDefinitions"]] == [
        "Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates",
    ]  # fmt: skip
    cells = out["rows"][0]["cells"]
    assert (cells[1], cells[2], cells[3]) == (ready, status, restarts)
    assert out["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


@pytest.mark.parametrize(
    ("claim", "state"),
    [
        ({}, "pending"),
        ({"status": {"allocation": {"devices": {}}}}, "allocated"),
        ({"status": {"allocation": {"devices": {}}, "reservedFor": [{"resource": "pods"}]}}, "allocated,reserved"),
        ({"metadata": {"deletionTimestamp": "2030-01-01T00:00:00Z"}}, "deleted"),
    ],
)
def test_claim_state_column(claim: dict[str, Any], state: str) -> None:
    claim = {**claim, "metadata": {"name": "c", **claim.get("metadata", {})}}
    row = tables.table(CLAIM, [claim], list_meta={}, query={"includeObject": "None"}, accept=TABLE)["rows"][0]
    assert row["cells"][1] == state and "object" not in row


def test_only_a_table_accept_gets_a_table() -> None:
    assert tables.wants_table(TABLE)
    assert not tables.wants_table("application/json")
    assert not tables.wants_table("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")
    with pytest.raises(APIError):
        tables.table(POD, [], list_meta={}, query={"includeObject": "All"}, accept=TABLE)


# ------------------------------------------------------------------------------ field management
def _cm(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "y"}}, "data": data}


def test_field_sets_follow_the_schema() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "uid": "u", "finalizers": ["a"]},
        "spec": {"containers": [{"name": "c", "image": "i", "args": ["x"]}]},
        "status": {"phase": "Running"},
    }
    fields = managed.fieldset(POD, pod)
    assert ("f:spec", "f:containers", 'k:{"name":"c"}', ".") in fields
    assert ("f:spec", "f:containers", 'k:{"name":"c"}', "f:args") in fields  # atomic list: one field
    assert ("f:metadata", "f:finalizers", 'v:"a"') in fields  # a set
    assert not any(p[0] == "f:status" for p in fields) and ("f:metadata", "f:uid") not in fields
    assert managed.fieldset(POD, pod, subresource="status") == {("f:status", "f:phase")}
    assert managed.from_fields_v1(managed.to_fields_v1(fields)) == fields


def test_server_side_apply_merges_removes_and_reports_conflicts() -> None:
    now = "2030-01-01T00:00:00Z"
    live = managed.apply(CM, None, _cm({"a": "1", "b": "2"}), "alice", force=False, now=now)
    assert live["metadata"]["managedFields"][0]["fieldsV1"] == {
        "f:data": {"f:a": {}, "f:b": {}},
        "f:metadata": {"f:labels": {"f:x": {}}},
    }
    # bob changes a with an update: he owns it now
    changed = {**live, "data": {"a": "9", "b": "2"}}
    managed.record_update(CM, live, changed, "bob", now)
    owners = {e["manager"]: e for e in changed["metadata"]["managedFields"]}
    assert owners["bob"]["operation"] == "Update" and owners["bob"]["fieldsV1"] == {"f:data": {"f:a": {}}}
    # alice applies a=1 again: a conflict on .data.a, named in the error
    with pytest.raises(APIError) as exc:
        managed.apply(CM, changed, _cm({"a": "1", "c": "3"}), "alice", force=False, now=now)
    assert exc.value.code == 409 and 'conflict with "bob" using v1: .data.a' in exc.value.message
    assert exc.value.causes == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "bob" using v1', "field": ".data.a"}
    ]
    # forced: alice takes a; b, which she no longer applies and nobody else owns, goes; c is added
    forced = managed.apply(CM, changed, _cm({"a": "1", "c": "3"}), "alice", force=True, now=now)
    assert forced["data"] == {"a": "1", "c": "3"}
    assert [e["manager"] for e in forced["metadata"]["managedFields"]] == ["alice"]
    # applying the same value as another owner is no conflict: the field is shared
    shared = managed.apply(CM, changed, _cm({"a": "9"}), "carol", force=False, now=now)
    assert shared["data"]["a"] == "9"


# ------------------------------------------------------------------------------ protobuf bodies
def _field(number: int, value: bytes | int) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return protobuf.MAGIC + _field(1, type_meta) + _field(2, raw)


def test_protobuf_bodies_of_the_kinds_kubectl_create_sends() -> None:
    meta = _field(1, b"cfg") + _field(4, b"") + _field(11, _field(1, b"app") + _field(2, b"demo")) + _field(7, 0)
    raw = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v")) + _field(3, _field(1, b"b") + _field(2, b"\0"))
    assert protobuf.decode(_envelope("v1", "ConfigMap", raw)) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"app": "demo"}},
        "data": {"k": "v"},
        "binaryData": {"b": "AA=="},
    }
    with pytest.raises(APIError) as exc:
        protobuf.decode(_envelope("v1", "Pod", _field(1, meta)))
    assert exc.value.code == 415 and "send JSON or YAML" in exc.value.message
    with pytest.raises(APIError):
        protobuf.decode(_envelope("v1", "ConfigMap", _field(9, b"x")))  # a field the table does not know
    with pytest.raises(APIError):
        protobuf.decode(b"{}")


# ------------------------------------------------------------------------------ over HTTP
@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[APIServer, KubeClient]]:
    async with APIServer.running() as api:
        client = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kc"), timeout=5)
        yield api, client
        await client.close()


async def test_tables_openapi_and_protobuf_over_http(kube: tuple[APIServer, KubeClient]) -> None:
    api, client = kube
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.url}/api/v1/namespaces", headers={"Accept": TABLE}) as resp:
            body = await resp.json()
        assert body["kind"] == "Table" and [r["cells"][0] for r in body["rows"]] == [
            "default", "kube-node-lease", "kube-public", "kube-system",
        ]  # fmt: skip
        async with http.get(f"{api.url}/openapi/v3") as resp:
            assert "api/v1" in (await resp.json())["paths"]
        async with http.get(f"{api.url}/openapi/v3/apis/resource.k8s.io/v1") as resp:
            assert resp.status == 200 and "paths" in await resp.json()
        async with http.get(
            f"{api.url}/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}
        ) as resp:
            assert resp.status == 406 and "read /openapi/v3" in (await resp.json())["message"]
        raw = _field(1, _field(1, b"from-proto"))
        async with http.post(
            f"{api.url}/api/v1/namespaces",
            data=_envelope("v1", "Namespace", raw),
            headers={"Content-Type": protobuf.CONTENT_TYPE, "User-Agent": "kubectl/v1.32.4 (linux/amd64)"},
        ) as resp:
            assert resp.status == 201
    created = await client.get("/api/v1/namespaces/from-proto")
    assert created["status"]["phase"] == "Active"
    assert created["metadata"]["managedFields"][0]["manager"] == "kubectl"  # the User-Agent's product


async def test_server_side_apply_over_http(kube: tuple[APIServer, KubeClient]) -> None:
    _api, client = kube
    path = "/api/v1/namespaces/default/configmaps/c"
    apply = "application/apply-patch+yaml"
    created = await client.request(
        "PATCH", path, body=_cm({"a": "1"}), query={"fieldManager": "me"}, content_type=apply
    )
    assert created["data"] == {"a": "1"} and created["metadata"]["managedFields"][0]["operation"] == "Apply"
    with pytest.raises(KubeError) as exc:  # an apply names its manager
        await client.request("PATCH", path, body=_cm({"a": "1"}), content_type=apply)
    assert exc.value.status == 400
    await client.merge_patch(path + "?fieldManager=other", {"data": {"a": "2"}})
    with pytest.raises(KubeError) as exc:
        await client.request("PATCH", path, body=_cm({"a": "1"}), query={"fieldManager": "me"}, content_type=apply)
    assert exc.value.status == 409 and 'conflict with "other"' in exc.value.reason
    bogus = {**_cm({"a": "1"}), "bogus": 1}
    with pytest.raises(KubeError) as exc:
        await client.request("PATCH", path, body=bogus, query={"fieldManager": "me"}, content_type=apply)
    assert exc.value.status == 400 and "field not declared in schema" in exc.value.reason
    same = await client.request(
        "PATCH", path, body=_cm({"a": "1"}), query={"fieldManager": "me", "force": "true"}, content_type=apply
    )
    assert same["data"] == {"a": "1"}


# ------------------------------------------------------------------------------ the exec stream
async def test_exec_stream_speaks_the_channel_protocol(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        argv = ["sh", "-c", "echo out; echo err >&2; cat; exit 3"]
        return await execs.serve(request, argv, {"PATH": "/usr/bin:/bin"}, str(tmp_path), "test")

    app = web.Application()
    app.router.add_get("/exec", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    got: dict[int, bytes] = {}
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"http://127.0.0.1:{port}/exec?stdin=true&stdout=true&stderr=true", protocols=("v5.channel.k8s.io",)
            ) as ws,
        ):
            assert ws.protocol == "v5.channel.k8s.io"
            await ws.send_bytes(b"\x00from stdin\n")
            await ws.send_bytes(bytes([execs.CLOSE, execs.STDIN]))
            async with asyncio.timeout(10):
                async for msg in ws:
                    got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
    finally:
        await runner.cleanup()
    assert got[execs.STDOUT] == b"out\nfrom stdin\n" and got[execs.STDERR] == b"err\n"
    status = json.loads(got[execs.ERROR])
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"] == [
        {"reason": "ExitCode", "message": "3"}
    ]
