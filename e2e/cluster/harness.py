"""The local cluster: API server, webhook, drivers, controllers and kubelets, wired as on a real one.

* The API server stand-in runs in this process; ``kubeconfig`` points at it.
* The chart is rendered with helm and its DeviceClasses and Mutating/ValidatingWebhookConfigurations
  are applied as they are, except the ``caBundle``: the harness makes its own CA (``cryptography``)
  and serving certificate and registers the chart's webhook Service with the API server, which then
  calls the real webhook (``python -m webhook serve``, child processes: as many as the chart's
  ``webhook.replicas``, taking turns behind the Service) over HTTPS for every pod CREATE and every
  claim CREATE the configurations send.
* Per node, one vendor (:class:`NodeSpec`, ``nvidia`` unless it says otherwise): the kubelet stand-in
  (in this process) with the node labelled ``tessera.dev/<vendor>=true``, ``libvgpu.so`` and
  ``ld.so.preload`` installed into the node's host library directory with ``isolation.install`` where
  the chart's DaemonSet of that vendor installs them (its init container), and the vendor's real
  driver (``python -m dra_driver --driver <vendor> --backend mock``, a child process) with simulated
  devices and the env the chart gives that vendor's DaemonSet. On the nodes of vendors whose
  workloads use the CUDA driver API (NVIDIA, Iluvatar CoreX) containers get the fake CUDA driver
  (``isolation/build/fake``) and the node's simulated cards in their environment, as the vendor's
  container runtime would give them the real driver. The NVIDIA driver's watchdog reads the same
  fake ``libnvidia-ml.so.1`` (``--watchdog-nvml-library``), and the kubelet runs each container in a
  kubelet-like cgroup where the watchdog finds its pod (or, where no cgroup can be made, names it in
  a PID map the driver reads with the test-only ``--watchdog-pid-map``).
* The claim controller and the scheduler run in this process.
* The cluster exporter (``python -m tessera_exporter exporter``, a child process) when the chart runs
  one, with the chart's env; ``exporter_url`` is its address.
Every child writes its log under ``<state>/logs``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from e2e.apiserver import APIServer
from e2e.apiserver.kinds import kind_for_object
from e2e.controllers import ClaimController, Scheduler
from e2e.controllers.informer import cancel_all
from e2e.fakegpu import fake_driver_env
from e2e.kubelet import Kubelet
from kubeapi import KubeClient, KubeError, cluster_path
from vendors import UnknownVendorError, node_vendor
from vendors.base import DOMAIN

from . import tls
from .procs import Child, python

log = logging.getLogger("e2e.cluster")

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
RELEASE = "tessera"
NAMESPACE = "tessera-system"
WEBHOOK_SERVICE = "tessera-webhook"
DRIVER = "nvidia.tessera.dev"
"""The NVIDIA driver's name (the vendor of nodes that name none)."""
INVENTORY_REFRESH_SECONDS = 1.0
"""How often the harness's webhook reads the ResourceSlices (the chart's default is 30 s): pods asking
a percentage of a device's memory convert soon after a node publishes its devices."""
HEALTH_INTERVAL_SECONDS = 1.0
"""The drivers check device health every second (faults injected into the mock backend show at once)."""

FAKE_CUDA_VENDORS: Mapping[str, str] = {"nvidia": "NVIDIA_VISIBLE_DEVICES", "iluvatar": "IX_VISIBLE_DEVICES"}
"""Vendors whose workloads use the CUDA driver API (NVIDIA; Iluvatar CoreX implements it), with the
env their container runtime reads to choose the visible devices. Containers on their nodes get the
fake CUDA driver; it reads ``NVIDIA_VISIBLE_DEVICES``, so the kubelet copies the vendor's variable to it."""


class HarnessError(Exception):
    """The harness cannot start; the message says what is missing."""


def vendor_label(vendor: str) -> str:
    """The node label the chart's DaemonSet of ``vendor`` selects (``tessera.dev/<vendor>``)."""
    return f"{DOMAIN}/{vendor}"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    devices: str = ""
    """Simulated devices (``--mock-devices``); empty: the chart's ``vendors.<vendor>.mockDevices``."""
    labels: Mapping[str, str] = field(default_factory=dict)
    vendor: str = "nvidia"
    """The vendor whose driver runs on the node (one per node)."""

    @property
    def driver(self) -> str:
        return node_vendor(self.vendor).names.driver


