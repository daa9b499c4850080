"""Vendor settings: each chart value reaches the component that reads it, under the name the code reads.

The names come from the vendor modules' constants (``vendor_env.VENDOR_SETTINGS``), checked against
what each vendor's ``from_env`` really looks up; the values are fed back through ``from_env`` to show
they arrive with the meaning the chart documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import vendors
from dra_driver import cli as driver_cli
from vendors import ascend, cambricon, hygon, iluvatar
from vendors.common import MemoryUnit

from . import helm
from .vendor_env import TOOL_ENV, VENDOR_SETTINGS, WEBHOOK_SETTINGS, from_env

VALUES = helm.effective_values()
SCHEMA = json.loads((helm.CHART / "values.schema.json").read_text())
TOOL_VENDORS = sorted(TOOL_ENV)

# Every vendor on its real backend, every vendor setting away from its default.
REAL_BACKENDS: dict[str, Any] = {
    "vendors": {
        "ascend": {"enabled": True, "vnpuMode": "hami-core", "npuSmi": "/usr/local/sbin/npu-smi",
                   "backendHostPaths": [{"path": "/usr/local/Ascend/driver", "type": "Directory"},
                                        {"path": "/usr/local/sbin/npu-smi", "type": "File"}]},
        "cambricon": {"enabled": True, "vmemoryUnit": 512, "cnmon": "/opt/cambricon/bin/cnmon",
                      "backendHostPaths": [{"path": "/opt/cambricon/bin/cnmon", "type": "File"}]},
        "hygon": {"enabled": True, "hySmi": "/opt/hyhal-6/bin/hy-smi", "hyhalDir": "/opt/hyhal-6",
                  "driverDir": "/opt/dtk-25.04", "backendHostPaths": [{"path": "/opt/hyhal-6", "type": "Directory"}]},
        "iluvatar": {"enabled": True, "ixsmi": "/usr/local/corex-4.2/bin/ixsmi",
                     "backendHostPaths": [{"path": "/usr/local/corex-4.2", "type": "Directory"}]},
    }
}  # fmt: skip


def _driver_container(ds: helm.Obj) -> helm.Obj:
    (container,) = [c for c in helm.pod_spec(ds)["containers"] if c["name"] == "driver"]
    found: helm.Obj = container
    return found


def _env(container: helm.Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _vendor_env(ds: helm.Obj) -> dict[str, str]:
    """The driver container's TESSERA_* env that is not a flag of the driver: the vendor's settings."""
    flags = {driver_cli.env_name(a.option_strings[0]) for a in driver_cli.build_parser({})._actions if a.option_strings}
    return {k: v for k, v in _env(_driver_container(ds)).items() if k.startswith("TESSERA_") and k not in flags}


def _drivers(objs: list[helm.Obj]) -> dict[str, helm.Obj]:
    return {ds["metadata"]["labels"]["tessera.dev/vendor"]: ds for ds in helm.find(objs, "DaemonSet")}


@pytest.fixture(scope="module")
def real_objs(helm_home: Path, tmp_path_factory: pytest.TempPathFactory) -> list[helm.Obj]:
    values = tmp_path_factory.mktemp("values") / "real-backends.yaml"
    values.write_text(yaml.safe_dump(REAL_BACKENDS))
    return helm.render(helm_home, values=[values])


@pytest.fixture(scope="module")
def mock_objs(helm_home: Path) -> list[helm.Obj]:
    sets = {f"vendors.{v}.{k}": val for v in TOOL_VENDORS for k, val in (("enabled", "true"), ("backend", "mock"))}
    return helm.render(helm_home, sets=sets)


@pytest.mark.parametrize("vendor", sorted(VALUES["vendors"]))
def test_settings_are_what_from_env_reads(vendor: str) -> None:
    """The constants the chart tests use are exactly what the vendor reads: no setting without a value."""
    read, _ = from_env(vendor, {})
    assert read == VENDOR_SETTINGS[vendor]


def test_every_vendor_setting_reaches_the_driver_under_the_read_name(real_objs: list[helm.Obj]) -> None:
    drivers = _drivers(real_objs)
    assert set(drivers) == set(VALUES["vendors"])
    for vendor, ds in drivers.items():
        env = _vendor_env(ds)
        assert set(env) == VENDOR_SETTINGS[vendor], vendor  # every setting the code reads, nothing else
        read, _ = from_env(vendor, env)
        assert set(env) <= read


def test_driver_settings_keep_their_meaning(real_objs: list[helm.Obj]) -> None:
    """The rendered env, read back by each vendor's own from_env, gives the configured settings."""
    drivers = _drivers(real_objs)
    got = {v: from_env(v, _env(_driver_container(drivers[v])))[1] for v in TOOL_VENDORS}
    want = REAL_BACKENDS["vendors"]
    a, c, h, i = got["ascend"], got["cambricon"], got["hygon"], got["iluvatar"]
    assert isinstance(a, ascend.Ascend) and (a.vnpu_mode, a.npu_smi) == (
        want["ascend"]["vnpuMode"],
        "/usr/local/sbin/npu-smi",
    )
    assert isinstance(c, cambricon.Cambricon)
    assert (c.memory_unit, c.cnmon) == (MemoryUnit(mib=512), "/opt/cambricon/bin/cnmon")
    assert isinstance(h, hygon.Hygon)
    assert (h.hy_smi, h.hyhal_dir, h.driver_dir) == ("/opt/hyhal-6/bin/hy-smi", "/opt/hyhal-6", "/opt/dtk-25.04")
    assert isinstance(i, iluvatar.Iluvatar) and i.ixsmi == "/usr/local/corex-4.2/bin/ixsmi"
    # hami-core mode shows in what the node publishes (attribute and shareable cores).
    model = next(iter(a.mock_models.values()))
    assert model.extra_attributes[ascend.ATTR_VNPU_MODE] == "hami-core" and model.cores_shareable


