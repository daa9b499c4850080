"""Command line of ``python -m dra_driver``: every flag ``--foo-bar`` also reads ``TESSERA_FOO_BAR``.

The flag wins over the env var, the env var over the default. ``--node-name`` also reads
``NODE_NAME`` (the DaemonSet sets it from ``spec.nodeName``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import vendors
from tessera_common.flags import parse_bool
from vendors.base import (
    CORE_LIMIT_POLICIES,
    DEFAULT_CDI_DIR,
    DEFAULT_HOST_LIB_DIR,
    DEFAULT_KUBELET_DIR,
    DEFAULT_SPLIT_COUNT,
    SharingPolicy,
    plugin_dir,
    registry_dir,
)

from . import faults
from .prepare import FAILPOINTS
from .watchdog import Tolerance, WatchdogConfigError

ENV_PREFIX = "TESSERA_"
FAILPOINT_ENV = "TESSERA_FAILPOINT"
MAX_SOCKET_PATH = 107


class ConfigError(ValueError):
    """Flags or env vars that cannot work together; the message says which and why."""


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _env(environ: Mapping[str, str], flag: str, *aliases: str) -> str | None:
    for name in (env_name(flag), *aliases):
        if name in environ:
            return environ[name]
    return None


def _bool(value: str | None, flag: str) -> bool:
    if value is None:
        return False
    try:
        return parse_bool(value)
    except ValueError:
        raise ConfigError(f"{env_name(flag)}={value!r}: expected true or false") from None


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser; defaults come from ``environ`` (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(
        prog="python -m dra_driver",
        description=(
            "Tessera DRA kubelet plugin: publishes this node's accelerators as shareable ResourceSlice devices and "
            "prepares allocated ResourceClaims (CDI spec with memory and core limits for libvgpu). Every flag "
            "--foo-bar can also be set with the env var TESSERA_FOO_BAR; the flag wins."
        ),
        epilog=(
            f"Test only: {FAILPOINT_ENV}=<step> makes the plugin kill itself (SIGKILL) right after that step of "
            f"prepare/unprepare, to prove recovery; steps: {', '.join(FAILPOINTS)}. Never set it in production."
        ),
    )

    def add(flag: str, *, help: str, default: str | None = None, aliases: Sequence[str] = (), **kw: object) -> None:
        value = _env(env, flag, *aliases)
        extra = f" [env {env_name(flag)}{''.join(', ' + a for a in aliases)}]"
        p.add_argument(flag, default=value if value is not None else default, help=help + extra, **kw)  # type: ignore[arg-type]

    add("--driver", default="nvidia", help="vendor short name (nvidia) or DRA driver name (nvidia.tessera.dev)")
    add(
        "--backend",
        help="device discovery: 'mock' or the vendor's real backend (nvml for NVIDIA); default: the real one",
    )
    add(
        "--mock-devices",
        help="simulated devices for --backend mock: a short form such as 4xH200 or 2xH100,1xA100, or a YAML/JSON file",
    )
    add("--node-name", aliases=("NODE_NAME",), help="name of this node (required; the pool and slice owner)")
    add("--kubeconfig", help="kubeconfig file; in-cluster service account config when absent")
    add(
        "--plugin-dir",
        help=f"DRA socket and checkpoint directory; default {plugin_dir('<driver name>')}",
    )
    add(
        "--registry-dir",
        default=registry_dir(DEFAULT_KUBELET_DIR),
        help="kubelet plugin registration directory (the registration socket goes here)",
    )
    add("--cdi-dir", default=DEFAULT_CDI_DIR, help="directory for the per-claim CDI specs (host path)")
    add(
        "--host-lib-dir",
        default=DEFAULT_HOST_LIB_DIR,
        help="host directory holding libvgpu.so, ld.so.preload, claims/<uid>/ and node/",
    )
    add("--split-count", default=str(DEFAULT_SPLIT_COUNT), type=int, help="shares per device (tasks per card)")
    add("--metrics-port", default="9400", type=int, help="Prometheus /metrics port; 0 turns it off")
    add("--healthz-port", default="51515", type=int, help="gRPC health (liveness) port; 0 turns it off")
    add("--listen-address", default="0.0.0.0", help="address the metrics and health servers listen on")
    add("--log-format", default="json", choices=["json", "text"], help="log line format")
    add("--api-timeout", default="10", type=float, help="seconds to wait for one API server call")
    add(
        "--slice-resync",
        default="60",
        type=float,
        help="seconds between full ResourceSlice checks (changes are also watched)",
    )
    add(
        "--health-interval",
        default="10",
        type=float,
        help="seconds between device health checks streamed to the kubelet",
    )
    add(
        "--mock-faults",
        help="fault control file of the mock backend (lines '<device> <fault> [<xid>]', e.g. 'gpu-1 xid 79'); "
        "default <plugin-dir>/mock-faults",
    )
    add(
        "--unhealthy-taint",
        default=faults.NO_SCHEDULE,
        choices=list(faults.EFFECTS),
        help="taint effect on an unhealthy device in the ResourceSlice (XID, ECC, vendor tool); off: no taint",
    )
    add(
        "--device-lost-taint",
        default=faults.NO_EXECUTE,
        choices=list(faults.EFFECTS),
        help="taint effect on a lost device (fallen off the bus, gone from discovery); off: no taint",
    )
    add(
        "--ignored-xids",
        default="",
        help="XIDs that leave a GPU healthy besides the application errors 13,31,43,45,68 (comma list)",
    )
    add(
        "--watchdog",
        default="kill",
        choices=["kill", "report", "off"],
        help="node-side check of each container's real device memory (NVML) against its limit: kill the "
        "processes over it and record an Event, only report (Event and metric), or off",
    )
    add("--watchdog-period", default="5", type=float, help="seconds between watchdog scans")
    add(
        "--watchdog-tolerance",
        default="512Mi",
        help="how far over its limit a container may go before the watchdog acts: a quantity (512Mi) or a "
        "percentage of the limit (10%%); NVML also counts each process's CUDA context, which libvgpu does not",
    )
    add(
        "--watchdog-nvml-library",
        help="libnvidia-ml.so.1 the watchdog reads (default: the node's); with --backend mock the fake NVML of "
        "the tests, without which the mock backend runs no watchdog",
    )
    add(
        "--watchdog-pid-map",
        help="TEST ONLY: a JSON file {pid: {podUID, containerID}} the harness kubelet writes when it cannot "
        "create cgroups; never set it on a real node",
    )
    add(
        "--core-policy",
        default="default",
        choices=list(CORE_LIMIT_POLICIES),
        help="the cluster's core limit policy: what a share gets when no config names one, and the loosest "
        "a claim's own config may name",
    )
    policy_help = {
        "--allow-high-priority": ("true", "claims may ask for task priority 0 (high)"),
        "--allow-oversubscribe": ("false", "claims may ask for oversubscribe: true"),
        "--allow-core-limit-disable": ("false", "claims may ask for coreLimitPolicy: disable"),
    }
    for flag, (default, text) in policy_help.items():
        p.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=_bool(_env(env, flag) or default, flag),
            help=f"{text}; config from a DeviceClass is honoured whatever this says (default {default}) "
            f"[env {env_name(flag)}]",
        )
    hami = _env(env, "--hami-metrics")
    p.add_argument(
        "--hami-metrics",
        action=argparse.BooleanOptionalAction,
        default=_bool(hami, "--hami-metrics"),
        help="also export the names of HAMi's vGPU monitor (hami_vgpu_memory_used_bytes, hami_host_gpu_*, ...) "
        f"[env {env_name('--hami-metrics')}]",
    )
    return p


@dataclass(frozen=True)
class Settings:
    driver: str
    """The DRA driver name (``nvidia.tessera.dev``)."""
    vendor: str
    backend: str
    mock_devices: str | None
    node_name: str
    kubeconfig: str | None
    plugin_dir: str
    registry_dir: str
    cdi_dir: str
    host_lib_dir: str
    split_count: int
    metrics_port: int
    healthz_port: int
    listen_address: str
    log_format: str
    api_timeout: float
    slice_resync: float
    health_interval: float
    hami_metrics: bool
    failpoint: str | None = None
    mock_faults: str = ""
    """The mock backend's fault control file."""
    unhealthy_taint: str = faults.NO_SCHEDULE
    device_lost_taint: str = faults.NO_EXECUTE
    ignored_xids: frozenset[int] = frozenset()
    watchdog: str = "kill"
    """``kill``, ``report`` or ``off``."""
    watchdog_period: float = 5.0
    watchdog_tolerance: str = "512Mi"
    watchdog_nvml_library: str | None = None
    watchdog_pid_map: str | None = None
    policy: SharingPolicy = field(default_factory=SharingPolicy)
    """The cluster's sharing policy: which loosening settings a claim's own config may ask for."""

    @property
    def dra_socket(self) -> str:
        return os.path.join(self.plugin_dir, "dra.sock")

    @property
    def registration_socket(self) -> str:
        return os.path.join(self.registry_dir, f"{self.driver}-reg.sock")

    @property
    def checkpoint_dir(self) -> str:
        """The checkpoint: one record per prepared claim, ``<plugin-dir>/checkpoint/<uid>.json``."""
        return os.path.join(self.plugin_dir, "checkpoint")

    @property
    def checkpoint_path(self) -> str:
        """Where the checkpoint lives (kept for callers of the first layout; same as :attr:`checkpoint_dir`)."""
        return self.checkpoint_dir


