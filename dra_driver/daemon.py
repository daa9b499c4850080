"""Wiring: discovery, checkpoint, the two sockets, the slice publisher, health and metrics.

Start order follows the kubelet's expectations: the DRA socket, the metrics and liveness endpoints
serve before the registration socket appears (the kubelet calls the DRA socket as soon as it
registers us, and anything that waits for the registration finds the driver fully up); on SIGTERM the
registration socket goes first, then the DRA socket, and both files are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
from collections.abc import Mapping
from typing import IO, Any

import grpc
from aiohttp import web

import vendors
from kubeapi import KubeClient
from tessera_common import files as fsutil
from tessera_common.tasks import cancel_and_wait
from vendors.base import DeviceInfo, NodeVendor

from . import backends, health, plugin, registration
from .checkpoint import Checkpoint, CheckpointError
from .claims import pod_refs
from .claimstatus import ClaimStatusWriter
from .cli import Settings
from .events import NORMAL, WARNING, EventRecorder, Target
from .metrics import DeviceHealthFigures, DriverMetrics
from .metrics import serve as serve_metrics
from .occupancy import OccupancyTracker
from .podmap import OwnerCache
from .prepare import Preparer
from .proto import drahealth_v1alpha1_pb2 as health_pb
from .slices import SlicePublisher
from .watchdog import Tolerance, Watchdog

log = logging.getLogger("dra_driver")

OCCUPANCY_START_WAIT_S = 3.0
"""How long start-up waits for the first lists of claims and slices, so that the first slice write
already carries the occupancy (else it goes out without, and the next write adds it)."""


class StartupError(RuntimeError):
    """The driver cannot start; the message says what to fix."""


class Driver:
    """One running plugin instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.vendor: NodeVendor = vendors.node_vendor(settings.driver)
        self.names = self.vendor.names
        self.metrics = DriverMetrics(self.names, settings.node_name, hami=settings.hami_metrics)
        self.devices: list[DeviceInfo] = []
        self.client: KubeClient | None = None
        self.checkpoint: Checkpoint | None = None
        self.preparer: Preparer | None = None
        self.publisher: SlicePublisher | None = None
        self.occupancy: OccupancyTracker | None = None
        self.monitor: health.DeviceHealthMonitor | None = None
        self.events: EventRecorder | None = None
        self.status_writer: ClaimStatusWriter | None = None
        self.watchdog: Watchdog | None = None
        self._dra_server: grpc.aio.Server | None = None
        self._reg_server: grpc.aio.Server | None = None
        self._live_server: grpc.aio.Server | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._lock_file: IO[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[str] = []
        self._stopped = asyncio.Event()

    # -- start ----------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        for directory in (s.plugin_dir, s.registry_dir, s.cdi_dir, os.path.join(s.host_lib_dir, "claims")):
            os.makedirs(directory, exist_ok=True)
        fsutil.make_shared_dir(os.path.join(s.host_lib_dir, "node"))
        self._take_lock()
        try:
            self.devices = await backends.discover(
                self.vendor, s.backend, node_name=s.node_name, mock_devices=s.mock_devices
            )
        except backends.BackendError as exc:
            raise StartupError(str(exc)) from exc
        self.metrics.devices = self.devices
        log.info(
            "devices discovered",
            extra={
                "node": s.node_name,
                "backend": s.backend,
                "devices": [f"{self.names.device_name(d.index)}:{d.model}:{d.uuid}" for d in self.devices],
            },
        )
        try:
            self.checkpoint = Checkpoint.load(s.checkpoint_dir, s.driver)
        except CheckpointError as exc:
            raise StartupError(str(exc)) from exc
        fsutil.remove_temp_files(s.cdi_dir)
        if self.checkpoint.previous_boot_id and self.checkpoint.previous_boot_id != self.checkpoint.boot_id:
            log.info("node rebooted since the checkpoint was written", extra={"claims": len(self.checkpoint)})
        try:
            self.client = await KubeClient.connect(s.kubeconfig, timeout=s.api_timeout)
        except Exception as exc:
            raise StartupError(
                f"cannot configure the Kubernetes client ({exc}); pass --kubeconfig or run in a pod with a "
                "service account"
            ) from exc
        self.events = EventRecorder(self.client, s.node_name)
        self.status_writer = ClaimStatusWriter(self.client, self.names, s.node_name, timeout=s.api_timeout)
        self.preparer = Preparer(
            vendor=self.vendor,
            node_name=s.node_name,
            devices=self.devices,
            client=self.client,
            checkpoint=self.checkpoint,
            cdi_dir=s.cdi_dir,
            host_lib_dir=s.host_lib_dir,
            metrics=self.metrics,
            api_timeout=s.api_timeout,
            failpoint=s.failpoint,
            status_writer=self.status_writer,
            events=self.events,
            known_vendors=[n.vendor for n in vendors.all_names()],
            policy=s.policy,
        )
        await self.preparer.restore()

        self.monitor = health.DeviceHealthMonitor(
            self.names,
            s.node_name,
            self.devices,
            self._rediscover,
            interval=s.health_interval,
            sources=backends.health_sources(
                self.vendor, s.backend, self.devices, mock_faults=s.mock_faults, ignored_xids=s.ignored_xids
            ),
            unhealthy_effect=s.unhealthy_taint,
            lost_effect=s.device_lost_taint,
            on_change=self._on_health_change,
        )
        self.metrics.health_provider = self._health_figures
        self.metrics.telemetry = backends.telemetry(s.backend)
        self.monitor.start()
        await self.monitor.check()
        self._dra_server = grpc.aio.server()
        plugin.add_to_server(self._dra_server, self.preparer)
        health.add_to_server(self._dra_server, self.monitor)
        await self._listen_unix(self._dra_server, s.dra_socket)

        attributes: Mapping[str, Mapping[str, Any]] = {}
        if s.occupancy_interval > 0:
            self.occupancy = OccupancyTracker(
                self.client,
                self.names,
                s.node_name,
                self.devices,
                s.split_count,
                self._publish_occupancy,
                interval=s.occupancy_interval,
            )
            self.occupancy.start()
            attributes = await self.occupancy.initial(OCCUPANCY_START_WAIT_S)
        self.publisher = SlicePublisher(
            self.client,
            self.names,
            s.node_name,
            self.devices,
            s.split_count,
            self.metrics,
            resync_seconds=s.slice_resync,
            device_taints=self.monitor.taints,
            events=self.events,
            attributes=attributes,
        )
        self.publisher.start()

        self._tasks.append(asyncio.create_task(self.monitor.run(), name="device-health"))
        self._start_watchdog()
        if s.healthz_port:
            live = health.Liveness(s.registration_socket, s.dra_socket, checks=[self.preparer.check_progress])
            try:
                self._live_server = await health.serve_liveness(live, s.listen_address, s.healthz_port)
            except OSError as exc:
                raise StartupError(
                    _port_error("liveness", "--healthz-port", s.listen_address, s.healthz_port, exc)
                ) from exc
        if s.metrics_port:
            try:
                self._metrics_runner = await serve_metrics(self.metrics, s.listen_address, s.metrics_port)
            except OSError as exc:
                raise StartupError(
                    _port_error("metrics", "--metrics-port", s.listen_address, s.metrics_port, exc)
                ) from exc

        # Last: once the registration socket appears, everything the driver serves is up.
        reg = registration.Registration(
            s.driver, s.dra_socket, [*plugin.SERVICES, health.HEALTH_SERVICE], on_registered=self._on_registered
        )
        self._reg_server = grpc.aio.server()
        registration.add_to_server(self._reg_server, reg)
        await self._listen_unix(self._reg_server, s.registration_socket)
        log.info(
            "driver started",
            extra={
                "driver": s.driver,
                "node": s.node_name,
                "dra_socket": s.dra_socket,
                "registration_socket": s.registration_socket,
                "prepared_claims": len(self.checkpoint),
            },
        )

    def _start_watchdog(self) -> None:
        """The node-side memory check, where the vendor and backend can read per-process memory; a
        watchdog that cannot start is logged and never stops the driver."""
        s = self.settings
        if s.watchdog == "off":
            log.info("watchdog off (--watchdog off)", extra={"node": s.node_name})
            return
        try:
            reader, why = backends.process_reader(self.vendor, s.backend, s.watchdog_nvml_library)
        except backends.BackendError as exc:
            log.error("watchdog not started: %s", exc, extra={"node": s.node_name})
            return
        if reader is None:
            log.info("watchdog not started: %s", why, extra={"node": s.node_name})
            return
        assert self.checkpoint is not None
        self.watchdog = Watchdog(
            reader,
            self.checkpoint.items,
            self.devices,
            self.names,
            self.metrics,
            node=s.node_name,
            events=self.events,
            action=s.watchdog,
            period=s.watchdog_period,
            tolerance=Tolerance.parse(s.watchdog_tolerance),
            owners=OwnerCache(pid_map=s.watchdog_pid_map),
        )
        self._tasks.append(asyncio.create_task(self.watchdog.run(), name="watchdog"))

    def _take_lock(self) -> None:
        path = os.path.join(self.settings.plugin_dir, "plugin.lock")
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise StartupError(
                f"another instance of {self.settings.driver} holds {path}; only one may run per node "
                "(DaemonSet maxSurge must be 0)"
            ) from None
        self._lock_file = f

    async def _listen_unix(self, server: grpc.aio.Server, path: str) -> None:
        """Serve on ``path``. The socket is bound under a hidden name (the kubelet ignores dot files)
        and renamed into place once the server accepts calls, so a watcher never sees a dead socket."""
        hidden = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.starting")
        fsutil.remove_stale_socket(hidden)
        if server.add_insecure_port(f"unix://{hidden}") == 0:
            raise StartupError(f"cannot listen on {hidden}")
        await server.start()
        fsutil.remove_stale_socket(path)
        os.rename(hidden, path)
        self._sockets.append(path)

    async def _rediscover(self) -> list[DeviceInfo]:
        s = self.settings
        return await backends.discover(self.vendor, s.backend, node_name=s.node_name, mock_devices=s.mock_devices)

    def check_health_soon(self) -> None:
        """Re-check device health now (SIGUSR1; e.g. after writing the mock fault file)."""
        if self.monitor is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._check_health(), name="device-health-now"))

    async def _check_health(self) -> None:
        if self.monitor is not None:
            await self.monitor.check()

    def _health_figures(self) -> dict[str, DeviceHealthFigures]:
        if self.monitor is None:
            return {}
        out = {}
        for s in self.monitor.statuses:
            kinds: dict[str, int] = {}
            for fault in s.faults:
                kinds[fault.kind] = kinds.get(fault.kind, 0) + 1
            out[s.device] = DeviceHealthFigures(s.health == health_pb.HEALTHY, kinds)
        return out

    async def _on_health_change(self, changed: list[tuple[health.DeviceStatus, health.DeviceStatus]]) -> None:
        """A device's health changed: republish the slices (taints), tell the Node and the pods using it."""
        if self.publisher is not None:
            self.publisher.trigger("device health changed")
        if self.events is None or self.monitor is None:
            return
        node = Target.node(self.settings.node_name)
        taints = self.monitor.taints()
        for old, new in changed:
            if new.health == health_pb.UNHEALTHY:
                effects = ", ".join(f"{t['key']}={t['value']}:{t['effect']}" for t in taints.get(new.device, []))
                taint = f"tainted {effects}" if effects else "not tainted (taints are off)"
                message = f"device {new.device} ({new.uuid}) is unhealthy: {new.message}; {taint}"
                await self.events.record(node, WARNING, "DeviceUnhealthy", message)
                holders = self.checkpoint.holders(new.device) if self.checkpoint is not None else []
                pods: dict[tuple[str, str], str] = {}
                for _, entry in holders:
                    pods.update(pod_refs(entry.namespace, entry.pods, entry.pod_uids))
                pod_message = (
                    f"device {new.device} ({new.uuid}) on node {self.settings.node_name}, which this pod uses, "
                    f"is unhealthy: {new.message}"
                )
                await self.events.pods(pods, WARNING, "DeviceUnhealthy", pod_message)
            elif new.health == health_pb.HEALTHY and old.health != health_pb.HEALTHY:
                await self.events.record(
                    node, NORMAL, "DeviceHealthy", f"device {new.device} ({new.uuid}) is healthy again"
                )

    async def _publish_occupancy(self, attributes: Mapping[str, Mapping[str, Any]]) -> None:
        if self.publisher is not None:
            await self.publisher.set_attributes(attributes)

    def _on_registered(self, registered: bool, error: str) -> None:
        if registered and self.publisher is not None:
            self.publisher.trigger("kubelet registration")

    def _remove_socket(self, path: str) -> None:
        """Remove a socket this instance bound (never another instance's)."""
        if path in self._sockets:
            self._sockets.remove(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- stop -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        s = self.settings
        if self._reg_server is not None:
            await self._reg_server.stop(grace=1)
        self._remove_socket(s.registration_socket)
        if self._dra_server is not None:
            await self._dra_server.stop(grace=5)
        self._remove_socket(s.dra_socket)
        await cancel_and_wait(self._tasks)
        if self.monitor is not None:
            await self.monitor.stop()
        if self.status_writer is not None:
            await self.status_writer.flush(timeout=2.0)
        close = getattr(self.metrics.telemetry, "close", None)
        if callable(close):
            close()
        if self.occupancy is not None:
            await self.occupancy.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        if self._live_server is not None:
            await self._live_server.stop(grace=1)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self.preparer is not None:
            self.preparer.close()
        if self.watchdog is not None:
            self.watchdog.close()
        if self.client is not None:
            await self.client.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        log.info("driver stopped; sockets removed", extra={"driver": s.driver, "node": s.node_name})


def _port_error(what: str, flag: str, host: str, port: int, exc: OSError) -> str:
    return (
        f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}): if another process holds the "
        f"port, stop it or give {flag} a free one (0 turns {what} off); check --listen-address too"
    )


async def run(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; the exit code."""
    driver = Driver(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, driver.request_stop)
    loop.add_signal_handler(signal.SIGUSR1, driver.check_health_soon)
    try:
        await driver.start()
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        await driver.stop()
        return 1
    # What start-up loaded (modules, the client's generated models) lives as long as the process:
    # keep it out of the cyclic collector, whose full passes over it would stall prepares.
    gc.freeze()
    await driver.wait()
    log.info("stopping", extra={"driver": settings.driver})
    await driver.stop()
    return 0
