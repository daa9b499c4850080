"""Node discovery through each vendor's tool: recorded outputs, and the tools run as real processes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from vendors import ascend, cambricon, hygon, iluvatar, node_vendor
from vendors.base import MIB, DiscoveryError, NodeVendor

from .conftest import ToolFactory
from .vendor_helpers import Answer, fixture_text

# --- parsers on recorded outputs -----------------------------------------------------------------


def test_npu_smi_910b3_host_table() -> None:
    chips = ascend.parse_npu_smi_info(fixture_text("npu-smi-info-910b3.txt"))
    assert [(c.npu_id, c.chip_id, c.device_id, c.name, c.bus_id, c.memory_mib) for c in chips] == [
        (0, 0, 0, "910B3", "0000:C1:00.0", 65536),
        (1, 0, 1, "910B3", "0000:C2:00.0", 65536),
    ]
    assert {c.version for c in chips} == {"24.1.rc1"} and {c.health for c in chips} == {"OK"}


def test_npu_smi_310p3_has_chip_and_device_columns_and_no_hbm() -> None:
    chips = ascend.parse_npu_smi_info(fixture_text("npu-smi-info-310p3.txt"))
    assert [(c.npu_id, c.chip_id, c.device_id, c.memory_mib) for c in chips] == [
        (8, 0, 0, 21527),
        (8, 1, 1, 21527),
        (9, 0, 2, 21527),
    ]


def test_npu_smi_inside_a_vnpu_container_shows_the_template() -> None:
    (chip,) = ascend.parse_npu_smi_info(fixture_text("npu-smi-info-vnpu-container.txt"))
    assert (chip.name, chip.memory_mib, chip.bus_id) == ("910B3vir05_1c_16g", 16384, "0000:C2:00.4")


def test_ixsmi_host_container_and_list() -> None:
    host = iluvatar.parse_ixsmi(fixture_text("ixsmi-host.txt"))
    assert [(g.index, g.name, g.bus_id, g.memory_mib, g.driver_version) for g in host] == [
        (0, "Iluvatar MR-V100", "00000000:40:00.0", 32768, "4.0.0"),
        (1, "Iluvatar MR-V100", "00000000:41:00.0", 32768, "4.0.0"),
    ]
    (inside,) = iluvatar.parse_ixsmi(fixture_text("ixsmi-container.txt"))
    assert (inside.memory_mib, inside.driver_version) == (16384, "3.2.0")  # 64 x 256 MiB, as in the talk
    assert iluvatar.parse_ixsmi_list(fixture_text("ixsmi-list.txt")) == {
        0: "GPU-7b1c9a2e-3f4d-5e6a-8b9c-0d1e2f3a4b5c",
        1: "GPU-2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
    }
    assert iluvatar.short_model("Iluvatar BI-V150") == "BI-V150"


def test_cnmon_host_table() -> None:
    cards = cambricon.parse_cnmon(fixture_text("cnmon-host.txt"))
    assert [(c.index, c.name, c.firmware, c.bus_id, c.memory_mib, c.driver_version) for c in cards] == [
        (0, "MLU370-X4", "1.1.6", "0000:B4:00.0", 23308, "5.10.29"),
        (1, "MLU370-X4", "1.1.6", "0000:B5:00.0", 23308, "5.10.29"),
    ]


def test_hy_smi_report_in_mib_and_in_bytes() -> None:
    dcus = hygon.parse_hy_smi(fixture_text("hy-smi-report.txt"))
    assert [(d.index, d.series, d.bus_id, d.unique_id, d.memory_mib, d.driver_version) for d in dcus] == [
        (0, "K100_AI", "0000:1B:00.0", "DCU-0x6c2e5a1f8b3d9e47", 65520, "6.3.30-V1.4.1a"),
        (1, "K100_AI", "0000:3D:00.0", "DCU-0x1a9f7c3e5d2b8046", 65520, "6.3.30-V1.4.1a"),
    ]
    (old,) = hygon.parse_hy_smi(fixture_text("hy-smi-report-bytes.txt"))
    assert (old.series, old.memory_mib, old.unique_id) == ("Z100L", 34342961152 // MIB, "")


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (ascend.parse_npu_smi_info, "", "printed nothing"),
        (ascend.parse_npu_smi_info, fixture_text("npu-smi-info-malformed.txt"), "unreadable Bus-Id"),
        (ascend.parse_npu_smi_info, fixture_text("npu-smi-error.txt"), "no NPU table"),
        (ascend.parse_npu_smi_info, fixture_text("npu-smi-info-910b3.txt").split("| 0     910B3")[0], "lists no chip"),
        (iluvatar.parse_ixsmi, "   \n", "printed nothing"),
        (iluvatar.parse_ixsmi, fixture_text("ixsmi-malformed.txt"), "unreadable Memory-Usage"),
        (iluvatar.parse_ixsmi, fixture_text("cnmon-host.txt"), "no GPU table"),
        (iluvatar.parse_ixsmi_list, "No devices were found\n", "no 'GPU <i>"),
        (cambricon.parse_cnmon, "", "printed nothing"),
        (cambricon.parse_cnmon, fixture_text("cnmon-smlu-container.txt"), "inside an sMLU container"),
        (cambricon.parse_cnmon, fixture_text("ixsmi-host.txt"), "no MLU table"),
        (hygon.parse_hy_smi, "", "printed nothing"),
        (hygon.parse_hy_smi, fixture_text("hy-smi-malformed.txt"), "no readable vram"),
        (hygon.parse_hy_smi, "====\nWARNING: No DCU devices found\n", "no 'DCU[<i>]"),
        (hygon.parse_hy_smi, "DCU[0]\t\t: PCI Bus: 0000:04:00.0\n", "no Card Series"),
    ],
)
def test_malformed_and_empty_outputs_raise_discovery_error(
    parse: Callable[[str], object], text: str, message: str
) -> None:
    with pytest.raises(DiscoveryError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse(text)


def test_truncated_outputs_never_crash() -> None:
    """Every prefix of every recorded output either parses or raises DiscoveryError, nothing else."""
    cases = [
        (ascend.parse_npu_smi_info, "npu-smi-info-910b3.txt"),
        (ascend.parse_npu_smi_info, "npu-smi-info-310p3.txt"),
        (iluvatar.parse_ixsmi, "ixsmi-host.txt"),
        (cambricon.parse_cnmon, "cnmon-host.txt"),
        (hygon.parse_hy_smi, "hy-smi-report.txt"),
    ]
    for parse, name in cases:
        text = fixture_text(name)
        for cut in range(0, len(text), 7):
            with contextlib.suppress(DiscoveryError):
                parse(text[:cut])


# --- discover() with the tools as real processes -------------------------------------------------


def test_ascend_discover_runs_npu_smi(fake_tool: ToolFactory) -> None:
    tool = fake_tool("npu-smi", {"info": Answer(fixture="npu-smi-info-910b3.txt")})
    vendor = ascend.Ascend(npu_smi=tool, node_name="node-a")
    devices = vendor.discover()
    assert [d.index for d in devices] == [0, 1]
    d0 = devices[0]
    assert (d0.model, d0.product_name, d0.memory_bytes, d0.pci_bus_id, d0.driver_version) == (
        "910B3",
        "Ascend 910B3",
        65536 * MIB,
        "0000:C1:00.0",
        "24.1.rc1",
    )
    assert d0.device_nodes == ("/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
    assert d0.memory_valid_mib == (16384, 32768, 65536)
    assert d0.cores_shareable is False
    assert d0.extra_attributes == {"vnpuMode": "template", "aiCores": 20, "vnpuTemplates": "vir05_1c_16g,vir10_3c_32g"}
    # UUIDs are stable for the node and differ between nodes and chips.
    again = ascend.Ascend(npu_smi=tool, node_name="node-a").discover()
    other = ascend.Ascend(npu_smi=tool, node_name="node-b").discover()
    assert [d.uuid for d in again] == [d.uuid for d in devices]
    assert devices[0].uuid != devices[1].uuid and devices[0].uuid != other[0].uuid
    soft = ascend.Ascend(npu_smi=tool, node_name="node-a", vnpu_mode="hami-core").discover()
    assert soft[0].memory_valid_mib == () and soft[0].cores_shareable is True
    assert soft[0].extra_attributes["vnpuMode"] == "hami-core"


def test_ascend_310p3_gets_templates_below_its_reported_memory(fake_tool: ToolFactory) -> None:
    tool = fake_tool("npu-smi", {"info": Answer(fixture="npu-smi-info-310p3.txt")})
    devices = ascend.Ascend(npu_smi=tool, node_name="n").discover()
    assert [d.device_nodes[0] for d in devices] == ["/dev/davinci0", "/dev/davinci1", "/dev/davinci2"]
    assert devices[0].memory_valid_mib == (3072, 6144, 12288, 21527)


def test_iluvatar_discover_runs_ixsmi_twice(fake_tool: ToolFactory, dev_root: Callable[..., str]) -> None:
    tool = fake_tool("ixsmi", {"": Answer(fixture="ixsmi-host.txt"), "-L": Answer(fixture="ixsmi-list.txt")})
    devices = iluvatar.Iluvatar(ixsmi=tool, dev_root=dev_root("/dev/itrctl")).discover()
    assert [(d.uuid, d.model, d.memory_bytes // MIB) for d in devices] == [
        ("GPU-7b1c9a2e-3f4d-5e6a-8b9c-0d1e2f3a4b5c", "MR-V100", 32768),
        ("GPU-2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f", "MR-V100", 32768),
    ]
    assert devices[1].device_nodes == ("/dev/iluvatar1", "/dev/itrctl")
    without_ctl = iluvatar.Iluvatar(ixsmi=tool, dev_root=dev_root()).discover()
    assert without_ctl[0].device_nodes == ("/dev/iluvatar0",)


def test_iluvatar_disagreeing_outputs(fake_tool: ToolFactory) -> None:
    tool = fake_tool(
        "ixsmi", {"": Answer(fixture="ixsmi-host.txt"), "-L": Answer(text="GPU 0: MR-V100 (UUID: GPU-a)\n")}
    )
    with pytest.raises(DiscoveryError, match="no UUID for GPU 1"):
        iluvatar.Iluvatar(ixsmi=tool).discover()


def test_cambricon_discover_runs_cnmon(fake_tool: ToolFactory, dev_root: Callable[..., str]) -> None:
    tool = fake_tool("cnmon", {"": Answer(fixture="cnmon-host.txt")})
    devices = cambricon.Cambricon(cnmon=tool, node_name="n", dev_root=dev_root("/dev/cambricon_ipcm1")).discover()
    assert [(d.model, d.memory_bytes // MIB, d.driver_version) for d in devices] == [
        ("MLU370-X4", 23308, "5.10.29"),
        ("MLU370-X4", 23308, "5.10.29"),
    ]
    assert devices[0].device_nodes == ("/dev/cambricon_dev0", "/dev/cambricon_ctl")
    assert devices[1].device_nodes == ("/dev/cambricon_dev1", "/dev/cambricon_ctl", "/dev/cambricon_ipcm1")
    assert devices[0].extra_attributes == {"firmwareVersion": "1.1.6"}
    assert devices[0].uuid.startswith("MLU-") and devices[0].uuid != devices[1].uuid


def _sysfs(root: Path, bus: str, card: str, render: str, location: int, simds: int) -> None:
    drm = root / "bus" / "pci" / "devices" / bus.lower() / "drm"
    (drm / card).mkdir(parents=True)
    (drm / render).mkdir()
    node = root / "class" / "kfd" / "kfd" / "topology" / "nodes" / str(location)
    node.mkdir(parents=True)
    (node / "properties").write_text(
        f"cpu_cores_count 0\nsimd_count {simds}\nsimd_per_cu 4\nlocation_id {location}\ndomain 0\n", encoding="utf-8"
    )


def test_hygon_discover_runs_hy_smi_and_reads_sysfs(
    fake_tool: ToolFactory, dev_root: Callable[..., str], tmp_path: Path
) -> None:
    args = "--showproductname --showbus --showuniqueid --showmeminfo vram --showdriverversion"
    tool = fake_tool("hy-smi", {args: Answer(fixture="hy-smi-report.txt")})
    sysfs = tmp_path / "sys"
    _sysfs(sysfs, "0000:1B:00.0", "card3", "renderD130", 0x1B << 8, 480)
    (sysfs / "class" / "kfd" / "kfd" / "topology" / "nodes" / "0").mkdir(parents=True)
    (sysfs / "class" / "kfd" / "kfd" / "topology" / "nodes" / "0" / "properties").write_text(
        "cpu_cores_count 64\nsimd_count 0\n", encoding="utf-8"
    )
    vendor = hygon.Hygon(hy_smi=tool, node_name="n", sysfs_root=str(sysfs), dev_root=dev_root("/dev/mkfd"))
    d0, d1 = vendor.discover()
    assert (d0.uuid, d0.model, d0.product_name, d0.memory_bytes // MIB) == (
        "DCU-0x6c2e5a1f8b3d9e47",
        "K100_AI",
        "Hygon K100_AI",
        65520,
    )
    assert d0.device_nodes == ("/dev/kfd", "/dev/mkfd", "/dev/dri/card3", "/dev/dri/renderD130")
    assert d0.extra_attributes == {"computeUnits": 120}
    # No sysfs entry for the second DCU: the kernel's numbering is assumed, CUs unknown.
    assert d1.device_nodes[-2:] == ("/dev/dri/card1", "/dev/dri/renderD129")
    assert d1.extra_attributes == {}


def test_hygon_without_unique_id_gets_a_derived_uuid(fake_tool: ToolFactory, tmp_path: Path) -> None:
    tool = fake_tool("hy-smi", {"*": Answer(fixture="hy-smi-report-bytes.txt")})
    (d0,) = hygon.Hygon(hy_smi=tool, node_name="n", sysfs_root=str(tmp_path), dev_root=str(tmp_path)).discover()
    assert d0.uuid.startswith("DCU-") and d0.uuid == hygon.device_uuid("n", "0000:04:00.0", 0)
    assert d0.device_nodes == ("/dev/kfd", "/dev/dri/card0", "/dev/dri/renderD128")


@pytest.mark.parametrize("vendor_name", ["ascend", "cambricon", "hygon", "iluvatar"])
def test_tool_failures_are_discovery_errors(vendor_name: str, fake_tool: ToolFactory, tmp_path: Path) -> None:
    made: list[str] = []

    def make(answer: Answer, timeout_s: float = 5.0) -> NodeVendor:
        made.append(vendor_name)
        tool = fake_tool(f"{vendor_name}-tool-{len(made)}", {"*": answer})
        if vendor_name == "ascend":
            return ascend.Ascend(npu_smi=tool, timeout_s=timeout_s)
        if vendor_name == "cambricon":
            return cambricon.Cambricon(cnmon=tool, timeout_s=timeout_s)
        if vendor_name == "hygon":
            return hygon.Hygon(hy_smi=tool, timeout_s=timeout_s)
        return iluvatar.Iluvatar(ixsmi=tool, timeout_s=timeout_s)

    cases = [
        (make(Answer(exit_code=9, stderr="driver not loaded")), "exited with status 9: driver not loaded"),
        (make(Answer(text="")), "printed nothing"),
        (make(Answer(sleep_s=5), timeout_s=0.3), "did not answer within 0.3 s"),
    ]
    for vendor, message in cases:
        with pytest.raises(DiscoveryError, match=message):
            vendor.discover()
    absent = str(tmp_path / "absent")
    missing: dict[str, NodeVendor] = {
        "ascend": ascend.Ascend(npu_smi=absent),
        "cambricon": cambricon.Cambricon(cnmon=absent),
        "hygon": hygon.Hygon(hy_smi=absent),
        "iluvatar": iluvatar.Iluvatar(ixsmi=absent),
    }
    with pytest.raises(DiscoveryError, match=r"not found; .*--backend mock"):
        missing[vendor_name].discover()


def test_registry_node_sides_name_their_real_backend() -> None:
    assert {name: node_vendor(name).real_backend for name in ("ascend", "cambricon", "hygon", "iluvatar")} == {
        "ascend": "npu-smi",
        "cambricon": "cnmon",
        "hygon": "hy-smi",
        "iluvatar": "ixsmi",
    }
    assert node_vendor("ascend.tessera.dev") is ascend.VENDOR
