"""Device health: faults injected into the mock backend taint the device in the ResourceSlice, reach the
kubelet's health stream and the metrics, and say so in Events; with the API server dropping device
taints (``DRADeviceTaints`` off) the device is left out of the slice instead. NVML's event thread is
driven by a fake ``pynvml`` (XID classes, ECC, lost GPUs, a failing wait), the vendor tools' health
parsers by recorded outputs.
"""

from __future__ import annotations

import asyncio
import threading
import types
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver import faults
from dra_driver.backends.nvml import NvmlHealthSource, NvmlTelemetry
from dra_driver.faults import Fault
from dra_driver.proto import drahealth_v1alpha1_pb2 as hpb
from dra_driver.proto import drahealth_v1alpha1_pb2_grpc as hgrpc
from e2e.apiserver import APIServer
from vendors import ascend, cambricon, nvidia
from vendors.base import DeviceInfo

from .conftest import strict_validator
from .helpers import DRIVER, NODE, add_node, claim, result, running_driver, settings, write_text
from .kubelet import Claim, Kubelet
from .test_observability import free_port, sample, scrape

FIXTURES = Path(__file__).resolve().parents[1] / "vendors" / "fixtures"
KEY = f"{DRIVER}/unhealthy"
GPUS = [
    DeviceInfo(index=i, uuid=f"GPU-{i}", product_name="NVIDIA H100", model="H100", memory_bytes=80 << 30)
    for i in range(3)
]


def slice_devices(api: APIServer) -> dict[str, dict[str, Any]]:
    (s,) = [s for s in api.store.list("resourceslices") if s["spec"]["nodeName"] == NODE]
    return {d["name"]: d for d in s["spec"]["devices"]}