def test_mock_backend_gets_the_settings_but_not_the_tool(mock_objs: list[helm.Obj]) -> None:
    for vendor, ds in _drivers(mock_objs).items():
        env = _vendor_env(ds)
        tool = {TOOL_ENV[vendor]} if vendor in TOOL_ENV else set()
        assert set(env) == VENDOR_SETTINGS[vendor] - tool, vendor
        container = _driver_container(ds)
        assert "LD_LIBRARY_PATH" not in _env(container)  # backendEnv: real backend only
        assert not any(v["name"].startswith("backend-path-") for v in helm.pod_spec(ds)["volumes"])
        assert not container["securityContext"].get("privileged")


def test_webhook_and_cambricon_driver_agree_on_the_vmemory_unit(
    real_objs: list[helm.Obj], default_objs: list[helm.Obj]
) -> None:
    """The webhook converts `mlu.smlu.vmemory` with the unit; the driver writes the sMLU profile in it."""
    for objs, unit in ((real_objs, MemoryUnit(mib=512)), (default_objs, MemoryUnit(mib=None))):
        webhook = _env(helm.pod_spec(helm.one(objs, "Deployment", "tessera-webhook"))["containers"][0])
        assert {k for k in webhook if k in WEBHOOK_SETTINGS} == WEBHOOK_SETTINGS
        read, instance = from_env("cambricon", webhook)
        assert read >= WEBHOOK_SETTINGS
        assert isinstance(instance, cambricon.Cambricon) and instance.memory_unit == unit
    driver = _vendor_env(_drivers(real_objs)["cambricon"])
    webhook = _env(helm.pod_spec(helm.one(real_objs, "Deployment", "tessera-webhook"))["containers"][0])
    assert driver[cambricon.VMEMORY_UNIT_ENV] == webhook[cambricon.VMEMORY_UNIT_ENV] == "512"


def test_webhook_converts_with_the_configured_unit(real_objs: list[helm.Obj]) -> None:
    webhook = _env(helm.pod_spec(helm.one(real_objs, "Deployment", "tessera-webhook"))["containers"][0])
    _, instance = from_env("cambricon", webhook)
    assert isinstance(instance, cambricon.Cambricon)
    pod_container = {
        "name": "c",
        "resources": {"limits": {"cambricon.com/vmlu": 1, "cambricon.com/mlu.smlu.vmemory": 4}},
    }
    ask = instance.parse(pod_container)
    assert ask is not None and ask.memory_mib == 4 * 512 and ask.memory_percent is None


