"""A kubelet for one node of the harness: DRA plugins over gRPC, containers as local processes.

* Registers its Node (address 127.0.0.1, the log server's port as the kubelet endpoint, Ready).
* Watches the plugin registry directory (:mod:`.plugins`).
* For each pod bound to the node: waits until every claim is allocated and reserved for the pod
  (the kubelet refuses pods a claim is not reserved for), calls ``NodePrepareResources`` per driver,
  runs init containers one by one, then the containers, each with the CDI edits of the devices of
  the claims (and requests) it references (:mod:`.cdi`), honouring ``restartPolicy``; reports phase,
  conditions, container states, exit codes and the log tail (``state.terminated.message``) in the
  pod status, and serves logs at ``/containerLogs/<ns>/<pod>/<container>`` for ``pods/log``.
* A pod that finishes or is deleted has its processes stopped (SIGTERM, SIGKILL after the grace
  period) and its claims unprepared; a deleted pod is then removed (``gracePeriodSeconds: 0``).
* Watches each plugin's device health (``NodeWatchResources``) and writes it into the status of the
  pods that use the devices (``containerStatuses[].allocatedResourcesStatus``, :mod:`.health`).
* Every container runs in a kubelet-like cgroup, ``.../kubepods/besteffort/pod<uid>/<container id>``
  (:mod:`.cgroups`), removed when it exits, so that the driver's watchdog finds a process's pod
  exactly as on a real node. Where no cgroup can be made (or ``cgroups=False``), the kubelet instead
  keeps a PID map, ``<root>/pids.json`` (``{pid: {podUID, containerID}}``, written atomically), which
  the harness hands to the driver with the test-only ``--watchdog-pid-map``.
* ``pods/exec``: ``/exec/<ns>/<pod>/<container>`` runs a command with the container's env and CDI
  edits over the websocket remote command protocol (:mod:`.execs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from e2e.controllers.informer import Informer, cancel_all, key_of
from kubeapi import KubeClient, KubeError, cluster_path, namespaced_path

from . import cdi, execs, runtime
from . import health as device_health
from .cgroups import CgroupError, HarnessCgroups
from .plugins import ClaimRef, Plugin, PluginError, PluginWatcher, PreparedDevice

log = logging.getLogger("e2e.kubelet")

Obj = dict[str, Any]


@dataclass
class PreparedClaim:
    ref: ClaimRef
    drivers: list[str]
    devices: list[PreparedDevice] = field(default_factory=list)


class PodFailed(Exception):
    """The pod cannot run (reason, message) as the kubelet would report it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = os.path.join(kubelet.root, "pods", f"{self.ns}_{self.name}_{self.uid}")
        self.claims: dict[str, PreparedClaim] = {}  # pod claim name -> prepared
        self.processes: dict[str, runtime.Process] = {}
        self.container_ids: dict[str, str] = {}
        self.statuses: dict[str, Obj] = {}
        self.init_statuses: dict[str, Obj] = {}
        self.restarts: dict[str, int] = {}
        self.phase = "Pending"
        self.conditions: dict[str, Obj] = {}
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.finishing = False
        self.cdi_used: dict[str, list[Obj]] = {}  # container -> the CDI specs its devices came from
        self.start_time = runtime.rfc3339()

    def tag(self) -> str:
        return f"pod {self.ns}/{self.name}"

    # ------------------------------------------------------------------ status
    def _condition(self, kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> None:
        old = self.conditions.get(kind)
        status = "True" if ok else "False"
        if old is not None and old["status"] == status and old.get("reason") == reason:
            return
        cond: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": runtime.rfc3339()}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        self.conditions[kind] = cond

    def _with_health(self, container: Obj, status: Obj) -> Obj:
        """``status`` plus the container's ``allocatedResourcesStatus`` (once its claims are prepared)."""
        prepared = {name: claim.devices for name, claim in self.claims.items()}
        entries = device_health.allocated_resources_status(container, prepared, self.kubelet.health)
        if not entries:
            return status
        return {**status, "allocatedResourcesStatus": entries}

    def uses(self, keys: set[device_health.DeviceKey]) -> bool:
        return any(device_health.uses_any(c.devices, keys) for c in self.claims.values())

    async def push_status(self) -> None:
        spec = self.pod.get("spec") or {}
        status: Obj = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            # a condition's reason and message are cleared when it no longer has them (the real kubelet's
            # status patch sends null for them too; a strategic merge would otherwise keep the old ones)
            "conditions": [{"reason": None, "message": None, **c} for c in self.conditions.values()],
            "containerStatuses": [
                self._with_health(c, self.statuses.get(c["name"], self._waiting(c, "ContainerCreating")))
                for c in spec.get("containers") or []
            ],
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [
                self._with_health(c, self.init_statuses.get(c["name"], self._waiting(c, "PodInitializing")))
                for c in spec["initContainers"]
            ]
        try:
            await self.kubelet.kube.request(
                "PATCH",
                namespaced_path("v1", "pods", self.ns, self.name) + "/status",
                body={"metadata": {"uid": self.uid}, "status": status},
                content_type="application/strategic-merge-patch+json",
            )
        except KubeError as exc:
            if not exc.not_found:
                log.warning("%s: status update failed: %s", self.tag(), exc)

    def _waiting(self, container: Obj, reason: str, message: str | None = None) -> Obj:
        state: Obj = {"reason": reason}
        if message:
            state["message"] = message
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": False,
            "restartCount": self.restarts.get(container["name"], 0),
            "started": False,
            "state": {"waiting": state},
        }

    def _running(self, container: Obj, proc: runtime.Process) -> Obj:
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"tessera://{self.container_ids.get(container['name'], '')}",
            "ready": True,
            "started": True,
            "restartCount": self.restarts.get(container["name"], 0),
            "state": {"running": {"startedAt": proc.started_at}},
        }

    def _terminated(self, container: Obj, proc: runtime.Process) -> Obj:
        code = proc.exit_code if proc.exit_code is not None else -1
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"tessera://{self.container_ids.get(container['name'], '')}",
            "ready": False,
            "started": False,
            "restartCount": self.restarts.get(container["name"], 0),
            "state": {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": proc.started_at,
                    "finishedAt": proc.finished_at,
                    "containerID": f"tessera://{self.container_ids.get(container['name'], '')}",
                    "message": runtime.tail(proc.log_path),
                }
            },
        }

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        try:
            await self._run()
        except PodFailed as exc:
            log.warning("%s: %s: %s", self.tag(), exc.reason, exc.message)
            self.phase = "Failed"
            self._condition("Ready", False, exc.reason, exc.message)
            await self.push_status()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: worker failed", self.tag())
        finally:
            await self._stop_processes(0)
            await self.unprepare()
            self.done.set()

    async def _run(self) -> None:
        self._condition("PodReadyToStartContainers", False)
        self._condition(
            "Initialized",
            not (self.pod.get("spec") or {}).get("initContainers"),
            None if not (self.pod.get("spec") or {}).get("initContainers") else "ContainersNotInitialized",
        )
        names = " ".join(c["name"] for c in (self.pod.get("spec") or {}).get("containers") or [])
        self._condition("Ready", False, "ContainersNotReady", f"containers with unready status: [{names}]")
        self._condition("ContainersReady", False, "ContainersNotReady", f"containers with unready status: [{names}]")
        await self.push_status()
        await self.prepare()
        self._condition("PodReadyToStartContainers", True)
        spec = self.pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        for container in spec.get("initContainers") or []:
            while True:
                code = await self._run_once(container, init=True)
                if code is None:
                    return
                if code == 0:
                    break
                if policy == "Never":
                    raise PodFailed("InitContainerFailed", f"init container {container['name']} exited with {code}")
                await self._backoff(container["name"])
        self._condition("Initialized", True)
        containers = spec.get("containers") or []
        self.phase = "Running"
        results = await asyncio.gather(*(self._supervise(c, policy) for c in containers))
        if self.stopping.is_set():
            return
        self.phase = "Succeeded" if all(code == 0 for code in results) else "Failed"
        self._condition("Ready", False, "PodCompleted")
        self._condition("ContainersReady", False, "PodCompleted")
        await self.push_status()
        log.info(
            "%s: %s (exit codes %s)",
            self.tag(),
            self.phase,
            dict(zip([c["name"] for c in containers], results, strict=True)),
        )

    async def _backoff(self, name: str) -> None:
        self.restarts[name] = self.restarts.get(name, 0) + 1
        delay = min(10.0, 0.5 * 2 ** (self.restarts[name] - 1))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.stopping.wait()

    async def _supervise(self, container: Obj, policy: str) -> int | None:
        while True:
            code = await self._run_once(container, init=False)
            if code is None:
                return None
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                await self._backoff(container["name"])
                if self.stopping.is_set():
                    return code
                continue
            return code

    async def _run_once(self, container: Obj, *, init: bool) -> int | None:
        """Start, wait; the exit code, or None when the pod is stopping."""
        if self.stopping.is_set():
            return None
        name = container["name"]
        table = self.init_statuses if init else self.statuses
        try:
            argv, env = self._process_spec(container)
        except PodFailed as exc:
            table[name] = self._waiting(container, exc.reason, exc.message)
            await self.push_status()
            raise
        cwd = _workdir(os.path.join(self.dir, name, "cwd"), container.get("workingDir"))
        log_path = os.path.join(self.dir, name, f"{self.restarts.get(name, 0)}.log")
        container_id = secrets.token_hex(32)  # a new one per start, as a runtime gives
        self.container_ids[name] = container_id
        try:
            argv = await asyncio.to_thread(self.kubelet.place, argv, self.uid, container_id)
            proc = await runtime.start(name, argv, env, cwd, log_path)
        except OSError as exc:
            table[name] = self._waiting(container, "RunContainerError", f"cannot start {argv[0]}: {exc}")
            await self.push_status()
            raise PodFailed("RunContainerError", f"container {name}: cannot start {argv[0]}: {exc}") from exc
        self.processes[name] = proc
        await asyncio.to_thread(self.kubelet.started, proc.pid, self.uid, container_id)
        if self.stopping.is_set():  # stopped while it was being started: it must not outlive the pod
            await proc.stop(0)
        table[name] = self._running(container, proc)
        if not init and all(
            n in self.statuses and "running" in self.statuses[n]["state"]
            for n in (c["name"] for c in (self.pod.get("spec") or {}).get("containers") or [])
        ):
            self._condition("ContainersReady", True)
            self._condition("Ready", True)
        await self.push_status()
        log.info("%s: container %s started (pid %d): %s", self.tag(), name, proc.pid, " ".join(argv))
        code = await proc.wait()
        await asyncio.to_thread(self.kubelet.exited, proc.pid, self.uid, container_id)
        table[name] = self._terminated(container, proc)
        if not init:
            self._condition("ContainersReady", False, "ContainersNotReady")
            self._condition("Ready", False, "ContainersNotReady")
        await self.push_status()
        log.info("%s: container %s exited with %d", self.tag(), name, code)
        if self.stopping.is_set():
            return None
        return code

    # ------------------------------------------------------------------ containers
    def _process_spec(self, container: Obj) -> tuple[list[str], dict[str, str]]:
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not container.get("command"):
            raise PodFailed(
                "CreateContainerError",
                f"container {container['name']}: the process runtime runs "
                "spec.containers[].command and has none (images are not run)",
            )
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOSTNAME": self.name,
            "HOME": os.path.join(self.dir, container["name"], "cwd"),
        }
        env.update(self.kubelet.container_env)
        for entry in container.get("env") or []:
            env[entry["name"]] = self._env_value(container, entry)
        if container.get("envFrom"):
            raise PodFailed("CreateContainerConfigError", "envFrom is not supported by the harness kubelet")
        ids = self._cdi_ids(container)
        if not ids:
            return argv, env
        try:
            specs = cdi.load_specs(self.kubelet.cdi_dir)
            edits = cdi.resolve(ids, specs)
            self.cdi_used[container["name"]] = [
                s
                for s in specs
                if any(
                    i.partition("=")[0] == s.get("kind")
                    and any(d.get("name") == i.partition("=")[2] for d in s.get("devices") or [])
                    for i in ids
                )
            ]
            spec = cdi.to_process(edits, env, argv)
        except cdi.CDIError as exc:
            raise PodFailed("CreateContainerError", f"container {container['name']}: {exc}") from exc
        for note in spec.notes:
            log.info("%s: container %s: %s", self.tag(), container["name"], note)
        for source, target in self.kubelet.env_aliases.items():
            if source in spec.env:
                spec.env[target] = spec.env[source]
        contained = cdi.namespace_argv(spec.mounts, spec.argv)
        if contained is None and spec.mounts:
            log.info("%s: container %s: mounts mapped only (no mount namespace here)", self.tag(), container["name"])
        return contained or spec.argv, spec.env

    def _env_value(self, container: Obj, entry: Mapping[str, Any]) -> str:
        if "value" in entry or "valueFrom" not in entry:
            return str(entry.get("value", ""))
        field_ref = (entry["valueFrom"] or {}).get("fieldRef")
        if field_ref:
            path = field_ref.get("fieldPath", "")
            meta = self.pod["metadata"]
            values = {
                "metadata.name": self.name,
                "metadata.namespace": self.ns,
                "metadata.uid": self.uid,
                "spec.nodeName": self.kubelet.node_name,
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "spec.serviceAccountName": (self.pod.get("spec") or {}).get("serviceAccountName", ""),
            }
            if path.startswith("metadata.labels['"):
                return str((meta.get("labels") or {}).get(path[17:-2], ""))
            if path.startswith("metadata.annotations['"):
                return str((meta.get("annotations") or {}).get(path[22:-2], ""))
            if path in values:
                return str(values[path])
        raise PodFailed(
            "CreateContainerConfigError",
            f"container {container['name']}: env {entry.get('name')}: only value and fieldRef are supported",
        )

    def _cdi_ids(self, container: Obj) -> list[str]:
        ids: list[str] = []
        for ref in (container.get("resources") or {}).get("claims") or []:
            prepared = self.claims.get(ref.get("name"))
            if prepared is None:
                raise PodFailed(
                    "CreateContainerConfigError",
                    f"container {container['name']}: claim {ref.get('name')} was not prepared",
                )
            wanted = ref.get("request")
            for device in prepared.devices:
                bases = {n.split("/", 1)[0] for n in device.request_names} | set(device.request_names)
                if not wanted or wanted in bases:
                    ids.extend(i for i in device.cdi_ids if i not in ids)
        return ids

    # ------------------------------------------------------------------ claims
    def _claim_names(self) -> dict[str, str]:
        statuses = {
            s.get("name"): s.get("resourceClaimName")
            for s in (self.pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        out = {}
        for entry in (self.pod.get("spec") or {}).get("resourceClaims") or []:
            name = entry.get("resourceClaimName") or statuses.get(entry["name"])
            if name:
                out[entry["name"]] = name
        return out

    async def prepare(self) -> None:
        entries = (self.pod.get("spec") or {}).get("resourceClaims") or []
        if not entries:
            return
        deadline = asyncio.get_running_loop().time() + self.kubelet.prepare_timeout
        while True:
            waiting = await self._try_prepare(entries)
            if waiting is None:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise PodFailed("FailedPrepareDynamicResources", waiting)
            self._condition("PodReadyToStartContainers", False, "FailedPrepareDynamicResources", waiting)
            await self.push_status()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.stopping.wait()
            if self.stopping.is_set():
                raise PodFailed("Terminating", "the pod was deleted while its resources were being prepared")

    async def _try_prepare(self, entries: list[Obj]) -> str | None:
        """None when every claim is prepared; otherwise what is being waited for."""
        names = self._claim_names()
        latest = await self.kubelet.kube.get(namespaced_path("v1", "pods", self.ns, self.name))
        self.pod = latest
        names = self._claim_names()
        by_driver: dict[str, list[tuple[str, ClaimRef]]] = {}
        for entry in entries:
            if entry["name"] in self.claims:
                continue
            claim_name = names.get(entry["name"])
            if claim_name is None:
                return f"claim for {entry['name']} not created yet"
            try:
                claim = await self.kubelet.kube.get(
                    namespaced_path("resource.k8s.io/v1", "resourceclaims", self.ns, claim_name)
                )
            except KubeError as exc:
                return f"claim {claim_name}: {exc}"
            status = claim.get("status") or {}
            if not any(r.get("uid") == self.uid for r in status.get("reservedFor") or []):
                return f"claim {claim_name} is not reserved for this pod"
            results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
            drivers = sorted({str(r["driver"]) for r in results})
            ref = ClaimRef(self.ns, claim_name, claim["metadata"]["uid"])
            self.claims[entry["name"]] = PreparedClaim(ref, drivers)
            for driver in drivers:
                by_driver.setdefault(driver, []).append((entry["name"], ref))
        for driver, refs in by_driver.items():
            try:
                plugin = await self.kubelet.plugins.wait_for(driver, timeout=2.0)
                answer = await plugin.prepare([r for _, r in refs])
            except PluginError as exc:
                for pod_claim, _ in refs:
                    self.claims.pop(pod_claim, None)
                log.info("%s: %s", self.tag(), exc)
                return str(exc)
            for pod_claim, ref in refs:
                self.claims[pod_claim].devices.extend(answer[ref.uid])
                log.info(
                    "%s: claim %s prepared by %s: %s",
                    self.tag(),
                    ref.name,
                    driver,
                    [i for d in answer[ref.uid] for i in d.cdi_ids],
                )
        return None

    async def unprepare(self) -> None:
        by_driver: dict[str, list[ClaimRef]] = {}
        for prepared in self.claims.values():
            for driver in prepared.drivers:
                by_driver.setdefault(driver, []).append(prepared.ref)
        for driver, refs in by_driver.items():
            for attempt in range(20):
                try:
                    plugin = await self.kubelet.plugins.wait_for(driver, timeout=2.0)
                    await plugin.unprepare(refs)
                    log.info("%s: claims %s unprepared by %s", self.tag(), [r.name for r in refs], driver)
                    break
                except PluginError as exc:
                    log.warning("%s: unprepare (attempt %d): %s", self.tag(), attempt + 1, exc)
                    await asyncio.sleep(0.5)
        self.claims.clear()

    async def _stop_processes(self, grace: float) -> None:
        await asyncio.gather(*(p.stop(grace) for p in self.processes.values()))

    async def stop(self, grace: float) -> None:
        """Stop the containers (SIGTERM, SIGKILL after ``grace``), then unprepare (in :meth:`run`)."""
        self.stopping.set()
        await self._stop_processes(grace)
        if self.task is not None:
            await asyncio.wait([self.task], timeout=grace + 60)


class Kubelet:
    def __init__(
        self,
        kube: KubeClient,
        node_name: str,
        *,
        root: str,
        registry_dir: str,
        cdi_dir: str,
        container_env: Mapping[str, str] | None = None,
        env_aliases: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        prepare_timeout: float = 120.0,
        cgroups: bool = True,
    ) -> None:
        """``container_env``: env every container gets (the node's driver libraries). ``env_aliases``:
        ``{source: target}``, env the node's container runtime derives from a container's final env
        (the fake CUDA driver reads ``NVIDIA_VISIBLE_DEVICES``; Iluvatar's runtime reads
        ``IX_VISIBLE_DEVICES``). ``cgroups``: run containers in kubelet-like cgroups (falling back to the
        PID map when they cannot be made); ``False``: the PID map only."""
        self.kube = kube
        self.node_name = node_name
        self.root = root
        self.cdi_dir = cdi_dir
        self.container_env = dict(container_env or {})
        self.env_aliases = dict(env_aliases or {})
        self.labels = dict(labels or {})
        self.prepare_timeout = prepare_timeout
        self.plugins = PluginWatcher(registry_dir)
        self.health = device_health.HealthCache()
        self._health_watchers: dict[str, tuple[Plugin, asyncio.Task[None]]] = {}
        self.workers: dict[str, PodWorker] = {}  # pod uid -> worker
        self.pods = Informer(
            kube,
            "/api/v1/pods",
            name=f"kubelet/{node_name}",
            handler=self._on_pod,
            fieldSelector=f"spec.nodeName={node_name}",
        )
        self.cgroups: HarnessCgroups | None = None
        self.pid_map: str | None = None
        """``<root>/pids.json`` when containers are named there instead of in cgroups."""
        self._pids: dict[int, dict[str, str]] = {}
        if cgroups:
            try:
                self.cgroups = HarnessCgroups.create(node_name)
            except CgroupError as exc:
                log.warning("node %s: no cgroups for containers (%s); using the PID map", node_name, exc)
        if self.cgroups is None:
            self.pid_map = os.path.join(root, "pids.json")
            self._write_pid_map()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------------ containers' cgroups
    def place(self, argv: list[str], pod_uid: str, container_id: str) -> list[str]:
        """``argv`` as it must be started to run in the container's cgroup. Blocking."""
        if self.cgroups is None:
            return argv
        return self.cgroups.enter(argv, self.cgroups.container_dir(pod_uid, container_id))

    def started(self, pid: int, pod_uid: str, container_id: str) -> None:
        if self.pid_map is not None:
            self._pids[pid] = {"podUID": pod_uid, "containerID": container_id}
            self._write_pid_map()

    def exited(self, pid: int, pod_uid: str, container_id: str) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_container(pod_uid, container_id)
        elif self._pids.pop(pid, None) is not None:
            self._write_pid_map()

    def pod_done(self, pod_uid: str) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_pod(pod_uid)

    def _write_pid_map(self) -> None:
        assert self.pid_map is not None
        os.makedirs(os.path.dirname(self.pid_map), exist_ok=True)
        tmp = self.pid_map + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({str(pid): owner for pid, owner in self._pids.items()}, f)
        os.replace(tmp, self.pid_map)

    # ------------------------------------------------------------------ node and log server
    async def _serve_logs(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        app.router.add_get("/exec/{ns}/{pod}/{container}", self._exec)
        app.router.add_get("/healthz", _healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
        worker = next((w for w in self.workers.values() if (w.ns, w.name) == (ns, pod)), None)
        if worker is None:
            return web.Response(status=404, text=f"pod {ns}/{pod} is not running on node {self.node_name}")
        path = await asyncio.to_thread(_latest_log, os.path.join(worker.dir, container))
        if path is None:
            return web.Response(status=400, text=f'container "{container}" in pod "{pod}" is waiting to start')
        data = await asyncio.to_thread(_read_from, path, 0)
        offset = len(data)
        if request.query.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(request.query["tailLines"]) :])
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(data)
        if request.query.get("follow") in ("true", "1", "True"):
            proc = worker.processes.get(container)
            while True:
                running = proc is not None and proc.exit_code is None
                chunk = await asyncio.to_thread(_read_from, path, offset)
                offset += len(chunk)
                if chunk:
                    await response.write(chunk)
                if not running:
                    break
                await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        ns, pod, name = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
        worker = next((w for w in self.workers.values() if (w.ns, w.name) == (ns, pod)), None)
        if worker is None:
            return web.Response(status=404, text=f"pod {ns}/{pod} is not running on node {self.node_name}")
        proc = worker.processes.get(name)
        container = next(
            (c for c in (worker.pod.get("spec") or {}).get("containers") or [] if c.get("name") == name), None
        )
        if container is None or proc is None or proc.exit_code is not None:
            return web.Response(status=400, text=f'container not found ("{name}")')
        command = request.query.getall("command", [])
        if not command:
            return web.Response(status=400, text="you must specify at least 1 command")
        try:
            argv, env = worker._process_spec({**container, "command": command, "args": []})
        except PodFailed as exc:
            return web.Response(status=500, text=exc.message)
        cwd = _workdir(os.path.join(worker.dir, name, "cwd"), container.get("workingDir"))
        if name in worker.container_ids and shutil.which(argv[0], path=env.get("PATH")):
            # As with a runtime's exec, the command runs in the container's cgroup (a command that does
            # not exist still fails to start, as before). With the PID map it is not attributed.
            argv = await asyncio.to_thread(self.place, argv, worker.uid, worker.container_ids[name])
        return await execs.serve(request, argv, env, cwd, f"{worker.tag()} container {name}")

    def node_object(self) -> Obj:
        now = runtime.rfc3339()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux", **self.labels},
            },
            "spec": {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "110"},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "tessera e2e kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.34.0-tessera-e2e",
                    "containerRuntimeVersion": "tessera-process://1",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kernelVersion": os.uname().release,
                    "osImage": "tessera e2e",
                    "kubeProxyVersion": "",
                },
            },
        }

    async def register_node(self) -> None:
        node = self.node_object()
        path = cluster_path("v1", "nodes")
        try:
            await self.kube.create(path, node)
        except KubeError as exc:
            if not exc.conflict:
                raise
            current = await self.kube.get(f"{path}/{self.node_name}")
            await self.kube.merge_patch(
                f"{path}/{self.node_name}", {"metadata": {"labels": node["metadata"]["labels"]}}
            )
            await self.kube.replace(f"{path}/{self.node_name}/status", {**current, "status": node["status"]})
        log.info("node %s registered (kubelet endpoint 127.0.0.1:%d)", self.node_name, self.port)

    # ------------------------------------------------------------------ pods
    def _on_pod(self, kind: str, pod: Obj, old: Obj | None) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                asyncio.get_running_loop().create_task(self._finish(worker, 0, delete=False))
            return
        if worker is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not pod["metadata"].get(
                "deletionTimestamp"
            ):
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            if pod["metadata"].get("deletionTimestamp"):
                worker.stopping.set()
            worker.task = asyncio.get_running_loop().create_task(worker.run())
            log.info("pod %s/%s: admitted on %s", *key_of(pod), self.node_name)
        else:
            worker.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            if not worker.finishing:
                worker.finishing = True
                asyncio.get_running_loop().create_task(self._finish(worker, grace, delete=True))

    async def _finish(self, worker: PodWorker, grace: float, *, delete: bool) -> None:
        await worker.stop(grace)
        await worker.done.wait()
        self.workers.pop(worker.uid, None)
        await asyncio.to_thread(self.pod_done, worker.uid)
        shutil.rmtree(worker.dir, ignore_errors=True)
        if delete:
            with contextlib.suppress(KubeError):
                await self.kube.request(
                    "DELETE",
                    namespaced_path("v1", "pods", worker.ns, worker.name),
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": worker.uid}},
                )
            log.info("pod %s/%s: stopped, resources unprepared, deleted", worker.ns, worker.name)

    # ------------------------------------------------------------------ device health
    async def _health_loop(self) -> None:
        """One ``NodeWatchResources`` stream per registered plugin, restarted when the plugin is."""
        try:
            while True:
                for name, plugin in list(self.plugins.plugins.items()):
                    current = self._health_watchers.get(name)
                    if current is not None and current[0] is plugin and not current[1].done():
                        continue
                    if current is not None:
                        current[1].cancel()
                    task = asyncio.get_running_loop().create_task(self._watch_health(plugin))
                    self._health_watchers[name] = (plugin, task)
                for name in [n for n in self._health_watchers if n not in self.plugins.plugins]:
                    _, task = self._health_watchers.pop(name)
                    task.cancel()
                    await self._health_changed(self.health.clear(name))
                await asyncio.sleep(0.2)
        finally:
            await cancel_all([task for _, task in self._health_watchers.values()])

    async def _watch_health(self, plugin: Plugin) -> None:
        try:
            async for reports in plugin.watch_health():
                await self._health_changed(self.health.update(plugin.name, reports))
        except PluginError as exc:
            log.info("device health of %s not watched: %s", plugin.name, exc)
        current = self._health_watchers.get(plugin.name)
        if current is not None and current[0] is plugin:
            await self._health_changed(self.health.clear(plugin.name))
        await asyncio.sleep(1.0)  # then the loop starts a new stream if the plugin is still registered

    async def _health_changed(self, keys: set[device_health.DeviceKey]) -> None:
        if not keys:
            return
        for worker in list(self.workers.values()):
            if worker.uses(keys):
                await worker.push_status()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(10)
            with contextlib.suppress(KubeError):
                now = runtime.rfc3339()
                node = await self.kube.get(cluster_path("v1", "nodes", self.node_name))
                conditions = [c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] != "Ready"]
                ready: Obj = next((c for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), {})
                conditions.append(
                    {
                        **ready,
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": ready.get("lastTransitionTime", now),
                    }
                )
                await self.kube.replace(
                    cluster_path("v1", "nodes", self.node_name) + "/status",
                    {**node, "status": {**node["status"], "conditions": conditions}},
                )

    async def start(self) -> None:
        await self._serve_logs()
        await self.register_node()
        self._tasks = [
            asyncio.create_task(self.plugins.run()),
            asyncio.create_task(self.pods.run()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._health_loop()),
        ]
        await self.pods.synced.wait()

    async def stop(self) -> None:
        """Stop every pod (unpreparing its claims) and the loops."""
        await asyncio.gather(*(self._finish(w, 1.0, delete=False) for w in list(self.workers.values())))
        await cancel_all(self._tasks)
        await self.plugins.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.close)


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def _workdir(scratch: str, wanted: str | None) -> str:
    """The container's workingDir when the host has it, else its scratch directory."""
    os.makedirs(scratch, exist_ok=True)
    return wanted if wanted and os.path.isdir(wanted) else scratch


def _latest_log(container_dir: str) -> str | None:
    if not os.path.isdir(container_dir):
        return None
    logs = sorted((f for f in os.listdir(container_dir) if f.endswith(".log")), key=lambda f: int(f[:-4]))
    return os.path.join(container_dir, logs[-1]) if logs else None


def _read_from(path: str, offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()
