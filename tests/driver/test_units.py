"""Pure parts: quantities, mock devices, NVML discovery (fake pynvml), flags and env, claim plans, CDI versions,
the Node condition merge."""

from __future__ import annotations

import json
import re
import sys
import types
from fractions import Fraction
from typing import Any

import pytest

import vendors
from dra_driver import backends, cdi
from dra_driver.backends import mock
from dra_driver.claims import ClaimError, ClaimRef, plan_claim
from dra_driver.cli import ConfigError, build_parser, env_name, settings_from_args
from dra_driver.nodecondition import condition_type, merge_condition, sharing_condition
from dra_driver.prepare import _file_place
from tessera_common.quantity import QuantityError, format_binary, parse_quantity, quantity_ceil
from vendors import nvidia
from vendors.base import MIB

from .helpers import DRIVER, NODE, claim, request, result, sharing_config, write_text

GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10Gi", 10 * GIB),
        ("1.5Gi", 3 * GIB // 2),
        ("30", 30),
        ("500m", Fraction(1, 2)),
        ("1e3", 1000),
        ("2k", 2000),
        ("+5", 5),
        ("143771Mi", 143771 * MIB),
        (7, 7),
    ],
)
def test_parse_quantity(text: Any, value: Any) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "10GiB", "1.2.3", "Gi", True])
def test_bad_quantities(bad: Any) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(bad)


def test_rounding_and_format() -> None:
    assert quantity_ceil("500m") == 1 and quantity_ceil("10Gi") == 10 * GIB
    assert [format_binary(v) for v in (0, 1000, MIB, 80 * GIB, 143771 * MIB)] == [
        "0",
        "1000",
        "1Mi",
        "80Gi",
        "143771Mi",
    ]


def test_mock_short_forms_are_deterministic_per_node() -> None:
    four = mock.discover("4xH200", nvidia.NAMES, nvidia.MOCK_MODELS, "node-a")
    assert [(d.index, d.model, d.memory_bytes) for d in four] == [(i, "H200", 143771 * MIB) for i in range(4)]
    assert four == mock.discover("4xH200", nvidia.NAMES, nvidia.MOCK_MODELS, "node-a"), "restarts agree"
    assert four[0].uuid == mock.mock_uuid(nvidia.NAMES, "node-a", 0) and four[0].uuid.startswith("GPU-")
    other = mock.discover("4xH200", nvidia.NAMES, nvidia.MOCK_MODELS, "node-b")
    assert {d.uuid for d in four}.isdisjoint(d.uuid for d in other)
    mixed = mock.discover("2xH100, 1xa100", nvidia.NAMES, nvidia.MOCK_MODELS, "n")
    assert [d.model for d in mixed] == ["H100", "H100", "A100"]
    assert [d.numa_node for d in mixed] == [0, 0, 1]
    assert [d.model for d in mock.discover("T4", nvidia.NAMES, nvidia.MOCK_MODELS, "n")] == ["T4"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("4xB300", "unknown mock device model 'B300'; known models: A100, A800, H100, H200, L4, RTX4090, T4"),
        ("", "--mock-devices is empty"),
        ("2 H100", "cannot read '2 H100'"),
        ("0xH200", "count must be between 1 and 128"),
    ],
)
def test_mock_errors_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(mock.MockSpecError, match=re.escape(message)):
        mock.discover(spec, nvidia.NAMES, nvidia.MOCK_MODELS, "n")


def test_mock_files(tmp_path: Any) -> None:
    yaml_file = tmp_path / "gpus.yaml"
    write_text(
        str(yaml_file),
        "devices:\n- model: H100\n  count: 2\n  numaNode: 1\n- model: A100\n  memoryMiB: 40960\n  uuid: GPU-fixed\n",
    )
    devices = mock.discover(str(yaml_file), nvidia.NAMES, nvidia.MOCK_MODELS, "n")
    assert [(d.model, d.numa_node) for d in devices] == [("H100", 1), ("H100", 1), ("A100", 1)]
    assert (devices[2].uuid, devices[2].memory_bytes) == ("GPU-fixed", 40 * GIB)
    json_file = tmp_path / "gpus.json"
    write_text(str(json_file), json.dumps([{"model": "L4", "count": 3}]))
    assert len(mock.discover(str(json_file), nvidia.NAMES, nvidia.MOCK_MODELS, "n")) == 3
    write_text(str(json_file), json.dumps([{"model": "L4", "colour": "red"}]))
    with pytest.raises(mock.MockSpecError, match="unknown fields"):
        mock.discover(str(json_file), nvidia.NAMES, nvidia.MOCK_MODELS, "n")
    write_text(str(json_file), json.dumps([{"model": "L4", "count": 2, "uuid": "GPU-1"}]))
    with pytest.raises(mock.MockSpecError, match="only be given for an entry with count 1"):
        mock.discover(str(json_file), nvidia.NAMES, nvidia.MOCK_MODELS, "n")
    with pytest.raises(mock.MockSpecError, match="cannot read file"):
        mock.discover(str(tmp_path / "missing.yaml"), nvidia.NAMES, nvidia.MOCK_MODELS, "n")


