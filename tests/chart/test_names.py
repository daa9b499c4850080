"""One source of truth: the chart's names, flags and env are the ones the code defines and parses.

The driver's env is fed to the driver's own ``settings_from_args`` (what ``python -m dra_driver``
runs), the webhook's to ``webhook.cli.build_parser()``, the init container's command to
``isolation.install.build_parser()``; DeviceClass and driver names come from ``vendors``.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml

import vendors
from dra_driver import cli as driver_cli
from dra_driver.backends import mock as mock_backend
from isolation import install
from isolation.env import LIBRARY_NAME
from vendors.base import DOMAIN, NodeLayout, Share, SharingConfig

from . import helm
from .vendor_env import VENDOR_SETTINGS, WEBHOOK_SETTINGS

VALUES = yaml.safe_load((helm.CHART / "values.yaml").read_text())
DRIVER_DOCKERFILE = helm.REPO / "docker" / "driver.Dockerfile"


def _literal_env(container: helm.Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _driver_container(ds: helm.Obj) -> helm.Obj:
    (container,) = [c for c in helm.pod_spec(ds)["containers"] if c["name"] == "driver"]
    found: helm.Obj = container
    return found


def test_chart_vendors_are_the_codes_vendors() -> None:
    assert set(VALUES["vendors"]) == set(vendors.RESOURCE_PREFIXES)
    for name in VALUES["vendors"]:
        # Every vendor the chart can enable has a node (driver) and an admission (webhook) side.
        assert vendors.node_vendor(name).names.vendor == name
        assert vendors.admission_vendor(name).names.vendor == name


@pytest.mark.parametrize("vendor", sorted(VALUES["vendors"]))
def test_vendor_defaults_are_valid_for_the_code(vendor: str) -> None:
    values = VALUES["vendors"][vendor]
    node = vendors.node_vendor(vendor)
    assert values["backend"] == node.real_backend
    devices = mock_backend.discover(values["mockDevices"], node.names, node.mock_models, "node-1")
    assert devices, f"vendors.{vendor}.mockDevices simulates nothing"
    assert values["nodeSelector"] == {f"{DOMAIN}/{vendor}": "true"}


@pytest.mark.parametrize("vendor", sorted(VALUES["vendors"]))
def test_isolation_library_default_follows_the_vendors_container_edits(vendor: str) -> None:
    """The chart installs libvgpu.so for exactly the vendors whose CDI edits mount it."""
    node = vendors.node_vendor(vendor)
    device = mock_backend.discover("1x" + next(iter(node.mock_models)), node.names, node.mock_models, "node-1")[0]
    share = Share(device=device, request="r", share_id=None, memory_bytes=1 << 30, cores=30)
    host_lib = VALUES["driver"]["hostLibDir"]
    layout = NodeLayout(host_lib_dir=host_lib, claim_dir=f"{host_lib}/claims/uid")
    edits = node.container_edits([share], SharingConfig(), layout)
    mounts_library = any(m.host_path == f"{host_lib}/{LIBRARY_NAME}" for m in edits.mounts)
    assert VALUES["vendors"][vendor]["isolationLibrary"] is mounts_library


def test_domain_helper_is_the_codes_domain(all_objs: list[helm.Obj]) -> None:
    hook = helm.one(all_objs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["name"] == f"pods.{DOMAIN}"
    for ds in helm.find(all_objs, "DaemonSet"):
        assert f"{DOMAIN}/vendor" in ds["metadata"]["labels"]


def test_device_classes_are_the_drivers(objs: list[helm.Obj]) -> None:
    enabled = sorted(v for v, spec in _values_of(objs)["vendors"].items() if spec["enabled"])
    classes = {dc["metadata"]["name"]: dc for dc in helm.find(objs, "DeviceClass")}
    assert set(classes) == {vendors.node_vendor(v).names.device_class for v in enabled}
    for vendor in enabled:
        names = vendors.node_vendor(vendor).names
        spec = classes[names.device_class]["spec"]
        assert spec["selectors"] == [{"cel": {"expression": f"device.driver == '{names.driver}'"}}]


def test_extended_resource_names(all_objs: list[helm.Obj], default_objs: list[helm.Obj]) -> None:
    classes = {dc["metadata"]["name"]: dc["spec"] for dc in helm.find(all_objs, "DeviceClass")}
    assert classes["nvidia.tessera.dev"]["extendedResourceName"] == "tessera.dev/nvidia-gpu"
    assert classes["ascend.tessera.dev"]["extendedResourceName"] == "tessera.dev/ascend-npu"
    assert "extendedResourceName" not in classes["cambricon.tessera.dev"]
    assert all("extendedResourceName" not in dc["spec"] for dc in helm.find(default_objs, "DeviceClass"))


def _values_of(objs: list[helm.Obj]) -> dict[str, Any]:
    """The effective values of a render (default values, or merged with the all-options file)."""
    merged: dict[str, Any] = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    if any(ds["metadata"]["name"] == "tessera-hygon-driver" for ds in helm.find(objs, "DaemonSet")):
        extra = yaml.safe_load(helm.ALL_OPTIONS.read_text())
        for vendor, spec in extra["vendors"].items():
            merged["vendors"][vendor].update(spec)
    return merged


def test_driver_env_is_what_the_driver_parses(objs: list[helm.Obj]) -> None:
    flags = {driver_cli.env_name(a.option_strings[0]) for a in driver_cli.build_parser({})._actions if a.option_strings}
    daemonsets = helm.find(objs, "DaemonSet")
    assert daemonsets
    for ds in daemonsets:
        vendor = ds["metadata"]["labels"][f"{DOMAIN}/vendor"]
        container = _driver_container(ds)
        env = _literal_env(container)
        assert container["command"] == ["python", "-m", "dra_driver"]
        ours = {k for k in env if k.startswith(driver_cli.ENV_PREFIX)}
        read = flags | VENDOR_SETTINGS[vendor]  # its flags, and its vendor module's node settings
        assert ours <= read, f"env the driver does not read: {sorted(ours - read)}"
        assert helm.env_of(container)["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        settings = driver_cli.settings_from_args([], {**env, "NODE_NAME": "node-1"})
        names = vendors.node_vendor(vendor).names
        assert (settings.vendor, settings.driver) == (vendor, names.driver)
        assert ds["metadata"]["name"] == f"{helm.RELEASE}-{vendor}-driver"

        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert os.path.dirname(settings.dra_socket) == mounts["plugin-dir"]
        assert os.path.dirname(settings.checkpoint_path) == mounts["plugin-dir"]
        assert os.path.dirname(settings.registration_socket) == mounts["registry-dir"]
        assert settings.plugin_dir.endswith(f"/plugins/{names.driver}")
        assert settings.cdi_dir == mounts["cdi-dir"]
        assert settings.host_lib_dir == mounts["host-lib"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert settings.metrics_port == ports["metrics"]
        assert settings.healthz_port == ports["healthz"] == container["livenessProbe"]["grpc"]["port"]
        assert container["livenessProbe"]["grpc"]["service"] == "liveness"
        if settings.backend == "mock":
            node = vendors.node_vendor(vendor)
            assert mock_backend.discover(settings.mock_devices or "", node.names, node.mock_models, "node-1")


def test_driver_defaults_agree_with_the_chart_defaults(default_objs: list[helm.Obj]) -> None:
    """With default values the chart passes what the driver would assume anyway."""
    (ds,) = helm.find(default_objs, "DaemonSet")
    from_chart = driver_cli.settings_from_args([], {**_literal_env(_driver_container(ds)), "NODE_NAME": "n"})
    from_code = driver_cli.settings_from_args(["--driver", "nvidia", "--node-name", "n"], {})
    for field in ("plugin_dir", "registry_dir", "cdi_dir", "host_lib_dir", "split_count", "metrics_port",
                  "healthz_port", "backend", "log_format", "hami_metrics"):  # fmt: skip
        assert getattr(from_chart, field) == getattr(from_code, field), field


def test_chart_options_reach_the_driver(all_objs: list[helm.Obj]) -> None:
    settings = {}
    for ds in helm.find(all_objs, "DaemonSet"):
        env = {**_literal_env(_driver_container(ds)), "NODE_NAME": "n"}
        s = driver_cli.settings_from_args([], env)
        settings[s.vendor] = s
    assert settings["nvidia"].backend == "mock" and settings["nvidia"].mock_devices == "2xH100,1xA100"
    assert settings["nvidia"].split_count == 4 and settings["ascend"].split_count == 2
    assert settings["nvidia"].registry_dir == "/var/lib/k0s/kubelet/plugins_registry"
    assert all(s.hami_metrics and s.log_format == "text" for s in settings.values())


def test_isolation_install_command(objs: list[helm.Obj]) -> None:
    source_in_image = re.search(r"^COPY --from=\S+ \S+ (/\S+)/$", DRIVER_DOCKERFILE.read_text(), re.M)
    assert source_in_image, f"{DRIVER_DOCKERFILE} does not copy libvgpu.so into a directory"
    installs = 0
    for ds in helm.find(objs, "DaemonSet"):
        for init in helm.pod_spec(ds).get("initContainers", []):
            assert init["command"][:3] == ["python", "-m", "isolation.install"]
            args = install.build_parser().parse_args(init["command"][3:])
            assert args.source == source_in_image.group(1)
            assert args.dest == _literal_env(_driver_container(ds))["TESSERA_HOST_LIB_DIR"]
            installs += 1
    assert installs >= 1


def test_webhook_env_is_what_the_webhook_parses(objs: list[helm.Obj]) -> None:
    from webhook import cli as webhook_cli

    deployment = helm.one(objs, "Deployment", "tessera-webhook")
    (container,) = helm.pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", "webhook", "serve"]
    env = _literal_env(container)
    # Every other TESSERA_* name is a flag of `serve`; the vendor settings are read at import.
    assert set(env) & WEBHOOK_SETTINGS == WEBHOOK_SETTINGS
    argv = ["serve"]
    for name, value in env.items():
        assert name.startswith("TESSERA_"), name
        if name not in WEBHOOK_SETTINGS:
            argv += ["--" + name.removeprefix("TESSERA_").lower().replace("_", "-"), value]
    args = webhook_cli.build_parser().parse_args(argv)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.port == ports["https"]
    enabled = [v.names.vendor for v in webhook_cli.enabled_vendors(args.vendors)]
    assert enabled == env["TESSERA_VENDORS"].split(",")
    assert args.core_policy == env["TESSERA_CORE_POLICY"]
    timeout = helm.one(objs, "MutatingWebhookConfiguration")["webhooks"][0]["timeoutSeconds"]
    assert 0 < args.api_deadline_seconds < timeout  # templates are ensured before the API server gives up
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert os.path.dirname(env["TESSERA_TLS_CERT_FILE"]) == mounts["tls"]
    assert os.path.dirname(env["TESSERA_TLS_KEY_FILE"]) == mounts["tls"]


def _webhook_converter(objs: list[helm.Obj]) -> Any:
    from webhook import cli as webhook_cli

    (container,) = helm.pod_spec(helm.one(objs, "Deployment", "tessera-webhook"))["containers"]
    argv = ["serve"]
    for name, value in _literal_env(container).items():
        if name not in WEBHOOK_SETTINGS:
            argv += ["--" + name.removeprefix("TESSERA_").lower().replace("_", "-"), value]
    return webhook_cli.converter_from_args(webhook_cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("which", ["default", "all"])
def test_one_sharing_policy_for_the_webhook_and_every_driver(
    which: str, default_objs: list[helm.Obj], all_objs: list[helm.Obj]
) -> None:
    """The chart's `policy` reaches the webhook (what it writes) and each driver (what it honours) alike."""
    objs = default_objs if which == "default" else all_objs
    converter = _webhook_converter(objs)
    values = VALUES["policy"] if which == "default" else yaml.safe_load(helm.ALL_OPTIONS.read_text())["policy"]
    assert converter.policy.core_limit_policy == values["coreLimitPolicy"]
    assert converter.policy.allow_high_priority == values["allowHighPriority"]
    assert converter.policy.allow_oversubscribe == values["allowOversubscribe"]
    assert converter.policy.allow_core_limit_disable == values["allowCoreLimitDisable"]
    drivers = helm.find(objs, "DaemonSet")
    assert drivers
    for ds in drivers:
        env = {**_literal_env(_driver_container(ds)), "NODE_NAME": "n"}
        assert driver_cli.settings_from_args([], env).policy == converter.policy


