"""Many processes, one limit: no overshoot, and a process killed at any moment (inside the
region's lock included) neither blocks the others nor keeps its memory."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

from isolation import region

from .fakegpu import GIB, MIB, STRESS, WORKLOAD, FakeNode, events, workload

LOCK_OFFSET = 64  # region.h: the robust mutex; glibc keeps the owner's TID in its first word


def test_eight_processes_four_threads_zero_bytes_over(node: FakeNode) -> None:
    env = node.container("many", CUDA_DEVICE_MEMORY_LIMIT_0="4g")
    start = node.dir / "go"
    procs = [
        subprocess.Popen(
            [str(STRESS), "--threads", "4", "--chunk-mib", "48", "--start-file", str(start), "--hold-seconds", "2"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(0.3)
    start.touch()
    results = []
    for p in procs:
        assert p.stdout is not None
        results.append(json.loads(p.stdout.readline()))
    granted_on_device = node.used()
    snapshot = region.read_region(node.dir / "many.cache")
    for p in procs:
        p.wait(timeout=10)
    total = sum(r["granted_mib"] for r in results) * MIB
    assert all(r["errors"] == 0 for r in results)
    assert all(r["ooms"] == 4 for r in results), "every thread ends on CUDA_ERROR_OUT_OF_MEMORY"
    assert total <= 4 * GIB, f"overshoot: {total - 4 * GIB} bytes"
    assert total > 4 * GIB - 48 * MIB, "the limit is used up to the last whole chunk"
    assert granted_on_device == total, "the driver granted exactly what libvgpu admitted"
    assert snapshot.devices[0].memory_used == total
    assert node.used() == 0


def _lock_owner(cache: Path) -> int:
    with cache.open("rb") as f:
        f.seek(LOCK_OFFSET)
        (word,) = struct.unpack("<i", f.read(4))
    return word & 0x3FFFFFFF


def test_sigkill_inside_the_lock_blocks_no_one_and_frees_memory(node: FakeNode) -> None:
    env = node.container("kill", CUDA_DEVICE_MEMORY_LIMIT_0="2g")
    cache = node.dir / "kill.cache"
    caught_inside = 0
    killed = 0
    deadline = time.monotonic() + 40
    while caught_inside < 2 and time.monotonic() < deadline:
        victim = subprocess.Popen(
            [str(STRESS), "--threads", "4", "--chunk-mib", "256", "--churn-seconds", "30"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.15)
        for _ in range(400):
            os.kill(victim.pid, signal.SIGSTOP)
            owner = _lock_owner(cache)
            if owner and os.path.exists(f"/proc/{victim.pid}/task/{owner}"):
                caught_inside += 1
                break
            os.kill(victim.pid, signal.SIGCONT)
            time.sleep(0.0005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed += 1
        # the others go on at once: the whole limit is available within a second
        t0 = time.monotonic()
        lines = workload(env, "--total-mib", "2048", "--step-mib", "256", "--free", timeout=5)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"a survivor took {elapsed:.2f}s"
        allocs = events(lines, "alloc")
        assert [a["result"] for a in allocs] == ["CUDA_SUCCESS"] * 8, "the killed process's memory came back"
    assert caught_inside >= 2, f"only {caught_inside} of {killed} kills landed inside the lock"
    assert node.used() == 0


def test_holder_killed_with_memory_returns_it(node: FakeNode) -> None:
    env = node.container("holder", CUDA_DEVICE_MEMORY_LIMIT_0="2g")
    holder = subprocess.Popen(
        [str(WORKLOAD), "--json", "--total-mib", "1536", "--hold-seconds", "30"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    for line in holder.stdout:
        if '"after allocation"' in line:
            break
    assert events(workload(env, "--total-mib", "1024"), "alloc")[0]["result"] == "CUDA_ERROR_OUT_OF_MEMORY"
    holder.kill()
    holder.wait()
    t0 = time.monotonic()
    allocs = events(workload(env, "--total-mib", "2048", "--step-mib", "1024"), "alloc")
    assert time.monotonic() - t0 < 1.0
    assert [a["result"] for a in allocs] == ["CUDA_SUCCESS", "CUDA_SUCCESS"]