def settings_from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse and check flags; :class:`ConfigError` says what is wrong."""
    env = os.environ if environ is None else environ
    ns = build_parser(env).parse_args(argv)
    try:
        vendor = vendors.node_vendor(ns.driver)
    except vendors.UnknownVendorError as exc:
        raise ConfigError(str(exc.args[0])) from None
    names = vendor.names
    backend = ns.backend or vendor.real_backend
    if backend not in ("mock", vendor.real_backend):
        raise ConfigError(f"--backend {backend!r}: choose 'mock' or {vendor.real_backend!r} for {names.vendor}")
    if backend == "mock" and not ns.mock_devices:
        raise ConfigError("--backend mock needs --mock-devices, e.g. --mock-devices 4xH200")
    if not ns.node_name:
        raise ConfigError("--node-name (or NODE_NAME) is required")
    if not 1 <= ns.split_count <= 1000:
        raise ConfigError(f"--split-count must be between 1 and 1000, got {ns.split_count}")
    for flag, port in (("--metrics-port", ns.metrics_port), ("--healthz-port", ns.healthz_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{flag} must be between 0 and 65535, got {port}")
    if ns.api_timeout <= 0 or ns.slice_resync <= 0 or ns.health_interval <= 0 or ns.watchdog_period <= 0:
        raise ConfigError("--api-timeout, --slice-resync, --health-interval and --watchdog-period must be positive")
    try:
        Tolerance.parse(ns.watchdog_tolerance)
    except WatchdogConfigError as exc:
        raise ConfigError(str(exc)) from None
    if ns.watchdog not in ("kill", "report", "off"):
        raise ConfigError(f"--watchdog must be kill, report or off, got {ns.watchdog!r}")
    if ns.log_format not in ("json", "text"):
        raise ConfigError(f"--log-format must be json or text, got {ns.log_format!r}")
    for flag, effect in (("--unhealthy-taint", ns.unhealthy_taint), ("--device-lost-taint", ns.device_lost_taint)):
        if effect not in faults.EFFECTS:
            raise ConfigError(f"{flag} must be one of {', '.join(faults.EFFECTS)}, got {effect!r}")
    try:
        ignored_xids = faults.parse_xids(ns.ignored_xids or "")
    except ValueError as exc:
        raise ConfigError(f"--ignored-xids: {exc}") from None
    try:
        policy = SharingPolicy(
            core_limit_policy=ns.core_policy,
            allow_high_priority=ns.allow_high_priority,
            allow_oversubscribe=ns.allow_oversubscribe,
            allow_core_limit_disable=ns.allow_core_limit_disable,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    failpoint = env.get(FAILPOINT_ENV) or None
    if failpoint is not None and failpoint not in FAILPOINTS:
        raise ConfigError(f"{FAILPOINT_ENV}={failpoint!r}: known steps are {', '.join(FAILPOINTS)}")
    plugin_directory = os.path.abspath(ns.plugin_dir or plugin_dir(names.driver))
    settings = Settings(
        driver=names.driver,
        vendor=names.vendor,
        backend=backend,
        mock_devices=ns.mock_devices,
        node_name=ns.node_name,
        kubeconfig=ns.kubeconfig or None,
        plugin_dir=plugin_directory,
        registry_dir=os.path.abspath(ns.registry_dir),
        cdi_dir=os.path.abspath(ns.cdi_dir),
        host_lib_dir=os.path.abspath(ns.host_lib_dir),
        split_count=ns.split_count,
        metrics_port=ns.metrics_port,
        healthz_port=ns.healthz_port,
        listen_address=ns.listen_address,
        log_format=ns.log_format,
        api_timeout=ns.api_timeout,
        slice_resync=ns.slice_resync,
        health_interval=ns.health_interval,
        hami_metrics=ns.hami_metrics,
        failpoint=failpoint,
        mock_faults=os.path.abspath(ns.mock_faults or os.path.join(plugin_directory, "mock-faults")),
        unhealthy_taint=ns.unhealthy_taint,
        device_lost_taint=ns.device_lost_taint,
        ignored_xids=ignored_xids,
        watchdog=ns.watchdog,
        watchdog_period=ns.watchdog_period,
        watchdog_tolerance=ns.watchdog_tolerance,
        watchdog_nvml_library=os.path.abspath(ns.watchdog_nvml_library) if ns.watchdog_nvml_library else None,
        watchdog_pid_map=os.path.abspath(ns.watchdog_pid_map) if ns.watchdog_pid_map else None,
        policy=policy,
    )
    for sock in (settings.dra_socket, settings.registration_socket):
        if len(sock.encode()) > MAX_SOCKET_PATH:
            raise ConfigError(f"socket path {sock} is longer than {MAX_SOCKET_PATH} bytes; use a shorter directory")
    return settings