class _NVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict[str, Any]], *, init_error: str | None = None) -> types.ModuleType:
    """A stand-in for nvidia-ml-py answering like a node with ``gpus``."""
    m = types.ModuleType("pynvml")
    state = {"init": 0, "shutdown": 0}

    def init() -> None:
        if init_error:
            raise _NVMLError(init_error)
        state["init"] += 1

    def shutdown() -> None:
        state["shutdown"] += 1

    def handle(i: int) -> dict[str, Any]:
        return gpus[i]

    m.NVMLError = _NVMLError  # type: ignore[attr-defined]
    m.nvmlInit = init  # type: ignore[attr-defined]
    m.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    m.nvmlSystemGetDriverVersion = lambda: b"560.35.03"  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    m.nvmlDeviceGetName = lambda h: h["name"].encode()  # type: ignore[attr-defined]
    m.nvmlDeviceGetUUID = lambda h: h["uuid"]  # type: ignore[attr-defined]
    m.nvmlDeviceGetCudaComputeCapability = lambda h: h["cc"]  # type: ignore[attr-defined]
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=h["bus"].encode())  # type: ignore[attr-defined]
    m.nvmlDeviceGetNumaNodeId = lambda h: h["numa"]  # type: ignore[attr-defined]
    m.nvmlDeviceGetMinorNumber = lambda h: h["minor"]  # type: ignore[attr-defined]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h["memory"])  # type: ignore[attr-defined]
    m.nvmlDeviceGetArchitecture = lambda h: h["arch"]  # type: ignore[attr-defined]
    m.state = state  # type: ignore[attr-defined]
    return m


H100 = {
    "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa", "cc": (9, 0), "bus": "00000000:1B:00.0", "numa": 0,
    "minor": 0, "memory": 81559 * MIB + 512, "arch": 9,
}  # fmt: skip


async def test_nvml_discovery_with_a_fake_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    second = {**H100, "uuid": "GPU-bbbb", "bus": "00000000:9A:00.0", "numa": 1, "minor": 3, "name": "NVIDIA L4"}
    fake = fake_pynvml([H100, second])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    devices = await backends.discover(nvidia.VENDOR, "nvml", node_name=NODE, mock_devices=None)
    assert [(d.index, d.uuid, d.model, d.numa_node) for d in devices] == [
        (0, "GPU-aaaa", "H100", 0),
        (1, "GPU-bbbb", "L4", 1),
    ]
    d = devices[0]
    assert (d.product_name, d.memory_bytes, d.architecture, d.compute_capability) == (
        "NVIDIA H100 80GB HBM3",
        81559 * MIB + 512,
        "Hopper",
        "9.0",
    )
    assert (d.driver_version, d.pci_bus_id) == ("560.35.03", "00000000:1B:00.0")
    assert d.device_nodes[0] == "/dev/nvidia0" and devices[1].device_nodes[0] == "/dev/nvidia3"
    assert fake.state == {"init": 1, "shutdown": 1}


async def test_nvml_failures_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="Driver Not Loaded"))
    with pytest.raises(backends.BackendError, match=r"Driver Not Loaded.*--backend mock"):
        await backends.discover(nvidia.VENDOR, "nvml", node_name=NODE, mock_devices=None)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([H100, H100]))
    with pytest.raises(backends.BackendError, match="two devices report the same UUID GPU-aaaa"):
        await backends.discover(nvidia.VENDOR, "nvml", node_name=NODE, mock_devices=None)
    with pytest.raises(backends.BackendError, match="unknown backend 'npu-smi' for vendor nvidia"):
        await backends.discover(nvidia.VENDOR, "npu-smi", node_name=NODE, mock_devices=None)


