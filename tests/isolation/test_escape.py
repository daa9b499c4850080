"""The escape the DRA driver's watchdog exists for, and what the fake NVML tells it.

A workload that loads a second copy of the driver with ``dlmopen(LM_ID_NEWLM, "libcuda.so.1")``
(``cuda-workload --route dlmopen``) is not hooked: it allocates past its libvgpu limit. The fake
NVML still reports, per process, every byte the fake driver granted, through pynvml's ``_v3``
queries as the watchdog reads them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .fakegpu import BUILD, GIB, MIB, FakeNode, events, workload


def test_a_dlmopen_copy_of_the_driver_escapes_the_limit(node: FakeNode) -> None:
    env = node.container("escape", CUDA_DEVICE_MEMORY_LIMIT_0="1g")
    hooked = events(workload(env, "--total-mib", "2048", "--step-mib", "512"), "alloc")
    assert [e["result"] for e in hooked][-1] == "CUDA_ERROR_OUT_OF_MEMORY" and hooked[-1]["held_mib"] == 1024
    escaped = events(workload(env, "--route", "dlmopen", "--total-mib", "2048", "--step-mib", "512"), "alloc")
    assert all(e["result"] == "CUDA_SUCCESS" for e in escaped) and escaped[-1]["held_mib"] == 2048


READ = """
import json, sys
from dra_driver.backends.processes import NvmlProcessReader
reader = NvmlProcessReader(sys.argv[1])
print(json.dumps({u: [[p.pid, p.used_bytes] for p in ps] for u, ps in reader.read().items()}))
"""


def test_the_fake_nvml_reports_each_process_memory_escaped_or_not(node: FakeNode) -> None:
    hold = ["--json", "--hold-seconds", "30"]
    escape = subprocess.Popen(
        [BUILD / "tools" / "cuda-workload", "--route", "dlmopen", "--total-mib", "1536", "--step-mib", "512", *hold],
        env=node.container("escape", devices=(1,), CUDA_DEVICE_MEMORY_LIMIT_0="1g"),
        stdout=subprocess.PIPE,
    )
    polite = subprocess.Popen(
        [BUILD / "tools" / "cuda-workload", "--total-mib", "256", "--step-mib", "256", *hold],
        env=node.container("polite", devices=(1,), CUDA_DEVICE_MEMORY_LIMIT_0="1g"),
        stdout=subprocess.PIPE,
    )
    try:
        for proc in (escape, polite):
            assert proc.stdout is not None
            while b"after allocation" not in proc.stdout.readline():
                assert proc.poll() is None
        out = subprocess.run(
            [sys.executable, "-c", READ, str(BUILD / "fake" / "libnvidia-ml.so.1")],
            env=node.base_env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    finally:
        for proc in (escape, polite):
            proc.kill()
            proc.wait()
    seen = json.loads(out.stdout)
    assert seen[node.uuids[0]] == []
    assert sorted(seen[node.uuids[1]]) == sorted([[escape.pid, 3 * GIB // 2], [polite.pid, 256 * MIB]])
