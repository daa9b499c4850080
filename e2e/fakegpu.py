"""Workloads against the fake CUDA driver (``isolation/build/fake``): the env the harness, the tests
and the benchmarks give a process so that it runs on simulated devices, preloaded with libvgpu as a
Tessera container is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from e2e.kubelet.cdi import spec_env

BUILD = Path(__file__).resolve().parents[1] / "isolation" / "build"
"""Where ``make -C isolation`` leaves libvgpu, the fake driver and the tools."""

_RUNTIME_PREFIXES = ("CUDA_", "GPU_CORE", "TESSERA_", "LD_")


def fake_driver_env(state: str, gpus: str) -> dict[str, str]:
    """The fake driver's library path, its devices (``TESSERA_FAKE_GPUS`` syntax) and its state file."""
    return {"LD_LIBRARY_PATH": str(BUILD / "fake"), "TESSERA_FAKE_GPUS": gpus, "TESSERA_FAKE_STATE": state}


def host_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's env without what the runtime, the driver or libvgpu decide (CUDA, limits, preload)."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(_RUNTIME_PREFIXES)}


def container_env(cdi_spec: str, state: str, gpus: str) -> dict[str, str]:
    """What the runtime gives a container from its CDI spec (env, container paths mapped to host paths,
    the limits file among them), the fake driver, and libvgpu preloaded (the harness's stand-in for the
    ``/etc/ld.so.preload`` mount)."""
    return spec_env(cdi_spec, host_env()) | fake_driver_env(state, gpus) | {"LD_PRELOAD": str(BUILD / "libvgpu.so")}
