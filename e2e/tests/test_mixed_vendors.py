"""A mixed cluster: NVIDIA, Ascend, Cambricon, Hygon and Iluvatar nodes, each running its vendor's driver.

The founding talk's Ascend, Iluvatar and Cambricon seed pods, the Hygon pod of
``examples/hygon-pod.yaml`` and an NVIDIA pod are created at once, as users wrote them (only their
command replaced by one that prints what the container got and waits). Each must be allocated by
its vendor's driver on a node labelled for that vendor, prepared into a CDI spec with the vendor's
edits on that node, and its container must show them.

On the harness this module starts its own cluster with one node per vendor (the chart values'
mockDevices, NVIDIA ``1xH200``); with ``TESSERA_E2E_KUBECONFIG`` it uses that cluster, and a vendor
none of whose nodes publishes devices is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import copy
import random
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from e2e.cluster import NodeSpec
from kubeapi import KubeError
from vendors import ascend, node_vendor

from .control import HarnessControl
from .helpers import IMAGE, Cluster, Device, env_of, open_cluster, preloads_libvgpu

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VENDORS = ("nvidia", "ascend", "cambricon", "hygon", "iluvatar")
HARNESS_NODES = [
    NodeSpec("nvidia-1", "1xH200", vendor="nvidia"),
    *(NodeSpec(f"{v}-1", vendor=v) for v in VENDORS if v != "nvidia"),
]
END = "END-OF-OUTPUT"
VDEV_DIR = "/etc/vdev/docker/"
# What every container prints: its env, the preload file, the vdev configs in "$0" (Hygon), and on a
# node with the fake CUDA driver (the harness's NVIDIA and Iluvatar nodes) what cuMemGetInfo says and
# how far allocations go; then it waits to be deleted, so that its claim stays prepared.
SCRIPT = (
    "env | sort; echo preload: $(cat /etc/ld.so.preload 2>/dev/null); "
    'for f in "$0"/vdev*.conf; do [ -f "$f" ] && echo "vdev file: $(basename "$f")" && cat "$f"; done; '
    'if [ -n "$TESSERA_FAKE_GPUS" ]; then cuda-workload --total-mib 20480 --step-mib 4096; fi; '
    f"echo {END}; sleep 3600"
)


def _example(path: Path, name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if isinstance(doc, dict) and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{path} has no pod {name}")


def vendor_pod(vendor: str) -> dict[str, Any]:
    """The pod of ``vendor`` as users wrote it, running :data:`SCRIPT`."""
    if vendor == "nvidia":
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nvidia-pod"},
            "spec": {
                "containers": [
                    {
                        "name": "cuda-container",
                        "image": IMAGE,
                        "resources": {"limits": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096}},
                    }
                ]
            },
        }
    else:
        source = EXAMPLES / ("hygon-pod.yaml" if vendor == "hygon" else "seed-pods.yaml")
        name = {"ascend": "ascend-pod", "cambricon": "mlu-pod", "hygon": "dcu-pod", "iluvatar": "iluvatar-pod"}
        pod = copy.deepcopy(_example(source, name[vendor]))
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["terminationGracePeriodSeconds"] = 2
    container = pod["spec"]["containers"][0]
    container["command"] = ["sh", "-c", SCRIPT, VDEV_DIR if vendor == "hygon" else "/nonexistent"]
    container.pop("args", None)
    return pod


@dataclass
class Placed:
    vendor: str
    pod: dict[str, Any]
    node: dict[str, Any]
    devices: list[Device]
    cdi: dict[str, Any] | None
    log: str

    @property
    def node_name(self) -> str:
        return str(self.pod["spec"]["nodeName"])

    def cdi_env(self) -> dict[str, str]:
        """The env of the claim's CDI spec (spec-wide, then every device's)."""
        assert self.cdi is not None
        entries = list((self.cdi.get("containerEdits") or {}).get("env") or [])
        for device in self.cdi.get("devices") or []:
            entries += (device.get("containerEdits") or {}).get("env") or []
        return dict(str(e).partition("=")[::2] for e in entries)

    def cdi_mounts(self) -> list[dict[str, Any]]:
        assert self.cdi is not None
        mounts = list((self.cdi.get("containerEdits") or {}).get("mounts") or [])
        for device in self.cdi.get("devices") or []:
            mounts += (device.get("containerEdits") or {}).get("mounts") or []
        return mounts


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mixed() -> AsyncIterator[Cluster]:
    async with open_cluster(HARNESS_NODES) as opened:
        yield opened


async def vendors_with_devices(cluster: Cluster) -> dict[str, set[str]]:
    """vendor -> the nodes whose slices of that vendor's driver publish devices."""
    slices = (await cluster.kube.list("/apis/resource.k8s.io/v1/resourceslices")).get("items") or []
    out: dict[str, set[str]] = {}
    for vendor in VENDORS:
        driver = node_vendor(vendor).names.driver
        nodes = {
            s["spec"]["nodeName"]
            for s in slices
            if s["spec"]["driver"] == driver and s["spec"].get("nodeName") and s["spec"].get("devices")
        }
        if nodes:
            out[vendor] = nodes
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def placed(mixed: Cluster) -> AsyncIterator[dict[str, Placed]]:
    """Every present vendor's pod, created at once, running, with what its node and claim hold."""
    cluster = mixed
    present = await vendors_with_devices(cluster)
    ns = "e2e-mixed-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    await cluster.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        pods = {vendor: vendor_pod(vendor) for vendor in VENDORS if vendor in present}
        if "cambricon" in pods:
            mlu = pods["cambricon"]
            await cluster.wait(
                lambda: cluster.webhook_converts(ns, mlu), what="the webhook to see the published Cambricon devices"
            )

        async def run(vendor: str, pod: dict[str, Any]) -> Placed:
            name = pod["metadata"]["name"]
            await cluster.create(ns, pod)
            await cluster.wait_running(ns, name)
            log = await cluster.logs_with(ns, name, END, container=pod["spec"]["containers"][0]["name"])
            current = await cluster.get(ns, name)
            (claim,) = await cluster.claims(ns, name)
            devices = await cluster.allocated(claim)
            node = await cluster.kube.get(f"/api/v1/nodes/{current['spec']['nodeName']}")
            cdi = await cluster.control.cdi_spec(
                current["spec"]["nodeName"], node_vendor(vendor).names.driver, claim["metadata"]["uid"]
            )
            return Placed(vendor, current, node, devices, cdi, log)

        results = await asyncio.gather(*(run(v, p) for v, p in pods.items()))
        yield {r.vendor: r for r in results}
    finally:
        try:
            await cluster.kube.delete(f"/api/v1/namespaces/{ns}")
            await cluster.wait(lambda: cluster.gone(f"/api/v1/namespaces/{ns}"), what=f"namespace {ns} to go")
        except KubeError:
            pass


