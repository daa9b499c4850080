"""The stand-ins' side of device health and claim status, checked rule by rule: the kubelet's health
cache and ``allocatedResourcesStatus`` (as the kubelet's DRA manager builds them), the API server's
gates for device taints, claim device status and pod resource health, its ResourceClaim status
strategy and its validation of device taints."""

from __future__ import annotations

from typing import Any

from e2e.apiserver.kinds import kind_for_plural
from e2e.apiserver.strategy import claim_status_update, drop_disabled_fields
from e2e.apiserver.validation import SchemaValidator
from e2e.kubelet import health
from e2e.kubelet.plugins import DeviceHealthReport, PreparedDevice

DRIVER = "nvidia.tessera.dev"
NOW = 1_000.0


def report(device: str, state: str, *, at: float = NOW, timeout: float = 0.0) -> DeviceHealthReport:
    return DeviceHealthReport("node-1", device, state, at, timeout)


def test_health_cache_changes_timeouts_and_stream_end() -> None:
    cache = health.HealthCache()
    assert cache.get(DRIVER, "node-1", "gpu-0", NOW) == "Unknown", "never reported"
    changed = cache.update(DRIVER, [report("gpu-0", "Healthy"), report("gpu-1", "Healthy", timeout=5)])
    assert changed == {(DRIVER, "node-1", "gpu-0"), (DRIVER, "node-1", "gpu-1")}
    assert cache.update(DRIVER, [report("gpu-0", "Healthy"), report("gpu-1", "Healthy", timeout=5)]) == set()
    assert cache.update(DRIVER, [report("gpu-0", "Unhealthy"), report("gpu-1", "Healthy", timeout=5)]) == {
        (DRIVER, "node-1", "gpu-0")
    }
    assert cache.get(DRIVER, "node-1", "gpu-0", NOW + 29) == "Unhealthy"
    assert cache.get(DRIVER, "node-1", "gpu-0", NOW + 31) == "Unknown", "30 s without news when none is given"
    assert cache.get(DRIVER, "node-1", "gpu-1", NOW + 6) == "Unknown", "the plugin's own timeout"
    assert cache.clear(DRIVER) == {(DRIVER, "node-1", "gpu-0"), (DRIVER, "node-1", "gpu-1")}
    assert cache.get(DRIVER, "node-1", "gpu-0", NOW) == "Unknown"


def test_allocated_resources_status_lists_every_device_of_the_claim() -> None:
    cache = health.HealthCache()
    cache.update(DRIVER, [report("gpu-0", "Healthy"), report("gpu-1", "Unhealthy")])
    devices = [
        PreparedDevice(["main"], "node-1", "gpu-1", [f"k8s.{DRIVER}/claim=u-gpu-1-s1"], "s1", DRIVER),
        PreparedDevice(["side"], "node-1", "gpu-0", [], None, DRIVER),
    ]
    container = {"name": "main", "resources": {"claims": [{"name": "gpus", "request": "main"}, {"name": "none"}]}}
    got = health.allocated_resources_status(container, {"gpus": devices}, cache, NOW)
    assert got == [
        {
            "name": "claim:gpus/main",
            "resources": [
                {"resourceID": f"{DRIVER}/node-1/gpu-0", "health": "Healthy"},  # no CDI ID: driver/pool/device
                {"resourceID": f"k8s.{DRIVER}/claim=u-gpu-1-s1", "health": "Unhealthy"},
            ],
        }
    ], "the side request's device too: the kubelet lists every device of the claim"
    assert health.allocated_resources_status({"name": "x"}, {"gpus": devices}, cache, NOW) == []
    assert health.resource_name({"name": "gpus"}) == "claim:gpus"


def claim(devices: list[dict[str, Any]], results: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c", "namespace": "default", "uid": "u"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "gpu", "driver": DRIVER, "pool": p, "device": d} for p, d in results]
                }
            },
            "devices": devices,
        },
    }


def test_status_strategy_drops_deallocated_devices_and_the_gate() -> None:
    kind = kind_for_plural("resourceclaims")
    entry = {"driver": DRIVER, "pool": "node-1", "device": "gpu-0"}
    old = claim([entry], [("node-1", "gpu-0")])
    new = claim([entry], [])
    new["status"].pop("allocation")
    claim_status_update(kind, new, old, {"DRAResourceClaimDeviceStatus": True})
    assert "devices" not in new["status"], "deallocated: its entries go"
    fresh = claim([entry], [("node-1", "gpu-0")])
    no_devices = claim([], [("node-1", "gpu-0")])
    claim_status_update(kind, fresh, no_devices, {"DRAResourceClaimDeviceStatus": False})
    assert "devices" not in fresh["status"], "gate off, not in use before: dropped"
    kept = claim([entry], [("node-1", "gpu-0")])
    claim_status_update(kind, kept, claim([entry], [("node-1", "gpu-0")]), {"DRAResourceClaimDeviceStatus": False})
    assert kept["status"]["devices"] == [entry], "gate off but already in use: kept"


def test_gates_drop_taints_tolerations_and_pod_health() -> None:
    slice_obj = {"spec": {"devices": [{"name": "gpu-0", "taints": [{"key": "k", "effect": "NoSchedule"}]}]}}
    drop_disabled_fields(kind_for_plural("resourceslices"), slice_obj, {"DRADeviceTaints": False})
    assert "taints" not in slice_obj["spec"]["devices"][0]
    c = claim([], [])
    c["spec"]["devices"]["requests"][0]["exactly"]["tolerations"] = [{"key": "k", "operator": "Exists"}]
    drop_disabled_fields(kind_for_plural("resourceclaims"), c, {"DRADeviceTaints": False})
    assert "tolerations" not in c["spec"]["devices"]["requests"][0]["exactly"]
    pod = {"status": {"containerStatuses": [{"name": "m", "allocatedResourcesStatus": [{"name": "claim:x"}]}]}}
    drop_disabled_fields(kind_for_plural("pods"), pod, {"ResourceHealthStatus": False})
    assert "allocatedResourcesStatus" not in pod["status"]["containerStatuses"][0]
    on = {"spec": {"devices": [{"name": "gpu-0", "taints": [{"key": "k", "effect": "NoSchedule"}]}]}}
    drop_disabled_fields(kind_for_plural("resourceslices"), on, {})
    assert on["spec"]["devices"][0]["taints"], "on by default"


def test_taints_are_validated() -> None:
    bad = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "s"},
        "spec": {
            "driver": DRIVER,
            "nodeName": "node-1",
            "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "gpu-0",
                    "taints": [
                        {"key": "no spaces/allowed", "effect": "NoSchedule"},
                        {"key": f"{DRIVER}/unhealthy", "value": "xid 79", "effect": "PreferNoSchedule"},
                    ],
                }
            ],
        },
    }
    problems = dict(SchemaValidator()(kind_for_plural("resourceslices"), bad))
    assert "label name" in problems["spec.devices[0].taints[0].key"]
    assert "label value" in problems["spec.devices[0].taints[1].value"]
    assert "NoExecute" in problems["spec.devices[0].taints[1].effect"]
