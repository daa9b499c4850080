"""Helpers to run real processes on the fake CUDA driver, with and without libvgpu.

Two ways to give a process its limits: :meth:`FakeNode.container` writes the env contract (libvgpu
run by hand); :meth:`FakeNode.prepare` writes what the DRA driver writes for a container (the
limits file, the usage region, the node meta file and record, through ``vendors.libvgpu``) and
:func:`contained` runs a command with the container's mounts made real in a private mount namespace
(the limits file read-only at its fixed path, the region and record bound by themselves, the node
and claim directories read-only), as a container runtime would.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.kubelet.cdi import namespace_argv
from isolation import limits as limits_file
from isolation import region as usage
from vendors import libvgpu as vendor_libvgpu
from vendors.base import CoreLimitPolicy, DeviceInfo, NodeLayout, Share, SharingConfig

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "isolation" / "build"
LIBVGPU = BUILD / "libvgpu.so"
WORKLOAD = BUILD / "tools" / "cuda-workload"
SMI = BUILD / "tools" / "fake-smi"
FAKE_STATE = BUILD / "fake" / "fake-state"
STRESS = BUILD / "tests" / "alloc-stress"
MIB = 1 << 20
GIB = 1 << 30


def gpu_uuid(n: int) -> str:
    return f"GPU-{uuid.UUID(int=0x3E7A0C1D5B2F4C8E9A610D4F2B7C0000 + n)}"


@dataclass
class FakeNode:
    """One simulated node: a fake-driver state file and its devices."""

    dir: Path
    devices: Sequence[str]
    """``<memory>/<n>sm`` per device, e.g. ``80GiB/132sm``."""
    uuids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uuids = [gpu_uuid(i) for i in range(len(self.devices))]

    @property
    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "GPU_CORE", "TESSERA_", "LD_"))}
        env.update(
            TESSERA_FAKE_STATE=str(self.dir / "fake.state"),
            TESSERA_FAKE_GPUS=",".join(f"{u}={d}" for u, d in zip(self.uuids, self.devices, strict=True)),
            LD_LIBRARY_PATH=str(BUILD / "fake"),
        )
        return env

    def container(
        self, name: str, *, devices: Sequence[int] = (0,), preload: bool = True, **limits: str
    ) -> dict[str, str]:
        """The env of a container seeing `devices`, with libvgpu and the given isolation env."""
        env = self.base_env
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(self.uuids[i] for i in devices)
        env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = str(self.dir / f"{name}.cache")
        if preload:
            env["LD_PRELOAD"] = str(LIBVGPU)
        env.update(limits)
        return env

    def state(self) -> dict[str, Any]:
        out = subprocess.run([FAKE_STATE], env=self.base_env, capture_output=True, text=True, check=True, timeout=10)
        parsed: dict[str, Any] = json.loads(out.stdout)
        return parsed

    def used(self, device: int = 0) -> int:
        return int(self.state()["devices"][device]["used"])

    def util_cmd(self, device: int, seconds: float, pid: int | None = None) -> list[str]:
        cmd = [str(FAKE_STATE), "util", str(device), str(seconds)]
        return [*cmd, str(pid)] if pid else cmd


@dataclass
class Container:
    """One container as the driver prepares it (``vendors.libvgpu``)."""

    name: str
    env: dict[str, str]
    """Its env on the local machine: libvgpu preloaded, ``TESSERA_LIMITS_FILE`` mapped to the host file."""
    limits: Path
    region: Path
    record: Path
    meta: Path
    mounts: list[tuple[str, str, bool]]
    """(host path, container path, read-only) as the CDI spec has them."""

    @property
    def plumbing(self) -> dict[str, str]:
        """What stands in for files of a real container (``/etc/ld.so.preload``, the driver in the
        library cache, the fake GPU itself): an attacker who clears its env keeps these there."""
        keep = ("LD_PRELOAD", "LD_LIBRARY_PATH", "TESSERA_FAKE_STATE", "TESSERA_FAKE_GPUS", "NVIDIA_VISIBLE_DEVICES")
        return {k: self.env[k] for k in keep if k in self.env}


def prepare_container(
    node: FakeNode,
    name: str,
    *,
    devices: Sequence[int] = (0,),
    memory: int | None = None,
    sm: int | None = None,
    priority: int | None = None,
    policy: CoreLimitPolicy = "default",
    oversubscribe: bool = False,
) -> Container:
    """Write the files the driver writes for one container (claim ``name``, request ``gpu``) on ``node``."""
    lib = node.dir / "lib"
    layout = NodeLayout(host_lib_dir=str(lib), claim_dir=str(lib / "claims" / name))
    shares = [
        Share(
            device=DeviceInfo(index=i, uuid=node.uuids[i], product_name="NVIDIA Fake GPU", model="fake",
                              memory_bytes=16 << 30),
            request="gpu", share_id=f"s{i}", memory_bytes=memory, cores=sm,
        )
        for i in devices
    ]
    config = SharingConfig(priority=priority, core_limit_policy=policy, oversubscribe=oversubscribe)
    edits = vendor_libvgpu.container_edits(shares, config, layout)
    for path, content in edits.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    for path in edits.writable_files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch(0o666)
    mounts = [(m.host_path, m.container_path, m.read_only) for m in edits.mounts]
    host = dict((c, h) for h, c, _ in mounts)
    env = node.base_env | dict(edits.env)
    env["NVIDIA_VISIBLE_DEVICES"] = ",".join(node.uuids[i] for i in devices)
    env["TESSERA_LIMITS_FILE"] = host[limits_file.CONTAINER_PATH]
    env["LD_PRELOAD"] = str(LIBVGPU)
    record = next(p for p in edits.writable_files if p.endswith(".rec"))
    return Container(
        name=name,
        env=env,
        limits=Path(host[limits_file.CONTAINER_PATH]),
        region=Path(next(p for p in edits.writable_files if p.endswith(".cache"))),
        record=Path(record),
        meta=Path(record[: -len(".rec")] + ".meta"),
        mounts=mounts,
    )


def contained(c: Container, argv: Sequence[str | Path]) -> list[str]:
    """``argv`` run with the container's mounts made real in a private mount namespace, by the local
    harness's runtime (``e2e.kubelet.cdi.namespace_argv``): the limits file a read-only bind mount at
    libvgpu's fixed path, the region and the record bound read-write by themselves, the node
    directory read-only, and the rest of the host library directory (which a container does not see
    at all) read-only. The library and ``/etc/ld.so.preload`` stay as ``LD_PRELOAD`` (see
    :attr:`Container.plumbing`)."""
    lib = str(c.region.parent.parent.parent)
    wrapped = namespace_argv([(lib, lib, True), *c.mounts], [str(a) for a in argv])
    assert wrapped is not None, "no mount namespace here"
    return wrapped


_FLOCK = struct.Struct("@hhqqi4x")


@contextmanager
def forged_process(
    region: Path, used: Sequence[int], *, slot: int = usage.MAX_SLOTS - 1, valid: bool = True
) -> Iterator[None]:
    """A process of the container that holds ``used`` bytes per device: its slot written (with a good
    check value unless ``valid`` is false) and locked, as libvgpu does, while the context lasts."""
    fd = os.open(region, os.O_RDWR)
    try:
        offset = usage.SLOT_OFFSET + slot * usage.SLOT_SIZE
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, usage.SLOT_SIZE, 0))
        data = os.pread(fd, usage.REGION_SIZE, 0)
        (salt,) = struct.unpack_from("<Q", data, 24)
        words = list(used) + [0] * (usage.MAX_DEVICES - len(used))
        check = usage.slot_check(salt, slot, os.getpid(), 0, words) if valid else 12345
        os.pwrite(fd, struct.pack("<iiQ16Q", os.getpid(), 0, check, *words), offset)
        yield
    finally:
        os.close(fd)


def run_json(cmd: Sequence[str | Path], env: Mapping[str, str], timeout: float = 30) -> list[dict[str, Any]]:
    """Run a tool with --json output; every stdout line is one JSON object."""
    out = subprocess.run([str(c) for c in cmd], env=dict(env), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}: {out.stderr}"
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def workload(env: Mapping[str, str], *args: str, timeout: float = 30) -> list[dict[str, Any]]:
    return run_json([WORKLOAD, "--json", *args], env, timeout)


def events(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in lines if e["event"] == kind]
