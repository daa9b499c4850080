"""Per-container metrics on /metrics, read at scrape time from region files the real libvgpu wrote.

A claim is prepared through the driver's DRA socket; a real process (``cuda-workload`` on the fake
CUDA driver, with ``libvgpu.so`` preloaded) runs with the env of the claim's CDI spec, so the region
file is the one a container on a node would write. Missing, foreign and truncated files are skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dra_driver import cdi
from dra_driver.checkpoint import COMPLETED, STARTED, ClaimEntry, DeviceHold, PreparedDevice
from dra_driver.container_metrics import ContainerDevice, RegionSource, region_sources
from e2e.apiserver import APIServer
from e2e.fakegpu import BUILD, container_env
from vendors import nvidia
from vendors.base import DeviceInfo

from .helpers import claim, request, result, running_driver, settings, sharing_config
from .kubelet import Claim, Kubelet
from .test_observability import free_port, scrape

WORKLOAD = BUILD / "tools" / "cuda-workload"
MIB = 1 << 20
GIB = 1 << 30
H200 = DeviceInfo(index=0, uuid="GPU-0", product_name="NVIDIA H200", model="H200", memory_bytes=143771 * MIB)


@pytest.fixture(scope="module", autouse=True)
def _libvgpu_built() -> None:
    """libvgpu, the fake driver and cuda-workload (make is a no-op when they are up to date)."""
    subprocess.run(["make", "-s", "-C", str(BUILD.parent), "all"], check=True, timeout=600)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` with its labels."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        labels: dict[str, str] = {}
        if "{" in head:
            for part in head[head.index("{") + 1 : -1].split('",'):
                key, _, val = part.partition("=")
                labels[key] = val.strip('"')
        out.append((labels, float(value)))
    return out


def one(text: str, name: str, **labels: str) -> float:
    found = [v for lab, v in samples(text, name) if all(lab.get(k) == want for k, want in labels.items())]
    assert len(found) == 1, f"{name} {labels}: {found}\n{text}"
    return found[0]


async def start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """``cuda-workload --json`` (stdout piped) without blocking the driver's event loop."""
    return await asyncio.create_subprocess_exec(
        str(WORKLOAD), "--json", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


def plant_bad_regions(claims_dir: str, uid: dict[str, str]) -> None:
    """A foreign file (a HAMi-core cache) and a truncated copy of a real region where libvgpu writes."""
    Path(claims_dir, uid["foreign-0-main"], "main.cache").write_bytes(b"\x4e\xfc\x2f\x01" + bytes(8192))
    real = Path(claims_dir, uid["whole-0-main"], "main.cache").read_bytes()
    Path(claims_dir, uid["short-0-main"], "main.cache").write_bytes(real[:5000])


@pytest.fixture
async def workloads() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for p in procs:
        if p.returncode is None:
            p.kill()
        await p.wait()


async def test_container_metrics_from_real_regions(
    api: APIServer, root: str, kubeconfig: str, workloads: list[asyncio.subprocess.Process]
) -> None:
    port = free_port()
    s = settings(
        root, kubeconfig, "2xH200", "--metrics-port", str(port), "--listen-address", "127.0.0.1", "--hami-metrics"
    )
    asked = request("main", capacity={"memory": "4Gi", "cores": "50"})
    trainer = claim(
        "trainer-0-main",
        [result("gpu-1", "main", memory="4Gi", cores="50")],
        [asked],
        config=[sharing_config(coreLimitPolicy="force")],
    )
    trainer["status"]["reservedFor"] = [{"resource": "pods", "name": "trainer-0", "uid": "4f7c2b1e-0000-4000-8000-1"}]
    whole = claim("whole-0-main", [result("gpu-0", "main", share=False)], [request("main")])
    idle = claim("idle-0-main", [result("gpu-1", "main", memory="1Gi")], [request("main", capacity={"memory": "1Gi"})])
    foreign = claim("foreign-0-main", [result("gpu-1", "main", memory="1Gi")], [request("main")])
    short = claim("short-0-main", [result("gpu-1", "main", memory="1Gi")], [request("main")])
    everything = (trainer, whole, idle, foreign, short)
    for c in everything:
        api.store.put(c)
    uid = {c["metadata"]["name"]: c["metadata"]["uid"] for c in everything}

    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(
            *(Claim("default", c["metadata"]["name"], c["metadata"]["uid"]) for c in everything)
        )
        await kubelet.close()
        assert all(a.error == "" for a in answer.claims.values()), answer
        gpu0, gpu1 = driver.devices
        gpus = ",".join(f"{d.uuid}={d.memory_bytes}" for d in driver.devices)
        spec = {name: cdi.spec_path(s.cdi_dir, nvidia.NAMES, u) for name, u in uid.items()}
        claims_dir = os.path.join(s.host_lib_dir, "claims")

        # Nothing ran yet: every region is missing, yet every prepared container is there with its
        # limit and zero use (what the checkpoint says it got).
        text = await scrape(port)
        assert one(text, "tessera_container_regions", state="missing") == 5
        before = {lab["claim"]: v for lab, v in samples(text, "tessera_container_memory_used_bytes")}
        assert before == dict.fromkeys(uid, 0.0)
        assert one(text, "tessera_container_memory_limit_bytes", claim="trainer-0-main", container="main") == 4 * GIB
        assert one(text, "tessera_container_memory_limit_bytes", claim="whole-0-main") == gpu0.memory_bytes
        assert one(text, "tessera_container_utilization_ratio", claim="idle-0-main", device="gpu-1") == 0
        assert one(text, "hami_vgpu_memory_used_bytes", pod="trainer-0", container="main") == 0
        assert samples(text, "tessera_container_last_kernel_age_seconds") == []

        # A whole-device container that ran and exited: no limit in its region (the device's memory).
        done = await start(container_env(spec["whole-0-main"], f"{root}/fake.state", gpus), "--total-mib", "512")
        workloads.append(done)
        _, err = await asyncio.wait_for(done.communicate(), timeout=30)
        assert done.returncode == 0, err
        plant_bad_regions(claims_dir, uid)

        # The trainer holds 1.5 GiB and launches at a 50 % SM limit, then holds its memory for 2 s.
        proc = await start(
            container_env(spec["trainer-0-main"], f"{root}/fake.state", gpus),
            "--total-mib", "1536", "--step-mib", "512", "--launch-seconds", "1.5", "--kernel-us", "500",
            "--hold-seconds", "2",
        )  # fmt: skip
        workloads.append(proc)
        assert proc.stdout is not None
        while b'"launches"' not in await asyncio.wait_for(proc.stdout.readline(), timeout=30):
            pass
        text = await scrape(port)
        await asyncio.wait_for(proc.wait(), timeout=30)
        after = await scrape(port)

    ours = {
        "namespace": "default",
        "claim": "trainer-0-main",
        "claim_uid": uid["trainer-0-main"],
        "pod": "trainer-0",
        "container": "main",
        "request": "main",
        "device": "gpu-1",
        "uuid": gpu1.uuid,
        "index": "1",
    }
    assert one(text, "tessera_container_memory_used_bytes", **ours) == 1536 * MIB
    assert one(text, "tessera_container_memory_limit_bytes", **ours) == 4 * GIB
    utilization = one(text, "tessera_container_utilization_ratio", **ours)
    assert 0.35 <= utilization <= 0.65, utilization
    age = one(text, "tessera_container_last_kernel_age_seconds", **ours)
    assert 0 <= age < 10
    hami = {
        "namespace": "default",
        "pod": "trainer-0",
        "container": "main",
        "vdevice_index": "0",
        "device_uuid": gpu1.uuid,
        "zone": "vGPU",
    }
    assert one(text, "hami_vgpu_memory_used_bytes", **hami) == 1536 * MIB
    assert one(text, "hami_vgpu_memory_limit_bytes", **hami) == 4 * GIB
    assert one(text, "hami_container_device_utilization_ratio", **hami) == pytest.approx(utilization * 100)
    assert one(text, "hami_container_last_kernel_elapsed_seconds", **hami) == age

    whole_labels = {"claim": "whole-0-main", "device": "gpu-0", "uuid": gpu0.uuid, "index": "0", "pod": ""}
    assert one(text, "tessera_container_memory_used_bytes", **whole_labels) == 0, "exited: its memory came back"
    assert one(text, "tessera_container_memory_limit_bytes", **whole_labels) == gpu0.memory_bytes
    assert one(text, "tessera_container_utilization_ratio", **whole_labels) == 0
    assert [lab for lab, _ in samples(text, "tessera_container_last_kernel_age_seconds")] == [ours], "no launch, no age"

    # Counted; a container whose region cannot be read shows its limit, never a made-up use; one
    # without CUDA yet shows zero use.
    assert one(text, "tessera_container_regions", state="ok") == 2
    assert one(text, "tessera_container_regions", state="missing") == 1
    assert one(text, "tessera_container_regions", state="invalid") == 2
    named = {lab.get("claim") for lab, _ in samples(text, "tessera_container_memory_used_bytes")}
    assert named == {"trainer-0-main", "whole-0-main", "idle-0-main"}
    limited = {lab.get("claim") for lab, _ in samples(text, "tessera_container_memory_limit_bytes")}
    assert limited == set(uid)
    assert one(text, "tessera_container_memory_limit_bytes", claim="foreign-0-main") == 1 * GIB

    # The trainer exited normally: its memory is released in the region; the last launch stays.
    assert one(after, "tessera_container_memory_used_bytes", **ours) == 0
    assert one(after, "tessera_container_memory_limit_bytes", **ours) == 4 * GIB
    assert one(after, "tessera_container_last_kernel_age_seconds", **ours) >= age


def test_region_sources_come_from_the_cdi_env() -> None:
    uid = "0b6d3c52-0000-4000-8000-000000000001"
    claim_dir = f"/usr/local/tessera/claims/{uid}"
    names = [f"{uid}-gpu-0-s1", f"{uid}-gpu-1-s2", f"{uid}-gpu-2"]

    def device(name: str, cache: str | None) -> dict[str, Any]:
        env = ["NVIDIA_VISIBLE_DEVICES=GPU-a"] + ([f"CUDA_DEVICE_MEMORY_SHARED_CACHE={cache}"] if cache else [])
        return {"name": name, "containerEdits": {"env": env}}

    entry = ClaimEntry(
        state=COMPLETED,
        namespace="ml",
        name="c",
        cdi_spec_path="/var/run/cdi/x.json",
        claim_dir=claim_dir,
        devices=(
            PreparedDevice(("train",), "node1", "gpu-0", (f"k8s.nvidia.tessera.dev/claim={names[0]}",), "s1"),
            PreparedDevice(("train",), "node1", "gpu-1", (f"k8s.nvidia.tessera.dev/claim={names[1]}",), "s2"),
            PreparedDevice(("eval",), "node1", "gpu-2", (f"k8s.nvidia.tessera.dev/claim={names[2]}",)),
        ),
        cdi_spec={
            "devices": [
                device(names[0], f"{claim_dir}/train.cache"),
                device(names[1], f"{claim_dir}/train.cache"),  # both devices of one request: one file
                device(names[2], "/etc/passwd"),  # outside the claim directory: never read
            ]
        },
        holds=(
            DeviceHold("gpu-0", "s1", 4 * GIB, 30),
            DeviceHold("gpu-1", "s2", 2 * GIB, None),
            DeviceHold("gpu-2", None, None, None),
        ),
        pods=("p-1",),
        containers={"train": "trainer", "eval": "eval"},
    )
    train = RegionSource("ml", "c", uid, "train", ("p-1",), f"{claim_dir}/train.cache", "trainer", claim_dir=claim_dir)
    # the eval container is still a container, but its region path lies outside the claim dir: no file
    evaluation = RegionSource("ml", "c", uid, "eval", ("p-1",), "", "eval", claim_dir=claim_dir)
    assert region_sources(uid, entry) == [train, evaluation]
    assert region_sources(uid, dataclasses.replace(entry, state=STARTED)) == [], "only prepared claims"
    # With the node's devices: what each container got, in its CUDA ordinal order, limits applied
    cards = {f"gpu-{i}": dataclasses.replace(H200, index=i, uuid=f"GPU-{i}") for i in range(3)}
    got = {s.request: s.devices for s in region_sources(uid, entry, cards)}
    assert got["train"] == (
        ContainerDevice("gpu-0", "GPU-0", 0, 0, 4 * GIB),
        ContainerDevice("gpu-1", "GPU-1", 1, 1, 2 * GIB),
    )
    assert got["eval"] == (ContainerDevice("gpu-2", "GPU-2", 2, 0, H200.memory_bytes),), "whole device"
