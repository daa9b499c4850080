"""The isolation env contract and the opaque SharingConfig."""

from __future__ import annotations

import pytest

from isolation import env as iso_env
from vendors.base import SharingConfig


def test_container_env_formats() -> None:
    env = iso_env.container_env(
        [
            iso_env.DeviceLimit("GPU-b", 1, 10240 * 2**20, 30),
            iso_env.DeviceLimit("GPU-a", 0, None, 100),
        ],
        shared_cache="/c/x.cache",
    )
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    assert "CUDA_DEVICE_MEMORY_LIMIT_0" not in env and env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "10240m"
    assert "CUDA_DEVICE_SM_LIMIT_0" not in env and env["CUDA_DEVICE_SM_LIMIT_1"] == "30"
    assert env["CUDA_TASK_PRIORITY"] == "1" and env["GPU_CORE_UTILIZATION_POLICY"] == "default"
    assert env["CUDA_OVERSUBSCRIBE"] == "false"  # always set, so a user's value cannot survive


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1g", 2**30),
        ("1024m", 2**30),
        ("1048576k", 2**30),
        ("1073741824", 2**30),
        ("4096M", 2**32),
        ("abc", None),
        ("1.5g", None),
        ("", None),
        ("-1m", None),
    ],
)
def test_parse_memory(text: str, value: int | None) -> None:
    assert iso_env.parse_memory(text) == value


@pytest.mark.parametrize(
    ("name", "isolation"),
    [
        ("CUDA_DEVICE_MEMORY_LIMIT", True),
        ("CUDA_DEVICE_MEMORY_LIMIT_3", True),
        ("CUDA_DEVICE_SM_LIMIT_0", True),
        ("CUDA_DISABLE_CONTROL", True),
        ("CUDA_DEVICE_MEMORY_SHARED_CACHE", True),
        ("CUDA_VISIBLE_DEVICES", False),
        ("CUDA_DEVICE_MEMORY_LIMITX", False),
        ("PATH", False),
    ],
)
def test_is_isolation_env(name: str, isolation: bool) -> None:
    assert iso_env.is_isolation_env(name) is isolation


def test_sharing_config_round_trip() -> None:
    cfg = SharingConfig(priority=0, core_limit_policy="disable", oversubscribe=True)
    assert SharingConfig.from_parameters(cfg.to_parameters()) == cfg
    assert SharingConfig.from_parameters(SharingConfig().to_parameters()) == SharingConfig()


@pytest.mark.parametrize(
    "params",
    [
        {"apiVersion": "other/v1", "kind": "SharingConfig"},
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", "priority": 5},
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", "priority": True},
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", "coreLimitPolicy": "max"},
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", "oversubscribe": "yes"},
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", "memoryLimit": 1},
    ],
)
def test_sharing_config_rejects(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SharingConfig.from_parameters(params)
