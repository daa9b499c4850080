"""The founding talk's Ascend, Iluvatar and Cambricon pods and a Hygon pod through the real webhook.

The device inventory the webhook needs for Cambricon's percentage comes from the real driver code:
each vendor's mock devices, published as ResourceSlices by ``dra_driver.slices``. Every object is
checked with ``kubernetes_validate`` --strict for Kubernetes 1.34.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

import vendors
from dra_driver import slices
from dra_driver.backends import mock
from vendors import ascend, cambricon, hygon, iluvatar
from vendors.base import NodeVendor
from webhook.convert import Converter
from webhook.inventory import Inventory

ROOT = Path(__file__).resolve().parents[2]
K8S = "1.34"
MOCK_NODES: dict[str, tuple[NodeVendor, str]] = {
    "npu-node": (ascend.VENDOR, "2x910B3,1x910B4"),
    "gpu-node": (iluvatar.VENDOR, "2xMR-V100"),
    "mlu-node": (cambricon.VENDOR, "2xMLU370-X4"),
    "dcu-node": (hygon.VENDOR, "2xK100_AI"),
}


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S, strict=True)


def mock_slices() -> list[dict[str, Any]]:
    out = []
    for node, (vendor, spec) in MOCK_NODES.items():
        devices = mock.discover(spec, vendor.names, vendor.mock_models, node)
        for body in slices.build_slice_specs(devices, vendor.names, node, 10, shareable=True):
            out.append(slices.slice_object(body, 1, node_name=node, node_uid=f"uid-{node}", driver=vendor.names.driver))
    return out


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    objects = mock_slices()
    for obj in objects:
        obj["metadata"].setdefault("name", obj["metadata"].get("generateName", "s") + "x")
        validate(obj)
    return Inventory.from_slices(objects)


def seed_pods() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "seed-pods.yaml").read_text(encoding="utf-8")))
    docs += list(yaml.safe_load_all((ROOT / "examples" / "hygon-pod.yaml").read_text(encoding="utf-8")))
    return {d["metadata"]["name"]: d for d in docs if d}


def convert(pod: dict[str, Any], inventory: Inventory) -> tuple[dict[str, Any], dict[str, Any]]:
    result = Converter(vendors.admission_vendors()).convert(pod, "default", inventory)
    assert result.allowed, result.message
    assert result.template is not None
    patched = jsonpatch.apply_patch(pod, result.patch)
    patched.setdefault("metadata", {}).setdefault("namespace", "default")
    validate(patched)
    validate(result.template)
    return patched, result.template


def only_request(template: dict[str, Any]) -> dict[str, Any]:
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    return dict(request)


def test_ascend_seed_pod(inventory: Inventory) -> None:
    pod, template = convert(seed_pods()["ascend-pod"], inventory)
    limits = pod["spec"]["containers"][0]["resources"].get("limits", {})
    assert not any(k.startswith("huawei.com/") for k in limits)
    exactly = only_request(template)["exactly"]
    assert exactly["deviceClassName"] == "ascend.tessera.dev"
    assert exactly["capacity"] == {"requests": {"memory": "16384Mi"}}
    (selector,) = exactly["selectors"]
    assert selector["cel"]["expression"] == (
        'device.attributes["ascend.tessera.dev"].type in ["910A", "910B2", "910B3", "910B4", "910B4-1"]'
    )
    config = template["spec"]["spec"]["devices"]["config"][0]["opaque"]
    assert config["driver"] == "ascend.tessera.dev"


def test_iluvatar_seed_pod(inventory: Inventory) -> None:
    _, template = convert(seed_pods()["iluvatar-pod"], inventory)
    exactly = only_request(template)["exactly"]
    assert exactly["deviceClassName"] == "iluvatar.tessera.dev"
    assert exactly["capacity"] == {"requests": {"memory": "16384Mi", "cores": "50"}}
    assert "selectors" not in exactly


def test_cambricon_seed_pod_percentage_becomes_a_size_per_model(inventory: Inventory) -> None:
    _, template = convert(seed_pods()["mlu-pod"], inventory)
    (sub,) = only_request(template)["firstAvailable"]
    assert sub["deviceClassName"] == "cambricon.tessera.dev"
    assert sub["capacity"] == {"requests": {"memory": "4661Mi", "cores": "10"}}  # 20 % of 23308 MiB
    assert sub["selectors"][-1]["cel"]["expression"] == 'device.attributes["cambricon.tessera.dev"].type == "MLU370-X4"'


def test_cambricon_with_hami_units_needs_no_inventory() -> None:
    pod = seed_pods()["mlu-pod"]
    converter = Converter([cambricon.Cambricon(vmemory_unit=256)])
    result = converter.convert(pod, "default", None)
    assert result.allowed and result.template is not None
    validate(result.template)
    exactly = only_request(result.template)["exactly"]
    assert exactly["capacity"] == {"requests": {"memory": "5120Mi", "cores": "10"}}


def test_hygon_pod(inventory: Inventory) -> None:
    pod, template = convert(seed_pods()["dcu-pod"], inventory)
    assert pod["spec"]["containers"][0]["resources"]["claims"] == [{"name": "tessera", "request": "dcu-container"}]
    exactly = only_request(template)["exactly"]
    assert exactly["deviceClassName"] == "hygon.tessera.dev"
    assert exactly["capacity"] == {"requests": {"memory": "8192Mi", "cores": "30"}}


def test_annotations_become_selectors_and_denials_reach_the_user(inventory: Inventory) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "soft",
            "annotations": {"huawei.com/vnpu-mode": "hami-core", "hami.io/no-use-Ascend910B3-uuid": "Ascend-x"},
        },
        "spec": {
            "containers": [
                {
                    "name": "npu",
                    "image": "busybox",
                    "resources": {
                        "limits": {
                            "huawei.com/Ascend910B3": 1,
                            "huawei.com/Ascend910B3-memory": 10000,
                            "huawei.com/Ascend910B3-core": 40,
                        }
                    },
                }
            ]
        },
    }
    _, template = convert(pod, inventory)
    exactly = only_request(template)["exactly"]
    assert exactly["capacity"] == {"requests": {"memory": "10000Mi", "cores": "40"}}
    assert [s["cel"]["expression"] for s in exactly["selectors"]] == [
        'device.attributes["ascend.tessera.dev"].vnpuMode == "hami-core"',
        '!(device.attributes["ascend.tessera.dev"].uuid in ["Ascend-x"])',
        'device.attributes["ascend.tessera.dev"].type == "910B3"',
    ]
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    limits["huawei.com/Ascend910B3-memory"] = 70000
    denied = Converter(vendors.admission_vendors()).convert(pod, "default", inventory)
    assert not denied.allowed and "more than a whole 910B3" in denied.message
    pod["metadata"]["annotations"]["huawei.com/vnpu-mode"] = "bogus"
    limits["huawei.com/Ascend910B3-memory"] = 1000
    denied = Converter(vendors.admission_vendors()).convert(pod, "default", inventory)
    assert not denied.allowed and "vnpu-mode" in denied.message


def test_published_slices_carry_the_vendor_attributes() -> None:
    by_driver = {s["spec"]["driver"]: s for s in mock_slices()}
    npu = by_driver["ascend.tessera.dev"]["spec"]["devices"][0]
    assert npu["name"] == "npu-0"
    assert npu["attributes"]["type"] == {"string": "910B3"}
    assert npu["attributes"]["vnpuMode"] == {"string": "template"}
    assert npu["attributes"]["vnpuTemplates"] == {"string": "vir05_1c_16g,vir10_3c_32g"}
    dcu = by_driver["hygon.tessera.dev"]["spec"]["devices"][1]
    assert dcu["name"] == "dcu-1" and dcu["attributes"]["computeUnits"] == {"int": 120}
    assert by_driver["cambricon.tessera.dev"]["spec"]["devices"][0]["name"] == "mlu-0"
    assert by_driver["iluvatar.tessera.dev"]["spec"]["devices"][0]["attributes"]["productName"] == {
        "string": "Iluvatar MR-V100"
    }


def test_convert_cli_converts_the_seed_pods_and_the_hygon_pod(tmp_path: Path) -> None:
    inventory_file = tmp_path / "inventory.yaml"
    objects = mock_slices()
    inventory_file.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    for manifest in ("seed-pods.yaml", "hygon-pod.yaml"):
        argv = [sys.executable, "-m", "webhook", "convert", "-f", str(ROOT / "examples" / manifest)]
        proc = subprocess.run(
            [*argv, "--inventory", str(inventory_file)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("namespace", "default")
            validate(doc)
        classes = {
            r.get("exactly", (r.get("firstAvailable") or [{}])[0]).get("deviceClassName")
            for d in docs
            if d["kind"] == "ResourceClaimTemplate"
            for r in d["spec"]["spec"]["devices"]["requests"]
        }
        expected = (
            {"nvidia.tessera.dev", "ascend.tessera.dev", "iluvatar.tessera.dev", "cambricon.tessera.dev"}
            if manifest == "seed-pods.yaml"
            else {"hygon.tessera.dev"}
        )
        assert expected <= classes


def test_example_inventory_of_all_vendors_is_valid_and_converts_every_seed_pod() -> None:
    path = ROOT / "examples" / "inventory-all-vendors.yaml"
    objects = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    for obj in objects:
        validate(obj)
    assert {o["spec"]["driver"] for o in objects} == {f"{v}.tessera.dev" for v in vendors.RESOURCE_PREFIXES}
    inventory = Inventory.from_slices(objects)
    for name, pod in seed_pods().items():
        result = Converter(vendors.admission_vendors()).convert(pod, "default", inventory)
        assert result.allowed, f"{name}: {result.message}"
