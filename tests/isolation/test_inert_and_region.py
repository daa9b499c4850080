"""libvgpu is inert in processes that never touch CUDA; the region it writes reads back through
isolation.region (the node metrics' reader), which refuses what is not a region."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from isolation import region

from .fakegpu import GIB, LIBVGPU, MIB, WORKLOAD, FakeNode, prepare_container, workload


@pytest.mark.parametrize(
    "cmd",
    [
        ["/bin/true"],
        ["/bin/sh", "-c", "exit 3"],
        [
            sys.executable,
            "-c",
            "import os, ctypes, ctypes.util; ctypes.CDLL(ctypes.util.find_library('m'));"
            " print(len(os.listdir('/proc/self/task')))",
        ],
    ],
)
def test_inert_without_cuda(node: FakeNode, cmd: list[str]) -> None:
    env = node.container("inert", CUDA_DEVICE_MEMORY_LIMIT_0="1g", CUDA_DEVICE_SM_LIMIT="30")
    plain = subprocess.run(cmd, env=node.base_env, capture_output=True, text=True, timeout=30)
    hooked = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert hooked.returncode == plain.returncode
    assert hooked.stdout == plain.stdout, "no extra threads, same output"
    assert hooked.stderr == plain.stderr == ""
    assert not (node.dir / "inert.cache").exists(), "no region file until a CUDA or NVML call"
    assert not (node.dir / "fake.state").exists(), "the driver was never loaded"


def test_region_reads_back_what_the_library_wrote(node: FakeNode) -> None:
    meter = prepare_container(node, "meter", memory=6 * GIB, sm=50, priority=0, policy="force")
    holder = subprocess.Popen(
        [str(WORKLOAD), "--json", "--total-mib", "1536", "--step-mib", "512", "--launch-seconds", "1.5",
         "--kernel-us", "500", "--hold-seconds", "2"],
        env=meter.env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        for line in holder.stdout:
            if '"launches"' in line:
                break
        snap = region.read_region(meter.region)
    finally:
        holder.kill()
        holder.wait()
    dev = snap.devices[0]
    assert dev.uuid == node.uuids[0]
    assert dev.memory_used == 1536 * MIB
    assert 0.35 <= dev.utilization <= 0.65, dev.utilization
    assert dev.last_kernel_unix is not None and abs(dev.last_kernel_unix - time.time()) < 10
    assert [p.pid for p in snap.processes] == [holder.pid]
    assert snap.processes[0].host_pid == holder.pid and snap.processes[0].valid
    assert snap.processes[0].memory_used[0] == 1536 * MIB
    # after the process is gone the next user of the region reclaims its slot
    workload(meter.env)
    snap = region.read_region(meter.region)
    assert snap.devices[0].memory_used == 0 and snap.processes == ()


def test_reader_refuses_foreign_truncated_and_other_layouts(tmp_path: Path, node: FakeNode) -> None:
    foreign = tmp_path / "hami.cache"
    foreign.write_bytes(b"\x4e\xfc\x2f\x01" + b"\0" * 4096)
    with pytest.raises(region.RegionError, match="not a libvgpu region"):
        region.read_region(foreign)
    good_container = prepare_container(node, "good", memory=GIB)
    workload(good_container.env, "--total-mib", "256")
    good = good_container.region.read_bytes()
    (tmp_path / "short.cache").write_bytes(good[:5000])
    with pytest.raises(region.RegionError, match="truncated"):
        region.read_region(tmp_path / "short.cache")
    other = bytearray(good)
    other[4] = 9
    (tmp_path / "other.cache").write_bytes(bytes(other))
    with pytest.raises(region.RegionError, match="layout version 9"):
        region.read_region(tmp_path / "other.cache")
    with pytest.raises(region.RegionError):
        region.read_region(tmp_path / "missing.cache")
    claims = tmp_path / "claims"
    (claims / "uid-1").mkdir(parents=True)
    (claims / "uid-2").mkdir()
    (claims / "uid-1" / "a.cache").write_bytes(good)
    (claims / "uid-2" / "b.cache").write_bytes(b"junk")
    found = list(region.scan_regions(claims))
    assert isinstance(found[0], region.Region) and found[0].devices[0].memory_used == 0
    assert isinstance(found[1], region.RegionError)
    written_over = bytearray(good)
    written_over[region.DEVICE_OFFSET : region.DEVICE_OFFSET + 8] = b"\x5a" * 8  # device 0's total, garbage
    with pytest.raises(region.RegionError, match="fails its check"):
        region.parse_region(bytes(written_over))


def test_library_refuses_a_foreign_region_and_fails_cleanly(node: FakeNode) -> None:
    (node.dir / "bad.cache").write_bytes(b"\x4e\xfc\x2f\x01" + b"\0" * 300000)
    env = node.container("bad", CUDA_DEVICE_MEMORY_LIMIT_0="1g")
    out = subprocess.run([str(WORKLOAD), "--total-mib", "64"], env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 2
    assert "refusing the usage region" in out.stderr and "foreign file" in out.stderr
    assert "CUDA_ERROR_NOT_INITIALIZED" in out.stderr
    assert LIBVGPU.exists()
