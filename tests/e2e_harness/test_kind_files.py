"""The kind flow cannot run here (no Docker engine); its files are checked for what can be checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from e2e.cluster.harness import chart_driver_enabled, chart_env, chart_installs_library, chart_objects, render_chart

KIND = Path(__file__).resolve().parents[2] / "e2e" / "kind"


def test_cluster_config_enables_dra_and_consumable_capacity() -> None:
    config = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert config["featureGates"]["DRAConsumableCapacity"] is True
    # what e2e/tests/test_observability.py needs of a real cluster: device taints, claim device
    # status and the pods' device health
    for gate in ("DRADeviceTaints", "DRAResourceClaimDeviceStatus", "ResourceHealthStatus"):
        assert config["featureGates"][gate] is True, gate
    assert "enable_cdi = true" in config["containerdConfigPatches"][0]
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    nvidia = [n for n in workers if n["labels"].get("tessera.dev/nvidia") == "true"]
    assert len(nvidia) == 2 and all(set(n["labels"]) == {"tessera.dev/nvidia"} for n in nvidia)
    # one more worker runs every other vendor's driver (mock backend)
    (others,) = [n for n in workers if n not in nvidia]
    assert others["labels"] == {f"tessera.dev/{v}": "true" for v in ("ascend", "cambricon", "hygon", "iluvatar")}


def test_run_script_is_valid_shell() -> None:
    subprocess.run(["bash", "-n", str(KIND / "run.sh")], check=True)  # shellcheck: tests/test_shell_scripts.py


def test_e2e_values_give_the_mock_backend_and_every_webhook_vendor() -> None:
    docs = render_chart()
    driver = chart_env(docs, "DaemonSet", "driver", "nvidia")
    assert driver["TESSERA_BACKEND"] == "mock" and driver["TESSERA_MOCK_DEVICES"] == "2xH200,2xA100"
    # every vendor's driver: mock backend, on the nodes labelled for it, with its own DeviceClass
    for vendor in ("nvidia", "ascend", "cambricon", "hygon", "iluvatar"):
        env = chart_env(docs, "DaemonSet", "driver", vendor)
        assert env["TESSERA_DRIVER"] == vendor and env["TESSERA_BACKEND"] == "mock", env
        assert chart_driver_enabled(docs, vendor)
        (ds,) = chart_objects(docs, "DaemonSet", "driver", vendor)
        assert ds["spec"]["template"]["spec"]["nodeSelector"][f"tessera.dev/{vendor}"] == "true"
        classes = [d for d in docs if d["kind"] == "DeviceClass" and d["metadata"]["name"] == f"{vendor}.tessera.dev"]
        assert len(classes) == 1, vendor
    # libvgpu.so is installed where the workloads use the CUDA driver API
    assert {v for v in ("nvidia", "ascend", "cambricon", "hygon", "iluvatar") if chart_installs_library(docs, v)} == {
        "nvidia",
        "iluvatar",
    }
    webhook = chart_env(docs, "Deployment", "webhook")
    assert set(webhook["TESSERA_VENDORS"].split(",")) == {"nvidia", "ascend", "cambricon", "hygon", "iluvatar"}
