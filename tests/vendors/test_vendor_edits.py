"""Container edits per vendor (hami.md §4.3): device nodes, driver mounts, env, and Hygon's vdev file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from vendors import ascend, cambricon, hygon, iluvatar
from vendors.base import MIB, DeviceInfo, MockModel, NodeLayout, Share, SharingConfig
from vendors.common import ENFORCER_ENV, MemoryUnit


def device(model: MockModel, index: int = 0, *, nodes: tuple[str, ...] = (), bus: str = "") -> DeviceInfo:
    return DeviceInfo(
        index=index,
        uuid=f"{model.model}-{index}",
        product_name=model.product_name,
        model=model.model,
        memory_bytes=model.memory_mib * MIB,
        pci_bus_id=bus or f"0000:{0x18 + index:02x}:00.0",
        device_nodes=nodes,
        extra_attributes=dict(model.extra_attributes),
        memory_valid_mib=model.memory_valid_mib,
        cores_shareable=model.cores_shareable,
    )


def share(dev: DeviceInfo, memory_mib: int | None = None, cores: int | None = None, request: str = "main") -> Share:
    return Share(
        device=dev,
        request=request,
        share_id="s-1",
        memory_bytes=None if memory_mib is None else memory_mib * MIB,
        cores=cores,
    )


@pytest.fixture
def layout(tmp_path: Path) -> NodeLayout:
    claim_dir = tmp_path / "lib" / "claims" / "uid-1"
    claim_dir.mkdir(parents=True)
    return NodeLayout(host_lib_dir=str(tmp_path / "lib"), claim_dir=str(claim_dir))


CONFIG = SharingConfig()


# --- Ascend --------------------------------------------------------------------------------------


def test_ascend_template_vnpu_is_left_to_the_ascend_docker_runtime(layout: NodeLayout) -> None:
    vendor = ascend.Ascend(vnpu_mode="template")
    real = device(vendor.mock_models["910B3"], 1, nodes=("/dev/davinci1", *ascend.CONTROL_NODES))
    edits = vendor.container_edits([share(real, 16384)], CONFIG, layout)
    assert dict(edits.env) == {
        "ASCEND_VISIBLE_DEVICES": "1",
        "ASCEND_VNPU_SPECS": "vir05_1c_16g",
        ENFORCER_ENV: "ascend-vnpu-template",
    }
    # The physical chip's node would expose the whole chip: the runtime mounts the vNPU's node instead.
    assert edits.device_nodes == () and edits.mounts == ()
    bigger = vendor.container_edits([share(real, 32768)], CONFIG, layout)
    assert bigger.env["ASCEND_VNPU_SPECS"] == "vir10_3c_32g"
    a910 = device(vendor.mock_models["910A"])
    assert vendor.container_edits([share(a910, 17476)], CONFIG, layout).env["ASCEND_VNPU_SPECS"] == "vir16"


def test_ascend_whole_chips_get_device_nodes_and_driver_mounts(layout: NodeLayout) -> None:
    vendor = ascend.Ascend()
    chips = [device(vendor.mock_models["910B3"], i, nodes=(f"/dev/davinci{i}", *ascend.CONTROL_NODES)) for i in (3, 1)]
    edits = vendor.container_edits([share(c, 65536) for c in chips], CONFIG, layout)
    assert dict(edits.env) == {"ASCEND_VISIBLE_DEVICES": "1,3", ENFORCER_ENV: "none"}
    assert [n.path for n in edits.device_nodes] == [
        "/dev/davinci1",
        "/dev/davinci_manager",
        "/dev/devmm_svm",
        "/dev/hisi_hdc",
        "/dev/davinci3",
    ]
    assert {m.container_path for m in edits.mounts} == set(ascend.DRIVER_MOUNTS)
    assert all(m.read_only for m in edits.mounts)
    cdi = edits.to_cdi()
    assert cdi["env"] == ["ASCEND_VISIBLE_DEVICES=1,3", f"{ENFORCER_ENV}=none"]
    # Simulated chips: env only.
    mock = vendor.container_edits([share(device(vendor.mock_models["910B3"]))], CONFIG, layout)
    assert mock.device_nodes == () and mock.mounts == () and mock.env["ASCEND_VISIBLE_DEVICES"] == "0"


def test_ascend_soft_split_uses_hami_vnpu_core(layout: NodeLayout) -> None:
    vendor = ascend.Ascend(vnpu_mode="hami-core")
    real = device(vendor.mock_models["910B3"], 2, nodes=("/dev/davinci2", *ascend.CONTROL_NODES))
    edits = vendor.container_edits([share(real, 10000, cores=40)], CONFIG, layout)
    assert dict(edits.env) == {
        "ASCEND_VISIBLE_DEVICES": "2",
        ENFORCER_ENV: "hami-vnpu-core",
        "NPU_MEM_QUOTA": "10000",
        "NPU_PRIORITY": "40",
        "NPU_GLOBAL_SHM_PATH": "/hami-shared-region/2_global_registry",
        "NPU_LOCAL_SHM_PATH": "/hami-vnpu-shmem/vnpu_local_shmem",
    }
    mounts = {m.container_path: m for m in edits.mounts}
    assert mounts["/etc/ld.so.preload"].host_path == "/usr/local/hami-vnpu-core/ld.so.preload"
    assert mounts["/hami-vnpu-shmem"].host_path == layout.claim_dir and not mounts["/hami-vnpu-shmem"].read_only
    assert not mounts["/hami-shared-region"].read_only
    assert edits.device_nodes[0].path == "/dev/davinci2"


def test_ascend_refuses_several_partial_chips(layout: NodeLayout) -> None:
    vendor = ascend.Ascend()
    chips = [device(vendor.mock_models["910B3"], i) for i in (0, 1)]
    with pytest.raises(ValueError, match="one per container"):
        vendor.container_edits([share(c, 16384) for c in chips], CONFIG, layout)


def test_ascend_mock_models_carry_the_template_policy() -> None:
    template = ascend.Ascend(vnpu_mode="template").mock_models
    assert template["910B3"].memory_valid_mib == (16384, 32768, 65536)
    assert template["310P3"].memory_valid_mib == (3072, 6144, 12288, 24576)
    assert template["910A"].memory_valid_mib == (2184, 4369, 8738, 17476, 32768)
    assert not template["910B4"].cores_shareable
    soft = ascend.Ascend(vnpu_mode="hami-core").mock_models
    assert soft["910B3"].memory_valid_mib == () and soft["910B3"].cores_shareable
    assert all(len(m.memory_valid_mib) <= 10 for m in template.values())
    with pytest.raises(ValueError, match="vNPU mode"):
        ascend.Ascend(vnpu_mode="mig")


# --- Iluvatar ------------------------------------------------------------------------------------


def test_iluvatar_share_is_limited_by_libvgpu_with_ix_visible_devices(layout: NodeLayout) -> None:
    model = iluvatar.MOCK_MODELS["MR-V100"]
    real = device(model, 3, nodes=("/dev/iluvatar3", "/dev/itrctl"))
    edits = iluvatar.VENDOR.container_edits([share(real, 16384, cores=50)], SharingConfig(priority=0), layout)
    env = dict(edits.env)
    assert env == {
        "IX_VISIBLE_DEVICES": "MR-V100-3",
        "CUDA_DEVICE_MEMORY_LIMIT_0": "16384m",
        "CUDA_DEVICE_SM_LIMIT_0": "50",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": f"{layout.claim_dir}/main.cache",
        "CUDA_TASK_PRIORITY": "0",
        "GPU_CORE_UTILIZATION_POLICY": "default",
        "CUDA_OVERSUBSCRIBE": "false",
        "TESSERA_LIMITS_FILE": "/run/tessera/limits",
        ENFORCER_ENV: "libvgpu",
    }
    assert [(n.path, n.host_path) for n in edits.device_nodes] == [
        ("/dev/iluvatar0", "/dev/iluvatar3"),
        ("/dev/itrctl", None),
    ]
    mounts = {m.container_path: m for m in edits.mounts}
    assert mounts["/etc/ld.so.preload"].host_path == f"{layout.host_lib_dir}/ld.so.preload"
    assert mounts[f"{layout.host_lib_dir}/libvgpu.so"].read_only
    limits = mounts["/run/tessera/limits"]
    assert limits.read_only and "device MR-V100-3 memory=17179869184 sm=50" in edits.files[limits.host_path]


def test_iluvatar_whole_gpus_are_renumbered_and_not_preloaded(layout: NodeLayout) -> None:
    model = iluvatar.MOCK_MODELS["BI-V150"]
    gpus = [device(model, i, nodes=(f"/dev/iluvatar{i}", "/dev/itrctl")) for i in (5, 2)]
    edits = iluvatar.VENDOR.container_edits([share(g) for g in gpus], CONFIG, layout)
    assert dict(edits.env) == {"IX_VISIBLE_DEVICES": "BI-V150-2,BI-V150-5", ENFORCER_ENV: "none"}
    assert [(n.path, n.host_path) for n in edits.device_nodes] == [
        ("/dev/iluvatar0", "/dev/iluvatar2"),
        ("/dev/itrctl", None),
        ("/dev/iluvatar1", "/dev/iluvatar5"),
    ]
    assert edits.mounts == ()


# --- Cambricon -----------------------------------------------------------------------------------


def test_cambricon_smlu_profile_from_the_talk(layout: NodeLayout) -> None:
    model = cambricon.MOCK_MODELS["MLU370-X4"]
    real = device(model, 0, nodes=("/dev/cambricon_dev0", "/dev/cambricon_ctl"))
    # The webhook turns vmemory: 20 (percent) into 20 % of 23308 MiB, rounded down: 4661 MiB.
    edits = cambricon.VENDOR.container_edits([share(real, 23308 * 20 // 100, cores=10)], CONFIG, layout)
    assert dict(edits.env) == {
        "CAMBRICON_VISIBLE_DEVICES": "0",
        "CAMBRICON_DSMLU_PROFILE": "0_10_20",  # 20 units of 233 MiB = the talk's 4660 MiB sMLU
        "CAMBRICON_SPLIT_ENABLE": "1",
        "CAMBRICON_SPLIT_VISIBLE_DEVICES": "0",
        "CAMBRICON_SPLIT_MEMS": "4661",
        ENFORCER_ENV: "cambricon-smlu",
    }
    assert [n.path for n in edits.device_nodes] == ["/dev/cambricon_dev0", "/dev/cambricon_ctl"]
    hami_units = cambricon.Cambricon(vmemory_unit=256)
    edits256 = hami_units.container_edits([share(real, 5120)], CONFIG, layout)
    assert edits256.env["CAMBRICON_DSMLU_PROFILE"] == "0_100_20"
    assert cambricon.smlu_profile(1, 50, 100, 23308, MemoryUnit(mib=None)) == "1_50_1"


def test_cambricon_whole_mlus(layout: NodeLayout) -> None:
    model = cambricon.MOCK_MODELS["MLU370-X4"]
    mlus = [device(model, i) for i in (1, 0)]
    edits = cambricon.VENDOR.container_edits([share(m) for m in mlus], CONFIG, layout)
    assert dict(edits.env) == {"CAMBRICON_VISIBLE_DEVICES": "0,1", ENFORCER_ENV: "none"}
    with pytest.raises(ValueError, match="one per container"):
        cambricon.VENDOR.container_edits([share(m, 1000) for m in mlus], CONFIG, layout)


# --- Hygon ---------------------------------------------------------------------------------------


def test_hygon_partial_share_gets_a_vdev_file_under_the_claim_dir(layout: NodeLayout) -> None:
    model = hygon.MOCK_MODELS["K100_AI"]
    nodes = ("/dev/kfd", "/dev/mkfd", "/dev/dri/card1", "/dev/dri/renderD129")
    real = device(model, 0, nodes=nodes, bus="0000:1B:00.0")
    vendor = hygon.Hygon(hyhal_dir="/opt/hyhal", driver_dir="/opt/dtk-24.04")
    edits = vendor.container_edits([share(real, 8192, cores=30)], CONFIG, layout)
    assert dict(edits.env) == {ENFORCER_ENV: "hygon-vdev"}
    assert [(n.path, n.permissions) for n in edits.device_nodes] == [
        ("/dev/kfd", "rwm"),
        ("/dev/mkfd", "rwm"),
        ("/dev/dri/card1", "rw"),
        ("/dev/dri/renderD129", "rw"),
    ]
    ((path, content),) = edits.files.items()
    assert path == os.path.join(layout.claim_dir, "hygon-vdev-main", "vdev0.conf")
    assert content == (
        "PciBusId: 0000:1B:00.0\n"
        "cu_mask: 0x0000000fffffffff\n"  # 30 % of 120 CUs: the lowest 36
        "cu_mask: 0x0000000000000000\n"
        "cu_count: 36\n"
        "mem: 8192 MiB\n"
        "device_id: 0\n"
        "vdev_id: 0\n"
        "pipe_id: 0\n"
        "enable: 1\n"
    )
    mounts = {m.container_path: m for m in edits.mounts}
    assert mounts["/etc/vdev/docker/"].host_path == os.path.dirname(path)
    assert mounts["/etc/vdev/docker/"].read_only  # the vdev file is the limit: the tenant must not edit it
    assert mounts["/opt/hyhal"].host_path == "/opt/hyhal" and mounts["/opt/hyhal"].read_only
    assert mounts["/opt/hygondriver"].host_path == "/opt/dtk-24.04"
    assert hygon.VdevConfig.parse(content).cu_count == 36


def peer_file(layout: NodeLayout, uid: str, config: hygon.VdevConfig) -> tuple[str, str]:
    path = Path(layout.host_lib_dir) / "claims" / uid / "hygon-vdev-main" / f"vdev{config.vdev_id}.conf"
    return str(path), config.render()


def test_hygon_vdevs_of_other_claims_are_avoided(layout: NodeLayout) -> None:
    model = hygon.MOCK_MODELS["Z100"]  # 60 CUs
    dcu = device(model, 0, bus="0000:04:00.0")
    first = hygon.plan_vdev(share(dcu, 4096, cores=50), [])
    assert (first.cu_count, first.mask, first.vdev_id, first.pipe_id) == (30, (1 << 30) - 1, 0, 0)
    # The other claims' files come from the driver's checkpoint; a foreign or garbled file holds nothing.
    peers = dict(
        [
            peer_file(layout, "other-1", first),
            (str(Path(layout.host_lib_dir) / "claims" / "other-2" / "hygon-vdev-x" / "vdev9.conf"), "garbage"),
            (str(Path(layout.host_lib_dir) / "claims" / "other-3" / "notes.txt"), first.render()),
        ]
    )
    with_peers = dataclasses.replace(layout, peer_files=peers)
    edits = hygon.VENDOR.container_edits([share(dcu, 2048, cores=25)], CONFIG, with_peers)
    ((_, content),) = edits.files.items()
    second = hygon.VdevConfig.parse(content)
    assert second.cu_count == 15 and second.mask & first.mask == 0 and second.mask == ((1 << 15) - 1) << 30
    assert (second.vdev_id, second.pipe_id) == (1, 1)
    # Files on disk that the checkpoint does not list are not trusted (the planning is pure).
    assert hygon.VENDOR.container_edits([share(dcu, 2048, cores=25)], CONFIG, layout).files != edits.files
    # Another DCU's vdevs take no CUs from this one, but vdev ids are node-wide.
    other_dcu = device(model, 1, bus="0000:05:00.0")
    third = hygon.plan_vdev(share(other_dcu, 1024, cores=100 - 1), [first, second])
    assert third.mask == (1 << 59) - 1 and third.vdev_id == 2 and third.pipe_id == 0
    with pytest.raises(ValueError, match="free compute units"):
        hygon.plan_vdev(share(dcu, 1024, cores=40), [first, second])


def test_hygon_memory_only_vdev_runs_on_all_cus_and_blocks_nobody() -> None:
    dcu = device(hygon.MOCK_MODELS["Z100"], 0)
    memory_only = hygon.plan_vdev(share(dcu, 4096), [])
    assert memory_only.cu_count == 60 and memory_only.mask == (1 << 60) - 1
    after = hygon.plan_vdev(share(dcu, 4096, cores=50), [memory_only])
    assert after.cu_count == 30 and after.mask == (1 << 30) - 1


def test_hygon_whole_dcus_need_no_vdev(layout: NodeLayout) -> None:
    model = hygon.MOCK_MODELS["K100"]
    dcus = [device(model, i, nodes=("/dev/kfd", f"/dev/dri/card{i}", f"/dev/dri/renderD{128 + i}")) for i in (0, 1)]
    edits = hygon.VENDOR.container_edits([share(d) for d in dcus], CONFIG, layout)
    assert edits.files == {} and dict(edits.env) == {ENFORCER_ENV: "none"}
    assert [n.path for n in edits.device_nodes] == [
        "/dev/kfd",
        "/dev/dri/card0",
        "/dev/dri/renderD128",
        "/dev/dri/card1",
        "/dev/dri/renderD129",
    ]
    mock = hygon.VENDOR.container_edits([share(device(model))], CONFIG, layout)
    assert mock.mounts == () and mock.device_nodes == ()