def need(placed: dict[str, Placed], vendor: str) -> Placed:
    if vendor not in placed:
        pytest.skip(
            f"no node of this cluster publishes {node_vendor(vendor).names.driver} devices: label a node "
            f"tessera.dev/{vendor}=true and enable vendors.{vendor} (e2e/kind/values.yaml does, with the mock backend)"
        )
    return placed[vendor]


def _on_its_vendor(got: Placed) -> Device:
    """Common checks: one device of the vendor's driver on the pod's node, labelled for the vendor,
    prepared into a CDI spec; returns the device."""
    driver = node_vendor(got.vendor).names.driver
    (device,) = got.devices
    assert device.driver == driver, (got.vendor, device)
    assert device.node == got.node_name, f"{got.vendor}: allocated on {device.node}, runs on {got.node_name}"
    labels = got.node["metadata"].get("labels") or {}
    assert labels.get(f"tessera.dev/{got.vendor}") == "true", (got.node_name, labels)
    assert got.pod["status"]["phase"] == "Running"
    assert got.cdi is not None, f"no CDI spec of {driver} for the claim on {got.node_name}"
    assert got.cdi["kind"] == f"k8s.{driver}/claim"
    return device


def _shows(got: Placed, env: dict[str, str]) -> None:
    """The container's output shows every ``env`` entry of the CDI spec (paths may be mapped by the
    process runtime of the harness, so only the names and the non-path values are compared)."""
    seen = env_of(got.log)
    for key, value in env.items():
        assert key in seen, f"{got.vendor}: {key} is in the CDI spec but not in the container's env"
        if not value.startswith("/"):
            assert seen[key] == value, (got.vendor, key, seen[key], value)


def _no_fake_cuda(got: Placed) -> None:
    seen = env_of(got.log)
    assert "TESSERA_FAKE_GPUS" not in seen and "isolation/build/fake" not in seen.get("LD_LIBRARY_PATH", "")
    assert not preloads_libvgpu(got.log)


def mib(quantity: str) -> int:
    for suffix, factor in (("Gi", 1024), ("Mi", 1)):
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity) // (1024 * 1024)


async def test_each_pod_runs_on_a_node_of_its_vendor(placed: dict[str, Placed]) -> None:
    for vendor in ("nvidia", "ascend", "hygon"):
        need(placed, vendor)
    for got in placed.values():
        _on_its_vendor(got)
    # the NVIDIA pod never lands on another vendor's node and the reverse: every node runs one vendor's pods
    nodes = {v: got.node_name for v, got in placed.items()}
    for vendor, node in nodes.items():
        labels = placed[vendor].node["metadata"].get("labels") or {}
        assert labels.get(f"tessera.dev/{vendor}") == "true", (vendor, node)


