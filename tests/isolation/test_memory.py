"""Memory limits through real processes on the fake driver: every allocation path, the queries
(CUDA and NVML) and the demo's numbers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from isolation import env as contract
from isolation import region

from .fakegpu import (
    GIB,
    LIBVGPU,
    MIB,
    SMI,
    WORKLOAD,
    FakeNode,
    events,
    forged_process,
    prepare_container,
    run_json,
    workload,
)

APIS = ["alloc", "pitch", "managed", "async", "pool", "vmm", "array", "array3d", "mipmap"]


def test_demo_twelve_gib_ask_stops_at_ten(node: FakeNode) -> None:
    env = node.container("demo", CUDA_DEVICE_MEMORY_LIMIT_0="10240m")
    lines = workload(env, "--total-mib", "12288", "--step-mib", "1024")
    start = events(lines, "meminfo")[0]
    assert start["total"] == 10 * GIB and start["free"] == 10 * GIB and start["device_total_mem"] == 10 * GIB
    allocs = events(lines, "alloc")
    assert [a["result"] for a in allocs] == ["CUDA_SUCCESS"] * 10 + ["CUDA_ERROR_OUT_OF_MEMORY"]
    assert allocs[-1]["held_mib"] == 10240
    after = events(lines, "meminfo")[1]
    assert after["free"] == 0 and after["total"] == 10 * GIB


@pytest.mark.parametrize("api", APIS)
def test_every_path_stops_at_the_limit_and_frees(node: FakeNode, api: str) -> None:
    env = node.container(f"c-{api}", CUDA_DEVICE_MEMORY_LIMIT_0="3g")
    lines = workload(env, "--api", api, "--total-mib", "4096", "--step-mib", "1024", "--free")
    allocs = events(lines, "alloc")
    assert [a["result"] for a in allocs] == ["CUDA_SUCCESS"] * 3 + ["CUDA_ERROR_OUT_OF_MEMORY"], allocs
    infos = events(lines, "meminfo")
    assert infos[1]["total"] == 3 * GIB and infos[1]["free"] <= 0 + 2 * MIB
    assert infos[2]["free"] == 3 * GIB, "freeing returns the budget"
    assert node.used() == 0, "the fake holds nothing after the process ends"


def test_refused_allocation_never_reaches_the_driver(node: FakeNode) -> None:
    holder = node.container("held", CUDA_DEVICE_MEMORY_LIMIT_0="2g")
    proc = subprocess.Popen(
        [str(WORKLOAD), "--json", "--total-mib", "2048", "--hold-seconds", "3"],
        env=holder,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"after allocation"' in line:
                break
        granted = node.used()
        assert granted == 2 * GIB
        calls_before = node.state()["calls"].get("cuMemAlloc_v2", 0)
        lines = workload(holder, "--total-mib", "512")
        assert events(lines, "alloc")[0]["result"] == "CUDA_ERROR_OUT_OF_MEMORY"
        assert node.used() == granted, "the fake's granted bytes are unchanged"
        assert node.state()["calls"].get("cuMemAlloc_v2", 0) == calls_before
    finally:
        proc.kill()
        proc.wait()


def test_nvml_shows_the_limit_and_the_container_use(node: FakeNode) -> None:
    env = node.container("smi", CUDA_DEVICE_MEMORY_LIMIT_0="4096m")
    other = node.container("other", CUDA_DEVICE_MEMORY_LIMIT_0="8g")
    procs = [
        subprocess.Popen(
            [str(WORKLOAD), "--json", "--total-mib", mib, "--hold-seconds", "4"],
            env=e,
            stdout=subprocess.PIPE,
            text=True,
        )
        for e, mib in ((env, "1536"), (other, "3072"))
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            for line in p.stdout:
                if '"after allocation"' in line:
                    break
        deadline = time.monotonic() + 2
        view = run_json([SMI, "--json"], env)[0]
        while not view["processes"] and time.monotonic() < deadline:  # the PID is learnt on a tick
            time.sleep(0.05)
            view = run_json([SMI, "--json"], env)[0]
        for ver in ("v1", "v2"):
            assert view[ver]["result"] == 0
            assert view[ver]["total"] == 4096 * MIB
            assert view[ver]["used"] == 1536 * MIB
            assert view[ver]["free"] == (4096 - 1536) * MIB
        assert [p["used"] for p in view["processes"]] == [1536 * MIB], "only this container's process, its bytes"
        assert view["processes"][0]["pid"] == procs[0].pid
        raw = run_json([SMI, "--json"], node.base_env | {"NVIDIA_VISIBLE_DEVICES": node.uuids[0]})[0]
        assert raw["v1"]["total"] == 16 * GIB and raw["v1"]["used"] == (1536 + 3072) * MIB, "unhooked: the host view"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_queries_saturate_instead_of_underflowing(node: FakeNode) -> None:
    """Use past the limit (a pool that grew in larger chunks than foreseen is charged truthfully)
    must read as zero free, never as a wrapped-around 17 TB."""
    c = prepare_container(node, "sat", memory=GIB)
    workload(c.env)  # the first CUDA process initialises the region the driver created empty
    with forged_process(c.region, [3 * GIB // 2]):  # another process of the container holds 1.5 GiB
        view = run_json([SMI, "--json"], c.env)[0]
        assert (view["v1"]["total"], view["v1"]["used"], view["v1"]["free"]) == (GIB, GIB, 0)
        assert (view["v2"]["total"], view["v2"]["used"], view["v2"]["free"]) == (GIB, GIB, 0)
        info = events(workload(c.env), "meminfo")[0]
        assert (info["total"], info["free"]) == (GIB, 0)
        assert events(workload(c.env, "--total-mib", "1"), "alloc")[0]["result"] == "CUDA_ERROR_OUT_OF_MEMORY"
        assert region.read_region(c.region).devices[0].memory_used == 3 * GIB // 2


@pytest.mark.parametrize(
    "value",
    ["1g", "1G", "1024m", "1048576k", "1073741824", "0", "abc", "1.5g", "12q", "-5", "99999999999999999999999g"],
)
def test_env_formats_as_python_and_c_read_them(node: FakeNode, value: str) -> None:
    env = node.container("fmt", CUDA_DEVICE_MEMORY_LIMIT=value)
    lines = workload(env)
    total = events(lines, "meminfo")[0]["total"]
    parsed = contract.parse_memory(value)
    if parsed is not None and parsed >= 1 << 64:
        parsed = None
    expected = parsed if parsed else 16 * GIB  # malformed or 0: no limit, the physical size
    assert total == expected


def test_per_device_limits_follow_the_contract(node: FakeNode) -> None:
    limits = [
        contract.DeviceLimit(uuid=node.uuids[1], index=1, memory_bytes=2 * GIB, sm_percent=None),
        contract.DeviceLimit(uuid=node.uuids[0], index=0, memory_bytes=5 * GIB, sm_percent=40),
    ]
    env = node.base_env | contract.container_env(limits, shared_cache=str(node.dir / "multi.cache"))
    env["LD_PRELOAD"] = str(LIBVGPU)
    totals = [events(workload(env, "--device", str(d)), "meminfo")[0]["total"] for d in (0, 1)]
    assert totals == [5 * GIB, 2 * GIB]
    assert json.loads(json.dumps(env))[contract.SM_LIMIT + "_0"] == "40"


def test_oversubscription_falls_back_within_the_share(tmp_path: Path) -> None:
    small = FakeNode(tmp_path, ["4GiB/132sm"])
    env = small.container("over", CUDA_DEVICE_MEMORY_LIMIT_0="6g", CUDA_OVERSUBSCRIBE="true")
    allocs = events(workload(env, "--total-mib", "7168", "--step-mib", "1024"), "alloc")
    assert [a["result"] for a in allocs] == ["CUDA_SUCCESS"] * 6 + ["CUDA_ERROR_OUT_OF_MEMORY"]
    plain = small.container("plain", CUDA_DEVICE_MEMORY_LIMIT_0="6g")
    allocs = events(workload(plain, "--total-mib", "7168", "--step-mib", "1024"), "alloc")
    assert [a["result"] for a in allocs] == ["CUDA_SUCCESS"] * 4 + ["CUDA_ERROR_OUT_OF_MEMORY"], "physical limit"
