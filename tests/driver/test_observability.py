"""Liveness (grpc.health.v1 calling our own sockets), device health stream, Prometheus metrics, logs."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dra_driver import logs
from dra_driver.proto import drahealth_v1alpha1_pb2 as hpb
from dra_driver.proto import drahealth_v1alpha1_pb2_grpc as hgrpc
from e2e.apiserver import APIServer

from .helpers import NODE, claim, request, result, running_driver, settings, write_text
from .kubelet import Claim, Kubelet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def check(port: int, service: str) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )


async def test_liveness_calls_our_own_sockets(api: APIServer, root: str, kubeconfig: str) -> None:
    port = free_port()
    s = settings(root, kubeconfig, "1xH100", "--healthz-port", str(port), "--listen-address", "127.0.0.1")
    async with running_driver(s) as driver:
        for service in ("", "liveness"):
            assert (await check(port, service)).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await check(port, "something-else")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # A DRA server that no longer answers fails the probe.
        assert driver._dra_server is not None
        await driver._dra_server.stop(grace=0)
        assert (await check(port, "liveness")).status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_device_health_stream(api: APIServer, root: str, kubeconfig: str) -> None:
    devices = f"{root}/gpus.yaml"
    write_text(devices, "- model: H200\n- model: H200\n")
    s = settings(root, kubeconfig, devices)
    async with running_driver(s) as driver, grpc.aio.insecure_channel(f"unix://{s.dra_socket}") as channel:
        stream = hgrpc.DRAResourceHealthStub(channel).NodeWatchResources(hpb.NodeWatchResourcesRequest())
        first = await stream.read()
        assert [(d.device.pool_name, d.device.device_name, d.health) for d in first.devices] == [
            (NODE, "gpu-0", hpb.HEALTHY),
            (NODE, "gpu-1", hpb.HEALTHY),
        ]
        assert all(d.health_check_timeout_seconds > 0 and d.last_updated_time > 0 for d in first.devices)
        write_text(devices, "- model: H200\n")  # gpu-1 fell off the bus
        assert driver.monitor is not None
        await driver.monitor.check()
        second = await stream.read()
        assert [d.health for d in second.devices] == [hpb.HEALTHY, hpb.UNHEALTHY]
        assert "no longer reported" in second.devices[1].message
        write_text(devices, "- model: [")  # discovery itself fails
        await driver.monitor.check()
        third = await stream.read()
        assert [d.health for d in third.devices] == [hpb.UNKNOWN, hpb.UNKNOWN]
        stream.cancel()


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in\n{text}")


async def test_metrics_with_hami_names(api: APIServer, root: str, kubeconfig: str) -> None:
    port = free_port()
    s = settings(
        root, kubeconfig, "2xH100", "--metrics-port", str(port), "--listen-address", "127.0.0.1", "--hami-metrics"
    )
    asked = request(capacity={"memory": "10Gi", "cores": "30"})
    c1 = claim("m1", [result("gpu-1", memory="10Gi", cores="30")], [asked])
    c2 = claim("m2", [result("gpu-1", memory="6Gi", cores="20")], [asked])
    for c in (c1, c2):
        api.store.put(c)
    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        await kubelet.prepare(*(Claim("default", c["metadata"]["name"], c["metadata"]["uid"]) for c in (c1, c2)))
        await kubelet.prepare(Claim("default", "nothere", "00000000-0000-4000-8000-00000000dead"))
        text = await scrape(port)
        await kubelet.close()
        uuid1 = driver.devices[1].uuid
    gib = 1024**3
    assert sample(text, "tessera_dra_devices", type="H100") == 2
    assert sample(text, "tessera_dra_device_allocated_memory_bytes", device="gpu-1", uuid=uuid1) == 16 * gib
    assert sample(text, "tessera_dra_device_allocated_cores_percent", device="gpu-1") == 50
    assert sample(text, "tessera_dra_device_shares", device="gpu-1") == 2
    assert sample(text, "tessera_dra_device_allocated_memory_bytes", device="gpu-0") == 0
    assert sample(text, "tessera_dra_prepares_total", result="ok") == 2
    assert sample(text, "tessera_dra_prepares_total", result="error") == 1
    assert sample(text, "tessera_dra_prepare_errors_total", reason="api") == 1
    assert sample(text, "tessera_dra_prepare_duration_seconds_count") == 2
    assert sample(text, "tessera_dra_sharing_enabled") == 1
    assert sample(text, "tessera_dra_prepared_claims") == 2
    # HAMi's vGPU monitor names (node side); its scheduler names (allocation per device, hami_gpu_*,
    # hami_node_gpu_*) are the cluster exporter's, never the driver's
    hami = {"node": NODE, "device_uuid": uuid1, "device_index": "1", "device_type": "H100", "zone": "vGPU"}
    assert sample(text, "hami_host_gpu_memory_used_bytes", **hami) == 0  # no container has used CUDA
    hami_families = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE hami_")}
    assert "hami_vgpu_memory_limit_bytes" in hami_families
    assert not {n for n in hami_families if n.startswith(("hami_gpu_", "hami_node_gpu_"))}, hami_families


def test_json_logs_carry_the_claim(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("json")
    try:
        logging.getLogger("dra_driver.prepare").info("prepared", extra={"claim": "ns/c", "uid": "u-1", "ms": 1.5})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["msg"], line["claim"], line["uid"], line["level"]) == ("prepared", "ns/c", "u-1", "info")
        logs.setup("text")
        logging.getLogger("dra_driver.prepare").warning("prepare failed", extra={"claim": "ns/c", "error": "a b"})
        text = capsys.readouterr().err.strip().splitlines()[-1]
        assert "prepare failed claim=ns/c" in text and 'error="a b"' in text
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
