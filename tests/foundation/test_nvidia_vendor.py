"""The NVIDIA vendor module: HAMi resource semantics, selectors and container edits."""

from __future__ import annotations

import re
from typing import Any

import pytest

from isolation import env as iso_env
from isolation import limits as iso_limits
from vendors import nvidia, vendor_for_resource
from vendors.base import ConversionError, DeviceInfo, NodeLayout, Share, SharingConfig

V = nvidia.VENDOR


def ctr(limits: dict[str, Any] | None = None, env: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c", "image": "x", "resources": {"limits": limits or {}}}
    if env is not None:
        c["env"] = env
    c.update(extra)
    return c


def test_no_gpu_resources_is_none() -> None:
    assert V.parse(ctr({"cpu": "1"})) is None


def test_seed_gpu_pod12_gpucore_spelling() -> None:
    ask = V.parse(ctr({"nvidia.com/gpu": 2, "nvidia.com/gpumem": 10240, "nvidia.com/gpucore": 30}))
    assert ask is not None
    assert (ask.count, ask.memory_mib, ask.cores) == (2, 10240, 30)
    assert set(ask.consumed_resources) == {"nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucore"}


def test_count_only_is_whole_card() -> None:
    ask = V.parse(ctr({"nvidia.com/gpu": "1"}))
    assert ask is not None and ask.memory_mib is None and ask.memory_percent is None and ask.cores == 100


def test_memory_without_count_means_one_device_and_no_core_limit() -> None:
    ask = V.parse(ctr({"nvidia.com/gpumem": "4096"}))
    assert ask is not None and (ask.count, ask.memory_mib, ask.cores) == (1, 4096, None)


def test_volcano_names() -> None:
    ask = V.parse(ctr({"volcano.sh/vgpu-number": 2, "volcano.sh/vgpu-memory": 10240, "volcano.sh/vgpu-cores": 50}))
    assert ask is not None and (ask.count, ask.memory_mib, ask.cores) == (2, 10240, 50)


def test_requests_used_when_no_limits() -> None:
    c = {"name": "c", "resources": {"requests": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "100"}}}
    ask = V.parse(c)
    assert ask is not None and ask.memory_mib == 100


def test_gpumem_wins_over_percentage() -> None:
    ask = V.parse(ctr({"nvidia.com/gpu": 1, "nvidia.com/gpumem": 100, "nvidia.com/gpumem-percentage": 50}))
    assert ask is not None and ask.memory_mib == 100 and ask.memory_percent is None


def test_percentage() -> None:
    ask = V.parse(ctr({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 25}))
    assert ask is not None and ask.memory_percent == 25 and ask.cores is None


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        ({"nvidia.com/gpu": -1}, "negative"),
        ({"nvidia.com/gpu": "two"}, "whole number"),
        ({"nvidia.com/gpu": "1.5"}, "whole number"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpucores": 101}, "at most 100"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 150}, "between 0 and 100"),
        ({"nvidia.com/gpu": 0, "nvidia.com/gpumem": 10}, "no GPU requested"),
        ({"nvidia.com/gpu": 1, "nvidia.com/priority": 3}, "0 (high) or 1 (low)"),
        ({"nvidia.com/gpu": True}, "whole number"),
    ],
)
def test_denials_say_what_is_wrong(limits: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(needle)):
        V.parse(ctr(limits))


def test_priority_from_env_is_consumed() -> None:
    ask = V.parse(ctr({"nvidia.com/gpu": 1}, env=[{"name": "CUDA_TASK_PRIORITY", "value": "0"}]))
    assert ask is not None and ask.priority == 0 and ask.consumed_env == ("CUDA_TASK_PRIORITY",)


def test_priority_conflict_is_denied() -> None:
    with pytest.raises(ConversionError, match="disagrees"):
        V.parse(
            ctr({"nvidia.com/gpu": 1, "nvidia.com/priority": 1}, env=[{"name": "CUDA_TASK_PRIORITY", "value": "0"}])
        )


def test_priority_env_value_from_is_denied() -> None:
    with pytest.raises(ConversionError, match="literal"):
        V.parse(ctr({"nvidia.com/gpu": 1}, env=[{"name": "CUDA_TASK_PRIORITY", "valueFrom": {"fieldRef": {}}}]))


