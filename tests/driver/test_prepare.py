"""A kubelet-like client prepares and unprepares claims over the real sockets (docs/architecture.md, steps 6-10)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from typing import Any

import pytest

from dra_driver.cli import Settings
from dra_driver.daemon import Driver
from e2e.apiserver import APIServer

from .cdi_schema import check_cdi_spec, parse_qualified
from .helpers import (
    DRIVER,
    NODE,
    checkpoint_records,
    claim,
    exists,
    files_under,
    read_text,
    request,
    result,
    running_driver,
    settings,
    sharing_config,
    write_text,
)
from .kubelet import Claim, Kubelet

KIND = f"k8s.{DRIVER}/claim"


def ref(obj: dict[str, Any]) -> Claim:
    meta = obj["metadata"]
    return Claim(meta["namespace"], meta["name"], meta["uid"])


def env_of(spec: dict[str, Any], device_index: int = 0) -> dict[str, str]:
    entries = spec["devices"][device_index]["containerEdits"]["env"]
    return dict(e.split("=", 1) for e in entries)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cdi_path(s: Settings, uid: str) -> str:
    return os.path.join(s.cdi_dir, f"k8s.{DRIVER}-claim_{uid}.json")


@pytest.fixture
def s(root: str, kubeconfig: str) -> Settings:
    return settings(root, kubeconfig)


async def test_register_prepare_check_cdi_and_unprepare(api: APIServer, s: Settings) -> None:
    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        try:
            assert kubelet.info.name == DRIVER
            assert kubelet.info.endpoint == s.dra_socket
            assert list(kubelet.info.supported_versions) == [
                "v1.DRAPlugin",
                "v1beta1.DRAPlugin",
                "v1alpha1.DRAResourceHealth",
            ]
            assert kubelet.service == "v1.DRAPlugin"
            res = result("gpu-1", memory="10Gi", cores="30")
            c = claim("c1", [res], [request(capacity={"memory": "10Gi", "cores": "30"})])
            api.store.put(c)
            answer = await kubelet.prepare(ref(c))
            uid = c["metadata"]["uid"]
            assert list(answer.claims) == [uid]
            entry = answer.claims[uid]
            assert entry.error == ""
            (dev,) = entry.devices
            name = f"{uid}-gpu-1-{res['shareID']}"
            assert list(dev.request_names) == ["gpu"]
            assert (dev.pool_name, dev.device_name) == (NODE, "gpu-1")
            assert list(dev.cdi_device_ids) == [f"{KIND}={name}"]
            assert dev.share_id == res["shareID"]
            assert parse_qualified(dev.cdi_device_ids[0]) == (f"k8s.{DRIVER}", "claim", name)

            spec = read_json(cdi_path(s, uid))
            check_cdi_spec(spec)
            assert spec["kind"] == KIND
            assert [d["name"] for d in spec["devices"]] == [name]
            claim_dir = os.path.join(s.host_lib_dir, "claims", uid)
            gpu1 = driver.devices[1]
            assert env_of(spec) == {
                "NVIDIA_VISIBLE_DEVICES": gpu1.uuid,
                "CUDA_DEVICE_MEMORY_LIMIT_0": "10240m",
                "CUDA_DEVICE_SM_LIMIT_0": "30",
                "CUDA_DEVICE_MEMORY_SHARED_CACHE": f"{claim_dir}/gpu.cache",
                "CUDA_TASK_PRIORITY": "1",
                "GPU_CORE_UTILIZATION_POLICY": "default",
                "CUDA_OVERSUBSCRIBE": "false",
                "TESSERA_LIMITS_FILE": "/run/tessera/limits",
            }
            mounts = {m["containerPath"]: m for m in spec["devices"][0]["containerEdits"]["mounts"]}
            lib = f"{s.host_lib_dir}/libvgpu.so"
            assert mounts[lib]["hostPath"] == lib and "ro" in mounts[lib]["options"]
            assert mounts["/etc/ld.so.preload"]["hostPath"] == f"{s.host_lib_dir}/ld.so.preload"
            assert "ro" in mounts["/etc/ld.so.preload"]["options"]
            # the limits: the driver's file, read-only at libvgpu's fixed path
            limits = mounts["/run/tessera/limits"]
            assert limits["hostPath"] == f"{claim_dir}/gpu.limits" and "ro" in limits["options"]
            assert f"device {gpu1.uuid} memory={10240 << 20} sm=30" in read_text(limits["hostPath"])
            assert stat.S_IMODE(os.stat(limits["hostPath"]).st_mode) == 0o644
            # the region and the node record: created empty, writable by any user of the container, each
            # mounted by itself; the claim directory is not mounted, the node directory read-only
            node_dir = f"{s.host_lib_dir}/node"
            record = f"{node_dir}/{uid}.gpu.rec"
            for path in (f"{claim_dir}/gpu.cache", record):
                assert mounts[path]["hostPath"] == path and "rw" in mounts[path]["options"]
                assert os.stat(path).st_size == 0 and stat.S_IMODE(os.stat(path).st_mode) == 0o666
            assert claim_dir not in mounts and "ro" in mounts[node_dir]["options"]
            assert stat.S_IMODE(os.stat(claim_dir).st_mode) == 0o755
            assert sorted(os.listdir(node_dir)) == [f"{uid}.gpu.meta", f"{uid}.gpu.rec"]

            stored = checkpoint_records(s)[uid]
            assert stored["state"] == "PrepareCompleted"
            assert (stored["namespace"], stored["name"]) == ("default", "c1")
            assert stored["devices"][0]["cdiDeviceIDs"] == [f"{KIND}={name}"]
            assert stored["devices"][0]["shareID"] == res["shareID"]

            # A repeated prepare (kubelet restarted) gives the same answer.
            again = await kubelet.prepare(ref(c))
            assert again == answer

            gone = await kubelet.unprepare(ref(c))
            assert list(gone.claims) == [uid] and gone.claims[uid].error == ""
            assert files_under(s.cdi_dir) == []
            assert files_under(os.path.join(s.host_lib_dir, "claims")) == []
            assert os.listdir(os.path.join(s.host_lib_dir, "claims")) == []
            assert os.listdir(node_dir) == [], "the claim's node files go with it"
            assert checkpoint_records(s) == {}
        finally:
            await kubelet.close()


async def test_subrequests_are_stripped_and_env_follows_device_order(api: APIServer, s: Settings) -> None:
    """Results arrive in any order; `_<i>` follows the device index (CUDA ordinal order)."""
    big = {"name": "big", "deviceClassName": DRIVER, "count": 2, "capacity": {"requests": {"memory": "20Gi"}}}
    req = {"name": "gpu", "firstAvailable": [big]}
    r3 = result("gpu-3", "gpu/big", memory="20Gi", cores="1")
    r0 = result("gpu-0", "gpu/big", memory="30Gi", cores="1")
    c = claim("c2", [r3, r0], [req])
    api.store.put(c)
    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        answer = (await kubelet.prepare(ref(c))).claims[c["metadata"]["uid"]]
        await kubelet.close()
    assert answer.error == ""
    assert [list(d.request_names) for d in answer.devices] == [["gpu"], ["gpu"]]
    assert [d.device_name for d in answer.devices] == ["gpu-3", "gpu-0"]
    spec = read_json(cdi_path(s, c["metadata"]["uid"]))
    check_cdi_spec(spec)
    # Every CDI device of the request carries the edits of the whole request.
    assert spec["devices"][0]["containerEdits"] == spec["devices"][1]["containerEdits"]
    env = env_of(spec)
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{driver.devices[0].uuid},{driver.devices[3].uuid}"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "30720m"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "20480m"
    assert not any(k.startswith("CUDA_DEVICE_SM_LIMIT") for k in env), "cores were not asked for"


async def test_whole_device_and_core_rules(api: APIServer, s: Settings) -> None:
    whole = claim("whole", [result("gpu-2", share=False)], [request()])
    mem_only = claim("memonly", [result("gpu-0", memory="4Gi", cores="1")], [request(capacity={"memory": "4Gi"})])
    all_cores = claim(
        "allcores", [result("gpu-1", memory="1Gi", cores="100")], [request(capacity={"memory": "1Gi", "cores": "100"})]
    )
    for c in (whole, mem_only, all_cores):
        api.store.put(c)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(ref(whole), ref(mem_only), ref(all_cores))
        await kubelet.close()
    w = answer.claims[whole["metadata"]["uid"]]
    assert w.error == "" and not w.devices[0].HasField("share_id")
    assert w.devices[0].cdi_device_ids[0].endswith(f"={whole['metadata']['uid']}-gpu-2")
    wenv = env_of(read_json(cdi_path(s, whole["metadata"]["uid"])))
    assert "CUDA_DEVICE_MEMORY_LIMIT_0" not in wenv and "CUDA_DEVICE_SM_LIMIT_0" not in wenv
    menv = env_of(read_json(cdi_path(s, mem_only["metadata"]["uid"])))
    assert menv["CUDA_DEVICE_MEMORY_LIMIT_0"] == "4096m" and "CUDA_DEVICE_SM_LIMIT_0" not in menv
    aenv = env_of(read_json(cdi_path(s, all_cores["metadata"]["uid"])))
    assert "CUDA_DEVICE_SM_LIMIT_0" not in aenv, "100 % of the cores is no limit"


async def test_sharing_config_precedence_and_per_request(api: APIServer, root: str, kubeconfig: str) -> None:
    # The policy lets claims disable the core limit here: this test is about precedence (test_policy.py
    # is about what a claim may ask for).
    s = settings(root, kubeconfig, "4xH200", "--allow-core-limit-disable")
    other = {"source": "FromClaim", "opaque": {"driver": "other.example.com", "parameters": {"x": 1}}}
    c = claim(
        "cfg",
        [result("gpu-0", "a", memory="1Gi"), result("gpu-1", "b", memory="2Gi")],
        [request("a", capacity={"memory": "1Gi"}), request("b", capacity={"memory": "2Gi"})],
        config=[
            sharing_config("FromClaim", ["a"], priority=0, coreLimitPolicy="force"),
            sharing_config("FromClass", priority=1, oversubscribe=True),
            other,
            sharing_config("FromClaim", ["b"], coreLimitPolicy="disable"),
        ],
    )
    bad = claim("badcfg", [result("gpu-2")], config=[sharing_config(priority=7)])
    for obj in (c, bad):
        api.store.put(obj)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(ref(c), ref(bad))
        await kubelet.close()
    assert answer.claims[c["metadata"]["uid"]].error == ""
    spec = read_json(cdi_path(s, c["metadata"]["uid"]))
    check_cdi_spec(spec)
    a, b = env_of(spec, 0), env_of(spec, 1)
    # Class config first, claim config later wins, per request; other drivers' configs are ignored.
    assert (a["CUDA_TASK_PRIORITY"], a["GPU_CORE_UTILIZATION_POLICY"], a.get("CUDA_OVERSUBSCRIBE")) == (
        "0",
        "force",
        "false",
    )
    assert (b["CUDA_TASK_PRIORITY"], b["GPU_CORE_UTILIZATION_POLICY"]) == ("1", "disable")
    assert a["CUDA_DEVICE_MEMORY_SHARED_CACHE"].endswith("/a.cache")
    assert b["CUDA_DEVICE_MEMORY_SHARED_CACHE"].endswith("/b.cache")
    err = answer.claims[bad["metadata"]["uid"]].error
    assert "priority must be 0 (high) or 1 (low)" in err and "default/badcfg" in err
    assert not exists(cdi_path(s, bad["metadata"]["uid"]))


async def test_shared_devices_and_overlap_refusal(api: APIServer, s: Settings) -> None:
    s1 = claim("share1", [result("gpu-0", memory="1Gi")])
    s2 = claim("share2", [result("gpu-0", memory="2Gi")])
    ex1 = claim("excl1", [result("gpu-1", share=False)])
    ex2 = claim("excl2", [result("gpu-1", share=False)])
    sh_on_ex = claim("shareonexcl", [result("gpu-1", memory="1Gi")])
    for obj in (s1, s2, ex1, ex2, sh_on_ex):
        api.store.put(obj)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        first = await kubelet.prepare(ref(s1), ref(s2), ref(ex1))
        assert all(first.claims[o["metadata"]["uid"]].error == "" for o in (s1, s2, ex1))
        names = {first.claims[o["metadata"]["uid"]].devices[0].cdi_device_ids[0] for o in (s1, s2)}
        assert len(names) == 2, "two shares of one card need distinct CDI names"
        second = await kubelet.prepare(ref(ex2), ref(sh_on_ex))
        for o in (ex2, sh_on_ex):
            err = second.claims[o["metadata"]["uid"]].error
            assert "gpu-1 is already prepared for ResourceClaim default/excl1" in err
            assert not exists(cdi_path(s, o["metadata"]["uid"]))
        # Once excl1 is gone, the device is free again.
        await kubelet.unprepare(ref(ex1))
        third = await kubelet.prepare(ref(ex2))
        assert third.claims[ex2["metadata"]["uid"]].error == ""
        await kubelet.close()


async def test_empty_prepare_unknown_unprepare_and_claim_errors(api: APIServer, s: Settings) -> None:
    unallocated = claim("pending", [], allocated=False)
    wrong_node = claim("elsewhere", [result("gpu-0", pool="node2")])
    missing_dev = claim("nodev", [result("gpu-9")])
    replaced = claim("replaced", [result("gpu-0")])
    for obj in (unallocated, wrong_node, missing_dev, replaced):
        api.store.put(obj)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        assert len((await kubelet.prepare()).claims) == 0
        unknown = Claim("default", "never", str(uuid.uuid4()))
        out = await kubelet.unprepare(unknown)
        assert list(out.claims) == [unknown.uid] and out.claims[unknown.uid].error == ""
        stale = Claim("default", "replaced", str(uuid.uuid4()))
        absent = Claim("default", "absent", str(uuid.uuid4()))
        answer = await kubelet.prepare(ref(unallocated), ref(wrong_node), ref(missing_dev), stale, absent)
        await kubelet.close()
    assert "default/pending is not allocated" in answer.claims[unallocated["metadata"]["uid"]].error
    other = answer.claims[wrong_node["metadata"]["uid"]]
    assert other.error == "" and len(other.devices) == 0, "results of other pools are not ours"
    assert (
        "device 'gpu-9' of pool node1, which this node does not have"
        in answer.claims[missing_dev["metadata"]["uid"]].error
    )
    assert "the claim was replaced" in answer.claims[stale.uid].error
    assert "cannot read ResourceClaim default/absent: it does not exist" in answer.claims[absent.uid].error
    assert files_under(s.cdi_dir) == []


async def test_api_server_500_timeout_and_down_then_retry(api: APIServer, s: Settings) -> None:
    ok = claim("healthy", [result("gpu-0")])
    c = claim("flaky", [result("gpu-1")])
    for obj in (ok, c):
        api.store.put(obj)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()

        api.faults.add(method="GET", path_regex=r"/resourceclaims/flaky$", status=500, count=1, message="etcd hiccup")
        answer = await kubelet.prepare(ref(c), ref(ok))
        err = answer.claims[c["metadata"]["uid"]].error
        assert err.startswith("cannot read ResourceClaim default/flaky: ") and "etcd hiccup" in err
        assert err.endswith("kubelet will retry")
        assert answer.claims[ok["metadata"]["uid"]].error == "", "one claim's failure does not fail the others"
        assert not exists(cdi_path(s, c["metadata"]["uid"]))

        api.faults.add(method="GET", path_regex=r"/resourceclaims/flaky$", status=None, delay=4.0, count=1)
        err = (await kubelet.prepare(ref(c))).claims[c["metadata"]["uid"]].error
        assert "cannot read ResourceClaim default/flaky: " in err and "no answer within 2s" in err
        api.faults.clear()

        await api.stop()
        err = (await kubelet.prepare(ref(c))).claims[c["metadata"]["uid"]].error
        assert "cannot read ResourceClaim default/flaky: cannot reach the API server" in err
        # Unprepare needs no API server.
        assert (await kubelet.unprepare(ref(ok))).claims[ok["metadata"]["uid"]].error == ""
        await api.start()
        retry = (await kubelet.prepare(ref(c))).claims[c["metadata"]["uid"]]
        assert retry.error == "" and retry.devices[0].device_name == "gpu-1"
        await kubelet.close()


async def test_v1beta1_kubelet_gets_the_same_devices_without_share_id(api: APIServer, s: Settings) -> None:
    c = claim("beta", [result("gpu-0", memory="1Gi")])
    api.store.put(c)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir, known=("v1beta1.DRAPlugin",)).register()
        assert kubelet.service == "v1beta1.DRAPlugin"
        answer = (await kubelet.prepare(ref(c))).claims[c["metadata"]["uid"]]
        assert answer.error == ""
        (dev,) = answer.devices
        assert "share_id" not in dev.DESCRIPTOR.fields_by_name
        assert dev.cdi_device_ids[0].endswith(f"-gpu-0-{c['status']['allocation']['devices']['results'][0]['shareID']}")
        assert (await kubelet.unprepare(ref(c))).claims[c["metadata"]["uid"]].error == ""
        await kubelet.close()


async def test_100_concurrent_prepares(api: APIServer, s: Settings) -> None:
    claims = [claim(f"p{i}", [result(f"gpu-{i % 4}", memory="1Gi")]) for i in range(100)]
    for obj in claims:
        api.store.put(obj)
    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        answers = await asyncio.gather(*(kubelet.prepare(ref(c)) for c in claims))
        errors = [a.claims[c["metadata"]["uid"]].error for a, c in zip(answers, claims, strict=True)]
        assert errors == [""] * 100
        assert len(files_under(s.cdi_dir)) == 100
        assert len(checkpoint_records(s)) == 100
        assert driver.preparer is not None
        usage = driver.preparer.usage()
        assert {k: (v.memory_bytes, v.shares) for k, v in usage.items()} == {
            f"gpu-{i}": (25 * 1024**3, 25) for i in range(4)
        }
        await asyncio.gather(*(kubelet.unprepare(ref(c)) for c in claims))
        await kubelet.close()
    assert files_under(s.cdi_dir) == [] and os.listdir(os.path.join(s.host_lib_dir, "claims")) == []
    assert checkpoint_records(s) == {}


async def test_lost_cdi_specs_are_restored_at_start(api: APIServer, s: Settings) -> None:
    """/var/run/cdi is a tmpfs: after a reboot the specs are gone but the checkpoint is not."""
    c = claim("reboot", [result("gpu-3", memory="3Gi")])
    api.store.put(c)
    uid = c["metadata"]["uid"]
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        before = await kubelet.prepare(ref(c))
        await kubelet.close()
    original = read_text(cdi_path(s, uid))
    os.unlink(cdi_path(s, uid))
    region = os.path.join(s.host_lib_dir, "claims", uid, "gpu.cache")
    record = os.path.join(s.host_lib_dir, "node", f"{uid}.gpu.rec")
    write_text(region, "what the container's processes wrote")
    os.unlink(record)
    api.store.delete("resourceclaims", "default", "reboot")  # not needed: the checkpoint has everything
    async with running_driver(s):
        assert read_text(cdi_path(s, uid)) == original
        assert read_text(region) == "what the container's processes wrote", "the container's file is never rewritten"
        assert exists(record) and os.stat(record).st_size == 0, "a missing one is created again, empty"
        kubelet = await Kubelet(s.registry_dir).register()
        assert await kubelet.prepare(ref(c)) == before
        assert (await kubelet.unprepare(ref(c))).claims[uid].error == ""
        await kubelet.close()
    assert files_under(s.cdi_dir) == []


async def test_second_instance_is_refused(api: APIServer, s: Settings) -> None:
    from dra_driver.daemon import StartupError

    async with running_driver(s):
        other = Driver(s)
        with pytest.raises(StartupError, match="only one may run per node"):
            await other.start()
        await other.stop()
        # The refused instance leaves the running one's sockets alone.
        assert exists(s.dra_socket) and exists(s.registration_socket)
        kubelet = await Kubelet(s.registry_dir).register()
        assert len((await kubelet.prepare()).claims) == 0
        await kubelet.close()


async def test_power_cut_leftovers_are_repaired(api: APIServer, s: Settings) -> None:
    """Specs are written atomically but not fsynced (they are rebuilt from the durable record):
    a truncated spec is restored, specs and files whose record was lost are removed, and other
    drivers' specs in the shared CDI directory are left alone."""
    c = claim("kept", [result("gpu-0", memory="2Gi")])
    api.store.put(c)
    uid = c["metadata"]["uid"]
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(ref(c))
        await kubelet.close()
    original = read_text(cdi_path(s, uid))
    write_text(cdi_path(s, uid), original[:100])  # truncated by the power cut
    lost = str(uuid.uuid4())
    write_text(cdi_path(s, lost), "{}")  # its record never reached the disk
    write_text(os.path.join(s.host_lib_dir, "claims", lost, "gpu.cache"), "region")
    write_text(os.path.join(s.host_lib_dir, "node", f"{lost}.gpu.rec"), "record")
    foreign = [
        os.path.join(s.cdi_dir, n)
        for n in ("k8s.gpu.nvidia.com-claim_x.json", f"k8s.ascend.tessera.dev-claim_{lost}.json")
    ]
    for path in foreign:
        write_text(path, "{}")
    async with running_driver(s):
        assert read_text(cdi_path(s, uid)) == original
        assert not exists(cdi_path(s, lost))
        assert all(exists(p) for p in foreign)
        kubelet = await Kubelet(s.registry_dir).register()
        assert await kubelet.prepare(ref(c)) == answer
        # kubelet unprepares the claim it once asked for: its files go although nothing was recorded.
        out = await kubelet.unprepare(Claim("default", "lost", lost))
        assert out.claims[lost].error == ""
        assert not exists(os.path.join(s.host_lib_dir, "claims", lost))
        assert sorted(os.listdir(os.path.join(s.host_lib_dir, "node"))) == [f"{uid}.gpu.meta", f"{uid}.gpu.rec"]
        await kubelet.close()


async def test_the_same_claim_prepared_twice_at_once(api: APIServer, s: Settings) -> None:
    c = claim("twice", [result("gpu-2", memory="1Gi")])
    api.store.put(c)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        first, second = await asyncio.gather(kubelet.prepare(ref(c)), kubelet.prepare(ref(c)))
        assert first == second and first.claims[c["metadata"]["uid"]].error == ""
        assert files_under(s.cdi_dir) == [f"k8s.{DRIVER}-claim_{c['metadata']['uid']}.json"]
        assert len(checkpoint_records(s)) == 1
        await kubelet.close()
