"""Node specs of the local cluster (``--node VENDOR[:DEVICES]``), and the pure helpers the mixed cluster uses."""

from __future__ import annotations

import pytest

from e2e.cluster.__main__ import build_parser, node_specs
from e2e.cluster.harness import (
    FAKE_CUDA_VENDORS,
    HarnessError,
    NodeSpec,
    fake_gpus,
    inventory_metric,
    parse_node_spec,
    published_devices,
    simulated_devices,
    vendor_label,
)
from e2e.kubelet.cdi import map_value


def test_node_spec_names_vendor_and_devices() -> None:
    assert parse_node_spec("ascend:2x910B3") == NodeSpec("ascend-1", "2x910B3", vendor="ascend")
    assert parse_node_spec("Hygon") == NodeSpec("hygon-1", "", vendor="hygon")  # the chart's mockDevices
    assert parse_node_spec("gpu-a=nvidia:2xH100,1xA100") == NodeSpec("gpu-a", "2xH100,1xA100", vendor="nvidia")
    assert parse_node_spec("ascend:1x310P3", ["ascend-1", "ascend-2"]).name == "ascend-3"
    assert parse_node_spec("cambricon").driver == "cambricon.tessera.dev"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("amd:2xMI300", "unknown vendor 'amd'"),
        (":2xH200", "name a vendor"),
        ("n=", "name a vendor"),
        ("node-1=nvidia", "already given"),
    ],
)
def test_bad_node_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        parse_node_spec(text, ["node-1"])


def test_cli_nodes_keep_the_nvidia_flags_and_add_vendor_nodes() -> None:
    def specs(*argv: str) -> list[NodeSpec]:
        return node_specs(build_parser().parse_args(["up", *argv]))

    assert specs() == [NodeSpec("node-1", "2xH200")]
    assert specs("--nodes", "2", "--devices", "4xH200") == [NodeSpec("node-1", "4xH200"), NodeSpec("node-2", "4xH200")]
    assert specs("--node", "nvidia:2xH200", "--node", "ascend:2x910B3", "--node", "hygon:2xZ100") == [
        NodeSpec("nvidia-1", "2xH200", vendor="nvidia"),
        NodeSpec("ascend-1", "2x910B3", vendor="ascend"),
        NodeSpec("hygon-1", "2xZ100", vendor="hygon"),
    ]
    # both forms together: NVIDIA nodes node-<i> first
    assert [n.name for n in specs("--nodes", "1", "--node", "iluvatar", "--node", "iluvatar")] == [
        "node-1",
        "iluvatar-1",
        "iluvatar-2",
    ]
    with pytest.raises(HarnessError, match="no nodes"):
        specs("--nodes", "0")


def test_simulated_devices_of_each_vendor_and_clear_errors() -> None:
    assert [d.model for d in simulated_devices("2x910B3", "a", "ascend")] == ["910B3", "910B3"]
    assert [d.model for d in simulated_devices("1xZ100", "h", "hygon")] == ["Z100"]
    with pytest.raises(HarnessError, match=r"node h \(hygon\): unknown mock device model 'H200'"):
        simulated_devices("1xH200", "h", "hygon")
    # the fake CUDA driver of an Iluvatar node simulates the same cards, with the UUIDs the driver publishes
    cards = fake_gpus("2xMR-V100", "i", "iluvatar").split(",")
    uuids = [d.uuid for d in simulated_devices("2xMR-V100", "i", "iluvatar")]
    assert [c.split("=")[0] for c in cards] == uuids and all(c.endswith("=32768m/Iluvatar MR-V100") for c in cards)
    assert set(FAKE_CUDA_VENDORS) == {"nvidia", "iluvatar"}
    assert vendor_label("hygon") == "tessera.dev/hygon"


def test_inventory_metric_is_read_from_the_prometheus_text() -> None:
    text = (
        "# HELP tessera_webhook_inventory_devices Devices in the inventory\n"
        "# TYPE tessera_webhook_inventory_devices gauge\n"
        "tessera_webhook_inventory_devices 12.0\n"
        "tessera_webhook_inventory_devices_other 3.0\n"
    )
    assert inventory_metric(text) == 12
    assert inventory_metric("") == -1


def test_a_directory_mount_maps_the_directory_itself_and_its_files() -> None:
    mounts = [("/etc/vdev/docker/", "/host/claims/u1/hygon-vdev-r")]
    assert map_value("/etc/vdev/docker/", mounts) == "/host/claims/u1/hygon-vdev-r"
    assert map_value("/etc/vdev/docker", mounts) == "/host/claims/u1/hygon-vdev-r"
    assert map_value("/etc/vdev/docker/vdev0.conf", mounts) == "/host/claims/u1/hygon-vdev-r/vdev0.conf"
    assert map_value("/etc/vdev/dockerx", mounts) == "/etc/vdev/dockerx"


def test_published_devices_count_each_pools_newest_generation() -> None:
    def piece(driver: str, pool: str, generation: int, devices: int) -> dict[str, object]:
        return {
            "spec": {
                "driver": driver,
                "pool": {"name": pool, "generation": generation, "resourceSliceCount": 1},
                "devices": [{"name": f"d{i}"} for i in range(devices)],
            }
        }

    slices = [piece("a", "n1", 1, 4), piece("a", "n1", 2, 3), piece("b", "n1", 1, 2), piece("a", "n2", 1, 1)]
    assert published_devices(slices) == 3 + 2 + 1
    assert published_devices([]) == 0