def test_the_webhook_protects_exactly_the_drivers_host_directories(all_objs: list[helm.Obj]) -> None:
    """The host paths the webhook refuses are the directories the drivers mount: one list, from the chart."""
    converter = _webhook_converter(all_objs)
    mounted = set()
    for ds in helm.find(all_objs, "DaemonSet"):
        s = driver_cli.settings_from_args([], {**_literal_env(_driver_container(ds)), "NODE_NAME": "n"})
        mounted |= {s.plugin_dir, s.registry_dir, s.cdi_dir, s.host_lib_dir}
        volumes = [v for v in helm.pod_spec(ds)["volumes"] if "hostPath" in v]
        host = {v["hostPath"]["path"] for v in volumes if not v["name"].startswith("backend-path-")}
        assert host == {s.plugin_dir, s.registry_dir, s.cdi_dir, s.host_lib_dir}
    assert set(converter.host_dirs) == mounted


def test_the_drivers_defaults_are_what_the_webhook_protects_without_the_chart() -> None:
    from webhook.convert import Converter

    converter = Converter(vendors.admission_vendors())
    expected = set()
    for vendor in vendors.admission_vendors():
        s = driver_cli.settings_from_args(
            ["--driver", vendor.names.vendor, "--node-name", "n", "--backend", "mock", "--mock-devices", "x"], {}
        )
        expected |= {s.plugin_dir, s.registry_dir, s.cdi_dir, s.host_lib_dir}
    assert set(converter.host_dirs) == expected


