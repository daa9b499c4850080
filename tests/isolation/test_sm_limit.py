"""The SM limiter in a closed loop on the fake's virtual timeline: the fake NVML reports the busy
time launches put on the device-wide timeline, libvgpu's controller holds the target, and the
ground truth is read from the timeline itself (fake-state, not through libvgpu)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from .fakegpu import WORKLOAD, FakeNode

TARGETS = (10, 30, 50, 70, 90)
RUN_S = 5.0
MEASURE_FROM_S, MEASURE_S = 2.4, 2.4


def _measure(node: FakeNode, runs: list[tuple[int, dict[str, str], list[str]]]) -> list[float]:
    """Start every workload at once, each on its own device; busy fraction of each device over
    the measurement window."""
    procs = [
        subprocess.Popen([str(WORKLOAD), "--launch-seconds", str(RUN_S), *args], env=env, stdout=subprocess.DEVNULL)
        for _, env, args in runs
    ]
    try:
        time.sleep(MEASURE_FROM_S)
        samplers = [
            subprocess.Popen(node.util_cmd(dev, MEASURE_S), env=node.base_env, stdout=subprocess.PIPE, text=True)
            for dev, _, _ in runs
        ]
        fractions = [float(json.loads(s.communicate(timeout=10)[0])["busy_fraction"]) for s in samplers]
    finally:
        for p in procs:
            p.wait(timeout=20)
    return fractions


def test_limit_holds_on_small_and_large_gpus(tmp_path: Path) -> None:
    # ten devices: the five targets on a 132-SM and on a 16-SM GPU, all measured at once
    node = FakeNode(tmp_path, ["80GiB/132sm"] * 5 + ["16GiB/16sm"] * 5)
    runs = []
    for k, target in enumerate(TARGETS * 2):
        env = node.container(
            f"sm{k}", devices=(k,), CUDA_DEVICE_SM_LIMIT=str(target), GPU_CORE_UTILIZATION_POLICY="force"
        )
        grid = "264" if k < 5 else "40"  # 2 and 3 waves: 1.0 and 1.5 ms per kernel
        runs.append((k, env, ["--kernel-us", "500", "--grid", grid]))
    fractions = _measure(node, runs)
    pairs = list(zip(TARGETS * 2, fractions, strict=True))
    report = {f"{'132' if k < 5 else '16'}sm@{t}%": round(f * 100, 1) for k, (t, f) in enumerate(pairs)}
    for k, (target, frac) in enumerate(zip(TARGETS * 2, fractions, strict=True)):
        assert abs(frac * 100 - target) <= 3, f"device {k} target {target}%: measured {report}"


def test_every_launch_route_is_metered(tmp_path: Path) -> None:
    """cuLaunchKernelEx, cooperative launches and graph launches, legacy and per-thread stream."""
    node = FakeNode(tmp_path, ["80GiB/132sm"] * 8)
    runs = []
    for k, (how, ptds) in enumerate((h, p) for h in ("ex", "coop", "graph", "graph-params") for p in (False, True)):
        env = node.container(f"r{k}", devices=(k,), CUDA_DEVICE_SM_LIMIT="40", GPU_CORE_UTILIZATION_POLICY="force")
        args = ["--launch", how, "--kernel-us", "300", "--grid", "528"]
        runs.append((k, env, [*args, "--per-thread-stream"] if ptds else args))
    fractions = _measure(node, runs)
    for (k, _, args), frac in zip(runs, fractions, strict=True):
        assert abs(frac * 100 - 40) <= 3, f"device {k} {args}: {frac:.3f}"


def test_no_limit_or_disable_policy_leaves_the_device_free(node: FakeNode) -> None:
    free = node.container("free", devices=(0,))
    off = node.container("off", devices=(1,), CUDA_DEVICE_SM_LIMIT="20", GPU_CORE_UTILIZATION_POLICY="disable")
    fractions = _measure(
        node, [(0, free, ["--kernel-us", "500", "--grid", "264"]), (1, off, ["--kernel-us", "500", "--grid", "32"])]
    )
    assert all(f > 0.97 for f in fractions), fractions
