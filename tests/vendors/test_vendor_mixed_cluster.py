"""A mixed cluster (NVIDIA, Ascend, Hygon and Cambricon nodes): each converted pod lands on its vendor.

Real parts end to end except the processes: the webhook converts the pods, the driver's publisher
builds each node's ResourceSlices from its vendor's mock devices, the harness allocator
(kube-scheduler's structured-parameters rules) picks nodes and devices, and the driver's planner and
the vendor turn the allocation into container edits.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

import vendors
from dra_driver import slices
from dra_driver.backends import mock
from dra_driver.claims import ClaimRef, plan_claim
from e2e.allocator import schedule
from vendors import ascend, cambricon, hygon, nvidia
from vendors.base import NodeLayout, NodeVendor
from webhook.convert import Converter
from webhook.inventory import Inventory

ROOT = Path(__file__).resolve().parents[2]
NODES: dict[str, tuple[NodeVendor, str]] = {
    "gpu-node": (nvidia.VENDOR, "2xA800"),
    "npu-node": (ascend.VENDOR, "2x910B3"),
    "dcu-node": (hygon.VENDOR, "2xK100_AI"),
    "mlu-node": (cambricon.VENDOR, "1xMLU370-X4"),
}


def cluster() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    nodes, all_slices, devices = [], [], {}
    for node, (vendor, spec) in NODES.items():
        nodes.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        found = mock.discover(spec, vendor.names, vendor.mock_models, node)
        devices[node] = {vendor.names.device_name(d.index): d for d in found}
        for body in slices.build_slice_specs(found, vendor.names, node, 10, shareable=True):
            obj = slices.slice_object(body, 1, node_name=node, node_uid=node, driver=vendor.names.driver)
            obj["metadata"]["name"] = f"{node}-{vendor.names.driver}"  # the API server would fill generateName
            all_slices.append(obj)
    classes = {
        v.names.device_class: {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": v.names.device_class},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{v.names.driver}"'}}]},
        }
        for v, _ in NODES.values()
    }
    return nodes, all_slices, classes, devices


def pods() -> dict[str, dict[str, Any]]:
    docs = [*yaml.safe_load_all((ROOT / "examples" / "seed-pods.yaml").read_text(encoding="utf-8"))]
    docs += [*yaml.safe_load_all((ROOT / "examples" / "hygon-pod.yaml").read_text(encoding="utf-8"))]
    return {d["metadata"]["name"]: d for d in docs if d}


def claim_for(pod: dict[str, Any], inventory: Inventory) -> tuple[dict[str, Any], dict[str, Any]]:
    """The claim Kubernetes creates from the webhook's template for this pod."""
    result = Converter(vendors.admission_vendors()).convert(pod, "default", inventory)
    assert result.allowed, result.message
    assert result.template is not None
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"{pod['metadata']['name']}-tessera", "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": result.template["spec"]["spec"],
    }
    return pod, claim


@pytest.mark.parametrize(
    ("pod_name", "node", "driver", "consumed"),
    [
        ("gpu-pod12", "gpu-node", "nvidia.tessera.dev", {"memory": "10Gi", "cores": "30"}),
        ("ascend-pod", "npu-node", "ascend.tessera.dev", {"memory": "16Gi"}),
        ("dcu-pod", "dcu-node", "hygon.tessera.dev", {"memory": "8Gi", "cores": "30"}),
        ("mlu-pod", "mlu-node", "cambricon.tessera.dev", {"memory": "4661Mi", "cores": "10"}),
    ],
)
def test_each_pod_is_placed_on_its_vendor_and_prepares(
    pod_name: str, node: str, driver: str, consumed: dict[str, str], tmp_path: Path
) -> None:
    nodes, all_slices, classes, devices = cluster()
    pod, claim = claim_for(pods()[pod_name], Inventory.from_slices(all_slices))
    decision = schedule(pod, nodes, [claim], classes, all_slices, [])
    assert decision.node == node, decision.message
    allocation = decision.allocations[claim["metadata"]["name"]]
    results = allocation["devices"]["results"]
    assert {r["driver"] for r in results} == {driver}
    for r in results:
        got = {k: str(v) for k, v in r["consumedCapacity"].items() if k in consumed}
        assert got == consumed
    # The driver on that node turns the allocation into container edits.
    claim["status"] = {"allocation": allocation}
    meta = claim["metadata"]
    vendor = vendors.node_vendor(driver)
    plan = plan_claim(claim, ClaimRef(meta["namespace"], meta["name"], meta["uid"]), vendor.names, node, devices[node])
    layout = NodeLayout(host_lib_dir=str(tmp_path), claim_dir=str(tmp_path / "claims" / meta["uid"]))
    (request,) = plan.requests
    edits = vendor.container_edits(request.shares, request.config, layout)
    env = dict(edits.env)
    if driver == "ascend.tessera.dev":
        assert env["ASCEND_VNPU_SPECS"] == "vir05_1c_16g"
    elif driver == "hygon.tessera.dev":
        assert "cu_count: 36\n" in next(iter(edits.files.values()))
    elif driver == "cambricon.tessera.dev":
        assert env["CAMBRICON_DSMLU_PROFILE"] == "0_10_20"
    else:
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "10240m" and env["CUDA_DEVICE_SM_LIMIT_1"] == "30"


def test_ascend_memory_rounds_up_per_chip_and_soft_split_asks_do_not_fit_template_nodes() -> None:
    nodes, all_slices, classes, _ = cluster()
    inventory = Inventory.from_slices(all_slices)
    pod = pods()["ascend-pod"]
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    limits["huawei.com/Ascend910-memory"] = 9000  # family name: the scheduler rounds up on the chip
    _, claim = claim_for(pod, inventory)
    decision = schedule(pod, nodes, [claim], classes, all_slices, [])
    (result,) = decision.allocations[claim["metadata"]["name"]]["devices"]["results"]
    assert decision.node == "npu-node" and str(result["consumedCapacity"]["memory"]) == "16Gi"
    # Four vNPUs of 16 GiB fill a 64 GiB 910B3: two chips hold eight; a ninth does not fit.
    others: list[dict[str, Any]] = []
    for _ in range(8):
        _, c = claim_for(pod, inventory)
        d = schedule(pod, nodes, [c], classes, all_slices, others)
        assert d.node == "npu-node", d.message
        c["status"] = {"allocation": d.allocations[c["metadata"]["name"]]}
        others.append(c)
    _, ninth = claim_for(pod, inventory)
    assert schedule(pod, nodes, [ninth], classes, all_slices, others).node is None
    soft = pods()["ascend-pod"]
    soft["spec"]["containers"][0]["resources"]["limits"]["huawei.com/Ascend910-core"] = 30
    _, soft_claim = claim_for(soft, inventory)
    refused = schedule(soft, nodes, [soft_claim], classes, all_slices, [])
    assert refused.node is None and "cores" in refused.per_node["npu-node"]