async def test_nvidia_pod_gets_libvgpu_with_its_limit(placed: dict[str, Placed], mixed: Cluster) -> None:
    got = need(placed, "nvidia")
    device = _on_its_vendor(got)
    env = got.cdi_env()
    assert env["NVIDIA_VISIBLE_DEVICES"] == device.uuid and env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "4096m"
    _shows(got, env)
    assert preloads_libvgpu(got.log)
    if isinstance(mixed.control, HarnessControl):
        assert "total=4096 MiB" in got.log and "CUDA_ERROR_OUT_OF_MEMORY" in got.log, got.log


async def test_ascend_pod_gets_a_vnpu_template(placed: dict[str, Placed]) -> None:
    got = need(placed, "ascend")
    device = _on_its_vendor(got)
    chip = ascend.CHIPS[device.type]
    trimmed = chip.trim(16384)
    assert trimmed is not None and trimmed[1] is not None, f"{device.type} has no template for 16384 MiB"
    size, template = trimmed
    assert mib(device.consumed["memory"]) == size  # rounded up to the template by the scheduler
    env = got.cdi_env()
    assert env["ASCEND_VISIBLE_DEVICES"] == str(device.attributes["index"]["int"])
    assert env["ASCEND_VNPU_SPECS"] == template
    assert env["TESSERA_LIMIT_ENFORCER"] == "ascend-vnpu-template"
    _shows(got, env)
    _no_fake_cuda(got)


async def test_cambricon_pod_gets_an_smlu_of_20_percent(placed: dict[str, Placed]) -> None:
    got = need(placed, "cambricon")
    device = _on_its_vendor(got)
    assert device.capacity is not None
    card_mib = mib(device.capacity["memory"]["value"])
    consumed = mib(device.consumed["memory"])
    assert consumed == card_mib * 20 // 100, (consumed, card_mib)  # the webhook resolved 20 % of the card
    assert device.consumed["cores"] == "10"
    env = got.cdi_env()
    index = device.attributes["index"]["int"]
    assert env["CAMBRICON_VISIBLE_DEVICES"] == str(index)
    assert env["CAMBRICON_DSMLU_PROFILE"] == f"{index}_10_{consumed // (card_mib // 100)}"
    assert env["CAMBRICON_SPLIT_MEMS"] == str(consumed) and env["CAMBRICON_SPLIT_ENABLE"] == "1"
    _shows(got, env)
    _no_fake_cuda(got)


async def test_hygon_pod_gets_a_vdev_config(placed: dict[str, Placed], mixed: Cluster) -> None:
    got = need(placed, "hygon")
    device = _on_its_vendor(got)
    env = got.cdi_env()
    assert env["TESSERA_LIMIT_ENFORCER"] == "hygon-vdev"
    (vdev_mount,) = [m for m in got.cdi_mounts() if m["containerPath"] == VDEV_DIR]
    assert "/claims/" in vdev_mount["hostPath"], vdev_mount  # under the claim dir: goes with the claim
    files = await mixed.control.host_files(got.node_name, vdev_mount["hostPath"])
    assert len(files) == 1, files
    ((name, text),) = files.items()
    assert name.startswith("vdev") and name.endswith(".conf"), files
    compute_units = device.attributes["computeUnits"]["int"]
    assert "mem: 8192 MiB" in text and f"cu_count: {compute_units * 30 // 100}" in text, text
    assert f"PciBusId: {device.attributes['pcieBusID']['string']}" in text, text
    # the container reads the same file at /etc/vdev/docker/
    assert f"vdev file: {name}" in got.log and text.strip() in got.log, got.log
    _shows(got, env)
    _no_fake_cuda(got)


async def test_iluvatar_pod_gets_libvgpu_with_corex_env(placed: dict[str, Placed], mixed: Cluster) -> None:
    got = need(placed, "iluvatar")
    device = _on_its_vendor(got)
    env = got.cdi_env()
    assert env["IX_VISIBLE_DEVICES"] == device.uuid
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # CoreX reads its own variable
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "16384m" and env["CUDA_DEVICE_SM_LIMIT_0"] == "50"
    assert env["TESSERA_LIMIT_ENFORCER"] == "libvgpu"
    _shows(got, env)
    assert preloads_libvgpu(got.log)
    if isinstance(mixed.control, HarnessControl):
        # the harness gives Iluvatar nodes the fake CUDA driver (it reads NVIDIA_VISIBLE_DEVICES, which
        # the harness kubelet sets from IX_VISIBLE_DEVICES as CoreX's runtime would choose the device),
        # and libvgpu.so limits the vGPU on it
        assert env_of(got.log)["NVIDIA_VISIBLE_DEVICES"] == device.uuid
        assert "total=16384 MiB" in got.log and "CUDA_ERROR_OUT_OF_MEMORY" in got.log, got.log
