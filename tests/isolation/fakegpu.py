"""Helpers to run real processes on the fake CUDA driver, with and without libvgpu."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def run_json(cmd: Sequence[str | Path], env: Mapping[str, str], timeout: float = 30) -> list[dict[str, Any]]:
    """Run a tool with --json output; every stdout line is one JSON object."""
    out = subprocess.run([str(c) for c in cmd], env=dict(env), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}: {out.stderr}"
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def workload(env: Mapping[str, str], *args: str, timeout: float = 30) -> list[dict[str, Any]]:
    return run_json([WORKLOAD, "--json", *args], env, timeout)


def events(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in lines if e["event"] == kind]
