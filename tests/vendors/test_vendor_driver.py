"""The real DRA driver with each vendor's mock backend: slices published, claims prepared into CDI specs.

``python -m dra_driver --driver <vendor> --backend mock --mock-devices ...`` runs in-process against
the API server stand-in (which validates ResourceSlices with kubernetes-validate --strict 1.34); a
kubelet-like client prepares claims over the real gRPC socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest

from dra_driver.cli import Settings
from dra_driver.proto import dra_v1_pb2, dra_v1_pb2_grpc
from e2e.apiserver import APIServer
from tests.driver.helpers import NODE, running_driver
from tests.driver.helpers import settings as driver_settings
from vendors import hygon
from vendors.common import ENFORCER_ENV


def strict(kind: Any, obj: dict[str, Any]) -> list[tuple[str, str]]:
    if kind.kind != "ResourceSlice":
        return []
    try:
        kubernetes_validate.validate(obj, "1.34", strict=True)
    except Exception as exc:
        return [("", f"kubernetes-validate 1.34 --strict: {str(exc).splitlines()[0]}")]
    return []


@pytest.fixture
def root() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="tv", dir="/tmp")  # short: Unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api() -> AsyncIterator[APIServer]:
    async with APIServer.running(host="127.0.0.1", port=0, validator=strict) as server:
        server.store.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        yield server


def settings(root: str, kubeconfig: str, vendor: str, devices: str) -> Settings:
    return driver_settings(root, kubeconfig, devices, vendor=vendor)


def allocated_claim(
    driver: str, device: str, request: str, consumed: dict[str, str], asked: dict[str, str]
) -> dict[str, Any]:
    """A claim as kube-scheduler leaves it: one share of ``device`` with ``consumedCapacity``."""
    exactly: dict[str, Any] = {"deviceClassName": driver, "allocationMode": "ExactCount", "count": 1}
    if asked:
        exactly["capacity"] = {"requests": dict(asked)}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"c-{uuid.uuid4().hex[:6]}", "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"devices": {"requests": [{"name": request, "exactly": exactly}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {
                            "request": request,
                            "driver": driver,
                            "pool": NODE,
                            "device": device,
                            "shareID": str(uuid.uuid4()),
                            "consumedCapacity": dict(consumed),
                        }
                    ],
                    "config": [],
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
                    ]
                },
            }
        },
    }


async def prepare(s: Settings, claim: dict[str, Any]) -> dict[str, Any]:
    """NodePrepareResources over the driver's socket; returns the claim's CDI spec."""
    meta = claim["metadata"]
    async with grpc.aio.insecure_channel(f"unix://{s.dra_socket}") as channel:
        stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
        req = dra_v1_pb2.NodePrepareResourcesRequest(
            claims=[dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])]
        )
        answer = await stub.NodePrepareResources(req, timeout=30)
    entry = answer.claims[meta["uid"]]
    assert entry.error == "", entry.error
    assert len(entry.devices) == 1
    path = os.path.join(s.cdi_dir, f"k8s.{s.driver}-claim_{meta['uid']}.json")
    spec: dict[str, Any] = json.loads(await read(path))
    return spec


async def read(path: str) -> str:
    return await asyncio.to_thread(Path(path).read_text, encoding="utf-8")


def edits_of(spec: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    (dev,) = spec["devices"]
    edits = dev["containerEdits"]
    env = dict(e.split("=", 1) for e in edits.get("env", []))
    return env, edits.get("deviceNodes", []), edits.get("mounts", [])


def published(api: APIServer, driver: str) -> list[dict[str, Any]]:
    return [s for s in api.store.list("resourceslices") if s["spec"]["driver"] == driver]


async def test_ascend_driver_publishes_templates_and_prepares_a_vnpu(api: APIServer, root: str) -> None:
    s = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "ascend", "2x910B3")
    async with running_driver(s):
        (slice_,) = published(api, "ascend.tessera.dev")
        npu = slice_["spec"]["devices"][0]
        assert npu["name"] == "npu-0" and npu["attributes"]["type"] == {"string": "910B3"}
        memory = npu["capacity"]["memory"]
        assert memory["requestPolicy"]["validValues"] == ["16Gi", "32Gi", "64Gi"]
        assert memory["requestPolicy"]["default"] == "64Gi"
        assert "cores" not in npu["capacity"]  # template vNPUs fix the AI cores with the memory
        claim = allocated_claim(
            "ascend.tessera.dev", "npu-1", "npu", {"memory": "16Gi", "shares": "1"}, {"memory": "16384Mi"}
        )
        api.store.put(claim)
        env, nodes, mounts = edits_of(await prepare(s, claim))
        assert env == {
            "ASCEND_VISIBLE_DEVICES": "1",
            "ASCEND_VNPU_SPECS": "vir05_1c_16g",
            ENFORCER_ENV: "ascend-vnpu-template",
        }
        assert nodes == [] and mounts == []


async def test_hygon_driver_writes_the_vdev_config_into_the_claim_dir(api: APIServer, root: str) -> None:
    s = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "hygon", "2xK100_AI")
    async with running_driver(s):
        (slice_,) = published(api, "hygon.tessera.dev")
        dcu = slice_["spec"]["devices"][1]
        assert dcu["name"] == "dcu-1" and dcu["attributes"]["computeUnits"] == {"int": 120}
        assert dcu["capacity"]["cores"]["requestPolicy"]["validRange"]["max"] == "100"
        consumed = {"memory": "8Gi", "cores": "30", "shares": "1"}
        claim = allocated_claim("hygon.tessera.dev", "dcu-1", "dcu", consumed, {"memory": "8192Mi", "cores": "30"})
        api.store.put(claim)
        env, _, mounts = edits_of(await prepare(s, claim))
        assert env == {ENFORCER_ENV: "hygon-vdev"}
        (vdev_mount,) = [m for m in mounts if m["containerPath"] == "/etc/vdev/docker/"]
        claim_dir = os.path.join(s.host_lib_dir, "claims", claim["metadata"]["uid"])
        assert vdev_mount["hostPath"] == os.path.join(claim_dir, "hygon-vdev-dcu")
        content = await read(os.path.join(vdev_mount["hostPath"], "vdev0.conf"))
        assert "cu_count: 36\n" in content and "mem: 8192 MiB\n" in content and "device_id: 1\n" in content
        # A second claim on the same DCU gets other compute units and another vdev id.
        second = allocated_claim("hygon.tessera.dev", "dcu-1", "dcu", consumed, {"memory": "8192Mi", "cores": "30"})
        api.store.put(second)
        _, _, mounts2 = edits_of(await prepare(s, second))
        (vdev2,) = [m["hostPath"] for m in mounts2 if m["containerPath"] == "/etc/vdev/docker/"]
        other = hygon.VdevConfig.parse(await read(os.path.join(vdev2, "vdev1.conf")))
        assert other.mask == ((1 << 36) - 1) << 36 and hygon.VdevConfig.parse(content).mask == (1 << 36) - 1


async def test_concurrent_hygon_prepares_never_hand_out_the_same_compute_units(api: APIServer, root: str) -> None:
    s = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "hygon", "1xK100_AI")
    async with running_driver(s):
        consumed = {"memory": "4Gi", "cores": "20", "shares": "1"}
        claims = [
            allocated_claim("hygon.tessera.dev", "dcu-0", "dcu", consumed, {"memory": "4096Mi", "cores": "20"})
            for _ in range(4)
        ]
        for claim in claims:
            api.store.put(claim)
        specs = await asyncio.gather(*(prepare(s, claim) for claim in claims))
        masks = []
        for spec in specs:
            (vdev_dir,) = [m["hostPath"] for m in edits_of(spec)[2] if m["containerPath"] == "/etc/vdev/docker/"]
            (name,) = os.listdir(vdev_dir)
            masks.append(hygon.VdevConfig.parse(await read(os.path.join(vdev_dir, name))).mask)
        for i, a in enumerate(masks):
            for b in masks[i + 1 :]:
                assert a & b == 0, f"overlapping compute units: {[hex(m) for m in masks]}"


async def test_iluvatar_and_cambricon_drivers_prepare_their_env(api: APIServer, root: str) -> None:
    kubeconfig = api.write_kubeconfig(f"{root}/kubeconfig")
    s = settings(root, kubeconfig, "iluvatar", "1xMR-V100")
    async with running_driver(s) as driver:
        consumed = {"memory": "16Gi", "cores": "50", "shares": "1"}
        claim = allocated_claim("iluvatar.tessera.dev", "gpu-0", "gpu", consumed, {"memory": "16384Mi", "cores": "50"})
        api.store.put(claim)
        env, _, mounts = edits_of(await prepare(s, claim))
        assert env["IX_VISIBLE_DEVICES"] == driver.devices[0].uuid
        assert (env["CUDA_DEVICE_MEMORY_LIMIT_0"], env["CUDA_DEVICE_SM_LIMIT_0"]) == ("16384m", "50")
        assert "NVIDIA_VISIBLE_DEVICES" not in env
        assert any(m["containerPath"] == "/etc/ld.so.preload" for m in mounts)
    root2 = os.path.join(root, "mlu")
    s2 = settings(root2, kubeconfig, "cambricon", "1xMLU370-X4")
    async with running_driver(s2):
        consumed = {"memory": "4661Mi", "cores": "10", "shares": "1"}
        claim = allocated_claim("cambricon.tessera.dev", "mlu-0", "mlu", consumed, {"memory": "4661Mi", "cores": "10"})
        api.store.put(claim)
        env, _, _ = edits_of(await prepare(s2, claim))
        assert env["CAMBRICON_DSMLU_PROFILE"] == "0_10_20"
        assert env["CAMBRICON_SPLIT_MEMS"] == "4661"
