"""``status.devices`` of prepared claims, and Events on the pods of a claim whose prepare failed.

The driver runs in-process against the API server stand-in, which validates every write strictly
(the 1.34 schemas, kube-apiserver's rules for ``status.devices``, and kubernetes-validate for the
claim) and applies the status strategy (devices of deallocated results go, the gate drops the field).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from dra_driver import claimstatus
from e2e.apiserver import APIServer
from vendors import nvidia

from .conftest import strict_validator
from .helpers import DRIVER, NODE, add_node, claim, request, result, running_driver, settings, sharing_config
from .kubelet import Claim, Kubelet

GIB = 1 << 30


def claim_path(name: str, namespace: str = "default") -> str:
    return f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}"


async def wait_devices(api: APIServer, name: str, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        got = api.store.get("resourceclaims", "default", name) or {}
        devices = (got.get("status") or {}).get("devices") or []
        if len(devices) >= count:
            return list(devices)
        await asyncio.sleep(0.02)
    raise AssertionError(f"status.devices of {name}: {devices}")


def reserved(obj: dict[str, Any], pod: str, pod_uid: str) -> dict[str, Any]:
    obj["status"]["reservedFor"] = [{"resource": "pods", "name": pod, "uid": pod_uid}]
    return obj


async def test_prepare_writes_what_each_container_got(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(root, kubeconfig, "2xH200")
    asked = request("train", count=2, capacity={"memory": "10Gi", "cores": "30"})
    results = [
        result("gpu-0", "train", memory="10Gi", cores="30"),
        result("gpu-1", "train", memory="10Gi", cores="30"),
        result("gpu-1", "eval", share=False),
        # another driver's device in the same claim, with its own status entry that must stay
        result("npu-0", "eval", share=False, driver="ascend.tessera.dev"),
    ]
    c = claim("c1", results, [asked, request("eval")], config=[sharing_config(requests=["train"], priority=1)])
    foreign = {
        "driver": "ascend.tessera.dev",
        "pool": NODE,
        "device": "npu-0",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Theirs",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    c["status"]["devices"] = [foreign]
    reserved(c, "trainer", str(uuid.uuid4()))
    api.store.put(c)
    api.faults.add("PUT", r"/resourceclaims/c1/status$", status=409, count=1)  # a concurrent writer won once
    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(Claim("default", "c1", c["metadata"]["uid"]))
        assert not answer.claims[c["metadata"]["uid"]].error
        devices = await wait_devices(api, "c1", 4)
        await kubelet.close()
        gpu0, gpu1 = driver.devices
    assert devices[0] == foreign, "another driver's entry stays as it was, in place"
    ours = {(d["device"], d.get("shareID") is not None): d for d in devices[1:]}
    train0 = ours[("gpu-0", True)]
    assert train0["driver"] == DRIVER and train0["pool"] == NODE
    assert train0["shareID"] == results[0]["shareID"]
    (ready,) = train0["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Prepared")
    assert "memory 10Gi, cores 30%, priority 1" in ready["message"]
    assert train0["data"] == {
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "AppliedLimits",
        "request": "train",
        "container": "train",
        "uuid": gpu0.uuid,
        "cudaOrdinal": 0,
        "memoryLimitBytes": 10 * GIB,
        "memoryLimit": "10Gi",
        "coresPercent": 30,
        "priority": 1,
        "coreLimitPolicy": "default",
        "oversubscribe": False,
        "enforcer": "libvgpu",
    }
    assert ours[("gpu-1", True)]["data"]["cudaOrdinal"] == 1
    whole = ours[("gpu-1", False)]["data"]
    assert whole["memoryLimit"] == "whole device" and "memoryLimitBytes" not in whole and "coresPercent" not in whole
    assert whole["uuid"] == gpu1.uuid and whole["request"] == "eval"
    assert api.faults.rules[0].hits == 1, "the conflict was retried"


async def test_a_failed_prepare_says_why_on_the_claim_and_the_pod(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(root, kubeconfig, "1xH100")
    bad = claim("c2", [result("gpu-0", memory="1Gi")], config=[sharing_config(priority=5)])
    reserved(bad, "p2", str(uuid.uuid4()))
    api.store.put(bad)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        for _ in range(2):  # the kubelet retries: one Event, counted
            answer = await kubelet.prepare(Claim("default", "c2", bad["metadata"]["uid"]))
            assert "priority" in answer.claims[bad["metadata"]["uid"]].error
        (entry,) = await wait_devices(api, "c2", 1)
        await kubelet.close()
    (ready,) = entry["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidConfig")
    assert "priority must be 0 (high) or 1 (low)" in ready["message"]
    assert "data" not in entry
    events = [e for e in api.store.list("events") if e.get("reason") == "PrepareFailed"]
    assert len(events) == 1, events
    (event,) = events
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p2",
        "namespace": "default",
        "uid": bad["status"]["reservedFor"][0]["uid"],
    }
    assert event["type"] == "Warning" and event["count"] == 2 and event["metadata"]["namespace"] == "default"
    assert "cannot prepare ResourceClaim default/c2" in event["message"]


async def test_gate_off_drops_the_status_and_prepare_still_works(root: str) -> None:
    gates = {"DRAResourceClaimDeviceStatus": False}
    async with APIServer.running(host="127.0.0.1", port=0, validator=strict_validator(), feature_gates=gates) as api:
        await add_node(api)
        s = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "1xH100")
        c = claim("c3", [result("gpu-0", memory="1Gi")])
        api.store.put(c)
        async with running_driver(s) as driver:
            kubelet = await Kubelet(s.registry_dir).register()
            answer = await kubelet.prepare(Claim("default", "c3", c["metadata"]["uid"]))
            await kubelet.close()
            assert driver.status_writer is not None
            await driver.status_writer.flush()
        assert not answer.claims[c["metadata"]["uid"]].error
        got = api.store.get("resourceclaims", "default", "c3") or {}
        assert "devices" not in got["status"]
        assert any(r.method == "PUT" and r.path.endswith("/c3/status") for r in api.requests), "it was written"


async def test_deallocation_drops_the_entries(api: APIServer, root: str, kubeconfig: str) -> None:
    """What kube-apiserver does for clients that know nothing of status.devices: deallocating removes them."""
    s = settings(root, kubeconfig, "1xH100")
    c = claim("c4", [result("gpu-0", memory="1Gi")])
    api.store.put(c)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        await kubelet.prepare(Claim("default", "c4", c["metadata"]["uid"]))
        await wait_devices(api, "c4", 1)
        await kubelet.close()
    current = api.store.get("resourceclaims", "default", "c4") or {}
    current["status"].pop("allocation")
    http = await api.http_client()
    async with http.put(f"{api.url}{claim_path('c4')}/status", json=current) as resp:
        assert resp.status == 200, await resp.text()
    assert "devices" not in (api.store.get("resourceclaims", "default", "c4") or {})["status"]


def test_stand_in_refuses_a_status_for_a_device_not_allocated() -> None:
    from e2e.apiserver.kinds import kind_for_plural
    from e2e.apiserver.validation import SchemaValidator

    c = claim("c5", [result("gpu-0", memory="1Gi")])
    c["status"]["devices"] = [
        {"driver": DRIVER, "pool": NODE, "device": "gpu-9"},
        {"driver": DRIVER, "pool": NODE, "device": "gpu-0", "shareID": "not-a-uid", "data": {"x": "y" * 11000}},
    ]
    problems = dict(SchemaValidator()(kind_for_plural("resourceclaims"), c))
    assert "must be an allocated device in the claim" in problems["status.devices[0]"]
    assert "Too long" in problems["status.devices[1].data"]
    assert "8-4-4-4-12" in problems["status.devices[1].shareID"]


# -- pure ------------------------------------------------------------------------------------------


def test_merge_keeps_other_entries_and_transition_times() -> None:
    allocated = {(DRIVER, NODE, "gpu-0", "s1"), (DRIVER, NODE, "gpu-1", ""), ("other", NODE, "x", "")}
    old_ready = {"type": "Ready", "status": "True", "reason": "Prepared", "message": "m", "lastTransitionTime": "T0"}
    existing = [
        {"driver": "other", "pool": NODE, "device": "x"},
        {"driver": DRIVER, "pool": NODE, "device": "gpu-0", "shareID": "s1", "conditions": [old_ready]},
        {"driver": DRIVER, "pool": NODE, "device": "gpu-7"},  # ours, no longer written: goes
    ]
    new_ready = {**old_ready, "lastTransitionTime": "T1", "message": "again"}
    ours = [
        {"driver": DRIVER, "pool": NODE, "device": "gpu-0", "shareID": "s1", "conditions": [new_ready]},
        {"driver": DRIVER, "pool": NODE, "device": "gpu-1", "conditions": [new_ready]},
        {"driver": DRIVER, "pool": NODE, "device": "gpu-5", "conditions": [new_ready]},  # not allocated: left out
    ]
    merged = claimstatus.merge_device_statuses(existing, ours, DRIVER, NODE, allocated)
    assert [e["device"] for e in merged] == ["x", "gpu-0", "gpu-1"]
    assert merged[1]["conditions"][0]["lastTransitionTime"] == "T0", "same status: the transition time stays"
    assert merged[1]["conditions"][0]["message"] == "again"
    assert merged[2]["conditions"][0]["lastTransitionTime"] == "T1"


@pytest.mark.parametrize(
    ("requests", "want"),
    [
        (["main"], {"main": "main"}),
        (["main-nvidia", "main-ascend"], {"main-nvidia": "main", "main-ascend": "main-ascend"}),
        (["x-nvidia"], {"x-nvidia": "x-nvidia"}),  # no sibling of another vendor: a container of that name
    ],
)
def test_container_names(requests: list[str], want: dict[str, str]) -> None:
    c = {"spec": {"devices": {"requests": [{"name": r} for r in requests]}}}
    assert claimstatus.container_names(c, nvidia.NAMES, ["nvidia", "ascend"]) == want


def test_enforcer_from_the_cdi_env() -> None:
    assert claimstatus.enforcer_of(["CUDA_DEVICE_MEMORY_SHARED_CACHE=/x/main.cache"]) == "libvgpu"
    assert claimstatus.enforcer_of(["TESSERA_LIMIT_ENFORCER=ascend-vnpu-template"]) == "ascend-vnpu-template"
    assert claimstatus.enforcer_of(["A=b"]) == "none"