def test_selectors_from_annotations() -> None:
    sel = V.selectors({"nvidia.com/use-gputype": "A100, H100", "nvidia.com/nouse-gpuuuid": "GPU-1"})
    assert len(sel) == 2
    assert "matches" in sel[0] and "(?i)A100" in sel[0] and "H100" in sel[0]
    assert sel[1].startswith("!(") and '"GPU-1"' in sel[1]
    assert V.selectors({"nvidia.com/use-gputype": " , "}) == []


def test_vendor_for_resource() -> None:
    assert vendor_for_resource("nvidia.com/gpu") == "nvidia"
    assert vendor_for_resource("volcano.sh/vgpu-memory") == "nvidia"
    assert vendor_for_resource("huawei.com/Ascend910B3-memory") == "ascend"
    assert vendor_for_resource("memory") is None


def test_short_model() -> None:
    assert nvidia.short_model("NVIDIA H200 141GB HBM3e") == "H200"
    assert nvidia.short_model("NVIDIA A100-SXM4-80GB") == "A100"
    assert nvidia.short_model("Tesla T4") == "T4"
    assert nvidia.short_model("NVIDIA GeForce RTX 4090") == "RTX4090"


def _dev(index: int) -> DeviceInfo:
    return DeviceInfo(
        index=index, uuid=f"GPU-{index}", product_name="NVIDIA H200", model="H200", memory_bytes=141 << 30
    )


def test_container_edits_follow_device_index_order() -> None:
    shares = [
        Share(_dev(3), "gpu-c", "s3", 2048 << 20, 30),
        Share(_dev(1), "gpu-c", "s1", 1024 << 20, None),
    ]
    layout = NodeLayout(host_lib_dir="/usr/local/tessera", claim_dir="/usr/local/tessera/claims/uid")
    edits = V.container_edits(shares, SharingConfig(priority=0, core_limit_policy="force"), layout)
    env = dict(edits.env)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-1,GPU-3"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1024m"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "2048m"
    assert "CUDA_DEVICE_SM_LIMIT_0" not in env and env["CUDA_DEVICE_SM_LIMIT_1"] == "30"
    assert env["CUDA_TASK_PRIORITY"] == "0" and env["GPU_CORE_UTILIZATION_POLICY"] == "force"
    assert env[iso_env.SHARED_CACHE] == "/usr/local/tessera/claims/uid/gpu-c.cache"
    mounts = {m.container_path: m for m in edits.mounts}
    assert mounts["/etc/ld.so.preload"].host_path == "/usr/local/tessera/ld.so.preload"
    assert mounts["/etc/ld.so.preload"].read_only and mounts["/usr/local/tessera/libvgpu.so"].read_only
    # the limits: the driver's file, read-only at libvgpu's fixed path; the env only documents them
    limits_host = "/usr/local/tessera/claims/uid/gpu-c.limits"
    assert mounts[iso_limits.CONTAINER_PATH].host_path == limits_host and mounts[iso_limits.CONTAINER_PATH].read_only
    assert env[iso_env.LIMITS_FILE] == iso_limits.CONTAINER_PATH
    limits = iso_limits.parse(edits.files[limits_host])
    assert [(d.uuid, d.memory_bytes, d.sm_percent) for d in limits.devices] == [
        ("GPU-1", 1024 << 20, 0),
        ("GPU-3", 2048 << 20, 30),
    ]
    assert (limits.priority, limits.core_policy, limits.oversubscribe) == (0, "force", False)
    # the region and the node record: files by themselves, never their directories, read-write
    region, record = "/usr/local/tessera/claims/uid/gpu-c.cache", "/usr/local/tessera/node/uid.gpu-c.rec"
    assert limits.region == region and (limits.node_dir, limits.node_record) == ("/usr/local/tessera/node", "uid.gpu-c")
    assert edits.writable_files == (region, record)
    assert not mounts[region].read_only and not mounts[record].read_only and mounts["/usr/local/tessera/node"].read_only
    assert "/usr/local/tessera/claims/uid" not in mounts
    assert iso_limits.parse_meta(edits.files["/usr/local/tessera/node/uid.gpu-c.meta"]) == (0, ("GPU-1", "GPU-3"))
    cdi = edits.to_cdi()
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=1024m" in cdi["env"]
    assert "deviceNodes" not in cdi  # simulated devices have no device nodes