def test_every_flag_reads_its_env_var_and_the_flag_wins() -> None:
    env = {
        "TESSERA_BACKEND": "mock",
        "TESSERA_MOCK_DEVICES": "2xL4",
        "NODE_NAME": "from-downward-api",
        "TESSERA_SPLIT_COUNT": "4",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_HAMI_METRICS": "true",
        "TESSERA_CDI_DIR": "/run/cdi",
        "TESSERA_LOG_FORMAT": "text",
    }
    s = settings_from_args([], env)
    assert (s.backend, s.mock_devices, s.node_name, s.split_count) == ("mock", "2xL4", "from-downward-api", 4)
    assert (s.metrics_port, s.hami_metrics, s.cdi_dir, s.log_format) == (0, True, "/run/cdi", "text")
    assert s.plugin_dir == f"/var/lib/kubelet/plugins/{DRIVER}"
    assert s.dra_socket == f"/var/lib/kubelet/plugins/{DRIVER}/dra.sock"
    assert s.registration_socket == f"/var/lib/kubelet/plugins_registry/{DRIVER}-reg.sock"
    assert (s.registry_dir, s.host_lib_dir, s.healthz_port) == (
        "/var/lib/kubelet/plugins_registry",
        "/usr/local/tessera",
        51515,
    )
    flagged = settings_from_args(["--split-count", "7", "--node-name", "n2", "--no-hami-metrics"], env)
    assert (flagged.split_count, flagged.node_name, flagged.hami_metrics) == (7, "n2", False)
    assert settings_from_args([], {**env, "TESSERA_NODE_NAME": "t"}).node_name == "t"
    help_text = build_parser({}).format_help()
    for action in build_parser({})._actions:
        if action.option_strings and action.option_strings[0] != "-h":
            assert env_name(action.option_strings[0]) in help_text


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--node-name"),
        (["--node-name", "n", "--backend", "mock"], {}, "--backend mock needs --mock-devices"),
        (["--node-name", "n", "--backend", "rocm"], {}, "choose 'mock' or 'nvml'"),
        (["--node-name", "n", "--driver", "amd"], {}, "unknown vendor 'amd'"),
        (["--node-name", "n", "--split-count", "0"], {}, "between 1 and 1000"),
        (["--node-name", "n"], {"TESSERA_HAMI_METRICS": "maybe"}, "expected true or false"),
        (["--node-name", "n"], {"TESSERA_LOG_FORMAT": "xml"}, "json or text"),
        (["--node-name", "n"], {"TESSERA_FAILPOINT": "somewhere"}, "known steps are after-started"),
        (["--node-name", "n", "--plugin-dir", "/tmp/" + "x" * 110], {}, "longer than 107 bytes"),
    ],
)
def test_config_errors(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_args(argv, env)


def plan(obj: dict[str, Any]) -> Any:
    devices = {d_name: d for d_name, d in devices_by_name().items()}
    meta = obj["metadata"]
    return plan_claim(obj, ClaimRef(meta["namespace"], meta["name"], meta["uid"]), nvidia.NAMES, NODE, devices)


def devices_by_name() -> dict[str, Any]:
    return {f"gpu-{d.index}": d for d in mock.discover("4xH100", nvidia.NAMES, nvidia.MOCK_MODELS, NODE)}


def test_plan_merges_two_shares_of_one_card_and_reads_qualified_capacities() -> None:
    asked = request(capacity={f"{DRIVER}/memory": "2Gi", f"{DRIVER}/cores": "10"})
    r1 = result("gpu-2", memory="2Gi", cores="10")
    r2 = result("gpu-2", memory="2Gi", cores="10")
    r2["consumedCapacity"] = {f"{DRIVER}/memory": "2Gi", f"{DRIVER}/cores": "10", f"{DRIVER}/shares": "1"}
    p = plan(claim("twice", [r1, r2], [asked]))
    (req,) = p.requests
    assert len(req.results) == 2
    (share,) = req.shares
    assert (share.device.index, share.memory_bytes, share.cores) == (2, 4 * GIB, 20)


def test_plan_config_and_errors() -> None:
    cfg = [sharing_config("FromClass", priority=1), sharing_config("FromClaim", ["gpu"], priority=0)]
    p = plan(claim("cfg", [result("gpu-0")], config=cfg))
    assert p.requests[0].config.priority == 0
    bad_capacity = result("gpu-0")
    bad_capacity["consumedCapacity"]["memory"] = "lots"
    with pytest.raises(ClaimError, match="unreadable capacity for device gpu-0"):
        plan(claim("bad", [bad_capacity]))
    not_object = {"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": "priority=0"}}
    with pytest.raises(ClaimError, match="is not a JSON object"):
        plan(claim("bad2", [result("gpu-0")], config=[not_object]))


