"""A hostile tenant against libvgpu, done the way it would do it: real processes on the fake driver,
each container prepared as the DRA driver prepares it (limits file, usage region, node meta file and
record). With the env contract and the shared node region that came before, every attack here
lifted a limit or stalled a neighbour: the env was the limit, the region held it, and the node
region was one file every container wrote. Now the limits come from the driver's read-only file,
damage to the region only tightens the limit, and a container writes nothing but its own record.

The attacks that clear the whole environment run with the container's mounts made real in a
private mount namespace (:func:`fakegpu.contained`, the local harness's runtime); they are skipped
where no mount namespace can be had (neither root nor unprivileged user namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from e2e.kubelet.cdi import namespace_prefix
from isolation import limits as limits_file
from isolation import region

from .fakegpu import (
    GIB,
    WORKLOAD,
    Container,
    FakeNode,
    contained,
    events,
    prepare_container,
    workload,
)

needs_namespace = pytest.mark.skipif(
    namespace_prefix() is None, reason="needs a private mount namespace (root or unprivileged user namespaces)"
)


def held_mib(lines: list[dict[str, Any]]) -> int:
    allocs = events(lines, "alloc")
    return int(allocs[-1]["held_mib"]) if allocs else 0


def parse(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@contextmanager
def holding(env: dict[str, str], mib: int, hold: float = 20) -> Iterator[subprocess.Popen[str]]:
    """A process of the container that allocates up to `mib` and holds it."""
    p = subprocess.Popen(
        [str(WORKLOAD), "--json", "--total-mib", str(mib), "--step-mib", "256", "--hold-seconds", str(hold)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if '"after allocation"' in line:
                break
        yield p
    finally:
        p.kill()
        p.wait()


# ---- the environment ------------------------------------------------------------------------------

ENV_ATTACKS: dict[str, dict[str, str | None]] = {
    "env -u the limit": {"CUDA_DEVICE_MEMORY_LIMIT_0": None},
    "a larger limit": {"CUDA_DEVICE_MEMORY_LIMIT_0": "100g", "CUDA_DEVICE_MEMORY_LIMIT": "100g"},
    "limit 0 (none)": {"CUDA_DEVICE_MEMORY_LIMIT_0": "0"},
    "CUDA_DISABLE_CONTROL": {"CUDA_DISABLE_CONTROL": "true"},
    "every isolation variable gone": {
        k: None for k in ("CUDA_DEVICE_MEMORY_LIMIT_0", "CUDA_DEVICE_MEMORY_SHARED_CACHE", "CUDA_TASK_PRIORITY",
                          "GPU_CORE_UTILIZATION_POLICY", "CUDA_OVERSUBSCRIBE")
    },
}


@pytest.mark.parametrize("attack", list(ENV_ATTACKS))
def test_the_env_cannot_lift_the_memory_limit(node: FakeNode, attack: str) -> None:
    c = prepare_container(node, "c", memory=GIB)
    env = dict(c.env)
    for key, value in ENV_ATTACKS[attack].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    lines = workload(env, "--total-mib", "2048", "--step-mib", "256")
    assert held_mib(lines) == 1024, f"{attack}: the first process of the container got {held_mib(lines)} MiB"
    assert events(lines, "meminfo")[0]["total"] == GIB
    # and it left nothing behind that a later, honest process would obey
    assert held_mib(workload(c.env, "--total-mib", "2048", "--step-mib", "256")) == 1024


def test_a_region_of_its_own_does_not_double_the_share(node: FakeNode, tmp_path: Path) -> None:
    c = prepare_container(node, "c", memory=GIB)
    with holding(c.env, 512):
        env = c.env | {"CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "fresh.cache")}
        assert held_mib(workload(env, "--total-mib", "1024", "--step-mib", "256")) == 512
    assert not (tmp_path / "fresh.cache").exists()


@needs_namespace
@pytest.mark.parametrize("how", ["env -i", "subprocess(env={})"])
def test_a_cleared_env_keeps_the_limits(node: FakeNode, how: str) -> None:
    """`env -i` or `subprocess.run(env={})` in a container: the limits file at its fixed path (a
    read-only bind mount) is all libvgpu needs. What stays is what a real container has in files: the
    preload (``/etc/ld.so.preload``), the driver's library path and the (fake) GPU."""
    c = prepare_container(node, "c", memory=GIB, sm=30, policy="force")
    cmd = [str(WORKLOAD), "--json", "--total-mib", "2048", "--step-mib", "256", "--launch-seconds", "3",
           "--kernel-us", "500", "--grid", "264"]
    if how == "env -i":
        argv = ["env", "-i", *(f"{k}={v}" for k, v in c.plumbing.items()), *cmd]
    else:
        code = f"import subprocess, sys; sys.exit(subprocess.run({cmd!r}, env={c.plumbing!r}).returncode)"
        argv = [sys.executable, "-c", code]
    p = subprocess.Popen(contained(c, argv), env=c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    busy = json.loads(subprocess.run(node.util_cmd(0, 1.0), env=node.base_env, capture_output=True, text=True,
                                     check=True).stdout)["busy_fraction"]
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = parse(out)
    assert held_mib(lines) == 1024, f"{how}: {held_mib(lines)} MiB under a 1 GiB limit"
    assert events(lines, "meminfo")[0]["total"] == GIB
    assert abs(busy - 0.30) <= 0.07, f"{how}: the SM limit of 30 % still holds: {busy:.2f}"


@needs_namespace
def test_the_container_writes_only_its_region_and_its_record(node: FakeNode) -> None:
    c = prepare_container(node, "c", memory=GIB)
    other = prepare_container(node, "other", memory=GIB)
    targets = [c.limits, c.meta, other.record, other.meta, other.limits, c.region.parent / "new",
               c.record.parent / "new", Path(limits_file.CONTAINER_PATH)]
    script = "; ".join(f"(echo x >>{t}) 2>/dev/null && echo WROTE {t}" for t in targets)
    script += f"; rm -f {c.region} 2>/dev/null || echo KEPT region; mv {c.region} /tmp/x 2>/dev/null || echo KEPT"
    script += f"; (echo x >>{c.region} && echo x >>{c.record}) && echo OWN-WRITABLE"
    out = subprocess.run(contained(c, ["sh", "-c", script]), capture_output=True, text=True, timeout=30)
    assert "WROTE" not in out.stdout, out.stdout
    assert "KEPT region" in out.stdout and "OWN-WRITABLE" in out.stdout, out.stdout + out.stderr


@needs_namespace
@pytest.mark.parametrize("planted", ["a writable file", "a symlink"])
def test_a_planted_limits_file_is_refused_not_used(node: FakeNode, planted: str) -> None:
    """Something at the fixed path that is not the driver's read-only mount (a tenant that got the
    mount out of the way and put its own file there) is refused: CUDA fails, never unlimited."""
    c = prepare_container(node, "c", memory=GIB)
    loose = c.limits.read_text().replace(f"memory={GIB}", "memory=0")
    make = (f"printf %s {json.dumps(loose)} >/run/tessera/limits" if planted == "a writable file"
            else f"printf %s {json.dumps(loose)} >/run/loose && rm /run/tessera/limits && "
                 "ln -s /run/loose /run/tessera/limits")
    script = f'umount /run/tessera/limits && {make} && exec "$@"'
    inner = ["sh", "-c", script, "sh", str(WORKLOAD), "--total-mib", "2048"]
    out = subprocess.run(contained(c, inner), env=c.env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "refusing the limits file" in out.stderr or "cannot open the limits file" in out.stderr
    assert "CUDA_ERROR_NOT_INITIALIZED" in out.stderr


# ---- the usage region -----------------------------------------------------------------------------

def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Write over part of the file in place (as dd conv=notrunc would; truncating first would kill the
    container's own processes with SIGBUS, a different attack)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _zero(path: Path, start: int, end: int) -> None:
    _write_at(path, start, bytes(end - start))


SCRIBBLES = {
    "8 zero bytes on the device total": lambda p, old: _zero(p, region.DEVICE_OFFSET, region.DEVICE_OFFSET + 8),
    "the total and its check zeroed": lambda p, old: _zero(p, region.DEVICE_OFFSET, region.DEVICE_OFFSET + 16),
    "the device table zeroed": lambda p, old: _zero(p, region.DEVICE_OFFSET, region.SLOT_OFFSET),
    "every slot zeroed": lambda p, old: _zero(p, region.SLOT_OFFSET, region.REGION_SIZE),
    "garbage after the lock": lambda p, old: _write_at(p, region.DEVICE_OFFSET,
                                                       os.urandom(region.REGION_SIZE - region.DEVICE_OFFSET)),
    "an old copy put back": lambda p, old: _write_at(p, 0, old),
    "emptied": lambda p, old: os.truncate(p, 0),
    "deleted": lambda p, old: p.unlink(missing_ok=True),
    "replaced by a FIFO": lambda p, old: (p.unlink(missing_ok=True), os.mkfifo(p)),
}


@pytest.mark.parametrize("scribble", list(SCRIBBLES))
def test_a_scribbled_region_never_loosens_the_limit(node: FakeNode, scribble: str) -> None:
    """One process of the container holds the whole 1 GiB; twice the tenant writes over the region
    (or removes it) and starts another process that wants 1 GiB too. While the holder lives, the
    others get nothing: at most the limit is ever granted. (Emptying the file kills the holder on its
    next touch of the mapping, SIGBUS: a tenant that does that hurts only itself.) In a container the
    region is a bind mount: deleting or replacing it fails there; here it is the host file, and a
    region that is gone is refused, never started afresh."""
    c = prepare_container(node, "c", memory=GIB)
    workload(c.env)  # the region exists, nobody holds anything
    old = c.region.read_bytes()
    with holding(c.env, 1024) as first:
        assert node.used() == GIB
        for attempt in range(2):
            SCRIBBLES[scribble](c.region, old)
            out = subprocess.run([str(WORKLOAD), "--json", "--total-mib", "1024", "--step-mib", "256"],
                                 env=c.env, capture_output=True, text=True, timeout=30)
            assert out.returncode in (0, 2), out.stderr  # 2: refused to start (CUDA_ERROR_NOT_INITIALIZED)
            got = held_mib(parse(out.stdout))
            if first.poll() is None:
                assert got == 0, f"{scribble}, attempt {attempt}: {got} MiB more while 1 GiB is held"
            else:
                assert scribble == "emptied", first.returncode
    if scribble in ("deleted", "replaced by a FIFO"):
        out = subprocess.run([str(WORKLOAD), "--total-mib", "256"], env=c.env, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 2 and "usage region" in out.stderr
    else:  # its processes gone, the container has its share again (healed, or started afresh)
        assert held_mib(workload(c.env, "--total-mib", "2048", "--step-mib", "256")) == 1024


# ---- the node records -----------------------------------------------------------------------------

def _forge(record: Path, until_ns: int) -> None:
    """Write the container's own record (the one file of the node directory it can write)."""
    record.write_bytes(limits_file.RECORD.pack(limits_file.RECORD_MAGIC, limits_file.RECORD_VERSION, 16, 0,
                                               *([until_ns] * 16)))


def _busy(node: FakeNode, pid: int, seconds: float) -> float:
    out = subprocess.run(node.util_cmd(0, seconds, pid), env=node.base_env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["busy_fraction"])


def _victim(c: Container, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([str(WORKLOAD), "--launch-seconds", str(seconds), "--kernel-us", "1000", "--grid", "132"],
                            env=c.env, stdout=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("attacker_priority", [0, 1])
def test_a_forged_record_dated_far_ahead_stalls_no_one(node: FakeNode, attacker_priority: int) -> None:
    """A neighbour writes its record as active for the next hour on every device and does nothing:
    a record is believed one hold period ahead at most, so the victim neither pauses nor (default
    policy) gets throttled as if the device were shared."""
    victim = prepare_container(node, "victim", priority=1, sm=30, policy="default")
    attacker = prepare_container(node, "attacker", priority=attacker_priority)
    _forge(attacker.record, time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 3600 * 10**9)
    p = _victim(victim, 3)
    try:
        time.sleep(0.8)
        busy = _busy(node, p.pid, 1.2)
    finally:
        p.wait(timeout=15)
    assert busy > 0.9, f"the victim runs freely: {busy:.2f}"


def test_a_stale_high_priority_record_pauses_for_one_period_at_most(node: FakeNode) -> None:
    victim = prepare_container(node, "victim", priority=1)
    attacker = prepare_container(node, "attacker", priority=0)
    p = _victim(victim, 4)
    try:
        time.sleep(0.8)
        _forge(attacker.record, time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 450_000_000)  # active, then silent
        paused = _busy(node, p.pid, 0.3)
        time.sleep(0.3)
        after = _busy(node, p.pid, 1.0)
    finally:
        p.wait(timeout=15)
    assert paused < 0.3, f"a live high-priority record pauses the victim: {paused:.2f}"
    assert after > 0.9, f"and no longer than the record's hold: {after:.2f}"


@pytest.mark.parametrize("content", ["garbage", "truncated", "a directory's worth of junk files"])
def test_junk_in_the_node_directory_is_ignored(node: FakeNode, content: str) -> None:
    """What a tenant could leave in its own record (and junk the host might hold) never pauses a
    neighbour."""
    victim = prepare_container(node, "victim", priority=1)
    attacker = prepare_container(node, "attacker", priority=0)
    if content == "garbage":
        attacker.record.write_bytes(os.urandom(4096))
    elif content == "truncated":
        attacker.record.write_bytes(b"TNRC")
    else:
        for i in range(100):
            (attacker.record.parent / f"junk{i}.meta").write_text("tessera-node-meta 1\npriority 0\ndevice " +
                                                                  node.uuids[0] + "\n")
            (attacker.record.parent / f"junk{i}.rec").mkdir()
    p = _victim(victim, 2.5)
    try:
        time.sleep(0.8)
        busy = _busy(node, p.pid, 1.0)
    finally:
        p.wait(timeout=15)
    assert busy > 0.9, f"{content}: {busy:.2f}"