def test_webhook_paths_are_the_servers_routes(default_objs: list[helm.Obj]) -> None:
    from webhook.server import Webhook

    app = Webhook(converter=None, client=None).app()  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    hook = helm.one(default_objs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert ("POST", hook["clientConfig"]["service"]["path"]) in routes
    container = helm.pod_spec(helm.one(default_objs, "Deployment", "tessera-webhook"))["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert ("GET", container[probe]["httpGet"]["path"]) in routes


def test_dockerfiles_exist_for_the_chart_images() -> None:
    for name in ("webhook", "driver"):
        assert (helm.REPO / "docker" / f"{name}.Dockerfile").is_file()
    assert VALUES["webhook"]["image"]["repository"].endswith("/webhook")
    assert VALUES["driver"]["image"]["repository"].endswith("/driver")


def test_exporter_env_and_probes_are_what_the_exporter_serves(objs: list[helm.Obj]) -> None:
    from tessera_exporter import cli as exporter_cli
    from tessera_exporter.exporter import Exporter

    deployment = helm.one(objs, "Deployment", "tessera-exporter")
    assert deployment["spec"]["replicas"] == 1  # two would export every series twice
    (container,) = helm.pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", "tessera_exporter", "exporter"]
    assert container["image"].split("@")[0].split(":")[0].endswith("/webhook")  # the image that carries it
    argv = ["exporter"]
    for name, value in _literal_env(container).items():
        assert name.startswith("TESSERA_"), name
        argv += ["--" + name.removeprefix("TESSERA_").lower().replace("_", "-"), value]
    args = exporter_cli.build_parser().parse_args(argv)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.port == ports["metrics"]
    app = Exporter(kube=None).app()  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"
        assert ("GET", container[probe]["httpGet"]["path"]) in routes
    service = helm.one(objs, "Service", "tessera-exporter")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