def test_cdi_minimum_versions_and_names() -> None:
    def spec(name: str, **edits: Any) -> dict[str, Any]:
        return {"cdiVersion": "", "kind": "k8s.x.dev/claim", "devices": [{"name": name, "containerEdits": edits}]}

    assert cdi.minimum_version(spec("gpu", env=["A=1"])) == "0.3.0"
    assert (
        cdi.minimum_version(spec("gpu", mounts=[{"hostPath": "/a", "containerPath": "/a", "type": "bind"}])) == "0.4.0"
    )
    assert cdi.minimum_version(spec("0abc", env=["A=1"])) == "0.5.0"
    assert cdi.minimum_version(spec("gpu", deviceNodes=[{"path": "/dev/x", "hostPath": "/dev/y"}])) == "0.5.0"
    annotated = spec("gpu")
    annotated["devices"][0]["annotations"] = {"a": "b"}
    assert cdi.minimum_version(annotated) == "0.6.0"
    assert cdi.device_name("6f0a", "gpu-0", None) == "6f0a-gpu-0"
    assert cdi.device_name("6f0a", "gpu-0", "s-1") == "6f0a-gpu-0-s-1"
    with pytest.raises(ValueError, match="valid CDI device name"):
        cdi.device_name("bad uid", "gpu-0", None)


def test_condition_type_per_driver() -> None:
    types_ = {
        v: condition_type(vendors.node_vendor(v).names) for v in ("nvidia", "ascend", "cambricon", "hygon", "iluvatar")
    }
    assert types_ == {
        "nvidia": "TesseraNvidiaSharing",
        "ascend": "TesseraAscendSharing",
        "cambricon": "TesseraCambriconSharing",
        "hygon": "TesseraHygonSharing",
        "iluvatar": "TesseraIluvatarSharing",
    }


def test_merge_condition_replaces_only_ours() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastTransitionTime": "2024-01-01T00:00:00Z"}
    other = {"type": "TesseraAscendSharing", "status": "True", "reason": "ConsumableCapacityEnabled", "message": "m"}
    off = sharing_condition(nvidia.NAMES, False)
    merged = merge_condition([ready, other], off, 1_700_000_000)
    assert merged is not None and merged[:2] == [ready, other], "others kept, in place"
    assert merged[2] == {
        "type": "TesseraNvidiaSharing",
        "status": "False",
        "reason": "ConsumableCapacityDisabled",
        "message": off.message,
        "lastHeartbeatTime": "2023-11-14T22:13:20Z",
        "lastTransitionTime": "2023-11-14T22:13:20Z",
    }
    assert merge_condition(merged, off, 1_700_000_100) is None, "same condition: nothing to write"
    # Same status, another message: the transition time stays; another status: it moves.
    reworded = {**merged[2], "message": "older wording"}
    again = merge_condition([ready, reworded], off, 1_700_000_100)
    assert again is not None and again[1]["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert again[1]["lastHeartbeatTime"] == "2023-11-14T22:15:00Z"
    on = merge_condition([ready, merged[2]], sharing_condition(nvidia.NAMES, True), 1_700_000_200)
    assert on is not None and [c["type"] for c in on] == ["Ready", "TesseraNvidiaSharing"]
    assert (on[1]["status"], on[1]["lastTransitionTime"]) == ("True", "2023-11-14T22:16:40Z")


def test_vendor_files_lie_in_the_claim_dir_or_are_the_claims_node_files() -> None:
    claim_dir, node = "/lib/claims/u1", "/lib/node"
    assert _file_place("/lib/claims/u1/gpu.limits", claim_dir, node, "u1")
    assert _file_place("/lib/claims/u1/hygon-vdev-x/vdev0.conf", claim_dir, node, "u1")
    assert _file_place("/lib/node/u1.gpu.rec", claim_dir, node, "u1")
    for bad in (
        "/lib/node/u2.gpu.rec",  # another claim's name: unprepare would not find it
        "/lib/node/u1",  # no "<uid>." prefix
        "/lib/node/sub/u1.gpu.rec",
        "/lib/claims/u1/../u2/gpu.limits",
        "/lib/claims/u1",
        "relative/u1.gpu.rec",
        "/etc/passwd",
    ):
        assert not _file_place(bad, claim_dir, node, "u1"), bad
