"""The kind flow cannot run here (no Docker engine); its files are checked for what can be checked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e.cluster.harness import chart_env, render_chart

KIND = Path(__file__).resolve().parents[2] / "e2e" / "kind"


def test_cluster_config_enables_dra_and_consumable_capacity() -> None:
    config = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert config["featureGates"]["DRAConsumableCapacity"] is True
    assert "enable_cdi = true" in config["containerdConfigPatches"][0]
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    assert len(workers) == 2 and all(n["labels"]["tessera.dev/nvidia"] == "true" for n in workers)


def test_run_script_is_valid_shell() -> None:
    subprocess.run(["bash", "-n", str(KIND / "run.sh")], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    subprocess.run(["shellcheck", str(KIND / "run.sh")], check=True)


def test_e2e_values_give_the_mock_backend_and_every_webhook_vendor() -> None:
    docs = render_chart()
    driver = chart_env(docs, "DaemonSet", "driver")
    assert driver["TESSERA_BACKEND"] == "mock" and driver["TESSERA_MOCK_DEVICES"] == "2xH200,2xA100"
    webhook = chart_env(docs, "Deployment", "webhook")
    assert set(webhook["TESSERA_VENDORS"].split(",")) == {"nvidia", "ascend", "cambricon", "hygon", "iluvatar"}