def test_schema_follows_the_code() -> None:
    vendor_schemas = SCHEMA["properties"]["vendors"]["properties"]
    assert vendor_schemas["ascend"]["properties"]["vnpuMode"]["enum"] == list(ascend.VNPU_MODES)
    # Every vmemoryUnit the schema takes, the code takes, and the other way round for these.
    for good in ("percent", 1, 256, "256"):
        cambricon.parse_vmemory_unit(good)
    for bad in ("0", "abc", "-1"):
        with pytest.raises(ValueError):
            cambricon.parse_vmemory_unit(bad)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"vendors.ascend.vnpuMode": "soft"}, "vnpuMode"),
        ({"vendors.cambricon.vmemoryUnit": "0"}, "vmemoryUnit"),
        ({"vendors.cambricon.vmemoryUnit": "abc"}, "vmemoryUnit"),
        ({"vendors.nvidia.vnpuMode": "template"}, "additional properties 'vnpuMode' not allowed"),
        ({"vendors.ascend.npuSmi": "null"}, "missing property 'npuSmi'"),
        (
            {
                "vendors.ascend.backendHostPaths[0].path": "/usr/local/Ascend/",
                "vendors.ascend.backendHostPaths[0].type": "Directory",
            },
            "does not match pattern",
        ),
        (
            {
                "vendors.ascend.backendHostPaths[0].path": "/usr/local/Ascend",
                "vendors.ascend.backendHostPaths[0].type": "DirectoryOrCreate",
            },
            "'Directory', 'File', 'CharDevice'",
        ),
        ({"vendors.hygon.backendPrivileged": "maybe"}, "backendPrivileged"),
    ],
)
def test_schema_rejects_bad_vendor_settings(helm_home: Path, sets: dict[str, str], message: str) -> None:
    result = helm.run_helm(helm.template_args(sets=sets), helm_home, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_a_host_path_is_mounted_once(helm_home: Path) -> None:
    sets = {"vendors.ascend.enabled": "true", "vendors.ascend.backendHostPaths[0].path": "/usr/local/tessera",
            "vendors.ascend.backendHostPaths[0].type": "Directory"}  # fmt: skip
    result = helm.run_helm(helm.template_args(sets=sets), helm_home, check=False)
    assert result.returncode != 0
    assert "vendors.ascend.backendHostPaths: /usr/local/tessera is mounted twice" in result.stderr, result.stderr


@pytest.mark.parametrize("vendor", TOOL_VENDORS)
def test_default_tool_is_inside_the_default_host_paths(vendor: str) -> None:
    """With default values the real backend finds its tool: it lies in a mounted host path."""
    settings = VALUES["vendors"][vendor]
    tool = {"ascend": "npuSmi", "cambricon": "cnmon", "hygon": "hySmi", "iluvatar": "ixsmi"}[vendor]
    path = settings[tool]
    mounted = [p["path"] for p in settings["backendHostPaths"]]
    assert any(path == m or path.startswith(m + "/") for m in mounted), (path, mounted)
    for directory in settings["backendEnv"].get("LD_LIBRARY_PATH", "").split(":"):
        assert not directory or any(directory == m or directory.startswith(m + "/") for m in mounted), directory
    assert settings["backendPrivileged"] is True  # the tool opens the host's device nodes
    assert settings["backend"] == vendors.node_vendor(vendor).real_backend


def test_nvidia_needs_no_host_paths_or_privilege() -> None:
    settings = VALUES["vendors"]["nvidia"]
    assert settings["backendHostPaths"] == [] and settings["backendPrivileged"] is False


@pytest.mark.parametrize("version", helm.KUBE_VERSIONS)
def test_vendor_renders_validate_strictly(real_objs: list[helm.Obj], mock_objs: list[helm.Obj], version: str) -> None:
    for obj in real_objs + mock_objs:
        kubernetes_validate.validate(obj, version, strict=True)
