"""The watchdog: a workload that escapes libvgpu is found through NVML and its cgroup, and killed.

The driver runs as a real process with the mock backend and the fake ``libnvidia-ml.so.1``; the
workloads are real processes under ``libvgpu.so`` on the fake CUDA driver, one of which loads a
second, unhooked copy of the driver with ``dlmopen(LM_ID_NEWLM, "libcuda.so.1")`` and allocates past
its limit. Each workload runs in a kubelet-like cgroup (``.../kubepods/besteffort/pod<uid>/<id>``)
or, where cgroups cannot be made, is named in the test-only PID map.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from dra_driver import cdi
from dra_driver.backends.processes import ProcessMemory
from dra_driver.checkpoint import COMPLETED, STARTED, ClaimEntry, DeviceHold
from dra_driver.podmap import Owner, owner_from_cgroup, owner_from_path
from dra_driver.watchdog import (
    Budget,
    PodRef,
    Tolerance,
    Usage,
    Violation,
    WatchdogConfigError,
    budgets,
    evaluate,
    event_message,
)
from e2e.apiserver import APIServer
from e2e.cluster.harness import fake_gpus
from e2e.fakegpu import BUILD, container_env
from e2e.kubelet.cgroups import CgroupError, HarnessCgroups
from vendors import nvidia
from vendors.base import DeviceInfo

from .helpers import NODE, claim, driver_args, driver_log, plugin_process, request, result, settings, wait_ready
from .kubelet import Claim, Kubelet
from .test_container_metrics import WORKLOAD
from .test_observability import free_port, sample, scrape

MIB = 1 << 20
GIB = 1 << 30
POD_A = "3f0c9a1e-5b7d-4c2e-9f11-0a1b2c3d4e5f"
POD_B = "7d2e4f60-8a9b-4c1d-8e2f-3a4b5c6d7e8f"


# -- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        # cgroupfs driver (v1 and v2), containerd
        (f"/kubepods/besteffort/pod{POD_A}/{'a' * 64}", Owner(POD_A, "a" * 64)),
        (f"/kubepods/pod{POD_A}/{'b' * 64}", Owner(POD_A, "b" * 64)),  # Guaranteed
        (f"/kubepods/burstable/pod{POD_A}/crio-{'c' * 64}", Owner(POD_A, "c" * 64)),
        # systemd driver
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_A.replace('-', '_')}.slice/"
            f"cri-containerd-{'d' * 64}.scope",
            Owner(POD_A, "d" * 64),
        ),
        (f"/kubepods.slice/kubepods-pod{POD_A.replace('-', '_')}.slice/crio-{'e' * 64}.scope", Owner(POD_A, "e" * 64)),
        (
            f"/kubepods.slice/kubepods-pod{POD_A.replace('-', '_')}.slice/docker-{'f' * 64}.scope",
            Owner(POD_A, "f" * 64),
        ),
        # seen from another cgroup namespace (the driver's own container)
        (f"/../../kubepods/besteffort/pod{POD_A}/{'a' * 64}", Owner(POD_A, "a" * 64)),
        # Docker-in-Docker and sub-cgroups: the outer container; a nested name of another pod does not count
        (f"/kubepods/besteffort/pod{POD_A}/{'a' * 64}/docker/{'9' * 64}", Owner(POD_A, "a" * 64)),
        (f"/kubepods/besteffort/pod{POD_A}/{'a' * 64}/kubepods/pod{POD_B}/{'b' * 64}", Owner(POD_A, "a" * 64)),
        # the pod's own cgroup (sandbox); nested below a harness cgroup
        (f"/kubepods/besteffort/pod{POD_A}", Owner(POD_A, "")),
        (f"/tessera-e2e-n1-12ab/kubepods/besteffort/pod{POD_A}/{'a' * 64}", Owner(POD_A, "a" * 64)),
        # not a pod
        ("/system.slice/containerd.service", None),
        (f"/user.slice/pod{POD_A}/{'a' * 64}", None),
        ("/", None),
    ],
)
def test_owner_from_kubelet_cgroup_paths(path: str, owner: Owner | None) -> None:
    assert owner_from_path(path) == owner


def test_owner_from_a_proc_cgroup_file_of_any_version() -> None:
    v1 = f"12:memory:/kubepods/besteffort/pod{POD_A}/{'a' * 64}\n1:name=systemd:/\n0::/\n"
    v2 = f"0::/kubepods.slice/kubepods-pod{POD_B.replace('-', '_')}.slice/cri-containerd-{'b' * 64}.scope\n"
    assert owner_from_cgroup(v1) == Owner(POD_A, "a" * 64)
    assert owner_from_cgroup(v2) == Owner(POD_B, "b" * 64)
    assert owner_from_cgroup("0::/init.scope\n") is None


def device(index: int) -> DeviceInfo:
    return DeviceInfo(
        index=index,
        uuid=f"GPU-{index}",
        product_name="NVIDIA H100",
        model="H100",
        memory_bytes=80 * GIB,
        architecture="Hopper",
        compute_capability="9.0",
        driver_version="560.35.03",
        pci_bus_id="",
        numa_node=0,
    )


def entry(name: str, pods: dict[str, str], *holds: tuple[str, int | None], state: str = COMPLETED) -> ClaimEntry:
    return ClaimEntry(
        state=state,
        namespace="ml",
        name=name,
        cdi_spec_path="",
        claim_dir="",
        holds=tuple(DeviceHold(d, "s", m, None) for d, m in holds),
        pod_uids=pods,
    )


def test_budgets_join_pods_and_claims_that_overlap() -> None:
    devices = {"gpu-0": device(0), "gpu-1": device(1)}
    entries = [
        ("u1", entry("shared", {POD_A: "a", POD_B: "b"}, ("gpu-0", 2 * GIB))),  # one claim, two pods
        ("u2", entry("second", {POD_B: "b"}, ("gpu-0", GIB), ("gpu-1", GIB))),  # pod b has two claims on gpu-0
        ("u3", entry("alone", {"p3": "c"}, ("gpu-0", GIB), ("gpu-0", GIB))),  # two shares of one card add up
        ("u4", entry("whole", {"p4": "d"}, ("gpu-1", None))),  # no limit: never checked
        ("u5", entry("starting", {"p5": "e"}, ("gpu-1", GIB), state=STARTED)),
        ("u6", entry("podless", {}, ("gpu-1", GIB))),
    ]
    out = budgets(entries, devices)
    gpu0 = sorted(out["GPU-0"], key=lambda b: b.claims)
    assert [(b.claims, b.limit, sorted(b.pods)) for b in gpu0] == [
        (("ml/alone",), 2 * GIB, ["p3"]),
        (("ml/second", "ml/shared"), 3 * GIB, sorted([POD_A, POD_B])),
    ]
    assert [(b.claims, b.limit) for b in out["GPU-1"]] == [(("ml/second",), GIB)]
    assert gpu0[1].pods[POD_A] == PodRef("ml", "a", POD_A)


def test_evaluate_finds_the_budget_over_its_limit_and_the_fewest_largest_processes() -> None:
    budget = Budget("gpu-0", "GPU-0", GIB, ("ml/c",), {POD_A: PodRef("ml", "a", POD_A)})
    other = Budget("gpu-0", "GPU-0", GIB, ("ml/d",), {POD_B: PodRef("ml", "b", POD_B)})
    a, b = Owner(POD_A, "a" * 64), Owner(POD_B, "b" * 64)
    usage = {
        "GPU-0": [
            ProcessMemory(10, 200 * MIB),
            ProcessMemory(11, 3 * GIB),
            ProcessMemory(12, 300 * MIB),
            ProcessMemory(20, 900 * MIB),
            ProcessMemory(30, 50 * GIB),  # not in a pod prepared here
        ]
    }
    owners = {10: a, 11: a, 12: a, 20: b, 30: None}
    (v,) = evaluate(usage, owners, {"GPU-0": [budget, other]}, Tolerance(bytes=256 * MIB))
    assert v.budget is budget and v.usage == 3 * GIB + 500 * MIB and v.allowed == GIB + 256 * MIB
    assert [u.pid for u in v.victims] == [11]  # the escape alone brings it back within the limit
    assert [u.pid for u in v.processes] == [11, 12, 10]
    assert evaluate(usage, owners, {"GPU-0": [budget]}, Tolerance(percent=300)) == []  # 4 GiB allowed
    many = {"GPU-0": [ProcessMemory(p, 400 * MIB) for p in (1, 2, 3, 4)]}
    (v,) = evaluate(many, dict.fromkeys((1, 2, 3, 4), a), {"GPU-0": [budget]}, Tolerance())
    assert [u.pid for u in v.victims] == [1, 2]  # 1600 -> 800 MiB


def test_tolerance_and_the_event_message() -> None:
    assert Tolerance.parse("512Mi") == Tolerance(bytes=512 * MIB)
    assert Tolerance.parse("10%").allowed(GIB) == GIB + GIB // 10
    for bad in ("lots", "-1%", "5Q"):
        with pytest.raises(WatchdogConfigError, match="--watchdog-tolerance"):
            Tolerance.parse(bad)
    pod = PodRef("ml", "trainer-0", POD_A)
    usage = (Usage(4242, Owner(POD_A, "a" * 64), 3 * GIB),)
    v = Violation(Budget("gpu-0", "GPU-0", GIB, ("ml/c",), {POD_A: pod}), 3 * GIB, GIB, usage, usage)
    text = event_message(v, pod, Tolerance(bytes=0), "kill", {4242: True})
    assert "pod ml/trainer-0 (container aaaaaaaaaaaaa)" in text
    assert "3072 MiB of device memory on gpu-0 (GPU-0), over their limit of 1024 MiB" in text
    assert "Killed process(es) 4242 in container aaaaaaaaaaaaa (3072 MiB)." in text
    assert "Not killed" in event_message(v, pod, Tolerance(), "report", {})


# -- real processes -------------------------------------------------------------------------------


class Placement:
    """Puts a workload process in a kubelet-like cgroup, or names it in the test PID map."""

    def __init__(self, root: str, mode: str) -> None:
        self.mode = mode
        self.pid_map = os.path.join(root, "pids.json")
        self.cgroups: HarnessCgroups | None = None
        if mode == "cgroup":
            try:
                self.cgroups = HarnessCgroups.create("watchdog-test")
            except CgroupError as exc:
                pytest.fail(f"cannot create cgroups on this machine: {exc}")

    def argv(self, pod_uid: str, argv: list[str]) -> tuple[list[str], str]:
        container = secrets.token_hex(32)
        if self.cgroups is not None:
            return self.cgroups.enter(argv, self.cgroups.container_dir(pod_uid, container)), container
        return argv, container

    def started(self, pid: int, pod_uid: str, container: str) -> None:
        if self.mode != "pidmap":
            return
        entries = {}
        if os.path.exists(self.pid_map):
            with open(self.pid_map, encoding="utf-8") as f:
                entries = json.load(f)
        entries[str(pid)] = {"podUID": pod_uid, "containerID": container}
        with open(self.pid_map + ".tmp", "w", encoding="utf-8") as f:
            json.dump(entries, f)
        os.replace(self.pid_map + ".tmp", self.pid_map)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()


@pytest.fixture(params=["cgroup", "pidmap"])
def placement(request: pytest.FixtureRequest, root: str) -> Iterator[Placement]:
    p = Placement(root, request.param)
    yield p
    p.close()


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for p in started:
        if p.returncode is None:
            p.kill()
        await p.wait()


def reserved(obj: dict[str, Any], pod: str, pod_uid: str) -> dict[str, Any]:
    obj["status"]["reservedFor"] = [{"resource": "pods", "name": pod, "uid": pod_uid}]
    return obj


def pod_events(api: APIServer, namespace: str = "default") -> list[dict[str, Any]]:
    return [
        e
        for e in api.store.list("events", namespace)
        if e["involvedObject"]["kind"] == "Pod" and e["reason"] == "TesseraMemoryLimitExceeded"
    ]


async def run_watchdog_case(
    api: APIServer,
    root: str,
    kubeconfig: str,
    placement: Placement,
    procs: list[asyncio.subprocess.Process],
    action: str,
) -> tuple[asyncio.subprocess.Process, asyncio.subprocess.Process, str, str]:
    """Prepare two 1 GiB shares of gpu-0 for two pods, start an escaping and a polite workload;
    the two processes, the metrics text after a few scans, and the driver log."""
    port = free_port()
    extra = [
        "--metrics-port", str(port), "--listen-address", "127.0.0.1",
        "--watchdog", action, "--watchdog-period", "0.2", "--watchdog-tolerance", "64Mi",
        "--watchdog-nvml-library", str(BUILD / "fake" / "libnvidia-ml.so.1"),
    ]  # fmt: skip
    if placement.mode == "pidmap":
        extra += ["--watchdog-pid-map", placement.pid_map]
    args = driver_args(root, kubeconfig, "2xH100", *extra)
    s = settings(root, kubeconfig, "2xH100", *extra)
    gpus = fake_gpus("2xH100", NODE)
    fake = {"TESSERA_FAKE_STATE": os.path.join(root, "fake.state"), "TESSERA_FAKE_GPUS": gpus}
    limited = request(capacity={"memory": "1Gi"})
    escape = reserved(claim("escape", [result("gpu-0", memory="1Gi")], [limited]), "escape-0", POD_A)
    polite = reserved(claim("polite", [result("gpu-0", memory="1Gi")], [limited]), "polite-0", POD_B)
    for c in (escape, polite):
        api.store.put(c)
    async with plugin_process(args, env=fake) as driver:
        await wait_ready(s, driver)
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(
            *(Claim("default", c["metadata"]["name"], c["metadata"]["uid"]) for c in (escape, polite))
        )
        await kubelet.close()
        assert all(a.error == "" for a in answer.claims.values()), answer

        def env(c: dict[str, Any]) -> dict[str, str]:
            spec = cdi.spec_path(s.cdi_dir, nvidia.NAMES, c["metadata"]["uid"])
            return container_env(spec, f"{root}/fake.state", gpus)

        started = []
        for c, pod, args_ in (
            (polite, POD_B, ["--total-mib", "768", "--step-mib", "256", "--hold-seconds", "60"]),
            (escape, POD_A, ["--route", "dlmopen", "--total-mib", "2048", "--step-mib", "512", "--hold-seconds", "60"]),
        ):
            argv, container = placement.argv(pod, [str(WORKLOAD), "--json", *args_])
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env(c), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            procs.append(proc)
            placement.started(proc.pid, pod, container)
            started.append(proc)
        polite_proc, escape_proc = started
        if action == "kill":
            try:
                code = await asyncio.wait_for(escape_proc.wait(), timeout=20)
            except TimeoutError:
                raise AssertionError(f"the escape was not killed:\n{driver_log(driver)}") from None
            assert code == -9, driver_log(driver)
        else:
            await asyncio.sleep(2.0)  # ten scans
        await asyncio.sleep(0.6)
        text = await scrape(port)
        assert polite_proc.returncode is None, "the workload within its limit must keep running"
        return escape_proc, polite_proc, text, driver_log(driver)


async def test_the_watchdog_kills_a_dlmopen_escape_and_names_it_in_an_event(
    api: APIServer, root: str, kubeconfig: str, placement: Placement, procs: list[asyncio.subprocess.Process]
) -> None:
    escape, _, text, log = await run_watchdog_case(api, root, kubeconfig, placement, procs, "kill")
    assert escape.stdout is not None
    output = (await escape.stdout.read()).decode()
    assert '"held_mib":2048' in output, output  # it did get past its limit, unhooked
    (event,) = pod_events(api)
    assert event["type"] == "Warning"
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "escape-0",
        "namespace": "default",
        "uid": POD_A,
    }
    message = event["message"]
    assert "pod default/escape-0" in message and "default/escape" in message
    assert "2048 MiB of device memory on gpu-0" in message and "limit of 1024 MiB" in message
    assert f"Killed process(es) {escape.pid} in container" in message
    assert sample(text, "tessera_watchdog_violations_total", device="gpu-0", action="kill") == 1
    assert sample(text, "tessera_watchdog_killed_processes_total", device="gpu-0") == 1
    assert sample(text, "tessera_watchdog_processes", device="gpu-0", owner="attributed") == 1  # the polite one
    assert sample(text, "tessera_watchdog_enabled") == 1
    assert "device memory over the limit" in log


async def test_the_watchdog_in_report_mode_records_once_and_kills_nothing(
    api: APIServer, root: str, kubeconfig: str, procs: list[asyncio.subprocess.Process]
) -> None:
    placement = Placement(root, "cgroup")
    try:
        escape, _, text, _ = await run_watchdog_case(api, root, kubeconfig, placement, procs, "report")
    finally:
        placement.close()
    assert escape.returncode is None or escape.returncode != -9
    (event,) = pod_events(api)  # ten scans, one Event while the violation lasts
    assert "Not killed: the watchdog only reports" in event["message"]
    assert sample(text, "tessera_watchdog_violations_total", device="gpu-0", action="report") == 1
    assert sample(text, "tessera_watchdog_processes", device="gpu-0", owner="attributed") == 2


async def test_the_mock_backend_without_nvml_runs_no_watchdog(api: APIServer, root: str, kubeconfig: str) -> None:
    port = free_port()
    extra = ["--metrics-port", str(port), "--listen-address", "127.0.0.1"]
    s = settings(root, kubeconfig, "2xH100", *extra)
    async with plugin_process(driver_args(root, kubeconfig, "2xH100", *extra)) as driver:
        await wait_ready(s, driver)
        text = await scrape(port)
        log = driver_log(driver)
    assert "tessera_watchdog_enabled" not in text
    assert "watchdog not started: the mock backend has no NVML" in log