async def until(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def events(api: APIServer, reason: str) -> list[dict[str, Any]]:
    return [e for e in api.store.list("events") if e.get("reason") == reason]


async def test_injected_faults_taint_stream_and_tell(api: APIServer, root: str, kubeconfig: str) -> None:
    port = free_port()
    s = settings(root, kubeconfig, "3xH100", "--metrics-port", str(port), "--listen-address", "127.0.0.1")
    held = claim("held", [result("gpu-1", memory="1Gi")])
    held["status"]["reservedFor"] = [
        {"resource": "pods", "name": "user", "uid": "9d3c0a52-0000-4000-8000-000000000001"}
    ]
    api.store.put(held)
    async with running_driver(s) as driver, grpc.aio.insecure_channel(f"unix://{s.dra_socket}") as channel:
        kubelet = await Kubelet(s.registry_dir).register()
        await kubelet.prepare(Claim("default", "held", held["metadata"]["uid"]))
        await kubelet.close()
        stream = hgrpc.DRAResourceHealthStub(channel).NodeWatchResources(hpb.NodeWatchResourcesRequest())
        assert [d.health for d in (await stream.read()).devices] == [hpb.HEALTHY] * 3
        assert all("taints" not in d for d in slice_devices(api).values())

        # gpu-1 fell off the bus (XID 79), gpu-2 has an uncorrectable ECC error, gpu-0 an application XID
        write_text(s.mock_faults, "gpu-1 xid 79\n2 ecc  # by index\ngpu-0 xid 13\n")
        assert driver.monitor is not None
        await driver.monitor.check()
        answer = await stream.read()
        assert [d.health for d in answer.devices] == [hpb.HEALTHY, hpb.UNHEALTHY, hpb.UNHEALTHY]
        assert "XID 79" in answer.devices[1].message and "fallen off the bus" in answer.devices[1].message
        devices = await until(lambda: (d := slice_devices(api))["gpu-1"].get("taints") and d, "the taints")
        (lost,) = devices["gpu-1"]["taints"]
        assert (lost["key"], lost["value"], lost["effect"]) == (KEY, "xid-79", "NoExecute")
        assert lost["timeAdded"].endswith("Z")
        (ecc,) = devices["gpu-2"]["taints"]
        assert (ecc["key"], ecc["value"], ecc["effect"]) == (KEY, "ecc", "NoSchedule")
        assert "taints" not in devices["gpu-0"], "an application XID leaves the device healthy"

        text = await scrape(port)
        assert sample(text, "tessera_dra_device_healthy", device="gpu-0") == 1
        assert sample(text, "tessera_dra_device_healthy", device="gpu-1") == 0
        assert sample(text, "tessera_dra_device_faults", device="gpu-2", kind="ecc") == 1
        node_events = await until(lambda: events(api, "DeviceUnhealthy"), "DeviceUnhealthy events")
        assert {e["involvedObject"]["kind"] for e in node_events} >= {"Node", "Pod"}
        (pod_event,) = [e for e in node_events if e["involvedObject"]["kind"] == "Pod"]
        assert pod_event["involvedObject"]["name"] == "user" and "gpu-1" in pod_event["message"]

        # the same faults again change nothing (the taint keeps its time)
        await driver.monitor.check()
        assert slice_devices(api)["gpu-1"]["taints"][0]["timeAdded"] == lost["timeAdded"]

        # cleared: healthy, untainted, said so
        write_text(s.mock_faults, "")
        await driver.monitor.check()
        assert [d.health for d in (await stream.read()).devices] == [hpb.HEALTHY] * 3
        await until(lambda: all("taints" not in d for d in slice_devices(api).values()), "the taints to go")
        assert await until(lambda: events(api, "DeviceHealthy"), "DeviceHealthy events")
        stream.cancel()


async def test_taint_effects_are_configurable(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(root, kubeconfig, "2xH100", "--unhealthy-taint", "off", "--device-lost-taint", "NoSchedule")
    async with running_driver(s) as driver:
        write_text(s.mock_faults, "gpu-0 xid 62\ngpu-1 lost\n")
        assert driver.monitor is not None
        driver.check_health_soon()  # what SIGUSR1 does: no wait for the next interval
        monitor = driver.monitor
        statuses = await until(
            lambda: all(x.health == hpb.UNHEALTHY for x in monitor.statuses) and monitor.statuses,
            "the check",
            timeout=3.0,  # well before the next periodic check (10 s)
        )
        assert len(statuses) == 2, "unhealthy, taint or not"
        devices = await until(lambda: (d := slice_devices(api))["gpu-1"].get("taints") and d, "the taint")
        assert "taints" not in devices["gpu-0"]
        assert [t["effect"] for t in devices["gpu-1"]["taints"]] == ["NoSchedule"]


async def test_taints_dropped_leave_the_device_out(root: str) -> None:
    gates = {"DRADeviceTaints": False}
    async with APIServer.running(host="127.0.0.1", port=0, validator=strict_validator(), feature_gates=gates) as api:
        await add_node(api)
        s = settings(root, api.write_kubeconfig(f"{root}/kubeconfig"), "2xH100")
        async with running_driver(s) as driver:
            write_text(s.mock_faults, "gpu-1 xid 48\n")
            assert driver.monitor is not None
            await driver.monitor.check()
            await until(lambda: list(slice_devices(api)) == ["gpu-0"], "gpu-1 left out of the slice")
            assert driver.publisher is not None and driver.publisher.taints_supported is False
            (warning,) = events(api, "DRADeviceTaintsDisabled")
            assert "Unhealthy devices are left out" in warning["message"]
            write_text(s.mock_faults, "")
            await driver.monitor.check()
            await until(lambda: list(slice_devices(api)) == ["gpu-0", "gpu-1"], "gpu-1 back")


async def test_a_bad_fault_file_is_reported_and_changes_nothing(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(root, kubeconfig, "1xH100")
    async with running_driver(s) as driver:
        assert driver.monitor is not None
        write_text(s.mock_faults, "gpu-0 xid 79\n")
        assert (await driver.monitor.check())[0].health == hpb.UNHEALTHY
        write_text(s.mock_faults, "gpu-0 melted\n")
        assert (await driver.monitor.check())[0].health == hpb.UNHEALTHY, "the last good file still holds"


# -- pure: classification, taints, the control file ------------------------------------------------


@pytest.mark.parametrize(
    ("xid", "kind"),
    [(13, None), (31, None), (43, None), (45, None), (68, None), (79, faults.LOST), (48, faults.ECC), (62, faults.XID)],
)
def test_xid_classes(xid: int, kind: str | None) -> None:
    fault = faults.xid_fault(xid, "GPU 0", now=1.0)
    assert (fault.kind if fault else None) == kind
    assert faults.xid_fault(62, "GPU 0", ignored={62}) is None


def test_device_taints_one_per_effect() -> None:
    lost = Fault(faults.LOST, "gone", 79, 20.0)
    ecc = Fault(faults.ECC, "ecc", None, 10.0)
    taints = faults.device_taints([ecc, lost], nvidia.NAMES)
    assert [(t["value"], t["effect"], t["timeAdded"]) for t in taints] == [
        ("xid-79", "NoExecute", "1970-01-01T00:00:20Z"),
        ("ecc", "NoSchedule", "1970-01-01T00:00:10Z"),
    ]
    assert faults.device_taints([ecc], nvidia.NAMES, unhealthy=faults.OFF) == []


def test_mock_fault_file_forms_and_errors() -> None:
    by_line = faults.parse_mock_faults("gpu-0 xid 62\n# comment\nGPU-2 unhealthy\n", GPUS, nvidia.NAMES)
    assert {u: [f.label for f in fs] for u, fs in by_line.items()} == {"GPU-0": ["xid-62"], "GPU-2": ["vendor-tool"]}
    by_yaml = faults.parse_mock_faults("- {device: 1, fault: lost}\n", GPUS, nvidia.NAMES)
    assert by_yaml["GPU-1"][0].lost
    by_json = faults.parse_mock_faults('{"faults": [{"device": "gpu-2", "fault": "ecc"}]}', GPUS, nvidia.NAMES)
    assert by_json["GPU-2"][0].kind == faults.ECC
    for bad, says in [
        ("gpu-9 ecc", "no device 'gpu-9'"),
        ("gpu-0 melted", "unknown fault"),
        ("gpu-0 xid", "needs an XID number"),
        ("gpu-0", "e.g. 'gpu-1 xid 79'"),
        ("- {device: 0, fault: ecc, colour: red}", "unknown fields"),
    ]:
        with pytest.raises(faults.FaultSpecError, match=says):
            faults.parse_mock_faults(bad, GPUS, nvidia.NAMES)
    with pytest.raises(ValueError, match="not an XID"):
        faults.parse_xids("109,abc")
    assert faults.parse_xids(" 109, 119,") == {109, 119}


# -- NVML, through a fake pynvml -------------------------------------------------------------------


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(events: list[Any], *, lost: set[str] = frozenset(), unsupported: set[str] = frozenset()) -> Any:
    """A pynvml stand-in: ``events`` are returned by the wait in order (an int raises that NVML
    error), then it times out."""
    m = types.SimpleNamespace()
    m.calls = []
    m.init = 0
    queue = list(events)
    cond = threading.Condition()

    def handle(uuid: str) -> str:
        if uuid in lost:
            raise NVMLError(15)
        return uuid

    def register(h: str, mask: int, es: Any) -> None:
        if h in unsupported:
            raise NVMLError(3)
        m.calls.append(("register", h, mask))

    def wait(es: Any, ms: int) -> Any:
        with cond:
            if not queue:
                cond.wait(ms / 1000)
                raise NVMLError(10)
            item = queue.pop(0)
        if isinstance(item, int):
            raise NVMLError(item)
        return item

    def init() -> None:
        m.init += 1

    def shutdown() -> None:
        m.init -= 1

    m.nvmlInit = init
    m.nvmlShutdown = shutdown
    m.nvmlEventSetCreate = lambda: "set"
    m.nvmlEventSetFree = lambda es: m.calls.append(("free", es))
    m.nvmlDeviceGetHandleByUUID = handle
    m.nvmlDeviceGetSupportedEventTypes = lambda h: 0xFF
    m.nvmlDeviceRegisterEvents = register
    m.nvmlEventSetWait = wait
    m.nvmlDeviceGetUUID = lambda h: h.encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30, used=3 << 30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=42, memory=7)
    m.nvmlDeviceGetTemperature = lambda h, sensor: 61
    m.nvmlDeviceGetPowerUsage = lambda h: 250_500
    return m


def event(uuid: str, kind: int, data: int = 0) -> Any:
    return types.SimpleNamespace(device=uuid, eventType=kind, eventData=data, gpuInstanceId=0, computeInstanceId=0)


async def run_source(source: NvmlHealthSource, until_count: int) -> list[tuple[str, Fault]]:
    got: list[tuple[str, Fault]] = []
    enough = threading.Event()

    def report(uuid: str, fault: Fault) -> None:  # called from the NVML thread
        got.append((uuid, fault))
        if len(got) >= until_count:
            enough.set()

    source.start(report)
    await asyncio.to_thread(enough.wait, 10)
    await asyncio.sleep(0.05)
    await source.stop()
    return got


async def test_nvml_events_become_faults() -> None:
    m = fake_nvml(
        [
            event("GPU-0", 0x8, 13),  # application error: ignored
            event("GPU-0", 0x8, 109),  # ignored by configuration
            event("GPU-1", 0x8, 62),
            event("GPU-2", 0x2),  # double-bit ECC
            event("GPU-9", 0x8, 79),  # not ours
            event("GPU-0", 0x8, 79),
        ],
        unsupported={"GPU-2"},
    )
    source = NvmlHealthSource(GPUS, ignored_xids=frozenset({109}), nvml=m)
    got = await run_source(source, 3)
    assert [(u, f.label) for u, f in got] == [("GPU-1", "xid-62"), ("GPU-2", "ecc"), ("GPU-0", "xid-79")]
    assert got[2][1].lost
    assert source.registered == ["GPU-0", "GPU-1"], "GPU-2 too old for events: not registered, not unhealthy"
    assert all(mask == 0x8 | 0x2 for _, _, mask in [c for c in m.calls if c[0] == "register"])
    assert ("free", "set") in m.calls and m.init == 0, "the event set and NVML are released on stop"


async def test_nvml_wait_failure_marks_every_gpu() -> None:
    m = fake_nvml([999])
    got = await run_source(NvmlHealthSource(GPUS[:2], nvml=m), 2)
    assert sorted(u for u, _ in got[:2]) == ["GPU-0", "GPU-1"]
    assert "waiting for NVML health events failed" in got[0][1].message


async def test_nvml_lost_gpu_is_polled_and_figures_read() -> None:
    m = fake_nvml([], lost={"GPU-1"})
    found = await NvmlHealthSource(GPUS[:2], nvml=m).poll()
    assert list(found) == ["GPU-1"] and found["GPU-1"][0].lost
    assert m.init == 0
    figures = NvmlTelemetry(m)(GPUS[:2])
    assert figures["GPU-0"].memory_used_bytes == 3 << 30 and figures["GPU-0"].utilization == pytest.approx(0.42)
    assert figures["GPU-0"].temperature_celsius == 61 and figures["GPU-0"].power_watts == pytest.approx(250.5)
    assert figures["GPU-1"].memory_used_bytes is None, "a lost GPU has no figures"


# -- vendor tools ----------------------------------------------------------------------------------


def test_ascend_health_column() -> None:
    text = (FIXTURES / "npu-smi-info-910b3.txt").read_text()
    chips = ascend.parse_npu_smi_info(text)
    assert all(ascend.chip_problem(c) == "" for c in chips), [c.health for c in chips]
    first = chips[0]
    broken = ascend.parse_npu_smi_info(text.replace(f"| {first.health} ", "| Critical ", 1))
    assert "health 'Critical'" in ascend.chip_problem(broken[0])


def test_cambricon_ecc_column() -> None:
    text = (FIXTURES / "cnmon-host.txt").read_text()
    cards = cambricon.parse_cnmon(text)
    assert [c.ecc_errors for c in cards] == [None, None] and not any(cambricon.card_problem(c) for c in cards)
    broken = cambricon.parse_cnmon(text.replace("0%                N/A", "0%                  3", 1))
    assert broken[0].ecc_errors == 3 and "3 ECC errors" in cambricon.card_problem(broken[0])