def parse_node_spec(text: str, taken: Sequence[str] = ()) -> NodeSpec:
    """``[NAME=]VENDOR[:DEVICES]`` (``--node``): ``ascend:2x910B3``, ``gpu-a=nvidia:2xH200,1xA100``,
    ``hygon``. Without a name the node is ``<vendor>-<n>``, the first ``n`` not in ``taken``."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    vendor, _, devices = rest.partition(":")
    vendor, devices, name = vendor.strip().lower(), devices.strip(), name.strip()
    if not vendor:
        raise HarnessError(f"--node {text!r}: name a vendor, e.g. --node ascend:2x910B3")
    try:
        node_vendor(vendor)
    except UnknownVendorError as exc:
        raise HarnessError(f"--node {text!r}: {exc.args[0]}") from None
    if not name:
        n = 1
        while f"{vendor}-{n}" in taken:
            n += 1
        name = f"{vendor}-{n}"
    if name in taken:
        raise HarnessError(f"--node {text!r}: a node named {name} is already given")
    return NodeSpec(name, devices, vendor=vendor)


@dataclass
class Node:
    spec: NodeSpec
    root: str
    kubelet: Kubelet | None = None
    driver: Child | None = None
    fake_gpus: str = ""
    metrics_port: int = 0
    """The driver's ``/metrics`` port (the same across driver restarts)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def registry_dir(self) -> str:
        return self.path("plugins_registry")

    @property
    def vendor(self) -> str:
        return self.spec.vendor

    @property
    def driver_name(self) -> str:
        return self.spec.driver

    @property
    def plugin_dir(self) -> str:
        return self.path("plugins", self.driver_name)

    @property
    def cdi_dir(self) -> str:
        return self.path("cdi")

    @property
    def host_lib_dir(self) -> str:
        return self.path("tessera")

    @property
    def mock_faults(self) -> str:
        """The mock backend's fault control file (the driver's default, ``<plugin-dir>/mock-faults``)."""
        return os.path.join(self.plugin_dir, "mock-faults")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def helm_binary() -> str:
    local = REPO / ".tools" / "bin" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if found is None:
        raise HarnessError("helm is needed to render the chart: run `make setup` (it installs .tools/bin/helm)")
    return found


VALUES = REPO / "e2e" / "kind" / "values.yaml"


def render_chart(values: Mapping[str, Any] | None = None) -> list[Obj]:
    """The chart as the e2e clusters install it (``e2e/kind/values.yaml``), plus ``values``."""
    argv = [
        helm_binary(),
        "template",
        RELEASE,
        str(REPO / "charts" / "tessera"),
        "-n",
        NAMESPACE,
        "--api-versions",
        "resource.k8s.io/v1",
        "-f",
        str(VALUES),
    ]
    for key, value in (values or {}).items():
        argv += ["--set", f"{key}={value}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise HarnessError(f"helm template failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if isinstance(d, dict)]


def chart_objects(docs: Sequence[Obj], kind: str, component: str, vendor: str | None = None) -> list[Obj]:
    """The chart's objects of ``kind`` for ``component`` (and, given, the one of ``vendor``: the chart
    labels each vendor's DaemonSet and DeviceClass ``tessera.dev/vendor``)."""
    out = []
    for doc in docs:
        labels = (doc.get("metadata") or {}).get("labels") or {}
        if doc.get("kind") != kind or labels.get("app.kubernetes.io/component") != component:
            continue
        if vendor is not None and labels.get(f"{DOMAIN}/vendor") != vendor:
            continue
        out.append(doc)
    return out


