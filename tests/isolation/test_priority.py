"""Task priority across containers through the node records: a low-priority container pauses its
launches while a high-priority one is active on the same device, and resumes after. Each container
is prepared as the driver prepares it (its limits file, meta file and record in the node directory)."""

from __future__ import annotations

import json
import subprocess
import time

from .fakegpu import WORKLOAD, FakeNode, prepare_container


def _busy(node: FakeNode, pid: int, seconds: float) -> float:
    out = subprocess.run(node.util_cmd(0, seconds, pid), env=node.base_env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["busy_fraction"])


def test_low_priority_pauses_while_high_is_active(node: FakeNode) -> None:
    low = prepare_container(node, "low", priority=1).env
    high = prepare_container(node, "high", priority=0).env
    args = ["--kernel-us", "1000", "--grid", "132"]
    lp = subprocess.Popen([str(WORKLOAD), "--launch-seconds", "6", *args], env=low, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.8)
        alone = _busy(node, lp.pid, 0.5)
        hp = subprocess.Popen([str(WORKLOAD), "--launch-seconds", "2", *args], env=high, stdout=subprocess.DEVNULL)
        time.sleep(0.4)
        while_high = _busy(node, lp.pid, 1.2)
        high_share = _busy(node, hp.pid, 0.2)
        hp.wait(timeout=10)
        time.sleep(0.9)  # the high-priority container counts as active for 0.5 s after its last launch
        after = _busy(node, lp.pid, 0.8)
    finally:
        lp.wait(timeout=15)
    assert alone > 0.9, f"low priority alone runs freely: {alone:.2f}"
    assert while_high < 0.05, f"low priority paused while high is active: {while_high:.2f}"
    assert high_share > 0.9, f"high priority gets the device: {high_share:.2f}"
    assert after > 0.9, f"low priority resumed: {after:.2f}"


def test_same_priority_does_not_pause(node: FakeNode) -> None:
    a = prepare_container(node, "a", priority=1).env
    b = prepare_container(node, "b", priority=1).env
    args = ["--launch-seconds", "2.5", "--kernel-us", "1000", "--grid", "132"]
    pa = subprocess.Popen([str(WORKLOAD), *args], env=a, stdout=subprocess.DEVNULL)
    pb = subprocess.Popen([str(WORKLOAD), *args], env=b, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.8)
        shares = [_busy(node, p.pid, 1.0) for p in (pa, pb)]
    finally:
        pa.wait(timeout=10)
        pb.wait(timeout=10)
    assert all(s > 0.2 for s in shares), f"both run: {shares}"


def test_default_policy_limits_only_under_contention(node: FakeNode) -> None:
    limited = prepare_container(node, "lim", sm=30, policy="default").env
    other = prepare_container(node, "other").env
    args = ["--kernel-us", "500", "--grid", "264"]
    lp = subprocess.Popen([str(WORKLOAD), "--launch-seconds", "7", *args], env=limited, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.8)
        alone = _busy(node, lp.pid, 0.8)
        op = subprocess.Popen([str(WORKLOAD), "--launch-seconds", "4.5", *args], env=other, stdout=subprocess.DEVNULL)
        time.sleep(2.0)
        shared = _busy(node, lp.pid, 2.0)
        op.wait(timeout=10)
    finally:
        lp.wait(timeout=15)
    assert alone > 0.9, f"alone on the device, the default policy does not throttle: {alone:.2f}"
    assert abs(shared - 0.30) <= 0.05, f"with another container active, held at 30 %: {shared:.2f}"