def chart_env(docs: Sequence[Obj], kind: str, component: str, vendor: str | None = None) -> dict[str, str]:
    """The ``TESSERA_*`` settings the chart gives a component's container (plain values only; for the
    driver, ``vendor``'s DaemonSet); the harness passes them on so that its webhook and drivers run
    with the chart's configuration."""
    out: dict[str, str] = {}
    for doc in chart_objects(docs, kind, component, vendor):
        for container in (((doc.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
            for entry in container.get("env") or []:
                if str(entry.get("name", "")).startswith("TESSERA_") and "value" in entry:
                    out[str(entry["name"])] = str(entry["value"])
    return out


def chart_driver_enabled(docs: Sequence[Obj], vendor: str) -> bool:
    return bool(chart_objects(docs, "DaemonSet", "driver", vendor))


def chart_installs_library(docs: Sequence[Obj], vendor: str) -> bool:
    """Whether the chart's DaemonSet of ``vendor`` installs ``libvgpu.so`` (its init container)."""
    return any(
        (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("initContainers")
        for ds in chart_objects(docs, "DaemonSet", "driver", vendor)
    )


def simulated_devices(devices: str, node_name: str, vendor: str = "nvidia") -> list[Any]:
    """The devices the mock backend simulates on ``node_name`` (:class:`vendors.base.DeviceInfo`)."""
    from dra_driver.backends.mock import MockSpecError, discover

    node = node_vendor(vendor)
    try:
        return list(discover(devices, node.names, node.mock_models, node_name))
    except MockSpecError as exc:
        raise HarnessError(f"node {node_name} ({vendor}): {exc}") from None


def fake_gpus(devices: str, node_name: str, vendor: str = "nvidia") -> str:
    """``TESSERA_FAKE_GPUS`` for the cards the mock backend simulates on ``node_name`` (same UUIDs)."""
    cards = simulated_devices(devices, node_name, vendor)
    return ",".join(f"{c.uuid}={c.memory_bytes // (1024 * 1024)}m/{c.product_name}" for c in cards)


class Harness:
    def __init__(
        self,
        nodes: Sequence[NodeSpec] = (NodeSpec("node-1"),),
        *,
        state_dir: str | None = None,
        webhook: bool = True,
        child_log_level: str = "info",
        keep_state: bool = False,
        inventory_refresh: float = INVENTORY_REFRESH_SECONDS,
        progress: Callable[[str], None] | None = None,
        cgroups: bool = True,
    ) -> None:
        """``progress``: called with one line per start-up step (``python -m e2e.cluster up`` prints them)."""
        self.progress = progress or (lambda line: log.info("%s", line))
        self.node_specs = list(nodes)
        names = [n.name for n in self.node_specs]
        if len(set(names)) != len(names):
            raise HarnessError(f"node names must be distinct, got {names}")
        self.inventory_refresh = inventory_refresh
        self.cgroups = cgroups and os.environ.get("TESSERA_E2E_CGROUPS", "on") != "off"
        """Containers in kubelet-like cgroups (``TESSERA_E2E_CGROUPS=off`` or ``cgroups=False``: the
        kubelet's PID map instead, as where cgroups cannot be made)."""
        # short, under /tmp: Unix socket paths must stay under 108 bytes
        self.state = state_dir or tempfile.mkdtemp(prefix="tessera-e2e-", dir="/tmp")
        self.remove_state = state_dir is None and not keep_state
        self.with_webhook = webhook
        self.child_log_level = child_log_level
        self.api = APIServer()
        self.kubeconfig = os.path.join(self.state, "kubeconfig")
        self.kube: KubeClient | None = None
        self.nodes: dict[str, Node] = {}
        self.webhooks: list[Child] = []
        """One child per replica of the chart's webhook Deployment; the API server calls them in turn."""
        self.webhook_ports: list[int] = []
        self.exporter: Child | None = None
        self.exporter_port = 0
        self.tls: tls.ServingTLS | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.chart: list[Obj] = []

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Harness:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _check_prerequisites(self) -> None:
        build = REPO / "isolation" / "build"
        for needed in ("libvgpu.so", "fake/libcuda.so.1", "fake/libnvidia-ml.so.1", "tools/cuda-workload"):
            if not (build / needed).exists():
                raise HarnessError(f"{build / needed} is missing: run `make -C isolation` first")

    async def start(self) -> None:
        self._check_prerequisites()
        os.makedirs(os.path.join(self.state, "logs"), exist_ok=True)
        await self.api.start()
        self.api.write_kubeconfig(self.kubeconfig)
        self.progress(f"API server stand-in on {self.api.url}")
        self.kube = await KubeClient.connect(self.kubeconfig, timeout=15)
        await self.kube.create(
            cluster_path("v1", "namespaces"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        self.chart = await asyncio.to_thread(render_chart)
        self.node_specs = [self._resolved(spec) for spec in self.node_specs]  # errors before anything starts
        self.progress("chart rendered with helm")
        for doc in self.chart:
            if doc.get("kind") == "DeviceClass":
                await self.apply(doc)
        if self.with_webhook:
            self.tls = tls.generate(
                os.path.join(self.state, "tls"),
                [f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc", f"{WEBHOOK_SERVICE}.{NAMESPACE}"],
                ["127.0.0.1"],
            )
            await self.start_webhook()
            for doc in self.chart:
                if doc.get("kind") in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                    for hook in doc.get("webhooks") or []:
                        hook["clientConfig"]["caBundle"] = base64.b64encode(self.tls.ca_pem).decode()
                    await self.apply(doc)
        self._tasks = [
            asyncio.create_task(ClaimController(self.kube).run()),
            asyncio.create_task(Scheduler(self.kube, retry_seconds=2.0).run()),
        ]
        # nodes start side by side (each driver is a process of its own); a failure cancels the others
        try:
            async with asyncio.TaskGroup() as group:
                for spec in self.node_specs:
                    group.create_task(self.add_node(spec))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        if self.with_webhook:
            devices = await self.wait_webhook_inventory()
            self.progress(f"the webhook sees the {devices} published devices")
        if chart_objects(self.chart, "Deployment", "exporter"):
            await self.start_exporter()

    async def stop(self) -> None:
        """Stop everything this harness started, whatever state it is in (a start-up interrupted at any
        step included): the kubelets' containers, the drivers, the webhook, the exporter, then the state
        directory. Each step runs even when one before it failed."""
        try:
            for node in list(self.nodes.values()):
                if node.kubelet is not None:
                    with contextlib.suppress(Exception):
                        await node.kubelet.stop()
            for node in list(self.nodes.values()):
                if node.driver is not None:
                    with contextlib.suppress(Exception):
                        await node.driver.stop()
            for child in (*self.webhooks, self.exporter):
                if child is not None:
                    with contextlib.suppress(Exception):
                        await child.stop()
            with contextlib.suppress(Exception):
                await cancel_all(self._tasks)
            if self.kube is not None:
                for node in self.nodes.values():
                    if node.kubelet is not None:
                        with contextlib.suppress(Exception):
                            await node.kubelet.kube.close()
                with contextlib.suppress(Exception):
                    await self.kube.close()
                self.kube = None
            with contextlib.suppress(Exception):
                await self.api.stop()
        finally:
            if self.remove_state:
                await asyncio.to_thread(shutil.rmtree, self.state, True)

    # ------------------------------------------------------------------ webhook
    @property
    def webhook_replicas(self) -> int:
        """``spec.replicas`` of the chart's webhook Deployment."""
        (deployment,) = chart_objects(self.chart, "Deployment", "webhook")
        return max(1, int((deployment.get("spec") or {}).get("replicas") or 1))

    async def start_webhook(self) -> None:
        """Start every replica of the webhook and wait until each is ready."""
        assert self.tls is not None
        replicas = self.webhook_replicas
        while len(self.webhook_ports) < replicas:
            self.webhook_ports.append(free_port())
        self.webhooks = [self._webhook_child(i, port) for i, port in enumerate(self.webhook_ports[:replicas])]
        for child in self.webhooks:
            await child.start()
        self.api.webhooks.services[(NAMESPACE, WEBHOOK_SERVICE)] = [("127.0.0.1", p) for p in self.webhook_ports]
        context = ssl.create_default_context(cafile=self.tls.ca_file)
        deadline = asyncio.get_running_loop().time() + 60
        async with aiohttp.ClientSession() as http:
            for child, port in zip(self.webhooks, self.webhook_ports, strict=True):
                while True:
                    child.check()
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get(
                            f"https://127.0.0.1:{port}/readyz",
                            ssl=context,
                            server_hostname=f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc",
                        ) as resp:
                            if resp.status == 200:
                                break
                    if asyncio.get_running_loop().time() > deadline:
                        raise HarnessError(f"the webhook did not become ready within 60s; see {child.log_path}")
                    await asyncio.sleep(0.1)
                self.progress(f"webhook ready on https://127.0.0.1:{port} (python -m webhook serve)")
        if self.nodes:
            await self.wait_webhook_inventory()

    def _webhook_child(self, index: int, port: int) -> Child:
        assert self.tls is not None
        suffix = f"-{index + 1}" if index else ""
        return Child(
            f"webhook{suffix}",
            [
                python(),
                "-m",
                "webhook",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--tls-cert-file",
                self.tls.cert_file,
                "--tls-key-file",
                self.tls.key_file,
                "--kubeconfig",
                self.kubeconfig,
                "--log-format",
                "text",
                "--log-level",
                self.child_log_level,
            ],
            os.path.join(self.state, "logs", f"webhook{suffix}.log"),
            env={
                **os.environ,
                **chart_env(self.chart, "Deployment", "webhook"),
                "TESSERA_INVENTORY_REFRESH_SECONDS": str(self.inventory_refresh),
            },
        )

    async def webhook_metrics(self) -> list[str]:
        """The ``/metrics`` page of each webhook replica."""
        assert self.tls is not None
        context = ssl.create_default_context(cafile=self.tls.ca_file)
        pages = []
        async with aiohttp.ClientSession() as http:
            for port in self.webhook_ports[: len(self.webhooks)]:
                async with http.get(
                    f"https://127.0.0.1:{port}/metrics",
                    ssl=context,
                    server_hostname=f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc",
                ) as resp:
                    pages.append(await resp.text())
        return pages

    async def wait_webhook_inventory(self, timeout: float = 30.0) -> int:
        """Wait until every webhook replica's inventory (its ``tessera_webhook_inventory_devices`` metric)
        holds every published device, so that memory percentages convert; the device count."""
        assert self.tls is not None and self.webhooks and self.kube is not None
        deadline = asyncio.get_running_loop().time() + timeout
        seen: list[int] = []
        while True:
            for child in self.webhooks:
                child.check()
            slices = (await self.kube.list(cluster_path("resource.k8s.io/v1", "resourceslices"))).get("items") or []
            published = published_devices(slices)
            with contextlib.suppress(aiohttp.ClientError, OSError):
                seen = [inventory_metric(page) for page in await self.webhook_metrics()]
            if seen and all(n == published for n in seen):
                return published
            if asyncio.get_running_loop().time() > deadline:
                raise HarnessError(
                    f"the webhooks' inventories hold {seen} devices, {published} are published, after "
                    f"{timeout:g}s; see {', '.join(c.log_path for c in self.webhooks)}"
                )
            await asyncio.sleep(0.1)

    async def stop_webhook(self) -> None:
        """Stop the webhook replicas; their Service then has no endpoint, as when a cluster's webhook pods
        are gone."""
        for child in self.webhooks:
            await child.stop()
        if (NAMESPACE, WEBHOOK_SERVICE) in self.api.webhooks.services:
            self.api.webhooks.services[(NAMESPACE, WEBHOOK_SERVICE)] = None

    # ------------------------------------------------------------------ cluster exporter
    @property
    def exporter_url(self) -> str:
        return f"http://127.0.0.1:{self.exporter_port}"

    async def start_exporter(self, timeout: float = 60.0) -> None:
        """The cluster exporter as the chart runs it; returns once it has listed everything (/readyz)."""
        self.exporter_port = self.exporter_port or free_port()
        self.exporter = Child(
            "exporter",
            [
                python(),
                "-m",
                "tessera_exporter",
                "exporter",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.exporter_port),
                "--kubeconfig",
                self.kubeconfig,
                "--log-format",
                "text",
                "--log-level",
                self.child_log_level,
            ],
            os.path.join(self.state, "logs", "exporter.log"),
            env={**os.environ, **chart_env(self.chart, "Deployment", "exporter")},
        )
        await self.exporter.start()
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                self.exporter.check()
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.exporter_url}/readyz") as resp:
                        if resp.status == 200:
                            break
                if asyncio.get_running_loop().time() > deadline:
                    raise HarnessError(
                        f"the exporter did not become ready within {timeout:g}s; see {self.exporter.log_path}"
                    )
                await asyncio.sleep(0.1)
        self.progress(f"cluster exporter ready on {self.exporter_url} (python -m tessera_exporter)")

    async def exporter_metrics(self) -> str:
        """One scrape of the cluster exporter's /metrics."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.exporter_url}/metrics") as resp:
            resp.raise_for_status()
            return await resp.text()

    # ------------------------------------------------------------------ nodes
    async def add_node(self, spec: NodeSpec) -> Node:
        from isolation.install import install

        if spec.name in self.nodes:
            raise HarnessError(f"the harness already has a node named {spec.name}")
        spec = self._resolved(spec)
        node = Node(spec, os.path.join(self.state, "nodes", spec.name), metrics_port=free_port())
        self.nodes[spec.name] = node
        for directory in (node.registry_dir, node.plugin_dir, node.cdi_dir, node.host_lib_dir):
            os.makedirs(directory, exist_ok=True)
        build = REPO / "isolation" / "build"
        if chart_installs_library(self.chart, spec.vendor):
            await asyncio.to_thread(install, str(build), node.host_lib_dir)
        container_env: dict[str, str] = {}
        aliases: dict[str, str] = {}
        if spec.vendor in FAKE_CUDA_VENDORS:
            node.fake_gpus = fake_gpus(spec.devices, spec.name, spec.vendor)
            container_env = fake_driver_env(node.path("fake-gpu.state"), node.fake_gpus) | {
                "PATH": f"{build / 'tools'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            }
            if FAKE_CUDA_VENDORS[spec.vendor] != "NVIDIA_VISIBLE_DEVICES":
                aliases[FAKE_CUDA_VENDORS[spec.vendor]] = "NVIDIA_VISIBLE_DEVICES"
        kube = await KubeClient.connect(self.kubeconfig, timeout=15)
        node.kubelet = Kubelet(
            kube,
            spec.name,
            root=node.path("kubelet"),
            registry_dir=node.registry_dir,
            cdi_dir=node.cdi_dir,
            container_env=container_env,
            env_aliases=aliases,
            labels={vendor_label(spec.vendor): "true", **spec.labels},
            cgroups=self.cgroups,
        )
        await node.kubelet.start()
        await self.start_driver(spec.name)
        return node

    def _resolved(self, spec: NodeSpec) -> NodeSpec:
        """``spec`` with its devices (the chart's mockDevices when it names none), checked."""
        if not chart_driver_enabled(self.chart, spec.vendor):
            raise HarnessError(
                f"node {spec.name} is a {spec.vendor} node, but the chart rendered with {VALUES} runs no "
                f"{spec.vendor} driver: set vendors.{spec.vendor}.enabled (and backend: mock) there"
            )
        if not spec.devices:
            devices = chart_env(self.chart, "DaemonSet", "driver", spec.vendor).get("TESSERA_MOCK_DEVICES", "")
            if not devices:
                raise HarnessError(
                    f"node {spec.name}: name its simulated devices "
                    f"(the chart sets no vendors.{spec.vendor}.mockDevices)"
                )
            spec = dataclasses.replace(spec, devices=devices)
        simulated_devices(spec.devices, spec.name, spec.vendor)
        return spec

    def watchdog_args(self, node: Node) -> tuple[list[str], dict[str, str]]:
        """Flags and env that let the node's driver watch the fake GPUs (NVIDIA nodes): the fake NVML
        and state its containers use, and the kubelet's PID map where it has no cgroups."""
        if node.vendor != "nvidia" or not node.fake_gpus:
            return [], {}
        args = ["--watchdog-nvml-library", str(REPO / "isolation" / "build" / "fake" / "libnvidia-ml.so.1")]
        if node.kubelet is not None and node.kubelet.pid_map is not None:
            args += ["--watchdog-pid-map", node.kubelet.pid_map]
        return args, {"TESSERA_FAKE_STATE": node.path("fake-gpu.state"), "TESSERA_FAKE_GPUS": node.fake_gpus}

    async def start_driver(self, node_name: str, *, wait: bool = True) -> None:
        node = self.nodes[node_name]
        assert node.kubelet is not None
        # a killed driver's registration stays (its socket file is left behind): wait for a new one
        stale = node.kubelet.plugins.registration(node.driver_name)
        watchdog_args, watchdog_env = self.watchdog_args(node)
        node.driver = Child(
            f"driver on {node_name}",
            [
                python(),
                "-m",
                "dra_driver",
                "--driver",
                node.vendor,
                "--backend",
                "mock",
                "--mock-devices",
                node.spec.devices,
                "--node-name",
                node_name,
                "--kubeconfig",
                self.kubeconfig,
                "--plugin-dir",
                node.plugin_dir,
                "--registry-dir",
                node.registry_dir,
                "--cdi-dir",
                node.cdi_dir,
                "--host-lib-dir",
                node.host_lib_dir,
                "--metrics-port",
                str(node.metrics_port),
                "--listen-address",
                "127.0.0.1",
                "--healthz-port",
                "0",
                "--health-interval",
                str(HEALTH_INTERVAL_SECONDS),
                "--log-format",
                "text",
                *watchdog_args,
            ],
            os.path.join(self.state, "logs", f"driver-{node_name}.log"),
            env={**os.environ, **chart_env(self.chart, "DaemonSet", "driver", node.vendor), **watchdog_env},
        )
        await node.driver.start()
        if wait:
            await self.wait_driver(node_name, stale=stale)

    async def wait_driver(
        self, node_name: str, timeout: float = 60.0, *, stale: tuple[str, tuple[int, int]] | None = None
    ) -> None:
        """Until the driver is registered with the kubelet (not from ``stale``, an earlier driver's
        registration) and its slices are published."""
        node = self.nodes[node_name]
        assert node.kubelet is not None and node.driver is not None and self.kube is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            node.driver.check()
            registration = node.kubelet.plugins.registration(node.driver_name)
            registered = registration is not None and registration != stale
            slices = (
                await self.kube.list(
                    cluster_path("resource.k8s.io/v1", "resourceslices"),
                    fieldSelector=f"spec.nodeName={node_name},spec.driver={node.driver_name}",
                )
            ).get("items") or []
            if registered and slices:
                devices = sum(len((s.get("spec") or {}).get("devices") or []) for s in slices)
                self.progress(
                    f"node {node_name}: {node.vendor} driver registered, "
                    f"{devices} devices ({node.spec.devices}) published"
                )
                return
            if asyncio.get_running_loop().time() > deadline:
                raise HarnessError(
                    f"the driver on {node_name} did not register and publish within {timeout:g}s; "
                    f"see {node.driver.log_path}"
                )
            await asyncio.sleep(0.1)

    async def stop_driver(self, node_name: str, *, kill: bool = False) -> None:
        import signal

        node = self.nodes[node_name]
        if node.driver is not None:
            await node.driver.stop(sig=signal.SIGKILL if kill else signal.SIGTERM)

    async def restart_driver(self, node_name: str, *, kill: bool = False) -> None:
        await self.stop_driver(node_name, kill=kill)
        await self.start_driver(node_name)

    # ------------------------------------------------------------------ objects
    async def apply(self, doc: Obj, namespace: str = "default") -> Obj:
        """Create ``doc`` (namespaced kinds in ``namespace`` unless it names one)."""
        assert self.kube is not None
        kind = kind_for_object(str(doc.get("apiVersion")), str(doc.get("kind")))
        if kind is None:
            raise HarnessError(f"the harness does not serve {doc.get('apiVersion')}/{doc.get('kind')}")
        ns = (doc.get("metadata") or {}).get("namespace") or namespace
        return await self.kube.create(kind.collection_path(ns if kind.namespaced else None), doc)


def published_devices(slices: Sequence[Obj]) -> int:
    """Devices of the slices of each pool's newest generation (what the scheduler and the webhook count)."""
    newest: dict[tuple[str, str], int] = {}
    for s in slices:
        spec = s.get("spec") or {}
        key = (str(spec.get("driver")), str((spec.get("pool") or {}).get("name")))
        newest[key] = max(newest.get(key, 0), int((spec.get("pool") or {}).get("generation") or 0))
    count = 0
    for s in slices:
        spec = s.get("spec") or {}
        pool = spec.get("pool") or {}
        if int(pool.get("generation") or 0) == newest[(str(spec.get("driver")), str(pool.get("name")))]:
            count += len(spec.get("devices") or [])
    return count


def inventory_metric(text: str) -> int:
    """``tessera_webhook_inventory_devices`` from the webhook's Prometheus text; -1 when absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "tessera_webhook_inventory_devices":
            return int(float(value))
    return -1


async def wait_for(check: Any, *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with contextlib.suppress(KubeError):
            result = await check()
            if result:
                return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
